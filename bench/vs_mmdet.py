"""gfldet against mmdetection 3.3.0, side by side in one run: same model, same weights, same inputs.

Needs mmdetection 3.3.0 (with compiled mmcv 2.1.0) in the interpreter that runs this script, installed beside
the project and never as its dependency (../shared/mmdet-reference.md); gfldet comes from PYTHONPATH:

    cd /work/main && PYTHONPATH=/work/main /tmp/mmref/bin/python bench/vs_mmdet.py            # full run
    PYTHONPATH=/work/main /tmp/mmref/bin/python bench/vs_mmdet.py --quick                     # smoke run, ~1.5 min
    options: --threads 2 --repeats 3 --warmup 1 --cases 1,2,3,4 --gts 10,100,1000 --no-memory

Model: mmdetection's own config ``gfl/gfl_r50_fpn_1x_coco.py`` (GFL R-50-FPN, 80 classes, reg_max 16,
``backbone.init_cfg=None``), built with ``MODELS.build``; every float tensor of its state dict is then drawn
from a fixed seed (conv weights N(0, 1/fan_in), BatchNorm statistics near (0, 1), norm weights near 1, small
biases: activations stay O(1) through the frozen-statistics ResNet), and the classifier bias is shifted so that
about ``--pass-target`` (anchor, class) pairs of the test image score above test_cfg.score_thr (0.05): a random
model has detections to decode and suppress. gfldet's model is ``gfldet.from_mmdet(mm.state_dict(),
min_size=None, max_size=None)`` (no resize inside the model: both take the image at its own size, as mmdet's
``predict`` does after its data pipeline). Images are uint8 tensors; mmdetection gets them in BGR channel order
(what its loader gives; its pre-processor flips them), gfldet in RGB; the flip is not timed.

Cases (every case checks that both give the same numbers before timing, and aborts otherwise):
  1 inference, batch 1, 640x640 synthetic "real-ish" image (shapes, gradients, texture, noise), no_grad:
    mmdet ``model.test_step({"inputs", "data_samples"})`` (DetDataPreprocessor: float, BGR->RGB, normalise,
    pad to 32 -> extract_feat -> GFLHead.predict: score_thr 0.05, nms_pre 1000, NMS 0.6, top 100) vs gfldet
    ``model.eval(); model([img])``, both from the uint8 tensor to final detections. Check: same number of
    detections, same labels, boxes within 1e-3 px and scores within 1e-5 after matching.
  2 one training step, batch 2 x 640x640, 20 GT boxes per image (same boxes and labels): mmdet
    ``data_preprocessor(data, training=True)`` -> ``model.loss`` -> ``model.parse_losses`` -> backward ->
    SGD step -> zero_grad; gfldet ``model.train(); sum(model(images, targets).values())`` -> backward -> step
    -> zero_grad. torch.optim.SGD(lr 0.01, momentum 0.9, weight_decay 1e-4) over the trainable parameters
    (stem and layer1 frozen, BatchNorm statistics frozen, in both). Check: the first step's losses agree within
    1e-4 relative.
  3 ATSS assignment + losses only, synthetic head outputs (randn logits with requires_grad), 2 images of
    800x1333 padded to 800x1344, --gts GT boxes per image: mmdet ``bbox_head.loss_by_feat(cls, reg,
    gt_instances, img_metas)`` vs gfldet ``model.compute_losses(cls, reg, boxes, labels, pad_shapes)``, each
    forward + backward of the summed losses. Time and peak memory (below). Check: losses within 1e-4 relative.
  4 gfldet's overhead share, the part outside backbone+FPN+head convolutions: inference = preprocess +
    decode/NMS (+ uncertainty summaries) over the end-to-end time; training = assignment + losses (forward and
    backward, from the real head outputs of case 2's batch) over (that + a "network-only" step: preprocess,
    forward_features, backward of the head outputs with the real loss gradients, SGD step, zero_grad), for
    10/100/1000 GTs per image (at 640x640, so up to 1000 GTs crowd a small image).

Timing: all cells of a case in interleaved rounds (bench/_util.time_interleaved): --warmup untimed rounds, then
--repeats rounds in which every cell runs once (cheap cells several times, to about --min-time s); min and
median wall clock, min process CPU time (both threads). Compare minima; ratios are mmdet / gfldet (> 1: gfldet
faster). In case 2 each timed call is one optimiser step, so the weights move on between calls in both.
Peak memory (case 3): each (library, GT count) in a fresh subprocess: one warm-up call, then the kernel's
peak-RSS mark is reset (/proc/self/clear_refs) and the figure is VmHWM minus the RSS just before the measured
call; glibc serves allocations >= 64 KiB with mmap (MALLOC_MMAP_THRESHOLD_=65536) so freed tensors leave the RSS.
Ratio mem(gfldet) / mem(mmdet) (< 1: gfldet smaller).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import subprocess
import sys
import time
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _util import fmt_ms, load_average, machine_info, markdown_table, peak_rss_increase, time_interleaved  # noqa: E402

NUM_CLASSES = 80
SEED = 0
LR, MOMENTUM, WD = 0.01, 0.9, 1e-4
BOX_TOL, SCORE_TOL, LOSS_RTOL = 1e-3, 1e-5, 1e-4
LOSS_KEYS = (("loss_qfl", "loss_cls"), ("loss_bbox", "loss_bbox"), ("loss_dfl", "loss_dfl"))


class Mismatch(SystemExit):
    pass


def fail(msg: str):
    raise Mismatch(f"\nMISMATCH between gfldet and mmdetection: {msg}\n(aborting: timings of different computations mean nothing)")


# ---------------------------------------------------------------------------------------------------- models
def build_mmdet():
    import mmdet
    from mmengine.config import Config
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    register_all_modules()
    warnings.filterwarnings("ignore", message=".*num_anchors.*deprecated.*")  # mmdet's own GFLHead triggers it
    cfg = Config.fromfile(os.path.join(os.path.dirname(mmdet.__file__), ".mim/configs/gfl/gfl_r50_fpn_1x_coco.py"))
    cfg.model.backbone.init_cfg = None  # nothing is downloaded
    return MODELS.build(cfg.model).eval()


def seeded_state_dict_(mm, seed: int) -> None:
    """Draw every float tensor of the mmdet model from ``seed`` (well-scaled, see the module docstring)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in sorted(mm.state_dict().items()):
            if not t.is_floating_point() or name.endswith("integral.project"):
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) * 0.5 + 0.75)
            elif name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif t.dim() == 4:
                fan_in = t.shape[1] * t.shape[2] * t.shape[3]
                t.copy_(torch.randn(t.shape, generator=g) / math.sqrt(fan_in))
            elif name.endswith("scale"):
                t.copy_(1.0 + 0.2 * torch.randn(t.shape, generator=g))
            elif name.endswith("weight"):
                t.copy_(1.0 + 0.1 * torch.randn(t.shape, generator=g))
            else:
                t.copy_(0.1 * torch.randn(t.shape, generator=g))


def realish_image(h: int, w: int, seed: int) -> torch.Tensor:
    """A (3, h, w) uint8 RGB picture: smooth background, filled rectangles and ellipses with textures, noise."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    c = torch.rand(3, 3, generator=g) * 255
    img = c[:, 0, None, None] * (1 - yy) + c[:, 1, None, None] * xx * 0.5 + c[:, 2, None, None] * yy * 0.3
    for k in range(24):
        x0, y0 = float(torch.rand(1, generator=g)) * w, float(torch.rand(1, generator=g)) * h
        bw = float(torch.empty(1).uniform_(0.05, 0.45, generator=g)) * w
        bh = float(torch.empty(1).uniform_(0.05, 0.45, generator=g)) * h
        if k % 2:
            m = ((xx * w - x0).abs() < bw / 2) & ((yy * h - y0).abs() < bh / 2)
        else:
            m = ((xx * w - x0) / (bw / 2)) ** 2 + ((yy * h - y0) / (bh / 2)) ** 2 < 1
        col = torch.rand(3, generator=g) * 255
        tex = 1 + 0.25 * torch.sin(xx * w / (3 + 10 * float(torch.rand(1, generator=g))) + yy * h / 7)
        img = torch.where(m, col[:, None, None] * tex, img)
    img = img + torch.randn(img.shape, generator=g) * 6
    return img.clamp(0, 255).round().to(torch.uint8)


def random_gts(n: int, h: int, w: int, seed: int, lo: float = 8.0, hi: float = 512.0):
    """``n`` valid xyxy boxes inside (h, w), sides log-uniform in [lo, hi] px, labels uniform."""
    g = torch.Generator().manual_seed(seed)
    bw = torch.exp(torch.empty(n).uniform_(math.log(lo), math.log(hi), generator=g))
    bh = torch.exp(torch.empty(n).uniform_(math.log(lo), math.log(hi), generator=g))
    cx, cy = torch.rand(n, generator=g) * w, torch.rand(n, generator=g) * h
    x1, y1 = (cx - bw / 2).clamp(0, w - 2), (cy - bh / 2).clamp(0, h - 2)
    x2 = torch.maximum((cx + bw / 2).clamp(max=w), x1 + 1)
    y2 = torch.maximum((cy + bh / 2).clamp(max=h), y1 + 1)
    return torch.stack([x1, y1, x2, y2], 1), torch.randint(0, NUM_CLASSES, (n,), generator=g)


def mm_samples(images, gts=None):
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    out = []
    for i, img in enumerate(images):
        hw = tuple(img.shape[1:])
        ds = DetDataSample(metainfo=dict(img_shape=hw, ori_shape=hw, scale_factor=(1.0, 1.0)))
        if gts is not None:
            ds.gt_instances = InstanceData(bboxes=gts[i][0].clone(), labels=gts[i][1].clone())
        out.append(ds)
    return out


def build_pair(image_rgb: torch.Tensor, pass_target: int):
    """(mmdet model, pristine state dict, gfldet model, facts): seeded weights, classifier bias calibrated on
    ``image_rgb`` so that ~``pass_target`` (anchor, class) pairs pass score_thr."""
    import gfldet

    mm = build_mmdet()
    seeded_state_dict_(mm, SEED)
    thr = float(mm.bbox_head.test_cfg.score_thr)
    with torch.no_grad():
        d = mm.data_preprocessor({"inputs": [image_rgb.flip(0)], "data_samples": mm_samples([image_rgb])}, False)
        cls, _ = mm.bbox_head(mm.extract_feat(d["inputs"]))
        flat = torch.cat([c.flatten() for c in cls])
        kth = flat.topk(min(pass_target, flat.numel())).values[-1]
        shift = math.log(thr / (1 - thr)) - float(kth) + 1e-4
        mm.bbox_head.gfl_cls.bias.add_(shift)
    sd0 = {k: v.clone() for k, v in mm.state_dict().items()}
    gfl = gfldet.from_mmdet(sd0, min_size=None, max_size=None).optimize_for_cpu()  # as gfldet's CPU commands run it
    cfg, tc = gfl.config, mm.bbox_head.test_cfg
    same = (cfg.score_thr, cfg.nms_pre, cfg.nms_iou, cfg.max_per_img) == (tc.score_thr, tc.nms_pre, tc.nms.iou_threshold, tc.max_per_img)
    if not same:
        fail(f"test settings differ: gfldet {cfg.score_thr, cfg.nms_pre, cfg.nms_iou, cfg.max_per_img} vs mmdet {tc}")
    return mm, sd0, gfl, {"cls_bias_shift": shift}


def fresh_models(sd0):
    """Both models on the pristine weights (case 2 moves them)."""
    import gfldet

    mm = build_mmdet()
    mm.load_state_dict(sd0)
    return mm, gfldet.from_mmdet(sd0, min_size=None, max_size=None).optimize_for_cpu()


def sgd(model):
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=LR, momentum=MOMENTUM, weight_decay=WD)


# ---------------------------------------------------------------------------------------------------- helpers
def progress(msg):
    print(f"  timing: {msg} ({load_average()})", flush=True)


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b > 0 else "n/a"


def timing_rows(pairs, t):
    """pairs: [(label, mm cell, gfl cell)] -> rows with min/median of both and the mmdet/gfldet ratios."""
    rows = []
    for label, m, g in pairs:
        tm, tg = t[m], t[g]
        rows.append([label, fmt_ms(tm.min), fmt_ms(tg.min), ratio(tm.min, tg.min), fmt_ms(tm.median), fmt_ms(tg.median),
                     ratio(tm.median, tg.median), fmt_ms(tm.cpu_min), fmt_ms(tg.cpu_min), ratio(tm.cpu_min, tg.cpu_min)])
    return rows


TIME_HEADS = ["", "mmdet min ms", "gfldet min ms", "mmdet/gfldet (min)", "mmdet median ms", "gfldet median ms",
              "mmdet/gfldet (median)", "mmdet CPU min ms", "gfldet CPU min ms", "mmdet/gfldet (CPU)"]


def match_detections(a: dict, b: dict) -> dict:
    """Pair each gfldet detection ``a`` with an mmdet detection ``b`` (same label, nearest box): max box and
    score differences, and whether the two orders are the same."""
    na, nb = a["boxes"].shape[0], b["boxes"].shape[0]
    r = {"n_gfldet": na, "n_mmdet": nb, "box": float("inf"), "score": float("inf"), "same_order": False}
    if na != nb:
        return r
    if na == 0:
        return {**r, "box": 0.0, "score": 0.0, "same_order": True}
    cost = (a["boxes"][:, None, :] - b["boxes"][None, :, :]).abs().amax(-1)
    cost = cost + (a["labels"][:, None] != b["labels"][None, :]) * 1e9
    j = cost.argmin(1)
    if torch.unique(j).numel() != na:  # not a one-to-one matching
        return r
    r["box"] = float(cost[torch.arange(na), j].max())
    r["score"] = float((a["scores"] - b["scores"][j]).abs().max())
    r["same_order"] = bool(torch.equal(j, torch.arange(na)))
    r["labels_equal"] = bool(torch.equal(a["labels"], b["labels"][j]))
    return r


# ---------------------------------------------------------------------------------------------------- case 1
def case_inference(args, sd0, image, facts):
    mm, gfl = fresh_models(sd0)
    mm.eval(), gfl.eval()
    bgr = image.flip(0).contiguous()
    data = {}

    def mm_setup():  # what mmdet's loader hands over: a list of BGR uint8 tensors and fresh data samples
        data["d"] = {"inputs": [bgr], "data_samples": mm_samples([image])}

    def mm_infer():
        with torch.no_grad():
            return mm.test_step(data["d"])

    def gfl_infer():
        with torch.no_grad():
            return gfl([image])

    mm_setup()
    p = mm_infer()[0].pred_instances
    ref = {"boxes": p.bboxes, "scores": p.scores, "labels": p.labels}
    ours = gfl_infer()[0]
    m = match_detections(ours, ref)
    h, w = image.shape[1:]
    print(f"\n## 1. Inference, GFL R-50-FPN, batch 1, {h}x{w} uint8, {NUM_CLASSES} classes\n")
    print(f"classifier bias shifted by {facts['cls_bias_shift']:+.3f} so that ~{args.pass_target} (anchor, class) pairs "
          f"pass score_thr; detections: mmdet {m['n_mmdet']}, gfldet {m['n_gfldet']} (max_per_img 100)")
    print(f"check: labels equal {m.get('labels_equal', False)}, max |box diff| {m['box']:.2e} px (tol {BOX_TOL:g}), "
          f"max |score diff| {m['score']:.2e} (tol {SCORE_TOL:g}), same order {m['same_order']}")
    if m["n_mmdet"] == 0:
        fail("no detections; the check would be empty (raise --pass-target)")
    if not (m.get("labels_equal") and m["box"] <= BOX_TOL and m["score"] <= SCORE_TOL):
        fail(f"detections differ: {m}")
    print("check: OK (same detections)\n")
    cells = {"mmdet": (mm_infer, mm_setup), "gfldet": (gfl_infer, None)}
    t = time_interleaved(cells, repeats=args.repeats, warmup=args.warmup, progress=progress)
    rows = timing_rows([(f"inference {h}x{w}, uint8 -> detections", "mmdet", "gfldet")], t)
    print(markdown_table(TIME_HEADS, rows))
    return t


# ---------------------------------------------------------------------------------------------------- case 2
def case_train(args, sd0, size, n_gt):
    mm, gfl = fresh_models(sd0)
    mm.train(), gfl.train()
    n_mm = sum(p.numel() for p in mm.parameters() if p.requires_grad)
    n_g = sum(p.numel() for p in gfl.parameters() if p.requires_grad)
    if n_mm != n_g:
        fail(f"trainable parameters differ: mmdet {n_mm}, gfldet {n_g}")
    images = [realish_image(size, size, SEED + 10 + i) for i in range(2)]
    gts = [random_gts(n_gt, size, size, SEED + 20 + i, hi=min(512.0, size * 0.8)) for i in range(2)]
    targets = [{"boxes": b, "labels": l} for b, l in gts]
    bgr = [im.flip(0).contiguous() for im in images]
    opt_mm, opt_g = sgd(mm), sgd(gfl)
    data, last = {}, {}

    def mm_setup():
        data["d"] = {"inputs": list(bgr), "data_samples": mm_samples(images, gts)}

    def mm_step():
        d = mm.data_preprocessor(data["d"], training=True)
        losses = mm.loss(d["inputs"], d["data_samples"])
        loss, log_vars = mm.parse_losses(losses)
        loss.backward()
        opt_mm.step()
        opt_mm.zero_grad()
        last["mm"] = {k: sum(v).detach() if isinstance(v, list) else v.detach() for k, v in losses.items()}
        return log_vars

    def gfl_step():
        losses = gfl(images, targets)
        total = sum(losses.values())
        total.backward()
        opt_g.step()
        opt_g.zero_grad()
        last["gfl"] = {k: v.detach() for k, v in losses.items()}
        return total.detach()

    print(f"\n## 2. One training step, batch 2 x {size}x{size}, {n_gt} GT boxes per image, SGD lr {LR} momentum {MOMENTUM} "
          f"wd {WD}, {n_g} trainable parameters in both\n")
    mm_setup()
    mm_step()
    gfl_step()
    rows, worst = [], 0.0
    for ours, theirs in LOSS_KEYS:
        a, b = float(last["gfl"][ours]), float(last["mm"][theirs])
        rel = abs(a - b) / max(abs(b), 1e-12)
        worst = max(worst, rel)
        rows.append([f"{theirs} / {ours}", f"{b:.6f}", f"{a:.6f}", f"{rel:.1e}"])
    print("initial losses (first step, same weights):\n")
    print(markdown_table(["loss (mmdet / gfldet)", "mmdet", "gfldet", "rel. diff"], rows))
    if not worst <= LOSS_RTOL:
        fail(f"initial training losses differ by {worst:.2e} relative (tol {LOSS_RTOL:g})")
    print(f"check: OK (losses within {LOSS_RTOL:g} relative)\n")
    cells = {"mmdet": (mm_step, mm_setup), "gfldet": (gfl_step, None)}
    t = time_interleaved(cells, repeats=args.repeats, warmup=args.warmup, progress=progress)
    if not all(math.isfinite(float(v)) for v in list(last["gfl"].values()) + list(last["mm"].values())):
        print("note: a loss became non-finite during the timed steps (weights diverged); timings may be off")
    rows = timing_rows([(f"training step, 2 x {size}x{size}, {n_gt} GTs/img", "mmdet", "gfldet")], t)
    print(markdown_table(TIME_HEADS, rows))
    return t


# ---------------------------------------------------------------------------------------------------- case 3
def synth_head_outputs(hw, pad, strides, reg_max, seed):
    torch.manual_seed(seed)
    sizes = [(math.ceil(pad[0] / s), math.ceil(pad[1] / s)) for s in strides]
    cls = [torch.randn(2, NUM_CLASSES, a, b) for a, b in sizes]
    reg = [torch.randn(2, 4 * (reg_max + 1), a, b) for a, b in sizes]
    return cls, reg, sizes


def case3_setup(impl: str, n_gt: int, hw, mm=None, gfl=None):
    """(fn, setup) of one forward+backward of ``impl`` ('mmdet' | 'gfldet') at ``n_gt`` GTs/image."""
    pad = (math.ceil(hw[0] / 32) * 32, math.ceil(hw[1] / 32) * 32)
    strides, reg_max = (8, 16, 32, 64, 128), 16
    cls0, reg0, _ = synth_head_outputs(hw, pad, strides, reg_max, SEED + 30)
    cls = [c.clone().requires_grad_() for c in cls0]
    reg = [r.clone().requires_grad_() for r in reg0]
    gts = [random_gts(n_gt, hw[0], hw[1], SEED + 40 + i, hi=min(512.0, 0.8 * min(hw))) for i in range(2)]
    params = cls + reg

    def clear():
        for p in params:
            p.grad = None

    if impl == "mmdet":
        from mmengine.structures import InstanceData

        if mm is None:
            mm = build_mmdet().train()
        head = mm.bbox_head
        metas = [dict(img_shape=tuple(hw), ori_shape=tuple(hw), pad_shape=pad, batch_input_shape=pad, scale_factor=(1.0, 1.0))
                 for _ in range(2)]
        inst = [InstanceData(bboxes=b, labels=l) for b, l in gts]

        def fwd():
            return head.loss_by_feat(cls, reg, inst, metas)

        def fn():
            losses = fwd()
            total = sum(sum(v) for v in losses.values())
            total.backward()
            return {k: float(sum(v).detach()) for k, v in losses.items()}
    else:
        if gfl is None:
            import gfldet

            gfl = gfldet.gfl_resnet50_fpn(num_classes=NUM_CLASSES, min_size=None, max_size=None).optimize_for_cpu()
        gfl.train()
        boxes, labels = [b for b, _ in gts], [l for _, l in gts]

        def fn():
            losses = gfl.compute_losses(cls, reg, boxes, labels, [pad, pad])
            total = sum(losses.values())
            total.backward()
            return {k: float(v.detach()) for k, v in losses.items()}

    return fn, clear


def mem_child(spec: str, threads: int) -> None:
    """Fresh interpreter: peak-RSS increase of one case-3 call; prints JSON."""
    impl, g, h, w = spec.split(":")
    torch.set_num_threads(threads)
    fn, setup = case3_setup(impl, int(g), (int(h), int(w)))
    print(json.dumps({"impl": impl, "gts": int(g), **peak_rss_increase(fn, setup)}))


def measure_memory(impl: str, n_gt: int, hw, threads: int) -> dict:
    env = dict(os.environ)
    env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    cmd = [sys.executable, os.path.abspath(__file__), "--_mem-child", f"{impl}:{n_gt}:{hw[0]}:{hw[1]}", "--threads", str(threads)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"memory child {impl}:{n_gt} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def case_assign_losses(args, sd0, hw, gts_list):
    mm, gfl = fresh_models(sd0)
    mm.train()
    pad = (math.ceil(hw[0] / 32) * 32, math.ceil(hw[1] / 32) * 32)
    print(f"\n## 3. ATSS assignment + GFL losses, forward + backward, synthetic head outputs, 2 x {hw[0]}x{hw[1]} "
          f"(padded {pad[0]}x{pad[1]}), {NUM_CLASSES} classes\n")
    cells, rows, worst = {}, [], 0.0
    for g in gts_list:
        fm, sm = case3_setup("mmdet", g, hw, mm=mm)
        fg, sg = case3_setup("gfldet", g, hw, gfl=gfl)
        sm(), sg()
        lm, lg = fm(), fg()
        for ours, theirs in LOSS_KEYS:
            rel = abs(lg[ours] - lm[theirs]) / max(abs(lm[theirs]), 1e-12)
            worst = max(worst, rel)
            rows.append([g, f"{theirs} / {ours}", f"{lm[theirs]:.6f}", f"{lg[ours]:.6f}", f"{rel:.1e}"])
        cells[f"mmdet:{g}"] = (fm, sm)
        cells[f"gfldet:{g}"] = (fg, sg)
    print(markdown_table(["GTs/img", "loss (mmdet / gfldet)", "mmdet", "gfldet", "rel. diff"], rows))
    if not worst <= LOSS_RTOL:
        fail(f"assignment+loss values differ by {worst:.2e} relative (tol {LOSS_RTOL:g})")
    print(f"check: OK (losses within {LOSS_RTOL:g} relative)\n")
    del mm, gfl
    t = time_interleaved(cells, repeats=args.repeats, warmup=args.warmup, min_time=args.min_time, progress=progress)
    mems = {}
    if not args.no_memory:
        for g in gts_list:
            for impl in ("mmdet", "gfldet"):
                mems[impl, g] = measure_memory(impl, g, hw, args.threads)["delta_kib"] / 1024
                print(f"  memory: {impl} {g} GTs/img peak +{mems[impl, g]:.1f} MiB ({load_average()})", flush=True)
    print()
    rows = timing_rows([(f"{g} GTs/img", f"mmdet:{g}", f"gfldet:{g}") for g in gts_list], t)
    print(markdown_table(TIME_HEADS, rows))
    if mems:
        print("\nPeak RSS increase during one forward+backward (fresh subprocess each, after one warm-up call)\n")
        mrows = [[f"{g} GTs/img", f"{mems['mmdet', g]:.1f}", f"{mems['gfldet', g]:.1f}",
                  ratio(mems["gfldet", g], mems["mmdet", g])] for g in gts_list]
        print(markdown_table(["", "mmdet MiB", "gfldet MiB", "gfldet/mmdet"], mrows))
    return t, mems


# ---------------------------------------------------------------------------------------------------- case 4
def case_overhead(args, sd0, image, train_size, gts_list):
    _, gfl = fresh_models(sd0)
    h, w = image.shape[1:]
    print("\n## 4. gfldet: share of time outside the backbone+FPN+head convolutions\n")

    # Inference parts (eval, no_grad), same image as case 1.
    gfl.eval()
    with torch.no_grad():
        batch, meta = gfl.preprocess([image])
        cls_e, reg_e = gfl.forward_features(batch)
        n_det = gfl.decode(cls_e, reg_e, meta.image_sizes)[0]["boxes"].shape[0]

    def nograd(f):
        def g():
            with torch.no_grad():
                return f()
        return g

    infer_cells = {
        "i:preprocess": (nograd(lambda: gfl.preprocess([image])), None),
        "i:convs": (nograd(lambda: gfl.forward_features(batch)), None),
        "i:decode": (nograd(lambda: gfl.decode(cls_e, reg_e, meta.image_sizes)), None),
        "i:total": (nograd(lambda: gfl([image])), None),
    }

    # Training parts on a second model copy (its SGD steps must not disturb the eval cells above).
    tg = copy.deepcopy(gfl).train()
    opt = sgd(tg)
    images = [realish_image(train_size, train_size, SEED + 10 + i) for i in range(2)]
    tbatch, tmeta = tg.preprocess(images)
    with torch.no_grad():
        cls_t, reg_t = tg.forward_features(tbatch)
    pads = tmeta.pad_shapes
    hi = min(512.0, 0.8 * train_size)
    gt_sets = {g: [random_gts(g, train_size, train_size, SEED + 20 + i, hi=hi) for i in range(2)] for g in gts_list}
    leaves = [c.clone().requires_grad_() for c in cls_t] + [r.clone().requires_grad_() for r in reg_t]
    nl = len(cls_t)

    def clear():
        for p in leaves:
            p.grad = None

    def loss_call(g):
        boxes, labels = [b for b, _ in gt_sets[g]], [l for _, l in gt_sets[g]]

        def f():
            losses = tg.compute_losses(leaves[:nl], leaves[nl:], boxes, labels, pads)
            total = sum(losses.values())
            total.backward()
            return total.detach()
        return f

    # Real gradients of the head outputs (from the smallest GT count) for the network-only step.
    clear()
    loss_call(gts_list[0])()
    head_grads = [p.grad.clone() for p in leaves]
    clear()

    def net_step():
        b, _ = tg.preprocess(images)
        c, r = tg.forward_features(b)
        torch.autograd.backward(list(c) + list(r), head_grads)
        opt.step()
        opt.zero_grad()

    g_full = gts_list[0]
    tgt_full = [{"boxes": b, "labels": l} for b, l in gt_sets[g_full]]

    def full_step():
        losses = tg(images, tgt_full)
        sum(losses.values()).backward()
        opt.step()
        opt.zero_grad()

    train_cells = {"t:net": (net_step, None), f"t:full:{g_full}": (full_step, None)}
    for g in gts_list:
        train_cells[f"t:loss:{g}"] = (loss_call(g), clear)
    t = time_interleaved({**infer_cells, **train_cells}, repeats=args.repeats, warmup=args.warmup, min_time=args.min_time,
                         progress=progress)

    tot = t["i:total"]
    rows = []
    for k, label in (("i:preprocess", "preprocess (normalise, pad)"), ("i:convs", "backbone+FPN+head (forward_features)"),
                     ("i:decode", f"decode + NMS + uncertainty ({n_det} detections)"), ("i:total", "total, model([img])")):
        rows.append([label, fmt_ms(t[k].min), fmt_ms(t[k].median), f"{100 * t[k].min / tot.min:.1f}%"])
    over = t["i:preprocess"].min + t["i:decode"].min
    rows.append(["outside the convolutions (preprocess + decode)", fmt_ms(over), "", f"{100 * over / tot.min:.1f}%"])
    print(f"Inference, batch 1, {h}x{w} (share: of the end-to-end minimum)\n")
    print(markdown_table(["part", "min ms", "median ms", "share"], rows))

    net = t["t:net"]
    rows = [["network-only step (preprocess, convs fwd+bwd, SGD)", "", fmt_ms(net.min), fmt_ms(net.median), "", ""]]
    for g in gts_list:
        lo = t[f"t:loss:{g}"]
        rows.append(["assignment + losses, fwd+bwd", g, fmt_ms(lo.min), fmt_ms(lo.median),
                     f"{100 * lo.min / (lo.min + net.min):.1f}%", f"{100 * lo.median / (lo.median + net.median):.1f}%"])
    full = t[f"t:full:{g_full}"]
    est = net.min + t[f"t:loss:{g_full}"].min
    rows.append([f"full step, model(images, targets) (check: network-only + losses = {fmt_ms(est)} ms)", g_full,
                 fmt_ms(full.min), fmt_ms(full.median), "", ""])
    print(f"\nTraining, batch 2 x {train_size}x{train_size} (share = losses / (network-only step + losses))\n")
    print(markdown_table(["part", "GTs/img", "min ms", "median ms", "share (min)", "share (median)"], rows, left=1))
    return t


# ---------------------------------------------------------------------------------------------------- main
def versions() -> str:
    import mmcv
    import mmdet
    import mmengine

    try:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        rev = subprocess.run(["git", "-C", root, "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip()
    except OSError:
        rev = "?"
    return f"mmdet {mmdet.__version__}, mmcv {mmcv.__version__}, mmengine {mmengine.__version__}; gfldet at {rev or '?'}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--repeats", type=int, default=3, help="timed interleaved rounds")
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds before the timed ones")
    ap.add_argument("--min-time", type=float, default=1.0, help="cheap cells run several times per round, to ~this many s")
    ap.add_argument("--cases", default="1,2,3,4", help="comma-separated subset of 1,2,3,4")
    ap.add_argument("--gts", default="10,100,1000", help="GT boxes per image in cases 3 and 4")
    ap.add_argument("--pass-target", type=int, default=3000, help="case 1: (anchor, class) pairs above score_thr")
    ap.add_argument("--no-memory", action="store_true", help="case 3: skip the peak-memory subprocesses")
    ap.add_argument("--quick", action="store_true", help="smoke run: small images, GTs 10,100, 1 round")
    ap.add_argument("--_mem-child", dest="mem_child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mem_child:
        mem_child(args.mem_child, args.threads)
        return

    torch.set_num_threads(args.threads)
    cases = {int(c) for c in args.cases.split(",") if c.strip()}
    gts = [int(x) for x in args.gts.split(",") if x.strip()]
    infer_size, train_size, c3_hw = 640, 640, (800, 1333)
    if args.quick:
        infer_size, train_size, c3_hw = 320, 320, (320, 480)
        gts = [g for g in gts if g <= 100] or [10]
        args.repeats, args.min_time = 1, 0.0
        args.pass_target = min(args.pass_target, 1500)
    t0 = time.time()
    print(machine_info())
    print(load_average())
    print(versions())
    print(f"cases {sorted(cases)}, {args.threads} threads, warm-up {args.warmup} round(s), {args.repeats} timed rounds, "
          f"interleaved (cheap cells repeated to ~{args.min_time:g} s); ratios mmdet/gfldet > 1 mean gfldet is faster"
          + (" [--quick: small sizes, not the benchmark]" if args.quick else ""))

    image = realish_image(infer_size, infer_size, SEED)
    _, sd0, _, facts = build_pair(image, args.pass_target)
    if 1 in cases:
        case_inference(args, sd0, image, facts)
    if 2 in cases:
        case_train(args, sd0, train_size, 20)
    if 3 in cases:
        case_assign_losses(args, sd0, c3_hw, gts)
    if 4 in cases:
        case_overhead(args, sd0, image, train_size, gts)
    print(f"\n{load_average()} at the end; wall time of the run {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
