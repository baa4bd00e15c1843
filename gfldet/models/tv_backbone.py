"""Lightweight ImageNet backbones from torchvision (MobileNetV2/V3, ShuffleNetV2, EfficientNet) for GFL.

One generic wrapper over a torchvision classification network: every layer before its global pooling (the
``features`` of MobileNet / EfficientNet, ``conv1`` ... ``conv5`` of ShuffleNetV2), run in order, returning the
last feature map at strides 8, 16 and 32 (C3, C4, C5), which the FPN turns into P3-P7 as for ResNet. Including
the classifier's last 1x1 convolution (1280 channels for MobileNetV2) follows torchvision's own
``mobilenet_backbone``, which keeps the whole ``features``.

The layers keep torchvision's names without the ``features.`` prefix, so that an ImageNet state dict loads one to
one (:meth:`TorchvisionBackbone.load_torchvision_weights`). Stages, for ``frozen_stages``, are the layers by
output stride: 0 the stride-2 stem, 1 the layers at stride 4, 2 at 8, 3 at 16, 4 at 32, as ResNet's stem and
``layer1``-``layer4``. ``norm_eval`` keeps every BatchNorm on its running statistics (torchvision's detection
builders use FrozenBatchNorm2d with ImageNet weights for the same reason: batches of a few images give poor
statistics).
"""
from __future__ import annotations

import logging
from collections import OrderedDict

import torch
from torch import Tensor, nn

from ..errors import GfldetError

__all__ = ["TorchvisionBackbone", "TV_BACKBONES"]

log = logging.getLogger(__name__)

# ModelConfig.backbone -> torchvision's model name (get_model / get_model_weights)
TV_BACKBONES: dict[str, str] = {
    "mobilenet_v2": "mobilenet_v2",
    "mobilenet_v3_large": "mobilenet_v3_large",
    "shufflenet_v2_x1_0": "shufflenet_v2_x1_0",
    "efficientnet_b0": "efficientnet_b0",
}
# children of the torchvision network that come after its feature extractor (pooling and classifier)
_HEAD_CHILDREN = frozenset({"avgpool", "classifier", "fc"})


def _layers(net: nn.Module) -> tuple[OrderedDict[str, nn.Module], str]:
    """The feature layers of a torchvision classifier, in order, and the prefix their state-dict names carry."""
    if isinstance(getattr(net, "features", None), nn.Sequential):
        return OrderedDict(net.features.named_children()), "features."
    return OrderedDict((n, m) for n, m in net.named_children() if n not in _HEAD_CHILDREN), ""


class TorchvisionBackbone(nn.Module):
    """A torchvision classification network's feature layers returning C3, C4, C5 (strides 8, 16, 32).

    Args:
        name: a key of :data:`TV_BACKBONES` (``mobilenet_v2``, ``mobilenet_v3_large``, ``shufflenet_v2_x1_0``,
            ``efficientnet_b0``).
        frozen_stages: stages whose parameters are frozen (and whose BatchNorm stays in eval mode): 0 none, 1 the
            stem and the stride-4 layers, up to 4 (everything).
        norm_eval: every BatchNorm normalises with its running statistics and never updates them (ImageNet
            weights); False: ordinary BatchNorm (from scratch).
    """

    def __init__(self, name: str = "mobilenet_v2", frozen_stages: int = 1, norm_eval: bool = True):
        super().__init__()
        if name not in TV_BACKBONES:
            raise GfldetError(f"backbone {name!r} is not one of {sorted(TV_BACKBONES)}")
        from torchvision.models import get_model

        net = get_model(TV_BACKBONES[name], weights=None)
        layers, self._prefix = _layers(net)
        self.name = name
        self.body = nn.Sequential(layers)
        self.stage_of, self.out_indices, self.out_channels = self._stages()
        self.frozen_stages, self.norm_eval = frozen_stages, norm_eval
        for m in self._frozen_modules():
            for p in m.parameters():
                p.requires_grad_(False)

    @torch.no_grad()
    def _stages(self) -> tuple[list[int], list[int], list[int]]:
        """Per layer its stage (log2 of its output stride, minus 1), the indices of the layers that end strides
        8, 16, 32, and their channels: read off one forward pass of a 64x64 image in eval mode."""
        was = self.body.training
        self.body.eval()
        x, size = torch.zeros(1, 3, 64, 64), 64
        stage_of, last, chans = [], {}, {}
        for i, layer in enumerate(self.body):
            x = layer(x)
            stride = size // x.shape[-1]
            stage = max(0, stride.bit_length() - 2)  # stride 2 -> 0, 4 -> 1, 8 -> 2, 16 -> 3, 32 -> 4
            stage_of.append(stage)
            last[stride], chans[stride] = i, int(x.shape[1])
        self.body.train(was)
        if sorted(last) != [2, 4, 8, 16, 32]:
            raise ValueError(f"{self.name}: expected layers at strides 2-32, found strides {sorted(last)}")
        return stage_of, [last[s] for s in (8, 16, 32)], [chans[s] for s in (8, 16, 32)]

    def _frozen_modules(self) -> list[nn.Module]:
        if self.frozen_stages <= 0:
            return []
        return [layer for layer, stage in zip(self.body, self.stage_of) if stage <= self.frozen_stages]

    def train(self, mode: bool = True):  # noqa: D102 - frozen stages and norm_eval keep BatchNorm statistics
        super().train(mode)
        for m in self._frozen_modules():
            m.eval()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = []
        for i, layer in enumerate(self.body):
            x = layer(x)
            if i in self.out_indices:
                feats.append(x)
        return feats

    def load_torchvision_weights(self, state_dict: dict[str, Tensor]) -> None:
        """Load torchvision's ImageNet state dict of this network (its classifier's tensors are dropped)."""
        n = len(self._prefix)
        sd = {k[n:]: v for k, v in state_dict.items() if k.startswith(self._prefix)
              and k[n:].split(".", 1)[0] in self.body._modules}
        try:
            missing, unexpected = self.load_state_dict({f"body.{k}": v for k, v in sd.items()}, strict=False)
        except RuntimeError as e:  # shapes that differ: another network's weights
            raise GfldetError(f"backbone weights do not fit torchvision's {self.name}: {e}") from None
        if missing or unexpected or not sd:
            raise GfldetError(f"backbone weights do not fit torchvision's {self.name}: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}")
