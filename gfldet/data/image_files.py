"""Image files without surprises: a header probe that decodes nothing, and a decode to RGB of any PIL mode."""
from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from ..errors import GfldetError

log = logging.getLogger(__name__)

__all__ = ["probe_image", "decode_rgb", "collect_images", "read_image", "IMAGE_EXTENSIONS"]

def probe_image(path: str) -> tuple[str, tuple[int, int] | None, int, str]:
    """Header check of one image file: ``(status, (w, h), exif_orientation, error)``; nothing is decoded."""
    if not os.path.isfile(path):
        return "missing", None, 1, "no such file"
    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = 1
            if "exif" in im.info:  # JPEG/WebP: the EXIF block is already read with the header
                try:
                    orientation = int(im.getexif().get(0x0112, 1))
                except Exception:  # a broken EXIF block does not make the pixels unreadable
                    orientation = 1
    except Exception as e:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ValueError, ...
        return "unreadable", None, 1, f"{type(e).__name__}: {e}"
    if w <= 0 or h <= 0:
        return "unreadable", None, 1, f"image size {w}x{h}"
    return "ok", (int(w), int(h)), orientation, ""


def decode_rgb(data: bytes, exif_transpose: bool) -> Tensor:
    """Encoded image bytes -> ``(3, H, W)`` uint8 RGB (PIL; grayscale, palette, alpha, CMYK, 16-bit handled).

    Alpha is dropped (not composited); 16-bit images are scaled to 8 bits; animated images give their first frame.
    """
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        if exif_transpose:
            im = ImageOps.exif_transpose(im)
        if im.mode.startswith("I;16") or im.mode == "I":  # 16-bit grey (older Pillow opens it as "I")
            arr = np.asarray(im).astype(np.int64)
            arr = (np.clip(arr, 0, 65535) >> 8).astype(np.uint8)
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        else:
            arr = np.asarray(im if im.mode == "RGB" else im.convert("RGB"))
    return torch.from_numpy(np.array(arr, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()


IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def collect_images(inputs: list[str | os.PathLike]) -> list[Path]:
    """Image files named directly, plus the image files inside named folders (recursively, sorted)."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                log.warning("%s: no image files (%s)", p, ", ".join(sorted(IMAGE_EXTENSIONS)))
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"input not found: {p}")
    if not out:
        raise GfldetError(f"no images found in {[str(i) for i in inputs]}")
    return out


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """``(3, H, W)`` uint8 RGB; a file that is not a readable image raises GfldetError naming it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            arr = torch.frombuffer(bytearray(im.convert("RGB").tobytes()), dtype=torch.uint8)
            w, h = im.size
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise GfldetError(f"{path}: not a readable image ({e})") from e
    return arr.reshape(h, w, 3).permute(2, 0, 1).contiguous()
