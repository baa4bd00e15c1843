"""Does GFL's learned edge uncertainty track the real localisation error? Measured on the demo's data.

    python bench/uncertainty.py --checkpoint runs/demo/last.pt      # a model trained by `gfldet demo`
    python bench/uncertainty.py                                     # trains one first (the demo, ~10 min)

A fresh split of the demo's synthetic data (other seed than training and validation; objects with sharp
edges next to blurred, faded and occluded ones, each edge flagged ambiguous or not by the generator) is run
through the model; every ground truth matched by a detection (IoU >= 0.5, same class) contributes its four
edges: predicted ``edge_std`` (px), entropy, and the real abs edge error (px). Printed: rank correlations of
uncertainty with error (all edges, sharp only, ambiguous only), mean uncertainty and error of sharp and of
ambiguous edges, how well ``edge_std`` separates ambiguous from sharp edges (ROC AUC), and box level:
``loc_conf`` against the box's IoU beside the classification score against IoU.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _util import load_average, machine_info, markdown_table  # noqa: E402

from gfldet.analysis import edge_records, uncertainty_report  # noqa: E402
from gfldet.data.synthetic import write_coco  # noqa: E402
from gfldet.demo import detect, load_split, run_demo  # noqa: E402
from gfldet.models.io import load_model  # noqa: E402


def _f(v, digits=3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--images", type=int, default=200, help="images in the fresh test split")
    ap.add_argument("--seed", type=int, default=777)
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.checkpoint
        if ckpt is None:
            ckpt = run_demo(os.path.join(tmp, "demo"), progress=False)["paths"]["out_dir"] + "/last.pt"
        model = load_model(ckpt).optimize_for_cpu()
        ann = write_coco(os.path.join(tmp, "test"), args.images, args.seed, (args.size, args.size), model.config.num_classes)
        samples = load_split(ann, os.path.join(tmp, "test"))
        with torch.inference_mode():
            dets = detect(model, samples, torch.device("cpu"))
    rec = edge_records(dets, samples)
    r = uncertainty_report(rec)
    print(machine_info())
    print(f"checkpoint: {ckpt}; test split: {args.images} images of {args.size}x{args.size}, seed {args.seed}; {load_average()}")
    print(f"matched boxes: {r['matched_boxes']} of {sum(len(s['boxes']) for s in samples)} ground truths; "
          f"edges: {r['edges']} ({r['ambiguous_edges']} ambiguous)\n")
    print(markdown_table(["relation", "value"], [
        ["Spearman(edge_std, abs edge error), all edges", _f(r["spearman_std_vs_err"])],
        ["Spearman(edge entropy, abs edge error), all edges", _f(r["spearman_entropy_vs_err"])],
        ["Spearman(edge_std / box extent, abs edge error / box extent)", _f(r["spearman_rel_std_vs_rel_err"])],
        ["Spearman(edge_std, abs edge error), sharp edges", _f(r["spearman_std_vs_err_sharp"])],
        ["Spearman(edge_std, abs edge error), ambiguous edges", _f(r["spearman_std_vs_err_ambiguous"])],
        ["ROC AUC of edge_std: ambiguous vs sharp edges", _f(r["auc_std_ambiguous_vs_sharp"])],
        ["Spearman(loc_conf, box IoU)", _f(r["spearman_loc_conf_vs_iou"])],
        ["Spearman(class score, box IoU) (for comparison)", _f(r["spearman_score_vs_iou"])],
    ]))
    print()
    print(markdown_table(["edges", "mean edge_std px", "mean abs error px", "median abs error px"], [
        ["sharp", _f(r["mean_std_px_sharp"], 2), _f(r["mean_err_px_sharp"], 2), _f(r["median_err_px_sharp"], 2)],
        ["ambiguous (blurred, faded, occluded)", _f(r["mean_std_px_ambiguous"], 2), _f(r["mean_err_px_ambiguous"], 2),
         _f(r["median_err_px_ambiguous"], 2)],
    ]))


if __name__ == "__main__":
    main()
