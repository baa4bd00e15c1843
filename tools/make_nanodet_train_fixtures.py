"""Make tests/fixtures/nanodet/train.pt: the official NanoDet-Plus TRAINING computation (forward_train with the aux
branch, Dynamic Soft Label Assigner targets, the QFL / GIoU / DFL losses of both heads, the gradients) on a small
random model, plus direct calls of the official DynamicSoftLabelAssigner. Commit: docs/nanodet.md.

Runs in the reference environment (the official code on sys.path), not in gfldet's:

    /work/nanodet-ref/bin/python -W ignore tools/make_nanodet_train_fixtures.py --nanodet /work/nanodet-src \
        --out tests/fixtures/nanodet

Model: `config/nanodet-plus-m_320.yml` with ShuffleNetV2 0.5x (fpn in_channels [48, 96, 192]), GhostPAN 32 channels,
NanoDetPlusHead 5 classes / 32 channels, SimpleConvHead aux head 5 classes / 64 channels (GroupNorm 32 groups),
detach_epoch 10; the rest as the official config (the resolved config is stored under "model_config").

Weights: every conv weight (aux_fpn and aux_head included) is drawn N(0, gain / sqrt(fan_in)) and rounded to int8
times a power of two (stored as int8 + exponent, exact in float32); conv biases N(0, 0.1); BatchNorm and GroupNorm
weights U(0.5, 1.5), biases N(0, 0.2); BatchNorm running statistics random (unused: the model runs in train mode,
BatchNorm uses the batch statistics); the aux head's Scale parameters U(0.5, 1.5); the class biases of both heads
set so that the mean class logit is about -3; the distance-bin biases of both heads' regression -0.7 x bin (+ noise:
boxes of about one stride per side, so that the stride-32 / 64 priors fit the large boxes). The stored state is the
state that was run (every key, official names, aux_fpn.* / aux_head.* and buffers included).

Batch: three 128 x 128 synthetic images normalised as the official Pipeline does ((img - mean) / std, float32 BGR);
image 0 has 5 boxes (8-100 px, two strongly overlapping, one touching the left / bottom border), image 1 two boxes
(one about 6 x 6 px), image 2 none. gt_meta is built as the official trainer builds it from a CocoDataset batch
(img, gt_bboxes: list of float32 arrays, gt_labels: list of int64 arrays, gt_bboxes_ignore: list of (0, 4) float32
arrays). The run is done for model.epoch = 0 (aux branch fed the live features) and model.epoch = 10 (detached):
forward_train, loss.backward(); stored: loss, loss_states, head and aux head outputs, the per-image targets of
head.target_assign_single_img (captured by wrapping it), every parameter gradient. The same run in float64
(model.double()) gives loss_states_f64 and the float32-vs-float64 differences ("f32_vs_f64"); the official loss does
not run in float64 as it is (float32 priors / max_overlaps meet float64 targets in index_put), so that run asks for
float64 priors and casts the matched IoUs to float32 (as max_overlaps is); the aux head's `.float()` on its
regression output also stays.

Robustness: every DSLA call (the three images inside the loss, the direct cases) is checked, from the cost matrix and
IoUs recorded inside the official dynamic_k_matching, for (a) the sum of the top-13 IoUs of every gt at least 1e-3
from an integer >= 2 (dynamic k), (b) the k-th and (k+1)-th smallest cost of each gt column more than 1e-3 apart,
(c) for priors matched to several gts, the smallest and second smallest cost of the row more than 1e-3 apart; also
the sum of the positive weights (the GIoU / DFL average factor, max(., 1)) at least 1e-3 from 1, conflicts in the
loss and in the direct cases, positives on all four levels, and every GIoU min / max / clamp input of the positives
more than 4 x its float32 error from a tie. Seeds are tried from --seed upwards until all hold; the seed used and the
margins are stored ("margins", "kink_margins"). Not avoidable, and measured instead ("kink_margins"): LeakyReLU
inputs and max-pool near-ties within float32 noise of the kink (about 130 of 1.6 M activations); a slope flip of
one of them moves the backbone / fpn gradients by up to a few per cent of their largest value (deep train-mode BN
nets amplify gradients), so those gradients need loose tolerances; losses, outputs, targets and the head / aux
gradients do not. Tensors equal in both epochs (outputs, targets, head / aux branch gradients) are stored once
(shared objects).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_nanodet_fixtures import draw_conv, synthetic_image  # noqa: E402

BASE_CONFIG = "config/nanodet-plus-m_320.yml"
IMG_SIZE = 128
NUM_CLASSES = 5
EPOCHS = (0, 10)
MARGIN = 1e-3
MEAN_LOGIT = -3.0
REG_BIAS_SLOPE = 0.7  # distance-bin j of both heads' regression gets bias -REG_BIAS_SLOPE * j
MEAN, STD = [103.53, 116.28, 123.675], [57.375, 57.12, 58.395]  # the official config's normalize (BGR)
MAX_SEEDS = 200
KINK_FACTOR = 4.0  # a kink is at risk within KINK_FACTOR x the float32 error (float32 vs float64) of its inputs


def small_config(nanodet: Path):
    from nanodet.util.config import cfg as base_cfg
    from nanodet.util.config import load_config

    cfg = base_cfg.clone()
    load_config(cfg, str(nanodet / BASE_CONFIG))
    cfg.defrost()
    arch = cfg.model.arch
    arch.backbone.model_size = "0.5x"
    arch.backbone.pretrain = False
    arch.fpn.in_channels = [48, 96, 192]
    arch.fpn.out_channels = 32
    arch.head.num_classes = NUM_CLASSES
    arch.head.input_channel = 32
    arch.head.feat_channels = 32
    arch.aux_head.num_classes = NUM_CLASSES
    arch.aux_head.input_channel = 64
    arch.aux_head.feat_channels = 64
    arch.detach_epoch = 10
    cfg.freeze()
    assert list(cfg.data.train.pipeline.normalize) == [MEAN, STD]
    return cfg


def plain(node):
    """A yacs CfgNode as plain dicts / lists / scalars."""
    if isinstance(node, dict):
        return {str(k): plain(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [plain(v) for v in node]
    return node


def randomise(model: torch.nn.Module, gen: torch.Generator) -> dict:
    """Random weights as in the module docstring (class biases excepted); returns the int8 packing of conv weights."""
    packed = {}
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Conv2d):
            draw_conv(name, m, gen, packed)
        elif isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm)):
            m.weight.data = torch.rand(m.weight.shape, generator=gen) + 0.5
            m.bias.data = torch.randn(m.bias.shape, generator=gen) * 0.2
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
        elif type(m).__name__ == "Scale":
            m.scale.data = torch.rand((), generator=gen) + 0.5
    return packed


def pack_state(model: torch.nn.Module, packed_convs: dict) -> dict:
    """Every key of the official state dict (aux branch and buffers included); conv weights as int8 + exponent."""
    out = {}
    for k, v in model.state_dict().items():
        if k in packed_convs:
            p = packed_convs[k]
            assert torch.equal(p["q"].float() * 2.0 ** p["e"], v), k
            out[k] = p
        else:
            out[k] = v.detach().clone()
    return out


def unpack_state(state: dict) -> dict:
    return {k: (v["q"].float() * 2.0 ** v["e"] if isinstance(v, dict) else v) for k, v in state.items()}


def draw_gts(rng: np.random.Generator):
    """Ground truth of the three images in network-input pixels (float32 xyxy, int64 labels)."""
    j = lambda: rng.uniform(-1.5, 1.5)  # noqa: E731
    big = [9.3 + j(), 12.7 + j(), 108.6 + j(), 111.2 + j()]  # ~100 px
    a = [30.5 + j(), 40.2 + j(), 70.8 + j(), 85.1 + j()]  # a and b overlap strongly
    b = [a[0] + 3.3 + j() / 3, a[1] + 4.1 + j() / 3, a[2] + 4.6 + j() / 3, a[3] + 2.7 + j() / 3]
    border = [0.0, 63.4 + j(), 27.7 + j(), float(IMG_SIZE)]  # touches the left and bottom border
    small = [90.2 + j() / 2, 20.3 + j() / 2, 98.9 + j() / 2, 28.6 + j() / 2]  # ~8 px
    img0 = np.array([big, a, b, border, small], dtype=np.float32)
    lab0 = np.array([0, 2, 3, 1, 4], dtype=np.int64)
    tiny = [61.0 + j() / 3, 69.0 + j() / 3, 67.0 + j() / 3, 75.0 + j() / 3]  # ~6 x 6 around the prior (64, 72)
    medium = [15.2 + j(), 20.7 + j(), 55.9 + j(), 48.3 + j()]
    img1 = np.array([tiny, medium], dtype=np.float32)
    lab1 = np.array([2, 0], dtype=np.int64)
    img2 = np.zeros((0, 4), dtype=np.float32)
    lab2 = np.zeros((0,), dtype=np.int64)
    return [img0, img1, img2], [lab0, lab1, lab2]


def grid_priors(size: int, strides) -> torch.Tensor:
    """[cx, cy, stride, stride] of a grid, centres x * stride (no +0.5, as NanoDet-Plus)."""
    out = []
    for s in strides:
        n = math.ceil(size / s)
        y, x = torch.meshgrid(torch.arange(n, dtype=torch.float32) * s, torch.arange(n, dtype=torch.float32) * s,
                              indexing="ij")
        stride = torch.full((n * n,), float(s))
        out.append(torch.stack([x.flatten(), y.flatten(), stride, stride], -1))
    return torch.cat(out)


def draw_dsla_cases(rng: np.random.Generator):
    """Inputs of direct assigner calls: a 64 x 64 image, strides 8 and 16 (80 priors), 4 classes."""
    priors = grid_priors(64, [8, 16])
    num_priors, num_classes = priors.shape[0], 4
    specs = [  # (name, gts)
        ("three_gts_two_overlapping", [[4.3, 6.1, 40.2, 35.7], [8.9, 9.4, 44.1, 39.8], [37.2, 30.5, 61.7, 58.3]]),
        ("four_heavily_overlapping", [[10.2, 10.7, 50.4, 48.9], [13.5, 12.1, 54.8, 52.2], [6.6, 14.3, 44.9, 55.1],
                                       [20.4, 3.2, 58.6, 41.8]]),
        ("one_large_gt", [[2.5, 3.7, 60.1, 59.4]]),
        ("no_gt", []),
        ("gts_without_prior_centre", [[1.3, 1.6, 6.7, 6.2], [49.4, 33.1, 54.8, 38.9]]),
        ("five_mixed_gts", [[0.0, 0.0, 20.4, 18.6], [14.3, 12.9, 34.5, 30.2], [30.7, 28.4, 63.2, 62.9],
                            [41.1, 5.6, 47.7, 13.3], [22.6, 40.2, 39.9, 57.5]]),
    ]
    cases = []
    for name, gts in specs:
        gt = np.array(gts, dtype=np.float64).reshape(-1, 4)
        if gt.shape[0]:
            gt[:, :4] += rng.uniform(-0.4, 0.4, gt.shape) * (gt[:, :4] > 0)
            gt = np.clip(gt, 0, 64)
        labels = rng.integers(0, num_classes, size=gt.shape[0])
        boxes = np.zeros((num_priors, 4))
        for p in range(num_priors):
            cx, cy, s = priors[p, 0].item(), priors[p, 1].item(), priors[p, 2].item()
            if gt.shape[0] and rng.random() < 0.75:  # a noisy copy of a gt (the nearest centre, or a random one)
                centres = (gt[:, :2] + gt[:, 2:]) / 2
                g = int(np.argmin(((centres - [cx, cy]) ** 2).sum(1))) if rng.random() < 0.6 else \
                    int(rng.integers(gt.shape[0]))
                wh = gt[g, 2:] - gt[g, :2]
                box = gt[g] + rng.normal(0, 0.15, 4) * np.concatenate([wh, wh]) + rng.normal(0, 1.0, 4)
            else:  # a box around the prior
                box = np.array([cx, cy, cx, cy]) + np.array([-1, -1, 1, 1]) * rng.uniform(0.5, 3.0, 4) * s
            box[2:] = np.maximum(box[2:], box[:2] + 1.0)
            boxes[p] = box
        cases.append({
            "name": name,
            "pred_scores": torch.from_numpy(rng.normal(-2.0, 1.5, (num_priors, num_classes))).float(),
            "priors": priors.clone(),
            "decoded_bboxes": torch.from_numpy(boxes).float(),
            "gt_bboxes": torch.from_numpy(gt).float().reshape(-1, 4),
            "gt_labels": torch.from_numpy(labels).long(),
        })
    return cases


class DslaRecorder:
    """Wraps the official DynamicSoftLabelAssigner.dynamic_k_matching to record its cost and IoU matrices."""

    def __init__(self, cls, float32_ious: bool = False):
        self.cls, self.orig, self.calls, self.float32_ious = cls, cls.dynamic_k_matching, [], float32_ious

    def __enter__(self):
        rec, orig = self, self.orig

        def wrapped(assigner, cost, pairwise_ious, num_gt, valid_mask):
            rec.calls.append((cost.detach().clone(), pairwise_ious.detach().clone(), assigner.topk))
            ious, inds = orig(assigner, cost, pairwise_ious, num_gt, valid_mask)
            # float64 run only: the official assign writes these into a float32 max_overlaps (an error in float64)
            return (ious.float() if rec.float32_ious else ious), inds

        self.cls.dynamic_k_matching = wrapped
        return self

    def __exit__(self, *exc):
        self.cls.dynamic_k_matching = self.orig


def dsla_margins(cost: torch.Tensor, ious: torch.Tensor, topk: int) -> dict:
    """The distances of one call's values from the decision boundaries of dynamic_k_matching (see the docstring)."""
    cost, ious = cost.double(), ious.double()
    num_valid, num_gt = cost.shape
    k_sum = torch.topk(ious, min(topk, num_valid), dim=0).values.sum(0)
    ks = torch.clamp(k_sum.floor(), min=1).long()  # .int() truncates; the sums are >= 0
    # (a) only integers >= 2 matter: below 2 the clamp to 1 hides a flip
    near = k_sum.round().clamp(min=2)
    dyn_k = (k_sum - near).abs().min().item() if num_gt else math.inf
    matching = torch.zeros_like(cost)
    col = math.inf
    for g in range(num_gt):
        order = torch.sort(cost[:, g]).values
        k = int(ks[g])
        matching[torch.topk(cost[:, g], k, largest=False).indices, g] = 1
        if k < num_valid:
            col = min(col, (order[k] - order[k - 1]).item())
    multi = matching.sum(1) > 1
    row = math.inf
    if multi.any() and num_gt > 1:
        two = torch.sort(cost[multi], dim=1).values[:, :2]
        row = (two[:, 1] - two[:, 0]).min().item()
    return {"dynamic_k": dyn_k, "kth_cost": col, "conflict_cost": row, "num_conflicts": int(multi.sum()),
            "dynamic_ks": ks.tolist()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nanodet", type=Path, required=True, help="checkout of RangiLyu/nanodet (patched collate.py)")
    ap.add_argument("--out", type=Path, default=Path("tests/fixtures/nanodet"))
    ap.add_argument("--seed", type=int, default=0, help="first seed tried")
    args = ap.parse_args()
    sys.path.insert(0, str(args.nanodet))
    from nanodet.model.arch import build_model
    from nanodet.model.head.assigner.dsl_assigner import DynamicSoftLabelAssigner

    torch.set_num_threads(1)  # the fixture does not depend on the thread count
    commit = (args.nanodet / "COMMIT").read_text().strip() if (args.nanodet / "COMMIT").exists() else ""
    if not commit:
        import subprocess
        commit = subprocess.run(["git", "-C", str(args.nanodet), "rev-parse", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
    cfg = small_config(args.nanodet)
    with contextlib.redirect_stdout(io.StringIO()):
        model = build_model(cfg.model)
    head = model.head

    names = {id(m): n for n, m in model.named_modules()}
    kink_types = (torch.nn.LeakyReLU, torch.nn.ReLU, torch.nn.MaxPool2d)

    def run_case(state, img, gt_meta_extra, epoch, dtype, record=False, flip=None):
        """forward_train + backward of the official model; returns everything the fixture stores. ``record``: also
        the inputs of every activation / max-pool call and of the GIoU losses; ``flip``: {(module, call): mask} of
        LeakyReLU inputs whose slope is swapped (the robustness probe)."""
        model.load_state_dict(state)
        model.to(dtype).train()
        model.zero_grad(set_to_none=True)
        model.set_epoch(epoch)
        gt_meta = dict(gt_meta_extra, img=img.to(dtype))
        captured, assigns, assigns_raw, acts, giou = {}, [], [], {}, []
        hooks = [model.aux_head.register_forward_hook(lambda m, i, o: captured.__setitem__("aux", o.detach().clone()))]
        if record:
            for m in model.modules():
                if isinstance(m, kink_types):
                    hooks.append(m.register_forward_pre_hook(
                        lambda m, i: acts.setdefault(names[id(m)], []).append(i[0].detach().clone())))
            hooks.append(head.loss_bbox.register_forward_pre_hook(
                lambda m, i: giou.append((i[0].detach().clone(), i[1].detach().clone()))))
        orig_assign = head.assigner.assign
        orig_target = type(head).target_assign_single_img
        orig_leaky = torch.nn.LeakyReLU.forward
        calls_seen = {}

        def target_wrapper(*a, **kw):
            res = orig_target(head, *a, **kw)
            assigns.append({"labels": res[0].clone(), "label_scores": res[1].clone(), "label_weights": res[2].clone(),
                            "bbox_targets": res[3].clone(), "dist_targets": res[4].clone(), "num_pos": int(res[5])})
            return res

        def assign_wrapper(*a, **kw):
            r = orig_assign(*a, **kw)
            assigns_raw.append({"gt_inds": r.gt_inds.clone(), "max_overlaps": r.max_overlaps.clone(),
                                "assigned_labels": r.labels.clone()})
            return r

        def flipped_leaky(m, x):
            name = names[id(m)]
            k = calls_seen[name] = calls_seen.get(name, -1) + 1
            mask = flip.get((name, k))
            if mask is None:
                return orig_leaky(m, x)
            return x * torch.where((x > 0) ^ mask, 1.0, m.negative_slope).to(x.dtype)

        head.target_assign_single_img = target_wrapper
        head.assigner.assign = assign_wrapper
        if flip is not None:
            torch.nn.LeakyReLU.forward = flipped_leaky
        if dtype == torch.float64:  # the loss asks for float32 priors, which then fail the float64 index_put of targets
            orig_priors = type(head).get_single_level_center_priors
            head.get_single_level_center_priors = \
                lambda b, size, stride, dtype, device: orig_priors(head, b, size, stride, torch.float64, device)
        try:
            with DslaRecorder(DynamicSoftLabelAssigner, float32_ious=dtype == torch.float64) as rec:
                head_out, loss, loss_states = model.forward_train(gt_meta)
            loss.backward()
        finally:
            for h in hooks:
                h.remove()
            del head.target_assign_single_img
            del head.assigner.assign
            torch.nn.LeakyReLU.forward = orig_leaky
            if dtype == torch.float64:
                del head.get_single_level_center_priors
        for a, r in zip(assigns, assigns_raw):
            a.update(r)
        # the GIoU / DFL average factor max(sum of positive weights, 1), per head
        pos_w = {}
        cls_all = {"main": head_out.detach(), "aux": captured["aux"]}
        labels = torch.cat([a["labels"] for a in assigns])
        pos = (labels >= 0) & (labels < NUM_CLASSES)
        for k, out in cls_all.items():
            pos_w[k] = out[..., :NUM_CLASSES].reshape(-1, NUM_CLASSES)[pos].sigmoid().max(1).values.sum().item()
        params = dict(model.named_parameters())
        return {
            "epoch": epoch,
            "loss": loss.item(),
            "loss_states": {k: v.item() for k, v in loss_states.items()},
            "head_out": head_out.detach().clone(),
            "aux_head_out": captured["aux"],
            "assign": assigns,
            "grads": {n: p.grad.detach().clone() for n, p in params.items() if p.grad is not None},
            "no_grad": [n for n, p in params.items() if p.grad is None],
            "_calls": rec.calls, "_pos_weight_sums": pos_w, "_acts": acts, "_giou": giou,
        }

    def grad_change(g, ref):
        """max |g - ref| over all parameters, relative to the largest reference gradient."""
        scale = max(v.abs().max().item() for v in ref.values())
        return max((g[n].double() - ref[n].double()).abs().max().item() for n in ref) / scale

    def kink_checks(c32, c64, state, img, gt_meta_extra, gen):
        """Float32 noise at a kink (a LeakyReLU input near 0, a max-pool near-tie, a GIoU min / max near-tie) changes
        the gradients by a jump. Returns the margins: max-pool top-2 gaps and GIoU coordinate gaps over KINK_FACTOR
        times the float32 error there (must be > 1), and the change of the float64 gradients when the slope of every
        LeakyReLU input within KINK_FACTOR x its layer's float32 error of 0 is swapped (all at once and random halves;
        must be < FLIP_TOL of the largest gradient)."""
        out = {"n_leaky_at_risk": 0, "pool_gap": math.inf, "giou_gap": math.inf}
        masks = {}
        for name, xs64 in c64["_acts"].items():
            for k, (x32, x64) in enumerate(zip(c32["_acts"][name], xs64)):
                err = (x32.double() - x64).abs().max().item()
                delta = max(KINK_FACTOR * err, 1e-6)
                if name.endswith("maxpool"):
                    u = torch.nn.functional.unfold(torch.nn.functional.pad(x64, (1, 1, 1, 1), value=-math.inf), 3,
                                                   stride=2).reshape(x64.shape[0], x64.shape[1], 9, -1)
                    top = u.topk(2, dim=2).values
                    out["pool_gap"] = min(out["pool_gap"], (top[:, :, 0] - top[:, :, 1]).min().item() / delta)
                else:
                    mask = x64.abs() < delta
                    if mask.any():
                        masks[(name, k)] = mask
                        out["n_leaky_at_risk"] += int(mask.sum())
        for (p32, _), (p64, t64) in zip(c32["_giou"], c64["_giou"]):
            delta = max(KINK_FACTOR * (p32.double() - p64).abs().max().item(), 1e-4)
            wh = torch.min(p64[:, 2:], t64[:, 2:]) - torch.max(p64[:, :2], t64[:, :2])
            gaps = torch.cat([(p64 - t64).abs().flatten(), wh.abs().flatten()])
            out["giou_gap"] = min(out["giou_gap"], gaps.min().item() / delta)
        # the gradient change when the at-risk LeakyReLU slopes flip (all at once, and three random halves), as a
        # fraction of the largest gradient of the model and of each top-level module
        out["flip_grad_change"], out["flip_grad_change_by_module"] = 0.0, {}
        if masks:
            keys = list(masks)
            subsets = [keys] + [[k for k in keys if torch.rand((), generator=gen) < 0.5] for _ in range(3)]
            for epoch, ref in ((0, c64["grads"]), (10, None)):
                if ref is None:
                    ref = run_case(state, img, gt_meta_extra, epoch, torch.float64)["grads"]
                for sub in subsets:
                    g = run_case(state, img, gt_meta_extra, epoch, torch.float64,
                                 flip={k: masks[k] for k in sub})["grads"]
                    out["flip_grad_change"] = max(out["flip_grad_change"], grad_change(g, ref))
                    for mod in sorted({n.split(".")[0] for n in ref}):
                        sub_ref = {n: v for n, v in ref.items() if n.split(".")[0] == mod}
                        d = out["flip_grad_change_by_module"]
                        d[mod] = max(d.get(mod, 0.0), grad_change(g, sub_ref))
        return out

    for seed in range(args.seed, args.seed + MAX_SEEDS):
        rng = np.random.default_rng(seed)
        gen = torch.Generator().manual_seed(seed)
        bgr = [synthetic_image(rng, IMG_SIZE, IMG_SIZE) for _ in range(3)]
        img = torch.from_numpy(np.stack([(im.astype(np.float32) - np.array(MEAN, np.float32))
                                         / np.array(STD, np.float32) for im in bgr]).transpose(0, 3, 1, 2).copy())
        gt_bboxes, gt_labels = draw_gts(rng)
        gt_meta_extra = {"gt_bboxes": gt_bboxes, "gt_labels": gt_labels,
                         "gt_bboxes_ignore": [np.zeros((0, 4), dtype=np.float32) for _ in range(3)]}
        model.float()
        packed = randomise(model, gen)
        # class biases: mean logit about MEAN_LOGIT (measured with zero class biases, train mode)
        cls_biases = [m.bias for m in head.gfl_cls] + [model.aux_head.gfl_cls.bias]
        for b in cls_biases:
            b.data[:NUM_CLASSES] = 0
        model.train().set_epoch(0)
        with torch.no_grad():
            feat = model.backbone(img)
            fpn_feat = model.fpn(feat)
            aux_feat = model.aux_fpn(feat)
            main0 = model.head(fpn_feat)[..., :NUM_CLASSES]
            aux0 = model.aux_head([torch.cat([f, a], 1) for f, a in zip(fpn_feat, aux_feat)])[..., :NUM_CLASSES]
        for b in [m.bias for m in head.gfl_cls]:
            b.data[:NUM_CLASSES] = MEAN_LOGIT - main0.mean() + torch.randn(NUM_CLASSES, generator=gen) * 0.3
        model.aux_head.gfl_cls.bias.data[:] = MEAN_LOGIT - aux0.mean() + torch.randn(NUM_CLASSES, generator=gen) * 0.3
        # distance-bin biases favouring short distances (boxes of a few strides, as a trained model's), so that the
        # coarse levels' priors fit the large boxes and get positives
        bins = -REG_BIAS_SLOPE * torch.arange(head.reg_max + 1, dtype=torch.float32).repeat(4)
        model.aux_head.gfl_reg.bias.data = bins + torch.randn(bins.shape, generator=gen) * 0.1
        for m in head.gfl_cls:
            m.bias.data[NUM_CLASSES:] = bins + torch.randn(bins.shape, generator=gen) * 0.1
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        packed_state = pack_state(model, packed)

        c0 = run_case(state, img, gt_meta_extra, 0, torch.float32, record=True)
        dsla_cases = draw_dsla_cases(rng)
        assigner = DynamicSoftLabelAssigner(topk=13)  # the head's default assigner_cfg
        with DslaRecorder(DynamicSoftLabelAssigner) as rec:
            for c in dsla_cases:
                r = assigner.assign(c["pred_scores"], c["priors"], c["decoded_bboxes"], c["gt_bboxes"],
                                    c["gt_labels"])
                c.update(gt_inds=r.gt_inds.clone(), max_overlaps=r.max_overlaps.clone(), labels=r.labels.clone(),
                         num_gt=int(r.num_gts))
                c["_calls"] = len(rec.calls)
        calls = {f"loss_img{i}": call for i, call in enumerate(c0["_calls"])}  # image 2 (no gt) is the last
        prev = 0
        for c in dsla_cases:
            if c["_calls"] > prev:
                calls[f"dsla_{c['name']}"] = rec.calls[prev]
            prev = c.pop("_calls")
        margins = {name: dsla_margins(*call) for name, call in calls.items()}
        pos_w = {k: abs(v - 1.0) for k, v in c0["_pos_weight_sums"].items()}
        worst = min(min(m["dynamic_k"], m["kth_cost"], m["conflict_cost"]) for m in margins.values())
        # positives on every level (so that every level's regression and the aux Scale parameters get gradients)
        strides = cfg.model.arch.head.strides
        level_of = torch.cat([torch.full(((IMG_SIZE // s) ** 2,), i) for i, s in enumerate(strides)])
        pos_levels = sorted({int(level_of[i]) for a in c0["assign"] for i in
                             torch.nonzero(a["labels"] < NUM_CLASSES).flatten()})
        ok = (worst > MARGIN and min(pos_w.values()) > MARGIN
              and any(m["num_conflicts"] > 0 for n, m in margins.items() if n.startswith("dsla_"))
              and any(m["num_conflicts"] > 0 for n, m in margins.items() if n.startswith("loss_"))
              and len(pos_levels) == len(cfg.model.arch.head.strides))
        msg = (f"seed {seed}: worst DSLA margin {worst:.3g}, |pos weight sum - 1| {min(pos_w.values()):.3g}, "
               f"conflicts {[m['num_conflicts'] for m in margins.values()]}, levels with positives {pos_levels}")
        if ok:
            c0_64 = run_case(state, img, gt_meta_extra, 0, torch.float64, record=True)
            kinks = kink_checks(c0, c0_64, state, img, gt_meta_extra, gen)
            msg += ", kinks " + str({k: round(v, 3) if isinstance(v, float) else v for k, v in kinks.items()})
            ok = kinks["giou_gap"] > 1  # the other kinks cannot be avoided (see the report printed at the end)
        print(msg, "ok" if ok else "redraw", flush=True)
        if ok:
            break
    else:
        raise SystemExit(f"no robust draw in {MAX_SEEDS} seeds")
    cases = [c0, run_case(state, img, gt_meta_extra, 10, torch.float32)]

    # float64: the same run (the official code keeps some float32 inside: center priors, targets, aux reg output)
    cases64 = [run_case(state, img, gt_meta_extra, e, torch.float64) for e in EPOCHS]
    model.float()
    f32_vs_f64 = {}
    for c32, c64 in zip(cases, cases64):
        for a, b in zip(c32["assign"], c64["assign"]):
            assert torch.equal(a["labels"], b["labels"]) and a["num_pos"] == b["num_pos"], "f32 / f64 assignment"
        rel = lambda x, y: abs(x - y) / max(abs(y), 1e-30)  # noqa: E731
        d = {"loss": rel(c32["loss"], c64["loss"])}
        d.update({k: rel(c32["loss_states"][k], v) for k, v in c64["loss_states"].items()})
        # gradients that are zero in exact arithmetic (a BatchNorm bias followed by a 1x1 conv and a train-mode
        # BatchNorm) are float noise in both runs: listed, and compared to the largest gradient of the model
        g_all = max(g.abs().max().item() for g in c64["grads"].values())
        zero = sorted(n for n, g in c64["grads"].items() if g.abs().max().item() < 1e-9 * g_all)
        g_tensor, g_elem, worst_param, worst_elem = 0.0, 0.0, "", ""
        for n, g in c32["grads"].items():
            g64 = c64["grads"][n]
            err = (g.double() - g64).abs()
            if n in zero:
                continue
            scale = g64.abs().max().item()
            t = err.max().item() / scale
            if t > g_tensor:
                g_tensor, worst_param = t, n
            big = g64.abs() > 1e-2 * scale
            e = (err[big] / g64[big].abs()).max().item()
            if e > g_elem:
                g_elem, worst_elem = e, n
        d["grad_max_abs_err_over_tensor_max"] = g_tensor
        d["grad_worst_param"] = worst_param
        d["grad_rel_err_elements_above_1pct_of_tensor_max"] = g_elem
        d["grad_worst_param_elementwise"] = worst_elem
        d["grad_max_abs_err_over_module_max"] = {
            mod: grad_change({n: c32["grads"][n] for n in c64["grads"] if n.split(".")[0] == mod},
                             {n: v for n, v in c64["grads"].items() if n.split(".")[0] == mod})
            for mod in sorted({n.split(".")[0] for n in c64["grads"]})}
        d["grads_zero_in_theory"] = zero
        d["grads_zero_in_theory_f32_max_abs_over_model_max"] = max(
            (c32["grads"][n].abs().max().item() / g_all for n in zero), default=0.0)
        out64 = (c32["head_out"].double() - c64["head_out"]).abs().max().item()
        d["head_out_max_abs_err"] = out64
        d["aux_head_out_max_abs_err"] = (c32["aux_head_out"].double() - c64["aux_head_out"]).abs().max().item()
        assert set(c32["no_grad"]) == set(c64["no_grad"])
        f32_vs_f64[f"epoch{c32['epoch']}"] = d
        c32["loss_f64"] = c64["loss"]
        c32["loss_states_f64"] = c64["loss_states"]

    # share what both epochs have equal (stored once by torch.save)
    a, b = cases
    for key in ("head_out", "aux_head_out"):
        if torch.equal(a[key], b[key]):
            b[key] = a[key]
    if all(all(torch.equal(x[k], y[k]) if torch.is_tensor(x[k]) else x[k] == y[k] for k in x)
           for x, y in zip(a["assign"], b["assign"])):
        b["assign"] = a["assign"]
    shared = []
    for n, g in b["grads"].items():
        if n in a["grads"] and torch.equal(g, a["grads"][n]):
            b["grads"][n] = a["grads"][n]
            shared.append(n)
    for c in cases:
        for k in ("_calls", "_acts", "_giou"):
            c.pop(k)
        c["pos_weight_sums"] = c.pop("_pos_weight_sums")

    fixture = {
        "name": "nanodet-plus-train-small",
        "commit": commit,
        "torch": str(torch.__version__),
        "base_config": BASE_CONFIG,
        "model_config": plain(cfg.model),
        "seed": seed,
        "first_seed": args.seed,
        "state": packed_state,
        "official_keys": [(k, list(v.shape)) for k, v in state.items()],
        "mean": MEAN, "std": STD,
        "img": img,
        "gt_bboxes": [torch.from_numpy(g) for g in gt_bboxes],
        "gt_labels": [torch.from_numpy(lab) for lab in gt_labels],
        "gt_bboxes_ignore": [torch.from_numpy(g) for g in gt_meta_extra["gt_bboxes_ignore"]],
        "center_priors": grid_priors(IMG_SIZE, cfg.model.arch.head.strides),
        "cases": cases,
        "dsla_topk": 13,
        "dsla_cases": dsla_cases,
        "margins": margins,
        "kink_margins": kinks,
        "f32_vs_f64": f32_vs_f64,
        "grads_shared_between_epochs": shared,
    }
    assert torch.equal(unpack_state(packed_state)["head.gfl_cls.0.weight"], state["head.gfl_cls.0.weight"])
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "train.pt"
    torch.save(fixture, path)
    torch.load(path, weights_only=True)  # loadable without pickled classes
    print(f"wrote {path} ({path.stat().st_size / 2 ** 20:.2f} MiB), seed {seed}")
    for c in cases:
        print(f"epoch {c['epoch']}: loss {c['loss']:.6f}", {k: round(v, 6) for k, v in c["loss_states"].items()},
              "num_pos", [x["num_pos"] for x in c["assign"]], "no_grad", c["no_grad"])
    for n, m in margins.items():
        print(n, {k: (round(v, 5) if isinstance(v, float) else v) for k, v in m.items()})
    print("kinks", kinks)
    print("pos weight sums", [c["pos_weight_sums"] for c in cases])
    for k, d in f32_vs_f64.items():
        print(k, d)
    print("grads shared between epochs:", len(shared), "of", len(b["grads"]))


if __name__ == "__main__":
    main()
