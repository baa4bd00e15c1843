"""gfldet.files: what every writer in gfldet relies on - nothing a user had is lost or half replaced."""
import json
import os

import pytest

from gfldet.files import atomic_path, check_output_folder, refuse_existing, replace_together, write_json


def test_refuse_existing_names_the_file_unless_overwrite(tmp_path):
    a, b = tmp_path / "a.xml", tmp_path / "a.bin"
    refuse_existing([a, b], overwrite=False)  # nothing there: no error
    b.write_text("weights")
    with pytest.raises(FileExistsError, match=r"a\.bin exists \(pass --force"):
        refuse_existing([a, b], overwrite=False)
    refuse_existing([a, b], overwrite=True)
    assert b.read_text() == "weights"


def test_check_output_folder_names_the_folder_and_every_taken_file(tmp_path):
    out = tmp_path / "results"
    assert check_output_folder(out, ("metrics.json", "pr_curve.png")) == out  # a new folder: fine, not created
    assert not out.exists()
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    (out / "pr_curve.png").write_bytes(b"png")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError) as info:
        check_output_folder(out, ("metrics.json", "pr_curve.png", "per_class_ap.md"))
    assert str(info.value) == (f"--out {out}: already holds metrics.json, pr_curve.png; pass --force to replace them, "
                               "or choose another folder")
    assert check_output_folder(out, ("metrics.json",), overwrite=True) == out
    assert check_output_folder(out, ("other.json",)) == out  # files it does not write are no obstacle
    with pytest.raises(FileExistsError, match=r"--out .*notes.txt: exists and is not a folder"):
        check_output_folder(out / "notes.txt", ("metrics.json",))
    assert (out / "notes.txt").read_text() == "mine"


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    p = tmp_path / "metrics.json"
    write_json(p, {"AP": 0.5})
    with pytest.raises(TypeError):
        write_json(p, {"AP": object()})  # does not serialise
    with pytest.raises(RuntimeError, match="half"):
        with atomic_path(p) as tmp:
            tmp.write_text('{"AP": 0.')
            raise RuntimeError("half written")
    assert json.loads(p.read_text()) == {"AP": 0.5}
    assert [f.name for f in tmp_path.iterdir()] == ["metrics.json"]


def test_a_writer_that_writes_elsewhere_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="left no file"):
        with atomic_path(tmp_path / "out.onnx", suffix=".onnx") as tmp:
            tmp.unlink()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")
def test_written_files_follow_the_umask_not_the_temp_files_mode(tmp_path):
    old = os.umask(0o027)
    try:
        p = write_json(tmp_path / "x.json", [1])
        assert os.stat(p).st_mode & 0o777 == 0o640
    finally:
        os.umask(old)


def test_replace_together_rolls_back_when_one_rename_fails(tmp_path):
    xml, bin_ = tmp_path / "m.xml", tmp_path / "m.bin"
    xml.write_text("old xml")
    bin_.write_text("old bin")
    new_bin = tmp_path / "t.bin"
    new_bin.write_text("new bin")
    missing_xml = tmp_path / "t.xml"  # the second rename fails
    with pytest.raises(FileNotFoundError):
        replace_together([(new_bin, bin_), (missing_xml, xml)])
    assert (xml.read_text(), bin_.read_text()) == ("old xml", "old bin")
    assert sorted(f.name for f in tmp_path.iterdir()) == ["m.bin", "m.xml"]  # no half pair, no backups left
    new_xml = tmp_path / "t2.xml"
    new_xml.write_text("new xml")
    new_bin.write_text("new bin")
    replace_together([(new_bin, bin_), (new_xml, xml)])
    assert (xml.read_text(), bin_.read_text()) == ("new xml", "new bin")
    assert sorted(f.name for f in tmp_path.iterdir()) == ["m.bin", "m.xml"]
