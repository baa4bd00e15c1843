"""Published COCO weights by name: ``load_pretrained("gfl_r50_fpn_1x_coco")``.

:data:`PRETRAINED` lists mmdetection's six GFL checkpoints (``configs/gfl/metafile.yml``: URL, published COCO
val2017 box AP) and GFocalV2's, which are on a file-sharing drive with no stable URL (local file only: download
by hand, pass the path). A named file is downloaded once into torch hub's cache (``torch.hub.get_dir()/
checkpoints``; ``$TORCH_HOME`` moves it) by ``torch.hub.download_url_to_file``, with a progress bar and the SHA-256
prefix in its name checked, then read with ``weights_only=True`` (:func:`gfldet.models.io.from_mmdet`): the
published files hold tensors and plain metadata only, and a file holding anything else is refused, not run.
(``torch.hub.load_state_dict_from_url`` is not used: in torch 2.14 its ``weights_only`` still defaults to False,
and it writes to stdout.)
No network, a damaged file or an unknown name is a :class:`PretrainedError` saying what to do; there is never a
fallback to other weights.
"""
from __future__ import annotations

import http.client
import logging
import os
import urllib.parse
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import GfldetError
from ..files import sha256_file
from .coco_classes import COCO_NAMES
from .detector import GFL
from .io import from_mmdet
from .zoo import ARCHS

__all__ = ["load_pretrained", "pretrained_file", "get_pretrained", "pretrained_names", "cache_folder",
           "PretrainedWeights", "PretrainedError", "PRETRAINED", "COCO_TEST_FIELDS"]

log = logging.getLogger(__name__)


class PretrainedError(GfldetError):
    """Published weights that cannot be had: an unknown name, a local-only entry, no network, a damaged file. A
    :class:`~gfldet.errors.GfldetError` (a ``ValueError``)."""


# How the published AP was measured (mmdetection's test pipeline: keep-ratio resize to 800 x 1333, score > 0.05,
# top 1000 per level, class-aware NMS at IoU 0.6, top 100) is ModelConfig's defaults: the table's models use them.
COCO_TEST_FIELDS = ("min_size", "max_size", "score_thr", "nms_pre", "nms_iou", "max_per_img")


@dataclass(frozen=True)
class PretrainedWeights:
    """One published checkpoint. ``url`` None: no stable URL, ``page`` says where to download it by hand."""

    name: str
    arch: str  # the builder (gfldet.models.zoo.ARCHS) whose backbone it has
    box_ap: float  # published COCO val2017 box AP
    url: str | None
    sha256: str = ""  # prefix of the file's SHA-256 (the hex digits ending its name, as torch hub's check_hash reads)
    page: str = ""  # where the file is published
    dcn_stages: tuple[str, ...] = ()  # ResNet stages with deformable convolutions (mmdetection's stage_with_dcn)
    gfl_version: int = 1  # 2: GFocalV2's distribution-guided quality predictor (DGQP)
    schedule: str = "1x"  # training epochs: 1x = 12, 2x = 24; "ms": multi-scale training

    @property
    def file_name(self) -> str:
        return os.path.basename(urllib.parse.urlparse(self.url).path) if self.url else f"{self.name}.pth"


_MMDET = "https://download.openmmlab.com/mmdetection/v2.0/gfl"
_METAFILE = "https://github.com/open-mmlab/mmdetection/blob/main/configs/gfl/metafile.yml"
_GFOCALV2 = "https://github.com/implus/GFocalV2#models"


def _mmdet(name: str, stamp: str, sha256: str, arch: str, ap: float, schedule: str, dcn=()) -> PretrainedWeights:
    return PretrainedWeights(name, arch, ap, f"{_MMDET}/{name}/{name}_{stamp}-{sha256}.pth", sha256, _METAFILE,
                             dcn, 1, schedule)


def _gfocalv2(name: str, arch: str, ap: float, schedule: str, dcn=()) -> PretrainedWeights:
    return PretrainedWeights(name, arch, ap, None, "", _GFOCALV2, dcn, 2, schedule)


PRETRAINED: dict[str, PretrainedWeights] = {w.name: w for w in [
    # mmdetection configs/gfl/metafile.yml: URL and box AP as published
    _mmdet("gfl_r50_fpn_1x_coco", "20200629_121244", "25944287", "gfl_resnet50_fpn", 40.2, "1x"),
    _mmdet("gfl_r50_fpn_mstrain_2x_coco", "20200629_213802", "37bb1edc", "gfl_resnet50_fpn", 42.9, "2x ms"),
    _mmdet("gfl_r101_fpn_mstrain_2x_coco", "20200629_200126", "dd12f847", "gfl_resnet101_fpn", 44.7, "2x ms"),
    _mmdet("gfl_r101_fpn_dconv_c3-c5_mstrain_2x_coco", "20200630_102002", "134b07df", "gfl_resnet101_fpn", 47.1,
           "2x ms", ("c3", "c4", "c5")),
    _mmdet("gfl_x101_32x4d_fpn_mstrain_2x_coco", "20200630_102002", "50c1ffdb", "gfl_resnext101_32x4d_fpn", 45.9,
           "2x ms"),
    _mmdet("gfl_x101_32x4d_fpn_dconv_c4-c5_mstrain_2x_coco", "20200630_102002", "14a2bf25",
           "gfl_resnext101_32x4d_fpn", 48.1, "2x ms", ("c4", "c5")),
    # implus/GFocalV2 README (AP on minival); Google Drive links only: local file only
    _gfocalv2("gfocal_r50_fpn_1x", "gfl_resnet50_fpn", 41.0, "1x"),
    _gfocalv2("gfocal_r50_fpn_ms2x", "gfl_resnet50_fpn", 43.9, "2x ms"),
    _gfocalv2("gfocal_r101_fpn_ms2x", "gfl_resnet101_fpn", 45.8, "2x ms"),
    _gfocalv2("gfocal_r101_dcn_fpn_ms2x", "gfl_resnet101_fpn", 48.0, "2x ms", ("c3", "c4", "c5")),
    _gfocalv2("gfocal_x101_dcn_fpn_ms2x", "gfl_resnext101_32x4d_fpn", 48.8, "2x ms", ("c4", "c5")),
]}


def pretrained_names() -> list[str]:
    """The names :func:`load_pretrained` knows, in the table's order."""
    return list(PRETRAINED)


def get_pretrained(name: str) -> PretrainedWeights:
    """The table entry of ``name``; a :class:`PretrainedError` listing the known names otherwise."""
    if name not in PRETRAINED:
        raise PretrainedError(f"{name!r} is neither a file nor a name of published weights; known names: "
                              f"{', '.join(PRETRAINED)}")
    return PRETRAINED[name]


def cache_folder() -> str:
    """Where downloaded weights are kept: torch hub's checkpoint folder (``$TORCH_HOME/hub/checkpoints``)."""
    return os.path.join(torch.hub.get_dir(), "checkpoints")


def pretrained_file(name: str, *, progress: bool = True) -> str:
    """The local path of published weights ``name``: from torch hub's cache, or downloaded into it first (with
    a progress bar, SHA-256 checked; a partial or mismatching download is never kept)."""
    w = get_pretrained(name)
    if w.url is None:
        raise PretrainedError(f"{name} (GFocalV2, {w.box_ap} AP) has no stable download URL: download it from "
                              f"{w.page}, then pass the file's path instead of the name (load_pretrained(PATH), "
                              "--weights PATH)")
    folder = cache_folder()
    path = os.path.join(folder, w.file_name)
    if os.path.isfile(path):
        log.debug("%s: using the cached %s", name, path)
        return path
    offline = (f"Download {w.file_name} on a machine with network access and place it in {folder} (torch hub's "
               "cache; $TORCH_HOME moves it), or pass the file's path instead of the name")
    log.info("downloading %s (%s AP) from %s to %s", name, w.box_ap, w.url, path)
    try:
        os.makedirs(folder, exist_ok=True)
        torch.hub.download_url_to_file(w.url, path, hash_prefix=w.sha256 or None, progress=progress)
    except (OSError, http.client.HTTPException) as e:  # URLError, HTTPError, timeouts, an unwritable folder
        raise PretrainedError(f"cannot fetch {name} from {w.url} ({type(e).__name__}: {e}). {offline}") from e
    except RuntimeError as e:  # torch hub's "invalid hash value"
        if "hash" not in str(e):
            raise
        raise PretrainedError(f"{w.file_name} from {w.url} failed its SHA-256 check ({e}); it was not kept. Try "
                              f"again later, or: {offline}") from e
    return path


def load_pretrained(name_or_path: str | os.PathLike, *, progress: bool = True, trusted: bool = False,
                    **settings: Any) -> GFL:
    """A ready :class:`GFL` (eval mode) with published COCO weights: a name of :data:`PRETRAINED` (downloaded once,
    see :func:`pretrained_file`) or the path of an mmdetection / GFocalV2 checkpoint file. The test settings of the
    published AP apply (:class:`ModelConfig`'s defaults, :data:`COCO_TEST_FIELDS`); ``settings`` (input sizes and
    test settings, e.g. ``score_thr=0.3``) replace them through ``GFL.configure``. A model with COCO's 80 classes is labelled with COCO's names.
    ``trusted``: allow full unpickling (only for files you trust; the published ones need not)."""
    text = os.fspath(name_or_path)
    if os.path.isfile(text):
        return _label_coco(from_mmdet(text, trusted=trusted), text, published=False).configure(**settings)
    if text not in PRETRAINED and ("/" in text or os.sep in text or text.endswith((".pth", ".pt"))):
        raise FileNotFoundError(f"weights file not found: {text} (or a name of published weights: "
                                f"{', '.join(PRETRAINED)})")
    w = get_pretrained(text)
    path = pretrained_file(text, progress=progress)
    try:
        model = from_mmdet(path, trusted=trusted)
    except GfldetError as e:
        if w.sha256 and not sha256_file(path).startswith(w.sha256):
            raise PretrainedError(f"{path}: the cached file of {text} is damaged (its SHA-256 does not start with "
                                  f"{w.sha256}): delete it to download it again, or replace it with a good copy of "
                                  f"{w.url}") from e
        raise PretrainedError(f"{text} ({path}): {e}" if path not in str(e) else str(e)) from e
    expected = {**ARCHS[w.arch][0], "quality": "dgqp" if w.gfl_version == 2 else "qfl",
                "stage_with_dcn": tuple(f"c{i}" in w.dcn_stages for i in range(2, 6))}  # c2..c5 = layer1..layer4
    wrong = {k: getattr(model.config, k) for k, v in expected.items() if getattr(model.config, k) != v}
    if wrong:
        raise PretrainedError(f"{path} is not the {w.arch} that {text} names (it has {wrong}): delete it to download "
                              f"it again from {w.url}")
    log.info("loaded %s: %s, published COCO box AP %s", text, w.arch, w.box_ap)
    return _label_coco(model, path, published=True).configure(**settings)


def _label_coco(model: GFL, path: str, published: bool) -> GFL:
    """COCO's names on a model of 80 classes: always for the table's weights (all trained on COCO), for a file
    only where it names no classes of its own."""
    if model.config.num_classes != len(COCO_NAMES):
        return model
    if model.class_names is None or published:
        model.class_names = list(COCO_NAMES)
    elif model.class_names != list(COCO_NAMES):
        log.info("%s: 80 classes with names of its own, kept (not COCO's)", path)
    return model
