import math

import torch

import gfldet
from gfldet.ops.uncertainty import UNCERTAINTY_KEYS, edge_uncertainty

BINS = torch.arange(17, dtype=torch.float32)


def _dist(*rows):
    return torch.stack([torch.tensor(r, dtype=torch.float32) for r in rows])[None]  # (1, 4, B)


def test_sharp_edge_has_no_uncertainty():
    p = torch.zeros(1, 4, 17)
    p[0, torch.arange(4), torch.tensor([0, 3, 7, 16])] = 1
    u = edge_uncertainty(p, BINS, 8.0)
    torch.testing.assert_close(u["edge_peak"], torch.ones(1, 4))
    torch.testing.assert_close(u["edge_entropy"], torch.zeros(1, 4))
    torch.testing.assert_close(u["edge_std"], torch.zeros(1, 4))
    torch.testing.assert_close(u["loc_conf"], torch.ones(1))


def test_dfl_optimum_split_over_two_bins():
    # DFL's minimum for y = 4.25 puts 0.75 on bin 4 and 0.25 on bin 5: std = sqrt(0.75 * 0.25) bins
    p = torch.zeros(1, 4, 17)
    p[0, :, 4], p[0, :, 5] = 0.75, 0.25
    u = edge_uncertainty(p, BINS, torch.tensor([16.0]))
    torch.testing.assert_close(u["edge_std"], torch.full((1, 4), math.sqrt(0.75 * 0.25) * 16.0))
    torch.testing.assert_close(u["edge_peak"], torch.full((1, 4), 0.75))
    torch.testing.assert_close(u["loc_conf"], torch.ones(1))  # all mass on the two top bins
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    torch.testing.assert_close(u["edge_entropy"], torch.full((1, 4), h))


def test_uniform_is_maximally_uncertain():
    p = torch.full((2, 4, 17), 1 / 17)
    scale = torch.tensor([[1.0, 2.0, 1.0, 2.0], [8.0, 8.0, 8.0, 8.0]])  # per box and edge
    u = edge_uncertainty(p, BINS, scale)
    std_bins = math.sqrt((17**2 - 1) / 12)  # discrete uniform on 0..16
    torch.testing.assert_close(u["edge_std"], std_bins * scale)
    torch.testing.assert_close(u["edge_entropy"], torch.full((2, 4), math.log(17)))
    torch.testing.assert_close(u["loc_conf"], torch.full((2,), 2 / 17))


def test_spread_orders_the_summaries():
    sharp = [0.0] * 17
    sharp[5] = 0.9
    sharp[6] = 0.1
    wide = [0.0] * 17
    for i, v in zip(range(3, 9), (0.1, 0.15, 0.25, 0.25, 0.15, 0.1)):
        wide[i] = v
    u = edge_uncertainty(_dist(sharp, wide, sharp, wide), BINS, 1.0)
    assert u["edge_std"][0, 1] > u["edge_std"][0, 0]
    assert u["edge_entropy"][0, 1] > u["edge_entropy"][0, 0]
    assert u["edge_peak"][0, 1] < u["edge_peak"][0, 0]


def test_entropy_from_logits_is_the_entropy_of_the_probabilities():
    # the exported graph takes the entropy from the logits (one log per edge): the same value as -sum p log p, for
    # spread, sharp (bins far below the peak underflow to 0) and uniform edges
    torch.manual_seed(0)
    z = torch.cat([torch.randn(50, 4, 17), 40 * torch.randn(50, 4, 17), torch.zeros(1, 4, 17)])
    p = z.softmax(-1)
    from_probs = edge_uncertainty(p, BINS, 8.0)
    from_logits = edge_uncertainty(p, BINS, 8.0, logits=z.reshape(-1, 68))
    # float32 sums of 17 terms of at most log(17): rounding in the last few bits of ~3
    torch.testing.assert_close(from_logits["edge_entropy"], from_probs["edge_entropy"], rtol=0, atol=1e-5)
    assert from_logits["edge_entropy"].min() >= 0
    torch.testing.assert_close(from_logits["edge_entropy"][-1], torch.full((4,), math.log(17)), rtol=0, atol=1e-5)
    for k in ("edge_peak", "edge_std", "loc_conf"):
        torch.testing.assert_close(from_logits[k], from_probs[k], rtol=0, atol=0)


def test_empty_input():
    u = edge_uncertainty(torch.zeros(0, 4, 17), BINS, torch.zeros(0))
    assert all(u[k].shape[0] == 0 for k in UNCERTAINTY_KEYS)


@torch.no_grad()
def test_detections_carry_uncertainty_in_the_image_frame():
    torch.manual_seed(0)
    model = gfldet.gfl_resnet18_fpn(num_classes=2, fpn_channels=32, head_channels=32, gn_groups=8)
    torch.nn.init.constant_(model.head.gfl_cls.bias, 0.0)  # scores ~0.5, so boxes survive the threshold
    torch.nn.init.normal_(model.head.gfl_reg.weight, std=0.05)
    model.configure(min_size=None, max_size=None)
    model.eval()
    img = torch.randint(0, 256, (3, 96, 128), dtype=torch.uint8)
    det = model([img])[0]
    n = det["boxes"].shape[0]
    assert n > 0
    for k in UNCERTAINTY_KEYS:
        assert k in det and det[k].shape[0] == n and torch.isfinite(det[k]).all()
    assert set(det["strides"].tolist()) <= {8.0, 16.0, 32.0, 64.0, 128.0}
    # edge_std is the distribution's std times the box's stride
    ref = edge_uncertainty(det["distributions"], BINS, det["strides"])
    torch.testing.assert_close(det["edge_std"], ref["edge_std"])
    torch.testing.assert_close(det["loc_conf"], ref["loc_conf"])
    torch.testing.assert_close(det["edge_entropy"], ref["edge_entropy"], rtol=0, atol=1e-5)
    # an image resized by the model gets its std back in the pixels of the image given
    model.configure(min_size=192, max_size=256)  # 2x up-scaling inside the model
    det2 = model([img])[0]
    ref2 = edge_uncertainty(det2["distributions"], BINS, det2["strides"])
    torch.testing.assert_close(det2["edge_std"], ref2["edge_std"] / 2)
