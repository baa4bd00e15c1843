"""Record, or compare against a record, what a set of detectors compute on fixed inputs: eval detections, training
losses and every parameter's gradient. For refactors that must not change behaviour (same machine, same torch).

    python bench/snapshot.py save before.pt        # on the old code
    python bench/snapshot.py compare before.pt     # on the new code: prints a table, exit 1 unless bit-identical

Models: gfl_resnet50_fpn (seeded weights, eval + train), and each ablation variant on a ResNet-18 with narrow towers.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import gfldet  # noqa: E402
from tests._seeded import random_gts, seeded_init_  # noqa: E402

SIZES = ((3, 200, 300), (3, 256, 192))
VARIANTS = {
    "gfl_r50": dict(arch="gfl_resnet50_fpn"),
    "atss": dict(quality="centerness", box="dirac"),
    "iou_gaussian": dict(quality="iou", box="gaussian"),
    "none_delta2": dict(quality="none", bin_width=2.0, reg_max=8),
    "fcos_qfl": dict(assigner="fcos"),
    "retina": dict(assigner="retina", anchor_ratios=(0.5, 1.0, 2.0), scales_per_octave=3),
}


def build(name: str, spec: dict) -> torch.nn.Module:
    spec = dict(spec)
    arch = spec.pop("arch", "gfl_resnet18_fpn")
    kw = dict(num_classes=5, min_size=224, max_size=320)
    if arch == "gfl_resnet18_fpn":
        kw.update(fpn_channels=64, head_channels=64, stacked_convs=2, gn_groups=16)
    torch.manual_seed(0)
    model = getattr(gfldet, arch)(**kw, **spec)
    return seeded_init_(model, 1).optimize_for_cpu()  # the path the CPU commands run


def record() -> dict[str, torch.Tensor]:
    torch.use_deterministic_algorithms(True)
    g = torch.Generator().manual_seed(3)
    images = [torch.randint(0, 256, s, generator=g, dtype=torch.uint8) for s in SIZES]
    targets = []
    for i, (_, h, w) in enumerate(SIZES):
        boxes, labels = random_gts(4 + i, h, w, 5, seed=10 + i)
        targets.append({"boxes": boxes, "labels": labels})
    out: dict[str, torch.Tensor] = {}
    for name, spec in VARIANTS.items():
        model = build(name, spec)
        model.eval()
        with torch.no_grad():
            dets = model(images)
        for i, d in enumerate(dets):
            for k, v in sorted(d.items()):
                out[f"{name}/eval/{i}/{k}"] = v.detach().clone()
        model.train()
        losses = model(images, targets)
        for k, v in sorted(losses.items()):
            out[f"{name}/train/{k}"] = v.detach().clone()
        sum(losses.values()).backward()
        for pname, p in model.named_parameters():
            if p.grad is not None:
                out[f"{name}/grad/{pname}"] = p.grad.detach().clone()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=("save", "compare"))
    ap.add_argument("file")
    args = ap.parse_args()
    now = record()
    if args.mode == "save":
        torch.save(now, args.file)
        print(f"saved {len(now)} tensors to {args.file}")
        return 0
    before = torch.load(args.file, weights_only=True)
    missing, added = sorted(set(before) - set(now)), sorted(set(now) - set(before))
    differ = []
    for k in sorted(set(before) & set(now)):
        a, b = before[k], now[k]
        if a.shape != b.shape or a.dtype != b.dtype or not torch.equal(a, b):
            diff = (a.double() - b.double()).abs().max().item() if a.shape == b.shape else float("nan")
            differ.append((k, tuple(a.shape), tuple(b.shape), diff))
    print(f"{len(before)} recorded, {len(now)} now: {len(missing)} missing, {len(added)} new, {len(differ)} differ")
    for k in missing[:20]:
        print(f"  missing  {k}")
    for k in added[:20]:
        print(f"  new      {k}")
    print("| model/kind | tensors that differ | largest abs diff |\n|---|---:|---:|")
    groups: dict[str, list[float]] = {}
    for k, _, _, d in differ:
        groups.setdefault("/".join(k.split("/")[:2]), []).append(d)
    for g, ds in sorted(groups.items()):
        print(f"| {g} | {len(ds)} | {max(ds):.3g} |")
    print("| tensor | shape before | shape now | max abs diff |\n|---|---|---|---|")
    for k, sa, sb, d in differ[:60]:
        print(f"| {k} | {sa} | {sb} | {d:.3g} |")
    return 0 if not (missing or added or differ) else 1


if __name__ == "__main__":
    raise SystemExit(main())
