"""Make tests/fixtures/nanodet/: the official NanoDet code's preprocessing, raw outputs and detections on random
weights, for tests/models/test_nanodet_parity.py. Recipe and commit: docs/nanodet.md.

Runs in the reference environment (the official code on sys.path, OpenCV 4.10), not in gfldet's:

    /work/nanodet-ref/bin/python tools/make_nanodet_fixtures.py --nanodet /work/nanodet-src --out tests/fixtures/nanodet

Weights: every conv weight is drawn N(0, gain / sqrt(fan_in)) and rounded to int8 times a power of two (stored as
int8 + exponent: exact in float32, a quarter of the size); BatchNorm weights and biases are drawn, its running
statistics measured on the fixture images (one pass in training mode) and then perturbed; the class biases are
set so that a few hundred (prior, class) pairs per image pass the 0.05 threshold, and redrawn until the official
detections do not change when the score threshold moves by 1e-5 or the NMS IoU by 1e-3 (so that float32 noise of
another machine cannot flip a box). The fixture stores the weights that were run, not this recipe.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

CONFIGS = {  # fixture name -> official config
    "nanodet-plus-m_320": "config/nanodet-plus-m_320.yml",
    "nanodet-plus-m-1.5x_320": "config/nanodet-plus-m-1.5x_320.yml",
    "nanodet-m": "config/legacy_v0.x_configs/nanodet-m.yml",
}
RAW_IMAGES = {"nanodet-plus-m_320": 2, "nanodet-plus-m-1.5x_320": 1, "nanodet-m": 1}  # images whose raw output is kept
IMAGE_SIZES = [(240, 320), (300, 200), (150, 200)]  # (h, w): landscape, portrait, small (upscaled)
TARGET_CANDIDATES = 130  # mean (prior, class) pairs above 0.05 per image
SCORE_DELTA, IOU_DELTA = 1e-5, 1e-3


def synthetic_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A BGR uint8 image: a colour gradient, a dozen filled rectangles and ellipses, noise."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack([xx / w * 200 + 20, yy / h * 180 + 40, (xx + yy) / (h + w) * 150 + 60], -1)
    for _ in range(12):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(8, h / 3), rng.uniform(8, w / 3)
        colour = rng.uniform(0, 255, 3)
        if rng.random() < 0.5:
            mask = (np.abs(yy - cy) < ry) & (np.abs(xx - cx) < rx)
        else:
            mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        base[mask] = colour
    base += rng.normal(0, 8, base.shape)
    return np.clip(np.rint(base), 0, 255).astype(np.uint8)


def quantise(w: torch.Tensor, std: float) -> tuple[torch.Tensor, int]:
    """``w`` as int8 ``q`` and exponent ``e`` with ``q * 2**e`` (exact in float32) close to it."""
    e = math.ceil(math.log2(4 * std / 127))
    q = torch.clamp(torch.round(w / 2.0 ** e), -127, 127).to(torch.int8)
    return q, e


def draw_conv(name: str, m: torch.nn.Conv2d, gen: torch.Generator, packed: dict) -> None:
    """Conv ``m``'s weight N(0, gain / sqrt(fan_in)) rounded to int8 times a power of two (packed into ``packed``
    under ``name.weight``), its bias N(0, 0.1)."""
    fan_in = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
    std = math.sqrt(2 / (1 + 0.1 ** 2)) / math.sqrt(fan_in)
    q, e = quantise(torch.randn(m.weight.shape, generator=gen) * std, std)
    m.weight.data = q.float() * 2.0 ** e
    packed[name + ".weight"] = {"q": q, "e": e}
    if m.bias is not None:
        m.bias.data = torch.randn(m.bias.shape, generator=gen) * 0.1


def randomise(model: torch.nn.Module, calib: torch.Tensor, gen: torch.Generator) -> dict:
    """Fan-in scaled int8 conv weights, random BN affine, BN statistics measured on ``calib`` then perturbed.
    Returns the packed state (int8 + exponents for conv weights)."""
    packed = {}
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Conv2d):
            draw_conv(name, m, gen, packed)
        elif isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data = torch.rand(m.weight.shape, generator=gen) + 0.5
            m.bias.data = torch.randn(m.bias.shape, generator=gen) * 0.2
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration pass
    model.train()
    with torch.no_grad():
        model(calib)
    model.eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.1
            var = m.running_var * (torch.rand(m.running_var.shape, generator=gen) * 0.6 + 0.8)
            m.running_mean += torch.randn(m.running_mean.shape, generator=gen) * 0.1 * var.sqrt()
            m.running_var.copy_(var)
    return packed


def pack_state(model: torch.nn.Module, packed_convs: dict) -> dict:
    out = {}
    for k, v in model.state_dict().items():
        if k.startswith(("aux_fpn.", "aux_head.")):
            continue  # training-only branch: not run at inference (its names are kept in official_keys)
        out[k] = packed_convs[k] if k in packed_convs else v.clone()
    return out


def official_run(model, head, pipeline, images, input_size, stack_batch_img, naive_collate):
    metas = []
    for i, img in enumerate(images):
        info = {"id": i, "file_name": None, "height": img.shape[0], "width": img.shape[1]}
        meta = pipeline(None, dict(img_info=info, raw_img=img, img=img), input_size)
        meta["img"] = torch.from_numpy(meta["img"].transpose(2, 0, 1))
        metas.append(meta)
    meta = naive_collate(metas)
    meta["img"] = stack_batch_img(meta["img"], divisible=32)
    with torch.no_grad():
        preds = model(meta["img"])
    return meta, preds


def nms_results(head, preds, meta, nms_module, thr=0.05, iou=0.6, max_num=100):
    """The official get_bboxes with the score threshold / IoU / max_num replaced (for the robustness check)."""
    orig = nms_module.multiclass_nms

    def patched(bboxes, scores, score_thr, nms_cfg, **_):
        return orig(bboxes, scores, thr, dict(type="nms", iou_threshold=iou), max_num)

    nms_module.multiclass_nms = patched
    try:
        cls, reg = preds.split([head.num_classes, 4 * (head.reg_max + 1)], dim=-1)
        return head.get_bboxes(cls, reg, meta)
    finally:
        nms_module.multiclass_nms = orig


def same(a, b) -> bool:
    return a[0].shape == b[0].shape and torch.equal(a[1], b[1]) and torch.allclose(a[0], b[0], atol=1e-3)


def robust(head, preds, meta, nms_module) -> bool:
    ref = nms_results(head, preds, meta, nms_module)
    for thr, iou in ((0.05 - SCORE_DELTA, 0.6), (0.05 + SCORE_DELTA, 0.6), (0.05, 0.6 - IOU_DELTA),
                     (0.05, 0.6 + IOU_DELTA)):
        if not all(same(a, b) for a, b in zip(ref, nms_results(head, preds, meta, nms_module, thr, iou))):
            return False
    for dets, _ in nms_results(head, preds, meta, nms_module, max_num=101):  # the 100th and 101st box apart
        if dets.shape[0] > 100 and dets[99, 4] - dets[100, 4] < SCORE_DELTA:
            return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nanodet", type=Path, required=True, help="checkout of RangiLyu/nanodet (patched collate.py)")
    ap.add_argument("--out", type=Path, default=Path("tests/fixtures/nanodet"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    sys.path.insert(0, str(args.nanodet))
    import cv2
    import nanodet.model.head.gfl_head as gfl_head_module
    import nanodet.model.head.nanodet_plus_head as plus_head_module
    from nanodet.data.batch_process import stack_batch_img
    from nanodet.data.collate import naive_collate
    from nanodet.data.transform import Pipeline
    from nanodet.data.transform.color import _normalize
    from nanodet.data.transform.warp import ShapeTransform
    from nanodet.model.arch import build_model
    from nanodet.util.config import cfg as base_cfg

    torch.set_num_threads(1)  # the fixture does not depend on the thread count
    commit = subprocess.run(["git", "-C", str(args.nanodet), "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or (args.nanodet / "COMMIT").read_text().strip()
    rng = np.random.default_rng(args.seed)
    images = [synthetic_image(rng, h, w) for h, w in IMAGE_SIZES]
    args.out.mkdir(parents=True, exist_ok=True)

    # warp cases: small images, many sizes, both resize modes
    warp_cases = []
    for t in range(24):
        h, w = (int(v) for v in rng.integers(3, 48, size=2))
        dst = (int(rng.integers(8, 64)), int(rng.integers(8, 64)))
        img = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        meta = ShapeTransform(bool(t % 2))({"img": img}, dst)
        warp_cases.append({"src": torch.from_numpy(img), "dst_size": dst, "keep_ratio": bool(t % 2),
                           "out": torch.from_numpy(meta["img"]), "matrix": torch.from_numpy(meta["warp_matrix"])})
    mean, std = [[103.53, 116.28, 123.675], [57.375, 57.12, 58.395]]
    lut = _normalize(np.repeat(np.arange(256, dtype=np.uint8)[:, None, None], 3, axis=2).astype(np.float32) / 255,
                     mean, std)[:, 0, :]  # (256, 3): the official value of every uint8 level per BGR channel
    common = {"commit": commit, "opencv": cv2.__version__, "torch": str(torch.__version__),
              "images_bgr": [torch.from_numpy(im) for im in images], "warp_cases": warp_cases,
              "normalize_lut": torch.from_numpy(np.ascontiguousarray(lut)), "mean": mean, "std": std}
    common["warped"] = {}

    for k, (name, cfg_path) in enumerate(CONFIGS.items()):
        cfg = base_cfg.clone()
        cfg.defrost()
        cfg.merge_from_file(str(args.nanodet / cfg_path))
        cfg.model.arch.backbone.pretrain = False
        with contextlib.redirect_stdout(io.StringIO()):
            model = build_model(cfg.model).eval()
        official_keys = [(key, list(v.shape)) for key, v in model.state_dict().items()]
        head = model.head
        nms_module = plus_head_module if name.startswith("nanodet-plus") else gfl_head_module
        input_size = tuple(cfg.data.val.input_size)
        pipeline = Pipeline(cfg.data.val.pipeline, cfg.data.val.keep_ratio)
        gen = torch.Generator().manual_seed(1000 * args.seed + k)
        meta, _ = official_run(model, head, pipeline, images, input_size, stack_batch_img, naive_collate)
        calib = torch.cat([meta["img"], torch.randn(2, *meta["img"].shape[1:], generator=gen)])
        packed = randomise(model, calib, gen)
        cls_bias = [m.bias for m in head.gfl_cls]
        for b in cls_bias:
            b.data[:head.num_classes] = 0
        _, preds0 = official_run(model, head, pipeline, images, input_size, stack_batch_img, naive_collate)
        logits = preds0[..., :head.num_classes]
        draws = 0
        while True:
            draws += 1
            if draws > 100:
                raise SystemExit(f"{name}: no robust class bias in 100 draws")
            noise = torch.randn(head.num_classes, generator=gen) * 0.5
            lo, hi = -30.0, 30.0
            for _ in range(60):  # the base bias that gives TARGET_CANDIDATES pairs per image on average
                base = (lo + hi) / 2
                n = ((logits + base + noise).sigmoid() > 0.05).sum().item() / len(images)
                lo, hi = (base, hi) if n < TARGET_CANDIDATES else (lo, base)
            for b in cls_bias:
                b.data[:head.num_classes] = base + noise
            meta, preds = official_run(model, head, pipeline, images, input_size, stack_batch_img, naive_collate)
            if robust(head, preds, meta, nms_module):
                break
        results = head.post_process(preds, meta)
        nms = nms_results(head, preds, meta, nms_module)
        final = []
        for i in range(len(images)):
            rows = [[*box, c] for c in range(head.num_classes) for box in results[i][c]]
            final.append(torch.tensor(rows, dtype=torch.float32).reshape(-1, 6))
        # the per-class NMS path (>= 10,000 candidates): image 0 with every class logit raised
        dense_shift = 0.0
        while ((preds[0, :, :head.num_classes] + dense_shift).sigmoid() > 0.05).sum() < 12000:
            dense_shift += 0.25
        dense_preds = preds.clone()
        dense_preds[..., :head.num_classes] += dense_shift
        dense = nms_results(head, dense_preds, meta, nms_module)[0]
        pipe = f"{'keep_ratio' if cfg.data.val.keep_ratio else 'stretch'}_{input_size[0]}x{input_size[1]}"
        if pipe not in common["warped"]:  # the warped uint8 images of each val pipeline, once
            common["warped"][pipe] = []
            for img in images:
                m = ShapeTransform(cfg.data.val.keep_ratio)({"img": img}, input_size)
                common["warped"][pipe].append({"img": torch.from_numpy(m["img"]),
                                               "matrix": torch.from_numpy(m["warp_matrix"])})
        batch = meta["img"].double()
        fixture = {
            "name": name, "config": cfg_path, "input_size": list(input_size), "keep_ratio": bool(cfg.data.val.keep_ratio),
            "num_classes": head.num_classes, "state": pack_state(model, packed), "official_keys": official_keys,
            "pipeline": pipe, "batch_shape": list(meta["img"].shape), "batch_sum": batch.sum().item(),
            "batch_abs_sum": batch.abs().sum().item(), "batch_corner": meta["img"][:, :, -3:, -3:].clone(),
            "raw": preds[:RAW_IMAGES[name]].clone(), "raw_images": RAW_IMAGES[name],
            "nms_dets": [d for d, _ in nms], "nms_labels": [lab for _, lab in nms], "final": final,
            "candidates": [int((preds[i, :, :head.num_classes].sigmoid() > 0.05).sum()) for i in range(len(images))],
            "class_bias_draws": draws,
            "dense_shift": dense_shift, "dense_dets": dense[0], "dense_labels": dense[1],
            "dense_candidates": int((dense_preds[0, :, :head.num_classes].sigmoid() > 0.05).sum()),
        }
        torch.save(fixture, args.out / f"{name}.pt")
        print(name, "candidates", fixture["candidates"], "detections", [d.shape[0] for d in fixture["nms_dets"]],
              "draws", draws, "dense", fixture["dense_candidates"], dense[0].shape[0])
    torch.save(common, args.out / "common.pt")


if __name__ == "__main__":
    main()
