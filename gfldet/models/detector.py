"""The detector: transform -> backbone -> neck -> head -> criterion (training) or postprocessor (eval).

Its parts (those, a prior generator, box representation, quality estimator, assigner) are handed to it or
assembled from a config; GFL (ResNet-FPN, ATSS, QFL + DFL + GIoU) is the default assembly.

It keeps torchvision's detection contract::

    model.train(); losses = model(images, targets)   # dict of already-weighted loss_* terms
    model.eval();  detections = model(images)        # [{"boxes", "scores", "labels", "distributions", ...}]

Each GFL detection also carries its localisation uncertainty (gfldet.ops.uncertainty): ``edge_peak``,
``edge_entropy``, ``edge_std`` (pixels of the image given) per edge and a box-level ``loc_conf``.

Shapes: N images, A anchors of all levels, C classes, B = reg_max + 1 bins, M boxes of an image.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import GfldetError
from .assemble import assemble
from .config import RUNTIME_FIELDS, ModelConfig
from .criterion import Criterion, GFLTargets
from .fusion import set_fusion
from .parts import AssignerPart, BoxRepresentationPart, PriorGeneratorPart, QualityEstimatorPart
from .postprocess import Postprocessor
from .transform import BatchMeta, DetectionTransform

__all__ = ["GFL", "BatchMeta"]


class GFL(nn.Module):
    """A dense detector assembled from parts; by default Generalized Focal Loss on a ResNet-FPN.

    ``GFL(config, class_names)`` builds the parts from the config (gfldet.models.assemble); any part can be
    handed in instead as a keyword argument (their contracts: gfldet.models.parts). Those not given are built from
    the config and from the parts before them (the head's channels come from the box representation, the quality
    estimator and the prior generator).
    """

    def __init__(
        self,
        config: ModelConfig | None = None,
        class_names: Sequence[str] | None = None,
        *,
        transform: DetectionTransform | None = None,
        prior_generator: PriorGeneratorPart | None = None,
        box: BoxRepresentationPart | None = None,
        quality: QualityEstimatorPart | None = None,
        assigner: AssignerPart | None = None,
        backbone: nn.Module | None = None,
        neck: nn.Module | None = None,
        head: nn.Module | None = None,
        criterion: Criterion | None = None,
        postprocessor: Postprocessor | None = None,
    ):
        super().__init__()
        cfg = config or ModelConfig()
        self.config = cfg
        self.class_names = list(class_names) if class_names is not None else None
        if self.class_names is not None and len(self.class_names) != cfg.num_classes:
            raise GfldetError(f"{len(self.class_names)} class names given for num_classes={cfg.num_classes}")
        p = assemble(cfg, transform=transform, prior_generator=prior_generator, box=box, quality=quality,
                     assigner=assigner, backbone=backbone, neck=neck, head=head, criterion=criterion,
                     postprocessor=postprocessor)
        self.transform = p["transform"]
        self.backbone, self.neck, self.head = p["backbone"], p["neck"], p["head"]
        self.box = p["box"]  # registered here so that its buffers follow the model's device
        self.prior_generator, self.quality, self.assigner = p["prior_generator"], p["quality"], p["assigner"]
        self.criterion, self.postprocessor = p["criterion"], p["postprocessor"]

    # ------------------------------------------------------------------ settings
    def configure(self, **changes: Any) -> GFL:
        """Change input sizes and test settings of this model (``min_size``, ``max_size``, ``train_min_sizes``,
        ``score_thr``, ``nms_pre``, ``nms_iou``, ``max_per_img``): the one way to, validated as a new
        :class:`ModelConfig` is. The transform and the postprocessor read the new config from their next call.
        Returns the model. Any other field defines the network: build another model for it."""
        fixed = sorted(set(changes) - set(RUNTIME_FIELDS))
        if fixed:
            raise GfldetError(f"{fixed} define the network and cannot change on a built model (build one with them); "
                              f"configure changes {list(RUNTIME_FIELDS)}")
        if "train_min_sizes" in changes and changes["train_min_sizes"] is not None:
            changes["train_min_sizes"] = tuple(changes["train_min_sizes"])
        cfg = dataclasses.replace(self.config, **changes)
        self.config = self.transform.settings = self.postprocessor.settings = cfg
        return self

    # ------------------------------------------------------------------ input
    def preprocess(self, images: Sequence[Tensor]) -> tuple[Tensor, BatchMeta]:
        """List of ``(3, H, W)`` uint8 or float-in-[0, 1] RGB images -> normalised, zero-padded ``(N, 3, H', W')``."""
        return self.transform(images)

    # ------------------------------------------------------------------ network
    def forward_features(self, batch: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """``(N, 3, H, W)`` normalised batch -> per level class logits ``(N, C, H_l, W_l)`` and
        box outputs ``(N, 4B, H_l, W_l)`` (GFL; see the head for other layouts)."""
        return self.head(self.neck(self.backbone(batch)))

    def anchors(self, featmap_sizes: Sequence[tuple[int, int]], device: torch.device) -> list[Tensor]:
        """Per level ``(A_l, 4)`` anchors (cached by the prior generator)."""
        return self.prior_generator(featmap_sizes, device).per_level

    # ------------------------------------------------------------------ training
    def compute_targets(
        self,
        cls_logits: Sequence[Tensor],
        gt_boxes: Sequence[Tensor],
        gt_labels: Sequence[Tensor],
        pad_shapes: Sequence[tuple[int, int]],
        gt_ignore: Sequence[Tensor | None] | None = None,
    ) -> GFLTargets:
        """The assigner's targets for boxes given in the network-input frame."""
        sizes = [tuple(m.shape[-2:]) for m in cls_logits]
        device = cls_logits[0].device
        priors = self.prior_generator(sizes, device)
        valid = self.prior_generator.valid(sizes, pad_shapes, device)
        return self.criterion.targets(priors, valid, gt_boxes, gt_labels, gt_ignore)

    def compute_losses(
        self,
        cls_logits: Sequence[Tensor],
        reg_outputs: Sequence[Tensor],
        gt_boxes: Sequence[Tensor],
        gt_labels: Sequence[Tensor],
        pad_shapes: Sequence[tuple[int, int]],
        gt_ignore: Sequence[Tensor | None] | None = None,
    ) -> dict[str, Tensor]:
        """Weighted losses from raw head outputs and boxes in the network-input frame."""
        targets = self.compute_targets(cls_logits, gt_boxes, gt_labels, pad_shapes, gt_ignore)
        priors = self.prior_generator([tuple(m.shape[-2:]) for m in cls_logits], cls_logits[0].device)
        return self.criterion(*self.head.split(cls_logits, reg_outputs), priors, targets)

    # ------------------------------------------------------------------ inference
    def decode(
        self, cls_logits: Sequence[Tensor], reg_outputs: Sequence[Tensor], image_sizes: Sequence[tuple[int, int]]
    ) -> list[dict[str, Tensor]]:
        """Detections (in the network-input frame, clipped to each image's size) from raw head outputs."""
        priors = self.prior_generator([tuple(m.shape[-2:]) for m in cls_logits], cls_logits[0].device)
        return self.postprocessor(*self.head.split(cls_logits, reg_outputs), priors, self.prior_generator.strides,
                                  image_sizes)

    def forward(self, images: Sequence[Tensor], targets: Sequence[dict] | None = None):
        if self.training and targets is None:
            raise GfldetError("in training mode the model needs targets: model(images, targets)")
        batch, meta = self.transform(images)
        if self.training:  # check the targets before the expensive forward pass
            boxes, labels, ignore = self.transform.targets(targets, meta, self.config.num_classes, batch.device)
            cls_logits, reg_outputs = self.forward_features(batch)
            return self.compute_losses(cls_logits, reg_outputs, boxes, labels, meta.pad_shapes, ignore)
        cls_logits, reg_outputs = self.forward_features(batch)
        return self.transform.to_images(self.decode(cls_logits, reg_outputs, meta.image_sizes), meta)

    # ------------------------------------------------------------------ speed
    def optimize_for_cpu(self, enabled: bool = True) -> GFL:
        """Take (or, with ``enabled=False``, leave) the CPU fast path (gfldet.models.fusion): the ResNet backbone,
        FPN and head towers become their fused subclasses, which on float32 CPU tensors run pre-packed oneDNN
        convolutions with BatchNorm, ReLU and residual additions folded in (in training, only where no gradient
        flows, and the frozen-statistics BatchNorm folded inside the autograd graph) and otherwise run the plain
        forward (CUDA, gradients, tracing, hooks, autocast). Same function, same parameters and state_dict; float
        rounding differs by about 1e-6 relative. The commands (train, eval, predict, demo) take it on the CPU;
        a model built in Python runs the plain modules until this is called. Returns the model."""
        return set_fusion(self, enabled)
