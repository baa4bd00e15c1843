"""Eval-time breakdown of GFL R-50-FPN on CPU: backbone+FPN / head / decode+NMS / total.

Model: ``gfl_resnet50_fpn(num_classes=80, min_size=None, max_size=None)``, random init (no weights are
downloaded), eval mode, ``torch.inference_mode()``, one 640x640 uint8 image (no resize; 640 is a multiple of
the size divisor, so no padding either).

Parts, each timed on its own, all in interleaved rounds (``--warmup`` untimed rounds, then ``--repeats``
timed rounds in which every part runs once, a cheap part several times to about ``--min-time`` seconds;
min and median of the wall clock, min of the process CPU time of both threads):
  preprocess    ``model.preprocess([img])`` (normalise, pad)
  backbone+FPN  ``model.neck(model.backbone(batch))``
  head          ``model.head(feats)``
  decode+NMS    ``model.decode(cls_logits, reg_outputs, image_sizes)``
  total         ``model([img])`` end to end (timed separately, not the sum of the parts)
and, as a same-machine yardstick, torchvision's ``resnet_fpn_backbone("resnet50")`` with P3-P7 outputs (the
same network as gfldet's backbone+FPN) on the same batch.

A randomly initialised head scores every (anchor, class) at sigmoid(-4.6) = 0.01 < score_thr 0.05, so
decode+NMS then has nothing to do. Two loaded variants are timed as well:
  bias 0        a copy of the model with ``head.gfl_cls.bias`` set to 0 (scores ~0.5: every pair passes the threshold, nms_pre keeps
                1000 per level, i.e. ~5000 boxes enter NMS) and ``head.gfl_reg.weight`` re-drawn with a larger
                std so that box sizes vary; the end-to-end total of that model is timed too.
  ~1000/level   the bias-0 head outputs shifted per level so that about 1000 (anchor, class) pairs per
                level pass score_thr (closer to a trained model on a busy image: the per-level sort is small).

Run:  cd /work/main && PYTHONPATH=. /work/venv/bin/python bench/eval_breakdown.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import copy
import math

import torch
from torch import nn

from _util import fmt_ms, load_average, machine_info, markdown_table, time_interleaved


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
    ap.add_argument("--repeats", type=int, default=5, help="timed rounds (each part once or more per round)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed calls before the timed ones")
    ap.add_argument("--min-time", type=float, default=1.0,
                    help="a cheap part runs several times per round, to about this many seconds in all")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--size", type=int, default=640, help="square input side")
    ap.add_argument("--no-torchvision", action="store_true",
                    help="skip the same-machine comparison with torchvision's ResNet-50 FPN (P3-P7) backbone")
    args = ap.parse_args()

    from gfldet.models.zoo import gfl_resnet50_fpn

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(machine_info())
    model = gfl_resnet50_fpn(num_classes=80, min_size=None, max_size=None).optimize_for_cpu().eval()
    img = torch.randint(0, 256, (3, args.size, args.size), dtype=torch.uint8)
    r, w, mt = args.repeats, args.warmup, args.min_time
    print(f"input 1 x 3 x {args.size} x {args.size}, warm-up {w} round(s), {r} timed rounds, interleaved; cheap parts "
          f"repeated within a round to ~{mt:g} s\n")

    with torch.inference_mode():
        batch, meta = model.preprocess([img])
        feats = model.neck(model.backbone(batch))
        cls_logits, reg_outputs = model.head(feats)
        print("feature maps", [tuple(f.shape[-2:]) for f in feats], "batch", tuple(batch.shape))
        load0 = count_load(model, cls_logits, meta.image_sizes)
        ndet0 = model.decode(cls_logits, reg_outputs, meta.image_sizes)[0]["boxes"].shape[0]

        # Loaded decode: a copy with classifier bias 0 (all scores ~0.5) and regressor weights with a larger
        # spread (varied box sizes); and the same outputs shifted to ~1000 passing pairs per level.
        model_b = copy.deepcopy(model)
        model_b.head.gfl_cls.bias.data.fill_(0.0)
        nn.init.normal_(model_b.head.gfl_reg.weight, std=0.1)
        cls_b, reg_b = model_b.head(feats)
        load_b = count_load(model_b, cls_b, meta.image_sizes)
        ndet_b = model_b.decode(cls_b, reg_b, meta.image_sizes)[0]["boxes"].shape[0]
        cls_k = shift_to_count(cls_b, 1000, model.config.score_thr)
        load_k = count_load(model_b, cls_k, meta.image_sizes)
        ndet_k = model_b.decode(cls_k, reg_b, meta.image_sizes)[0]["boxes"].shape[0]

        cells = {
            "preprocess": (lambda: model.preprocess([img]), None),
            "backbone+FPN": (lambda: model.neck(model.backbone(batch)), None),
            "head": (lambda: model.head(feats), None),
            "decode+NMS": (lambda: model.decode(cls_logits, reg_outputs, meta.image_sizes), None),
            "total": (lambda: model([img]), None),
            "decode+NMS, bias 0": (lambda: model_b.decode(cls_b, reg_b, meta.image_sizes), None),
            "total, bias 0": (lambda: model_b([img]), None),
            "decode+NMS, ~1000/level": (lambda: model_b.decode(cls_k, reg_b, meta.image_sizes), None),
        }
        if not args.no_torchvision:
            # The same network as gfldet's backbone+FPN (ResNet-50 C3-C5, FPN P3-P5 + P6/P7 convs on P5),
            # built by torchvision (FrozenBatchNorm2d), random init: a same-machine yardstick.
            from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
            from torchvision.ops.feature_pyramid_network import LastLevelP6P7

            tv_net = resnet_fpn_backbone(backbone_name="resnet50", weights=None, trainable_layers=3,
                                         returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256)).eval()
            cells["torchvision R50-FPN"] = (lambda: tv_net(batch), None)
        # Interleaved rounds: every part once per round (cheap parts several times), so that load from other
        # processes on a shared machine spreads over all parts alike.
        t = time_interleaved(cells, repeats=r, warmup=w, min_time=mt,
                             progress=lambda msg: print(f"  timing: {msg} ({load_average()})", flush=True))
        for k, v in t.items():
            print(f"  {k:24s} {v}", flush=True)
        tv = t.get("torchvision R50-FPN")

    total = t["total"].median
    parts = ["preprocess", "backbone+FPN", "head", "decode+NMS"]
    total_min = t["total"].min
    rows = [[p, fmt_ms(t[p].min), fmt_ms(t[p].median), fmt_ms(t[p].cpu_min), f"{100 * t[p].min / total_min:.1f}%",
             f"{100 * t[p].median / total:.1f}%"] for p in parts]
    s_min = sum(t[p].min for p in parts)
    s_med = sum(t[p].median for p in parts)
    s_cpu = sum(t[p].cpu_min for p in parts)
    rows.append(["sum of parts", fmt_ms(s_min), fmt_ms(s_med), fmt_ms(s_cpu), f"{100 * s_min / total_min:.1f}%",
                 f"{100 * s_med / total:.1f}%"])
    rows.append(["total (model([img]))", fmt_ms(total_min), fmt_ms(total), fmt_ms(t["total"].cpu_min), "100.0%", "100.0%"])
    print(f"\nRandom-init model: {load0['passing']} pairs above score_thr per level, {ndet0} detections\n")
    print(markdown_table(["part", "wall min ms", "wall median ms", "CPU min ms", "share (min)", "share (median)"], rows))
    if tv is not None:
        print("\nSame-machine yardstick (same input batch)\n")
        print(markdown_table(
            ["network", "wall min ms", "wall median ms", "CPU min ms", "vs gfldet backbone+FPN (min)"],
            [["gfldet backbone+FPN", fmt_ms(t["backbone+FPN"].min), fmt_ms(t["backbone+FPN"].median),
              fmt_ms(t["backbone+FPN"].cpu_min), "1.00"],
             ["torchvision resnet_fpn_backbone R-50, P3-P7", fmt_ms(tv.min), fmt_ms(tv.median), fmt_ms(tv.cpu_min),
              f"{tv.min / t['backbone+FPN'].min:.2f}"]]))

    tb = t["total, bias 0"]
    rows = []
    for name, load, ndet in (("decode+NMS, random init", load0, ndet0), ("decode+NMS, bias 0", load_b, ndet_b),
                             ("decode+NMS, ~1000/level", load_k, ndet_k)):
        tm = t[name] if name in t else t["decode+NMS"]
        rows.append([name, fmt_ms(tm.min), fmt_ms(tm.median), fmt_ms(tm.cpu_min), f"{100 * tm.min / tb.min:.1f}%",
                     " ".join(map(str, load["passing"])), load["into_nms"], ndet])
    rows.append(["total (model([img])), bias 0", fmt_ms(tb.min), fmt_ms(tb.median), fmt_ms(tb.cpu_min), "100.0%", "", "", ""])
    print("\nDecode+NMS under load (share: of the bias-0 model's end-to-end minimum)\n")
    print(markdown_table(["part", "wall min ms", "wall median ms", "CPU min ms", "share (min)",
                          "pairs > score_thr, P3..P7", "boxes into NMS", "detections"], rows))
    print(f"\n{load_average()} at the end")


if __name__ == "__main__":
    main()
