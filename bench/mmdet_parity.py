"""Compare gfldet with mmdetection 3.3.0 on several members of the GFL family, side by side, and record
mmdetection's numbers as small fixtures for CI (tests/fixtures/mmdet_cases.pt).

Needs mmdetection installed beside the project (../shared/mmdet-reference.md), never as a dependency:

    PYTHONPATH=. /tmp/mmref/bin/python bench/mmdet_parity.py [--write tests/fixtures/mmdet_cases.pt]

Weights are drawn from a seed (tests/_seeded.py), so the fixture stores seeds, inputs and mmdetection's
outputs, not weights. Images go into mmdetection as BGR (what its loader gives) and into gfldet as RGB.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gfldet  # noqa: E402
from gfldet.models.mmdet import to_mmdet_state_dict  # noqa: E402
from tests._seeded import random_gts, seeded_init_  # noqa: E402

CASES = [
    dict(name="r18_c64_k5_n16_b2", arch="gfl_resnet18_fpn", seed=11, cfg=dict(num_classes=5, reg_max=16, fpn_channels=64, head_channels=64),
         sizes=[(250, 330), (301, 287)], gts=[12, 40]),
    dict(name="r50_c32_k3_n8_s2_b3", arch="gfl_resnet50_fpn", seed=12,
         cfg=dict(num_classes=3, reg_max=8, fpn_channels=32, head_channels=64, stacked_convs=2),
         sizes=[(200, 260), (160, 300), (257, 190)], gts=[5, 0, 9]),
    dict(name="x101_32x4d_c64_k1_n4_s1_b1", arch="gfl_resnext101_32x4d_fpn", seed=13,
         cfg=dict(num_classes=1, reg_max=4, fpn_channels=64, head_channels=64, stacked_convs=1),
         sizes=[(300, 410)], gts=[7]),
    dict(name="r18_c64_k7_n16_b2_crowded", arch="gfl_resnet18_fpn", seed=14, cfg=dict(num_classes=7, reg_max=16, fpn_channels=64, head_channels=64),
         sizes=[(480, 512), (333, 500)], gts=[400, 150]),
]


def build_mmdet(case):
    import mmdet
    from mmengine.config import Config
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    register_all_modules()
    cfg = Config.fromfile(os.path.join(os.path.dirname(mmdet.__file__), ".mim/configs/gfl/gfl_r50_fpn_1x_coco.py"))
    c = case["cfg"]
    depth = {"gfl_resnet18_fpn": 18, "gfl_resnet50_fpn": 50, "gfl_resnext101_32x4d_fpn": 101}[case["arch"]]
    cfg.model.backbone.init_cfg = None
    cfg.model.backbone.depth = depth
    if "resnext" in case["arch"]:
        cfg.model.backbone.type = "ResNeXt"
        cfg.model.backbone.groups = 32
        cfg.model.backbone.base_width = 4
    exp = 1 if depth < 50 else 4
    cfg.model.neck.in_channels = [64 * exp, 128 * exp, 256 * exp, 512 * exp]
    cfg.model.neck.out_channels = c["fpn_channels"]
    h = cfg.model.bbox_head
    h.in_channels = c["fpn_channels"]
    h.feat_channels = c["head_channels"]
    h.num_classes = c["num_classes"]
    h.reg_max = c["reg_max"]
    h.stacked_convs = c.get("stacked_convs", 4)
    return MODELS.build(cfg.model).eval()


def run_mmdet(mm, images_rgb, gts, labels):
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    samples = []
    for img, b, l in zip(images_rgb, gts, labels):
        ds = DetDataSample(metainfo=dict(img_shape=tuple(img.shape[1:]), ori_shape=tuple(img.shape[1:]), scale_factor=(1.0, 1.0)))
        ds.gt_instances = InstanceData(bboxes=b.clone(), labels=l.clone())
        samples.append(ds)
    data = mm.data_preprocessor({"inputs": [i.flip(0).clone() for i in images_rgb], "data_samples": samples}, training=False)
    inputs, samples = data["inputs"], data["data_samples"]
    metas = [s.metainfo for s in samples]
    head = mm.bbox_head
    out = {}
    with torch.no_grad():
        cls_scores, bbox_preds = head(mm.extract_feat(inputs))
        featmap_sizes = [c.shape[-2:] for c in cls_scores]
        anchor_list, valid_list = head.get_anchors(featmap_sizes, metas, device="cpu")
        t = head.get_targets(anchor_list, valid_list, [s.gt_instances for s in samples], metas)
        preds = head.predict_by_feat(cls_scores, bbox_preds, batch_img_metas=metas, rescale=False)
    cls_g = [c.clone().requires_grad_() for c in cls_scores]
    reg_g = [r.clone().requires_grad_() for r in bbox_preds]
    losses = head.loss_by_feat(cls_g, reg_g, [s.gt_instances for s in samples], metas)
    out["batch_input"] = inputs
    out["pad_shapes"] = [tuple(m["pad_shape"]) for m in metas]
    out["cls_scores"], out["bbox_preds"] = cls_scores, bbox_preds
    _, labels_l, lw_l, bt_l, bw_l, avg = t
    out["target_labels"] = torch.cat(labels_l, 1)
    out["target_label_weights"] = torch.cat(lw_l, 1)
    out["target_bbox"] = torch.cat(bt_l, 1)
    out["num_pos_avg_factor"] = float(avg)
    out["losses"] = {k: sum(v).detach() for k, v in losses.items()}
    out["detections"] = [{"boxes": p.bboxes, "scores": p.scores, "labels": p.labels} for p in preds]
    return out


def compare(model, case, images, gts, labels, ref) -> dict[str, float]:
    """Max abs difference of each quantity (relative for losses); labels: number of differing entries."""
    r = {}
    batch, meta = model.preprocess(images)
    r["input"] = (batch - ref["batch_input"]).abs().max().item()
    with torch.no_grad():
        cls, reg = model.forward_features(ref["batch_input"])
    r["cls"] = max((a - b).abs().max().item() for a, b in zip(cls, ref["cls_scores"]))
    r["reg"] = max((a - b).abs().max().item() for a, b in zip(reg, ref["bbox_preds"]))
    t = model.compute_targets(ref["cls_scores"], gts, labels, ref["pad_shapes"])
    r["labels!="] = int((t.labels != ref["target_labels"]).sum())
    r["tbox"] = (t.boxes - ref["target_bbox"]).abs().max().item()
    r["npos"] = abs(float(t.num_pos_avg) - ref["num_pos_avg_factor"])
    L = model.compute_losses(ref["cls_scores"], ref["bbox_preds"], gts, labels, ref["pad_shapes"])
    for ours, theirs in (("loss_qfl", "loss_cls"), ("loss_bbox", "loss_bbox"), ("loss_dfl", "loss_dfl")):
        den = max(abs(ref["losses"][theirs].item()), 1e-12)
        r[ours] = abs(L[ours].item() - ref["losses"][theirs].item()) / den
    dets = model.decode(ref["cls_scores"], ref["bbox_preds"], meta.image_sizes)
    worst = 0.0
    for a, b in zip(dets, ref["detections"]):
        if a["boxes"].shape != b["boxes"].shape or not torch.equal(a["labels"], b["labels"]):
            worst = float("inf")
        elif a["boxes"].numel():
            worst = max(worst, (a["boxes"] - b["boxes"]).abs().max().item(), (a["scores"] - b["scores"]).abs().max().item())
    r["dets"] = worst
    r["n_dets"] = sum(int(d["boxes"].shape[0]) for d in dets)
    return r


def make_case_inputs(case):
    g = torch.Generator().manual_seed(case["seed"])
    images = [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8) for h, w in case["sizes"]]
    gts, labels = [], []
    for i, ((h, w), n) in enumerate(zip(case["sizes"], case["gts"])):
        b, l = random_gts(n, h, w, case["cfg"]["num_classes"], seed=case["seed"] * 100 + i)
        gts.append(b)
        labels.append(l)
    return images, gts, labels


def build_gfldet(case):
    m = gfldet.build_model(case["arch"], min_size=None, max_size=None, **case["cfg"])
    return seeded_init_(m, case["seed"]).eval()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--write", default=None, help="write mmdetection's numbers to this fixture file")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    records = []
    print(f"{'case':32s} {'input':>8s} {'cls':>8s} {'reg':>8s} {'labels!=':>8s} {'tbox':>8s} {'qfl(rel)':>9s} {'bbox(rel)':>9s} {'dfl(rel)':>9s} {'dets':>8s} {'#dets':>6s}")
    for case in CASES:
        model = build_gfldet(case)
        mm = build_mmdet(case)
        missing, unexpected = mm.load_state_dict(to_mmdet_state_dict(model), strict=False)
        assert not missing and not unexpected, (missing, unexpected)
        images, gts, labels = make_case_inputs(case)
        ref = run_mmdet(mm, images, gts, labels)
        r = compare(model, case, images, gts, labels, ref)
        print(f"{case['name']:32s} {r['input']:8.1e} {r['cls']:8.1e} {r['reg']:8.1e} {r['labels!=']:8d} {r['tbox']:8.1e} "
              f"{r['loss_qfl']:9.1e} {r['loss_bbox']:9.1e} {r['loss_dfl']:9.1e} {r['dets']:8.1e} {r['n_dets']:6d}")
        rec = {k: v for k, v in case.items()}
        rec.update({k: ref[k] for k in ("cls_scores", "bbox_preds", "target_labels", "target_label_weights", "target_bbox",
                                         "num_pos_avg_factor", "losses", "detections", "pad_shapes")})
        rec["batch_input_sum"] = float(ref["batch_input"].double().sum())
        records.append(rec)
    if args.write:
        import mmcv
        import mmdet

        versions = {"torch": str(torch.__version__), "mmdet": str(mmdet.__version__), "mmcv": str(mmcv.__version__)}
        torch.save({"about": "mmdetection 3.3.0 outputs for seeded gfldet weights; see bench/mmdet_parity.py",
                    "versions": versions, "cases": records}, args.write)
        print(f"wrote {args.write} ({os.path.getsize(args.write) / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
