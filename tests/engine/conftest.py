"""Fixtures shared by the engine tests."""
from __future__ import annotations

import pytest

from gfldet.data.synthetic import write_coco


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny generated COCO-format data set: 4 training and 2 validation images of 96 px, 3 classes.
    Returns ``(train_ann, train_images, val_ann, val_images)``."""
    d = tmp_path_factory.mktemp("coco")
    tr = write_coco(d / "train", n=4, seed=0, size=(96, 96))
    va = write_coco(d / "val", n=2, seed=1, size=(96, 96))
    return tr, str(d / "train"), va, str(d / "val")

