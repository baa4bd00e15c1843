"""The Python examples of docs/architecture.md run as written."""
import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def test_architecture_example_trains_with_new_parts():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert blocks, "docs/architecture.md lost its example"
    scope: dict = {}
    exec(compile(blocks[0], str(DOC), "exec"), scope)
    model, losses = scope["model"], scope["losses"]
    assert type(model.quality).__name__ == "SharpQFL" and type(model.assigner).__name__ == "ATSSOrHighIoU"
    assert set(losses) == {"loss_qfl", "loss_bbox", "loss_dfl"}
    assert all(bool(v.detach().isfinite()) for v in losses.values()) and float(losses["loss_bbox"].detach()) > 0  # got positives
    assert model.head.gfl_cls.weight.grad is not None and model.head.gfl_cls.weight.grad.abs().sum() > 0


def test_architecture_example_adds_a_box_representation():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 2, "docs/architecture.md lost its box representation example"
    scope: dict = {}
    exec(compile(blocks[1], str(DOC), "exec"), scope)
    model, losses, dets = scope["laplace"], scope["box_losses"], scope["detections"]
    assert model.head.gfl_reg.out_channels == 8  # the head sized by the part, not by the config's reg_max
    assert set(losses) == {"loss_qfl", "loss_bbox", "loss_laplace"} and float(losses["loss_laplace"].detach()) != 0
    assert all(bool(v.detach().isfinite()) for v in losses.values())
    assert model.head.gfl_reg.weight.grad is not None and model.head.gfl_reg.weight.grad.abs().sum() > 0
    d = dets[0]
    assert d["edge_std"].shape == (len(d["boxes"]), 4) and bool((d["edge_std"] > 0).all())
    from gfldet.export import is_gfl_assembly
    assert not is_gfl_assembly(model)  # the exporter refuses it by the part's own word
