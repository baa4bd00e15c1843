"""Fixtures of the data tests."""
import pytest

from tests.data.coco_cases import base_json, write_images, write_json


@pytest.fixture
def coco(tmp_path):
    """(ann_file, image_dir, data) of a valid dataset; tests edit ``data`` and rewrite the file."""
    write_images(tmp_path)
    data = base_json()
    return write_json(tmp_path, data), tmp_path / "images", data
