"""Shared inputs of the loss tests: sparse QFL cases and their dense targets."""
import torch
import torch.nn.functional as F

F64 = torch.float64


def dense_target(labels: torch.Tensor, scores: torch.Tensor, num_classes: int) -> torch.Tensor:
    """one_hot(labels) * score, with labels == num_classes (negatives) giving an all-zero row."""
    return F.one_hot(labels, num_classes + 1)[:, :num_classes].to(scores.dtype) * scores[:, None]


def sparse_case(seed: int = 0, P: int = 12, C: int = 5):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(P, C, generator=g, dtype=F64) * 3
    labels = torch.randint(0, C + 1, (P,), generator=g)
    labels[:3] = C  # guarantee some negatives ...
    labels[3] = 0  # ... and positives at both ends of the class range
    labels[4] = C - 1
    scores = torch.rand(P, generator=g, dtype=F64)
    return logits, labels, scores
