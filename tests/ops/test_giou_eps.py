"""The GIoU loss floors union and enclosing area at the reference's eps (mmdetection GIoULoss: 1e-6)."""
import pytest
import torch

from gfldet.ops import giou_loss


@pytest.mark.parametrize("area", [1e-8, 4e-8])
def test_giou_loss_floors_at_the_references_eps_on_a_collapsed_box(area):
    # identical boxes of area a < eps: overlap = union = enclosure = a, all floored to eps, so
    # GIoU = a / eps - (eps - eps) / eps = a / eps and the loss is 1 - a / eps: 1 - 0.01 with 1e-6, 1 - 0.1 with 1e-7
    side = area ** 0.5
    box = torch.tensor([[10.0, 20.0, 10.0 + side, 20.0 + side]], dtype=torch.float64)
    a = float((box[0, 2] - box[0, 0]) * (box[0, 3] - box[0, 1]))
    torch.testing.assert_close(giou_loss(box, box.clone(), reduction="none"),
                               torch.tensor([1.0 - a / 1e-6], dtype=torch.float64), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(giou_loss(box, box.clone(), reduction="none", eps=1e-7),
                               torch.tensor([1.0 - a / 1e-7], dtype=torch.float64), rtol=1e-9, atol=1e-12)


def test_giou_loss_is_unchanged_by_eps_on_ordinary_boxes():
    pred = torch.tensor([[0.0, 0.0, 4.0, 3.0], [1.0, 1.0, 2.5, 6.0]], dtype=torch.float64)
    target = torch.tensor([[1.0, 0.5, 5.0, 3.5], [0.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    torch.testing.assert_close(giou_loss(pred, target, reduction="none"),
                               giou_loss(pred, target, reduction="none", eps=1e-7), rtol=0, atol=0)
