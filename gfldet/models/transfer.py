"""Weights into a built model: the strict load with one readable error, and the fine-tuning transfer (what fits is
copied, the rest keeps its initialisation, another architecture is refused). State dicts only; files: :mod:`.io`."""
from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from ..errors import GfldetError

__all__ = ["load_state", "transfer_weights", "compare_state", "MIN_SHARE", "ARCH_DEFINING"]

log = logging.getLogger(__name__)

# A fine-tuning transfer changes the output layers (gfl_cls for another class count, gfl_reg for another
# reg_max), a handful of tensors. When less than this share of the model's tensors is filled from the file,
# or of the file's tensors is used, the file is another architecture: a ResNet-50 checkpoint fills only ~55%
# of a ResNet-101's tensors (and the reverse uses ~55% of the file), another FPN or head width far less.
MIN_SHARE = 0.9
# the model_config fields named when a file of another architecture is refused
ARCH_DEFINING = ("backbone", "depth", "groups", "width_per_group", "base_channels", "stage_with_dcn", "deform_groups", "dcn_modulated", "fpn_channels",
                 "head_channels", "stacked_convs", "head_conv", "strides")


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _listing(items: list[str], limit: int = 6) -> str:
    """``a, b, c`` for short lists, ``a, b, ... (N in all)`` for long ones."""
    if len(items) <= limit:
        return ", ".join(items)
    return f"{', '.join(items[:limit])}, ... ({len(items)} in all)"


def compare_state(model_sd: dict[str, torch.Tensor], file_sd: dict[str, Any]) -> tuple[list[str], dict[str, str], list[str]]:
    """Split names into those the file fills (same name and shape), the model's others with the reason, and
    the file's tensors the model lacks."""
    loaded, unfilled = [], {}
    for name, t in model_sd.items():
        other = file_sd.get(name)
        if not isinstance(other, torch.Tensor):
            unfilled[name] = "not in the file"
        elif _shape(other) != _shape(t):
            unfilled[name] = f"file {_shape(other)}, model {_shape(t)}"
        else:
            loaded.append(name)
    ignored = [k for k in file_sd if k not in model_sd]
    return loaded, unfilled, ignored


def _mismatch_text(unfilled: dict[str, str], ignored: list[str]) -> str:
    shapes = [f"{k} ({why})" for k, why in unfilled.items() if why != "not in the file"]
    missing = [k for k, why in unfilled.items() if why == "not in the file"]
    parts = []
    if shapes:
        parts.append(f"{len(shapes)} differ in shape: {_listing(shapes, 4)}")
    if missing:
        parts.append(f"{len(missing)} of the model's are missing from the file: {_listing(missing, 4)}")
    if ignored:
        parts.append(f"{len(ignored)} in the file are not in the model: {_listing(ignored, 4)}")
    return "; ".join(parts)


def load_state(model: nn.Module, state_dict: dict, path: str) -> None:
    """Strict load; a mismatch is one readable GfldetError naming the file and the tensors with both shapes."""
    _, unfilled, ignored = compare_state(model.state_dict(), state_dict)
    if unfilled or ignored:
        raise GfldetError(f"{path}: weights do not fit the model: {_mismatch_text(unfilled, ignored)}")
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:  # e.g. a tensor that is not a tensor: names and shapes fit
        raise GfldetError(f"{path}: weights do not fit the model: {' '.join(str(e).split())[:300]}") from e


def _arch_difference(model: nn.Module, file_config: dict[str, Any] | None) -> str:
    """``"depth 50 in the file, 101 in the model"`` from a gfldet file's model_config, or ``""``."""
    config = getattr(model, "config", None)
    if not file_config or config is None:
        return ""
    diffs = []
    for field in ARCH_DEFINING:
        if field in file_config and hasattr(config, field):
            theirs, ours = _plain(file_config[field]), _plain(getattr(config, field))
            if theirs != ours:
                diffs.append(f"{field} {theirs} in the file, {ours} in the model")
    return "; ".join(diffs)


def _plain(value: Any) -> Any:
    """Tuples as lists, as a saved model_config holds them."""
    return list(value) if isinstance(value, tuple) else value


def transfer_weights(model: nn.Module, file_sd: dict[str, Any], path: str, kind: str,
                     file_config: dict[str, Any] | None = None, strict: bool = False) -> dict[str, Any]:
    """Load ``file_sd`` (the weights of file ``path``, a ``kind``, with its ``file_config`` when it has one) into
    an already built model, e.g. to fine-tune (:func:`gfldet.models.io.load_weights_into` reads the file).

    ``strict=False`` (default): every tensor whose name and shape fit the model is copied. The model's other
    tensors (missing from the file, or of another shape, e.g. ``head.gfl_cls.*`` for another class count)
    are not touched, so they keep the values the model was built with: for a freshly built model that is
    exactly its construction init (``gfl_cls``: normal std 0.01 and the prior-probability bias; a pretrained
    backbone's weights where one was loaded). Tensors of the file that the model lacks are ignored. One info
    line names what was left out and why. When the file fills less than 90% of the model's tensors, or less
    than 90% of the file's tensors are used (``num_batches_tracked`` counters aside), it is another
    architecture (depth, width, ...) and a GfldetError says so, rather than leaving a half-random model.

    ``strict=True``: every tensor must fit; otherwise a GfldetError names the file and the mismatched tensors.

    Returns ``{"loaded": [names], "reinitialised": {name: reason}, "ignored": [names]}``, where
    "reinitialised" lists the model's tensors that kept their initial values.
    """
    model_sd = model.state_dict()
    if strict:
        load_state(model, file_sd, path)
        log.info("loaded all %d tensors from %s (%s)", len(model_sd), path, kind)
        return {"loaded": list(model_sd), "reinitialised": {}, "ignored": []}

    loaded, unfilled, ignored = compare_state(model_sd, file_sd)
    counted = [k for k in model_sd if not k.endswith("num_batches_tracked")]
    counted_file = [k for k in file_sd if not k.endswith("num_batches_tracked")]
    n_loaded = sum(1 for k in loaded if not k.endswith("num_batches_tracked"))
    if n_loaded == 0 or n_loaded < MIN_SHARE * len(counted) or n_loaded < MIN_SHARE * len(counted_file):
        raise GfldetError(
            f"{path}: the checkpoint does not look like this model's architecture "
            f"({_arch_difference(model, file_config) or 'arch, depth or width mismatch?'}): only {n_loaded} tensors fit, "
            f"of the model's {len(counted)} and the file's {len(counted_file)}; {_mismatch_text(unfilled, ignored)}")
    model.load_state_dict({k: file_sd[k] for k in loaded}, strict=False)

    message = [f"loaded {len(loaded)} of the model's {len(model_sd)} tensors from {path} ({kind})"]
    if unfilled:
        message.append(f"kept the model's own initialisation for {_listing([f'{k} ({why})' for k, why in unfilled.items()])}")
    if ignored:
        message.append(f"ignored {len(ignored)} tensors not in the model: {_listing(ignored)}")
    log.info("%s", "; ".join(message))
    return {"loaded": loaded, "reinitialised": unfilled, "ignored": ignored}
