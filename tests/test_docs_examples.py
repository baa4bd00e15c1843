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
