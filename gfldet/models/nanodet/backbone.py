"""NanoDet's backbone: torchvision's ShuffleNetV2 (Ma et al. 2018) with LeakyReLU(0.1) for every ReLU, returning the
outputs of stage2, stage3 and stage4 (strides 8, 16, 32).

The official ShuffleNetV2 (RangiLyu/nanodet ``nanodet/model/backbone/shufflenetv2.py``) is torchvision's network
layer for layer (the same ``conv1``, ``maxpool``, ``stage2``-``stage4`` of blocks with ``branch1`` / ``branch2``
Sequentials, the same channel split, concatenation and 2-group channel shuffle), with the activation made a
parameter; it loads torchvision's ImageNet weights by name. So torchvision's modules are reused here with their
ReLUs swapped; ``conv5`` and the classifier are dropped (NanoDet's ``with_last_conv`` is False).
"""
from __future__ import annotations

from torch import Tensor, nn

from ...errors import GfldetError
from .blocks import make_activation

__all__ = ["ShuffleNetV2Backbone", "SHUFFLENET_CHANNELS"]

# model size -> output channels of conv1, stage2, stage3, stage4 (torchvision's and NanoDet's tables)
SHUFFLENET_CHANNELS = {
    "0.5x": (24, 48, 96, 192),
    "1.0x": (24, 116, 232, 464),
    "1.5x": (24, 176, 352, 704),
    "2.0x": (24, 244, 488, 976),
}


def _swap_relu(module: nn.Module, activation: str) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.ReLU):
            setattr(module, name, make_activation(activation))
        else:
            _swap_relu(child, activation)


class ShuffleNetV2Backbone(nn.Module):
    """ShuffleNetV2 of ``model_size`` (``"0.5x"``, ``"1.0x"``, ``"1.5x"``, ``"2.0x"``); forward -> the outputs of the
    stages in ``out_stages`` (a subset of 2, 3, 4), in order. ``out_channels`` lists their channels."""

    def __init__(self, model_size: str = "1.0x", out_stages: tuple[int, ...] = (2, 3, 4),
                 activation: str = "LeakyReLU"):
        super().__init__()
        if model_size not in SHUFFLENET_CHANNELS:
            raise GfldetError(f"ShuffleNetV2 model_size {model_size!r} is not one of {sorted(SHUFFLENET_CHANNELS)}")
        if not out_stages or not set(out_stages) <= {2, 3, 4}:
            raise GfldetError(f"out_stages must be a non-empty subset of (2, 3, 4), got {tuple(out_stages)}")
        from torchvision.models.shufflenetv2 import ShuffleNetV2

        channels = SHUFFLENET_CHANNELS[model_size]
        net = ShuffleNetV2([4, 8, 4], [*channels, 1024])
        _swap_relu(net, activation)
        self.conv1, self.maxpool = net.conv1, net.maxpool
        self.stage2, self.stage3, self.stage4 = net.stage2, net.stage3, net.stage4
        self.model_size, self.out_stages = model_size, tuple(sorted(out_stages))
        self.out_channels = [channels[s - 1] for s in self.out_stages]

    def load_torchvision_weights(self, state_dict: dict[str, Tensor]) -> None:
        """Load torchvision's ImageNet ShuffleNetV2 state dict of this width (``conv5`` and ``fc`` are dropped, as the
        official backbone's non-strict load drops them); every tensor of this backbone must be in it."""
        sd = {k: v for k, v in state_dict.items() if k.split(".", 1)[0] in ("conv1", "stage2", "stage3", "stage4")}
        try:
            missing, unexpected = self.load_state_dict(sd, strict=False)
        except RuntimeError as e:  # shapes that differ: another width's weights
            raise GfldetError(f"backbone weights do not fit ShuffleNetV2 {self.model_size}: {e}") from None
        if missing or unexpected or not sd:
            raise GfldetError(f"backbone weights do not fit ShuffleNetV2 {self.model_size}: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}")

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.maxpool(self.conv1(x))
        outs = []
        for s, stage in ((2, self.stage2), (3, self.stage3), (4, self.stage4)):
            x = stage(x)
            if s in self.out_stages:
                outs.append(x)
        return outs
