"""Writing result files without losing what a user had: the one rule every writer in gfldet goes through.

- :func:`refuse_existing`: outputs that exist are replaced only when asked (``--force`` / ``overwrite=True``);
  :func:`check_output_folder` the same for the files a command writes into a results folder.
- :func:`atomic_path`: a file is written under a temporary sibling name and renamed onto its own name only once
  it is complete, so an earlier file is replaced whole or not at all and a crash leaves no half-written file; the
  temporary file is removed on failure.
- :func:`write_json`, :func:`write_text`: the two common cases.
- :func:`replace_together`: several finished files (an OpenVINO IR's ``.xml`` and ``.bin``) renamed into place as
  one step, rolled back if one rename fails.

Written files get the mode ``0o666 & ~umask``, as any file the process creates, whatever the temporary file had.
Imports nothing else of gfldet (rank 0 of the layer map in tests/test_layers.py).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["sha256_file", "hash_prefix", "refuse_existing", "check_output_folder", "atomic_path", "write_json", "write_text", "replace_together",
           "file_kind", "first_line", "TORCH_SUFFIXES"]


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def hash_prefix(file_name: str) -> str | None:
    """The SHA-256 prefix a published weights file carries in its name (``resnet50-0676ba61.pth`` -> ``0676ba61``),
    read as torch hub's ``check_hash`` reads it; None where the name has none."""
    m = re.search(r"-([a-f0-9]+)\.", os.path.basename(file_name))
    return m.group(1) if m else None


def refuse_existing(paths: Sequence[str | os.PathLike], overwrite: bool) -> None:
    """Raise ``FileExistsError`` naming the first of ``paths`` that exists, unless ``overwrite``."""
    if overwrite:
        return
    for p in paths:
        if os.path.exists(p):
            raise FileExistsError(f"{os.fspath(p)} exists (pass --force, or overwrite=True in Python, to replace it)")


def check_output_folder(folder: str | os.PathLike, names: Sequence[str], overwrite: bool = False,
                        what: str = "--out") -> Path:
    """The one rule of the commands that write results into a folder (eval, predict, inspect-data): ``folder`` must
    not be a file, and must not hold any of ``names`` unless ``overwrite``. Checked before the work, so that its
    result is never lost and nothing a user had is replaced unasked. Raises FileExistsError naming the folder and
    every file it holds (where :func:`refuse_existing` names the first file)."""
    out = Path(folder)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{what} {out}: exists and is not a folder (the results are written into a folder)")
    taken = [n for n in names if (out / n).exists()]
    if taken and not overwrite:
        raise FileExistsError(f"{what} {out}: already holds {', '.join(taken)}; pass --force to replace "
                              f"{'it' if len(taken) == 1 else 'them'}, or choose another folder")
    return out


def _current_umask() -> int:
    """The process's umask. Linux shows it in /proc/self/status; elsewhere the only way to read it is to set it
    and set it back (``os.umask`` is process-wide: for that instant, files other threads create would get the
    umask 0), which is why /proc is tried first."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0)
    os.umask(old)
    return old


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path`` (its parent folder is created); write the file there. When the
    block ends without an exception, the file is flushed to disk and renamed onto ``path``; otherwise it is removed
    and ``path`` is left as it was. ``suffix``: the temporary name's ending, for writers that go by it (OpenVINO's
    ``.xml``). A unique name (``mkstemp``) keeps two writers in one process apart."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(f"{tmp}: the writer of {path} left no file")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (:func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = None) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (:func:`atomic_path`); nothing is written if it does not
    serialise."""
    return write_text(path, json.dumps(obj, indent=indent))


def replace_together(pairs: Sequence[tuple[Path, Path]]) -> None:
    """Rename each finished ``(tmp, dst)`` into place as one step: the destinations that existed are moved aside
    first and put back if any rename fails, so that files that belong together are never left from two different
    writes."""
    backups: list[tuple[Path, Path]] = []
    done: list[Path] = []
    try:
        for _, dst in pairs:
            if dst.exists():
                bak = dst.with_name(f"{dst.name}.bak{os.getpid()}")
                os.replace(dst, bak)
                backups.append((bak, dst))
        for tmp, dst in pairs:
            os.chmod(tmp, 0o666 & ~_current_umask())
            os.replace(tmp, dst)
            done.append(dst)
    except BaseException:
        for dst in done:
            dst.unlink(missing_ok=True)
        for bak, dst in backups:
            os.replace(bak, dst)
        raise
    for bak, _ in backups:
        bak.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------ file kinds
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since PyTorch 1.6; an ONNX file is a bare protobuf, never a zip
PICKLE_MAGIC = b"\x80"  # torch.save's legacy format: a pickle (protocol >= 2)
ONNX_MAGIC = b"\x08"  # an ONNX ModelProto starts with its field 1, ir_version (a varint)
TORCH_SUFFIXES = (".pt", ".pth")


def file_kind(path: str | os.PathLike) -> str:
    """``"torch"`` (a file torch.save wrote), ``"onnx"``, ``"empty"`` or ``"unknown"``; the content decides, the
    name only where the content cannot (an ONNX protobuf has no magic number of its own). A missing file raises
    FileNotFoundError."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        return "empty"
    if head.startswith(ZIP_MAGIC) or head.startswith(PICKLE_MAGIC):
        return "torch"
    if head.startswith(ONNX_MAGIC) or path.lower().endswith(".onnx"):
        return "onnx"
    return "unknown"


def first_line(e: BaseException) -> str:
    """An exception's first line of text (its type's name when it has none)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
