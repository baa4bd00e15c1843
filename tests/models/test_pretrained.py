"""Published weights by name (``gfldet.models.pretrained``): the table, and download / cache / errors through a
checkpoint served from 127.0.0.1 (never the internet)."""
from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import socket
import threading

import numpy as np
import pytest
import torch
from PIL import Image

import gfldet
from gfldet.cli import main
from gfldet.models import pretrained
from gfldet.models.coco_classes import COCO_CATEGORY_IDS, COCO_NAMES
from gfldet.models.mmdet import to_mmdet_state_dict
from gfldet.models.pretrained import PRETRAINED, PretrainedError, PretrainedWeights, load_pretrained

# mmdetection's configs/gfl/metafile.yml, copied: name -> (Weights, box AP)
METAFILE = {
    "gfl_r50_fpn_1x_coco": ("https://download.openmmlab.com/mmdetection/v2.0/gfl/gfl_r50_fpn_1x_coco/"
                            "gfl_r50_fpn_1x_coco_20200629_121244-25944287.pth", 40.2),
    "gfl_r50_fpn_mstrain_2x_coco": ("https://download.openmmlab.com/mmdetection/v2.0/gfl/gfl_r50_fpn_mstrain_2x_coco/"
                                    "gfl_r50_fpn_mstrain_2x_coco_20200629_213802-37bb1edc.pth", 42.9),
    "gfl_r101_fpn_mstrain_2x_coco": ("https://download.openmmlab.com/mmdetection/v2.0/gfl/gfl_r101_fpn_mstrain_2x_coco/"
                                     "gfl_r101_fpn_mstrain_2x_coco_20200629_200126-dd12f847.pth", 44.7),
    "gfl_r101_fpn_dconv_c3-c5_mstrain_2x_coco": (
        "https://download.openmmlab.com/mmdetection/v2.0/gfl/gfl_r101_fpn_dconv_c3-c5_mstrain_2x_coco/"
        "gfl_r101_fpn_dconv_c3-c5_mstrain_2x_coco_20200630_102002-134b07df.pth", 47.1),
    "gfl_x101_32x4d_fpn_mstrain_2x_coco": (
        "https://download.openmmlab.com/mmdetection/v2.0/gfl/gfl_x101_32x4d_fpn_mstrain_2x_coco/"
        "gfl_x101_32x4d_fpn_mstrain_2x_coco_20200630_102002-50c1ffdb.pth", 45.9),
    "gfl_x101_32x4d_fpn_dconv_c4-c5_mstrain_2x_coco": (
        "https://download.openmmlab.com/mmdetection/v2.0/gfl/gfl_x101_32x4d_fpn_dconv_c4-c5_mstrain_2x_coco/"
        "gfl_x101_32x4d_fpn_dconv_c4-c5_mstrain_2x_coco_20200630_102002-14a2bf25.pth", 48.1),
}


def test_table_holds_mmdetections_six_checkpoints_as_published():
    published = {n: (w.url, w.box_ap) for n, w in PRETRAINED.items() if w.url}
    assert published == METAFILE
    for w in PRETRAINED.values():
        assert w.arch in gfldet.models.ARCHS
        if w.url:
            # torch hub's check_hash reads the same prefix off the file name (HASH_REGEX), "c3-c5" notwithstanding
            assert torch.hub.HASH_REGEX.search(w.file_name).group(1) == w.sha256 and len(w.sha256) == 8
    t = gfldet.ModelConfig()  # the published AP's test settings are the defaults
    settings = (t.score_thr, t.nms_iou, t.max_per_img, t.nms_pre, t.min_size, t.max_size)
    assert settings == (0.05, 0.6, 100, 1000, 800, 1333)
    assert set(pretrained.COCO_TEST_FIELDS) <= set(gfldet.models.config.RUNTIME_FIELDS)
    assert PRETRAINED["gfl_r101_fpn_dconv_c3-c5_mstrain_2x_coco"].dcn_stages == ("c3", "c4", "c5")
    assert PRETRAINED["gfl_x101_32x4d_fpn_dconv_c4-c5_mstrain_2x_coco"].dcn_stages == ("c4", "c5")
    assert PRETRAINED["gfocal_r50_fpn_1x"].url is None and PRETRAINED["gfocal_r50_fpn_1x"].gfl_version == 2


class Meta:
    """Not a plain type: a file holding it is refused by weights_only loading."""


def _mmdet_bytes(seed: int = 0, meta: dict | None = None) -> tuple[bytes, gfldet.GFL]:
    torch.manual_seed(seed)
    m = gfldet.gfl_resnet18_fpn(num_classes=80, base_channels=8, fpn_channels=32, head_channels=32,
                                stacked_convs=1, reg_max=4)
    torch.nn.init.constant_(m.head.gfl_cls.bias, -1.0)  # scores around 0.27: detections on any image
    buf = io.BytesIO()
    torch.save({"state_dict": to_mmdet_state_dict(m), "meta": meta if meta is not None else {"epoch": 12}}, buf)
    return buf.getvalue(), m.eval()


class Server:
    """Serves ``files`` (URL path -> bytes) on 127.0.0.1 at a free port; counts the GET requests."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.requests = files, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """torch hub's folder under tmp_path; the folder downloads go to."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    folder = pretrained.cache_folder()
    assert folder.startswith(str(tmp_path)), "torch.hub.set_dir was called elsewhere: TORCH_HOME not in effect"
    return folder


@pytest.fixture
def served(hub, monkeypatch):
    """A tiny mmdetection GFL file served as ``tiny_gfl-<sha256[:8]>.pth`` and a table entry ``tiny_gfl`` for it."""
    data, model = _mmdet_bytes()
    digest = hashlib.sha256(data).hexdigest()[:8]
    fname = f"tiny_gfl_20240101-{digest}.pth"
    server = Server({f"/gfl/{fname}": data})
    entry = PretrainedWeights("tiny_gfl", "gfl_resnet18_fpn", 12.3, f"{server.url}/gfl/{fname}", digest, "test")
    monkeypatch.setitem(PRETRAINED, "tiny_gfl", entry)
    yield server, entry, data, model
    server.stop()


def _image(seed=0, h=64, w=80):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (3, h, w), dtype=np.uint8))


def test_downloads_once_then_loads_from_the_cache(served, hub, tmp_path):
    server, entry, data, model = served
    small = dict(min_size=96, max_size=128)
    loaded = load_pretrained("tiny_gfl", progress=False, **small)
    path = os.path.join(hub, entry.file_name)
    assert os.path.isfile(path) and open(path, "rb").read() == data
    assert server.requests == [f"/gfl/{entry.file_name}"]
    assert loaded.class_names == list(COCO_NAMES) and not loaded.training
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    direct = gfldet.from_mmdet(path, **small)
    with torch.inference_mode():
        a, b = loaded([_image()])[0], direct([_image()])[0]
    assert len(a["boxes"]) > 0
    for key in ("boxes", "scores", "labels"):
        assert torch.equal(a[key], b[key]), key
    server.stop()  # the second call must not need the network
    again = gfldet.load_pretrained("tiny_gfl", progress=False)
    assert len(server.requests) == 1
    cfg = again.config  # the table's test settings
    settings = (cfg.min_size, cfg.max_size, cfg.score_thr, cfg.nms_iou, cfg.max_per_img, cfg.nms_pre)
    assert settings == (800, 1333, 0.05, 0.6, 100, 1000)
    assert load_pretrained("tiny_gfl", progress=False, score_thr=0.3).config.score_thr == 0.3
    assert os.listdir(hub) == [entry.file_name]


def test_wrong_hash_is_refused_and_not_kept(served, hub, monkeypatch):
    server, entry, data, _ = served
    bad = PretrainedWeights("tiny_gfl", entry.arch, 1.0, entry.url, "deadbeef", "test")  # the file's hash is another
    monkeypatch.setitem(PRETRAINED, "tiny_gfl", bad)
    with pytest.raises(PretrainedError, match="SHA-256") as e:
        load_pretrained("tiny_gfl", progress=False)
    assert entry.file_name in str(e.value) and "deadbeef" in str(e.value)
    assert os.listdir(hub) == []  # neither the file nor a .partial


def test_a_file_of_another_architecture_is_refused(served, hub, monkeypatch):
    server, entry, data, _ = served
    monkeypatch.setitem(PRETRAINED, "tiny_gfl", PretrainedWeights("tiny_gfl", "gfl_resnet50_fpn", 1.0, entry.url,
                                                                  entry.sha256))
    with pytest.raises(PretrainedError, match="gfl_resnet50_fpn") as e:
        load_pretrained("tiny_gfl", progress=False)
    assert entry.file_name in str(e.value) and "'depth': 18" in str(e.value)


def test_a_file_without_the_tables_dcn_stages_is_refused(served, hub, monkeypatch):
    server, entry, data, _ = served
    monkeypatch.setitem(PRETRAINED, "tiny_gfl", PretrainedWeights("tiny_gfl", entry.arch, 1.0, entry.url, entry.sha256,
                                                                  dcn_stages=("c4", "c5")))
    with pytest.raises(PretrainedError, match=r"'stage_with_dcn': \(False, False, False, False\)"):
        load_pretrained("tiny_gfl", progress=False)


def test_damaged_cached_file_names_the_file(served, hub):
    server, entry, data, _ = served
    path = os.path.join(hub, entry.file_name)
    os.makedirs(hub, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])  # truncated, e.g. copied by hand
    with pytest.raises(PretrainedError, match="damaged") as e:
        load_pretrained("tiny_gfl", progress=False)
    assert path in str(e.value) and "delete it" in str(e.value) and entry.url in str(e.value)
    assert server.requests == []  # a cached file is trusted to exist, not downloaded again


def test_unreachable_url_says_where_to_place_the_file(hub, monkeypatch):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/gfl/tiny_gfl-0123abcd.pth"
    monkeypatch.setitem(PRETRAINED, "tiny_gfl", PretrainedWeights("tiny_gfl", "gfl_resnet18_fpn", 1.0, url, "0123abcd"))
    with pytest.raises(PretrainedError) as e:
        load_pretrained("tiny_gfl", progress=False)
    msg = str(e.value)
    assert url in msg and hub in msg and "tiny_gfl-0123abcd.pth" in msg and "network" in msg
    assert not os.path.exists(os.path.join(hub, "tiny_gfl-0123abcd.pth"))


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(PretrainedError) as e:
        load_pretrained("gfl_r50_fpn_3x_coco")
    assert "gfl_r50_fpn_3x_coco" in str(e.value)
    assert all(n in str(e.value) for n in PRETRAINED)
    with pytest.raises(FileNotFoundError, match="no/such/file.pth"):
        load_pretrained("no/such/file.pth")


def test_local_only_entry_says_where_to_get_it(hub):
    with pytest.raises(PretrainedError) as e:
        load_pretrained("gfocal_r50_fpn_1x")
    assert "github.com/implus/GFocalV2" in str(e.value) and "path" in str(e.value)
    assert not os.path.exists(hub)  # nothing attempted


def test_a_local_file_path_loads_with_the_test_settings(tmp_path):
    data, model = _mmdet_bytes(seed=1)
    p = tmp_path / "gfocal_download.pth"
    p.write_bytes(data)
    loaded = load_pretrained(p)
    assert loaded.class_names == list(COCO_NAMES) and loaded.config.min_size == 800
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    # mmdetection's 2020 files predate torch's zip format: the legacy pickle format loads with weights_only too
    legacy = tmp_path / "legacy.pth"
    names = tuple(f"class{i}" for i in range(80))
    torch.save({"state_dict": to_mmdet_state_dict(model), "meta": {"CLASSES": names, "config": "...", "epoch": 24}},
               legacy, _use_new_zipfile_serialization=False)
    assert legacy.read_bytes()[:1] == b"\x80"
    from_legacy = load_pretrained(legacy)
    assert from_legacy.class_names == list(names)  # a file's own names are kept
    assert torch.equal(from_legacy.head.gfl_cls.weight, model.head.gfl_cls.weight)
    unsafe = tmp_path / "unsafe.pth"
    unsafe.write_bytes(_mmdet_bytes(meta={"obj": Meta()})[0])
    with pytest.raises(ValueError, match="unsafe.pth.*Python objects"):
        load_pretrained(unsafe)  # weights_only: never unpickled into code


def _coco_folder(root, n=2):
    """``root/images`` with ``n`` small images and ``root/ann.json`` with COCO's 80 categories and a box each."""
    (root / "images").mkdir(parents=True)
    images, anns = [], []
    for i in range(n):
        Image.fromarray(_image(i).permute(1, 2, 0).numpy()).save(root / "images" / f"im{i}.png")
        images.append({"id": i + 1, "file_name": f"im{i}.png", "width": 80, "height": 64})
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [10, 10, 30, 20], "area": 600,
                     "iscrowd": 0})
    cats = [{"id": c, "name": name} for c, name in zip(COCO_CATEGORY_IDS, COCO_NAMES)]
    (root / "ann.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return root / "images", root / "ann.json"


def test_cli_predict_with_weights_name(served, tmp_path, capsys):
    server, entry, data, _ = served
    images, _ = _coco_folder(tmp_path / "data")
    out = tmp_path / "pred"
    assert main(["predict", "--weights", "tiny_gfl", str(images), "--out", str(out), "--no-draw", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 2
    results = json.loads((out / "predictions.json").read_text())
    assert results and {r["category"] for r in results} <= set(COCO_NAMES)
    assert {r["category_id"] for r in results} <= set(COCO_CATEGORY_IDS)  # COCO's ids, not label + 1
    assert len(server.requests) == 1
    # the same weights from the file: the same detections
    again = tmp_path / "pred2"
    path = os.path.join(pretrained.cache_folder(), entry.file_name)
    assert main(["predict", "--weights", path, str(images), "--out", str(again), "--no-draw", "--no-progress"]) == 0
    assert json.loads((again / "predictions.json").read_text()) == results and len(server.requests) == 1


def test_cli_weights_and_checkpoint_exclude_each_other(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["predict", "--weights", "tiny_gfl", "--checkpoint", "x.pt", str(tmp_path)])
    assert e.value.code == 2 and "not allowed with" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", "--ann", "a.json", "--images", "i"])  # one of them is required
    assert "one of the arguments --checkpoint --weights is required" in capsys.readouterr().err
    images, _ = _coco_folder(tmp_path / "data", n=1)
    assert main(["predict", "--weights", "gfl_r50_fpn_3x_coco", str(images), "--out", str(tmp_path / "o")]) == 2
    assert "gfl_r50_fpn_1x_coco" in capsys.readouterr().err  # the known names, as a message (no traceback)


def test_cli_eval_with_weights_name(served, tmp_path, capsys):
    server, entry, data, _ = served
    images, ann = _coco_folder(tmp_path / "data")
    out = tmp_path / "metrics"
    assert main(["eval", "--weights", "tiny_gfl", "--ann", str(ann), "--images", str(images), "--out", str(out),
                 "--no-progress", "--workers", "0"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert isinstance(metrics["AP"], float) and 0 <= metrics["AP"] <= 1
    detections = json.loads((out / "detections.json").read_text())  # the served weights' boxes, in COCO's ids
    assert detections and {d["category_id"] for d in detections} <= set(COCO_CATEGORY_IDS)
    assert len(server.requests) == 1
    assert main(["eval", "--weights", "tiny_gfl"]) == 2
    assert "tiny_gfl names no validation data" in capsys.readouterr().err
