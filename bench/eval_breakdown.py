"""Eval-time breakdown of GFL R-50-FPN on CPU: backbone+FPN / head / decode+NMS / total.

Model: ``gfl_resnet50_fpn(num_classes=80, min_size=None, max_size=None)``, random init (no weights are
downloaded), eval mode, ``torch.inference_mode()``, one 640x640 uint8 image (no resize; 640 is a multiple of
the size divisor, so no padding either).

Parts, each timed on its own (``--warmup`` untimed calls, then ``--repeats`` timed, min and median):
  preprocess    ``model.preprocess([img])`` (normalise, pad)
  backbone+FPN  ``model.neck(model.backbone(batch))``
  head          ``model.head(feats)``
  decode+NMS    ``model.decode(cls_logits, reg_logits, image_sizes)``
  total         ``model([img])`` end to end (timed separately, not the sum of the parts)

A randomly initialised head scores every (anchor, class) at sigmoid(-4.6) = 0.01 < score_thr 0.05, so
decode+NMS then has nothing to do. Two loaded variants are timed as well:
  bias 0        ``head.gfl_cls.bias`` set to 0 (scores ~0.5: every pair passes the threshold, nms_pre keeps
                1000 per level, i.e. ~5000 boxes enter NMS) and ``head.gfl_reg.weight`` re-drawn with a larger
                std so that box sizes vary; the end-to-end total of that model is timed too.
  ~1000/level   the bias-0 head outputs shifted per level so that about 1000 (anchor, class) pairs per
                level pass score_thr (closer to a trained model on a busy image: the per-level sort is small).

Run:  cd /work/main && PYTHONPATH=. /work/venv/bin/python bench/eval_breakdown.py [--repeats 7]
"""
from __future__ import annotations

import argparse
import math

import torch
from torch import nn

from _util import fmt_ms, load_average, machine_info, markdown_table, time_fn


def count_load(model, cls_logits, image_sizes) -> dict:
    """Pairs above score_thr per level, boxes entering NMS, detections out."""
    cfg = model.config
    passing = [int((c.float().sigmoid() > cfg.score_thr).sum()) for c in cls_logits]
    into_nms = sum(min(p, cfg.nms_pre) for p in passing)
    return {"passing": passing, "into_nms": into_nms}


def shift_to_count(cls_logits, target: int, thr: float):
    """Shift each level's logits so that about ``target`` entries exceed ``logit(thr)``."""
    out = []
    cut = math.log(thr / (1 - thr))
    for c in cls_logits:
        flat = c.flatten()
        k = min(target, flat.numel())
        kth = flat.topk(k).values[-1]
        # entries >= kth pass; put the threshold just below the k-th largest
        out.append(c - kth + cut + 1e-4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=7, help="timed calls per part")
    ap.add_argument("--warmup", type=int, default=1, help="untimed calls before the timed ones")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--size", type=int, default=640, help="square input side")
    args = ap.parse_args()

    from gfldet.models.zoo import gfl_resnet50_fpn

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(machine_info())
    model = gfl_resnet50_fpn(num_classes=80, min_size=None, max_size=None).eval()
    img = torch.randint(0, 256, (3, args.size, args.size), dtype=torch.uint8)
    r, w = args.repeats, args.warmup
    print(f"input 1 x 3 x {args.size} x {args.size}, warm-up {w}, repeats {r}\n")

    t: dict[str, object] = {}
    with torch.inference_mode():
        batch, meta = model.preprocess([img])
        feats = model.neck(model.backbone(batch))
        cls_logits, reg_logits = model.head(feats)
        print("feature maps", [tuple(f.shape[-2:]) for f in feats], "batch", tuple(batch.shape))

        t["preprocess"] = time_fn(lambda: model.preprocess([img]), r, w)
        t["backbone+FPN"] = time_fn(lambda: model.neck(model.backbone(batch)), r, w)
        t["head"] = time_fn(lambda: model.head(feats), r, w)
        t["decode+NMS"] = time_fn(lambda: model.decode(cls_logits, reg_logits, meta.image_sizes), r, w)
        t["total"] = time_fn(lambda: model([img]), r, w)
        load0 = count_load(model, cls_logits, meta.image_sizes)
        ndet0 = model.decode(cls_logits, reg_logits, meta.image_sizes)[0]["boxes"].shape[0]
        for k, v in t.items():
            print(f"  {k:14s} {v}", flush=True)

        # Loaded decode: classifier bias 0 (all scores ~0.5), regressor weights with a larger spread.
        model.head.gfl_cls.bias.data.fill_(0.0)
        nn.init.normal_(model.head.gfl_reg.weight, std=0.1)
        cls_b, reg_b = model.head(feats)
        load_b = count_load(model, cls_b, meta.image_sizes)
        ndet_b = model.decode(cls_b, reg_b, meta.image_sizes)[0]["boxes"].shape[0]
        t["decode+NMS, bias 0"] = time_fn(lambda: model.decode(cls_b, reg_b, meta.image_sizes), r, w)
        t["total, bias 0"] = time_fn(lambda: model([img]), r, w)
        cls_k = shift_to_count(cls_b, 1000, model.config.score_thr)
        load_k = count_load(model, cls_k, meta.image_sizes)
        ndet_k = model.decode(cls_k, reg_b, meta.image_sizes)[0]["boxes"].shape[0]
        t["decode+NMS, ~1000/level"] = time_fn(lambda: model.decode(cls_k, reg_b, meta.image_sizes), r, w)
        for k in ("decode+NMS, bias 0", "total, bias 0", "decode+NMS, ~1000/level"):
            print(f"  {k:24s} {t[k]}", flush=True)

    total = t["total"].median
    parts = ["preprocess", "backbone+FPN", "head", "decode+NMS"]
    rows = [[p, fmt_ms(t[p].min), fmt_ms(t[p].median), f"{100 * t[p].median / total:.1f}%"] for p in parts]
    s_min = sum(t[p].min for p in parts)
    s_med = sum(t[p].median for p in parts)
    rows.append(["sum of parts", fmt_ms(s_min), fmt_ms(s_med), f"{100 * s_med / total:.1f}%"])
    rows.append(["total (model([img]))", fmt_ms(t["total"].min), fmt_ms(total), "100.0%"])
    print(f"\nRandom-init model: {load0['passing']} pairs above score_thr per level, {ndet0} detections\n")
    print(markdown_table(["part", "min ms", "median ms", "share of total (median)"], rows))

    total_b = t["total, bias 0"].median
    rows = [
        ["decode+NMS, bias 0", fmt_ms(t["decode+NMS, bias 0"].min), fmt_ms(t["decode+NMS, bias 0"].median),
         f"{100 * t['decode+NMS, bias 0'].median / total_b:.1f}%", load_b["passing"], load_b["into_nms"], ndet_b],
        ["decode+NMS, ~1000/level", fmt_ms(t["decode+NMS, ~1000/level"].min),
         fmt_ms(t["decode+NMS, ~1000/level"].median),
         f"{100 * t['decode+NMS, ~1000/level'].median / total_b:.1f}%", load_k["passing"], load_k["into_nms"], ndet_k],
        ["total (model([img])), bias 0", fmt_ms(t["total, bias 0"].min), fmt_ms(total_b), "100.0%", "", "", ""],
    ]
    print("\nLoaded decode (share: of the bias-0 model's end-to-end median)\n")
    print(markdown_table(["part", "min ms", "median ms", "share of total", "pairs > score_thr per level",
                          "boxes into NMS", "detections"], rows))
    print(f"\n{load_average()} at the end")


if __name__ == "__main__":
    main()
