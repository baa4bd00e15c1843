import numpy as np
import pytest
import torch

from gfldet.analysis import edge_records, match_detections, roc_auc, spearman, uncertainty_report


def test_match_detections_greedy_by_score_and_class():
    gt = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]])
    gl = torch.tensor([0, 1])
    det = torch.tensor([[0.0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]])
    dl = torch.tensor([0, 0, 0, 1])  # the third detection has the wrong class
    sc = torch.tensor([0.5, 0.9, 0.8, 0.7])
    dm, gm = match_detections(det, sc, dl, gt, gl)
    assert dm.tolist() == [-1, 0, -1, -1]  # the higher-scoring duplicate takes GT 0
    assert gm.tolist() == [1, -1]
    dm, gm = match_detections(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), gt, gl)
    assert gm.tolist() == [-1, -1]


def test_spearman_and_auc_closed_forms():
    x = np.array([1.0, 2, 3, 4, 5])
    assert spearman(x, x**3) == pytest.approx(1.0)
    assert spearman(x, -x) == pytest.approx(-1.0)
    assert spearman(np.array([1.0, 2, 2, 3]), np.array([1.0, 2, 3, 4])) == pytest.approx(0.9486833, abs=1e-6)  # ties: average ranks
    assert spearman(x[:2], x[:2]) is None and spearman(np.ones(5), x) is None
    assert roc_auc(np.array([0.1, 0.2, 0.8, 0.9]), np.array([False, False, True, True])) == 1.0
    assert roc_auc(np.array([0.5, 0.5]), np.array([True, False])) == 0.5
    assert roc_auc(np.array([0.1, 0.2]), np.array([True, True])) is None


def test_edge_records_and_report():
    gts = [{"boxes": np.array([[10.0, 10, 50, 50], [60, 60, 90, 90]], np.float32), "labels": np.array([0, 1]),
            "ambiguous": np.array([[False] * 4, [True, False, True, False]])}]
    dets = [{"boxes": torch.tensor([[11.0, 10, 50, 48], [60, 58, 95, 90], [0, 0, 5, 5]]),
             "scores": torch.tensor([0.9, 0.8, 0.7]), "labels": torch.tensor([0, 1, 0]),
             "edge_std": torch.tensor([[0.5, 0.4, 0.3, 1.0], [2.0, 0.6, 3.0, 0.2], [9.0, 9, 9, 9]]),
             "edge_entropy": torch.rand(3, 4), "edge_peak": torch.rand(3, 4), "loc_conf": torch.tensor([0.9, 0.5, 0.1])}]
    rec = edge_records(dets, gts)
    assert rec["err"].tolist() == [1, 0, 0, 2, 0, 2, 5, 0]  # the unmatched third detection is left out
    assert rec["ambiguous"].tolist() == [False] * 4 + [True, False, True, False]
    r = uncertainty_report(rec)
    assert r["matched_boxes"] == 2 and r["edges"] == 8 and r["ambiguous_edges"] == 2
    assert r["mean_std_px_ambiguous"] == pytest.approx(2.5) and r["mean_std_px_sharp"] == pytest.approx((0.5 + 0.4 + 0.3 + 1 + 0.6 + 0.2) / 6)
    assert r["auc_std_ambiguous_vs_sharp"] == 1.0
    assert r["spearman_std_vs_err"] > 0.5
    empty = uncertainty_report(edge_records([{k: v[:0] for k, v in dets[0].items()}], gts))
    assert empty["edges"] == 0 and empty["spearman_std_vs_err"] is None and empty["mean_std_px_sharp"] is None
