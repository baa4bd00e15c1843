"""What kind of model file a path holds, told by its first bytes (and its name): the one rule behind the messages
for a PyTorch checkpoint given where an ONNX file is expected and the reverse. Imports nothing of gfldet."""
from __future__ import annotations

import os

__all__ = ["file_kind", "first_line", "TORCH_SUFFIXES"]

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
