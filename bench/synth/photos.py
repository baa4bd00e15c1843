"""Backdrops cut from real photographs, for synthetic objects composited onto real image statistics.

The photographs are the sample images that installed packages ship (no download): matplotlib's
``grace_hopper.jpg`` (a gfldet dependency) and scikit-learn's ``china.jpg`` and ``flower.jpg`` (scikit-learn comes
with NNCF, in gfldet's ``deploy`` and ``test`` extras). A backdrop is a random crop of one of them, at a random scale
(from 1/8 of the photo's shorter side to all of it), mirrored at random, resized to the image size with PIL's
bilinear filter and shifted in brightness, contrast and colour balance: many distinct real-looking backgrounds
(edges, textures, faces, buildings, petals) from three files. What a seed draws depends on the files' pixels; the
data set's meta records each file's SHA-256 (:func:`photo_files`).
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

from gfldet.errors import GfldetError

__all__ = ["PHOTOS", "photo_files", "photo_backdrop"]

#: (package, path inside the package) of each photograph, in the order a backdrop's index picks them
PHOTOS: tuple[tuple[str, str], ...] = (
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    ("sklearn", "datasets/images/china.jpg"),
    ("sklearn", "datasets/images/flower.jpg"),
)


def photo_files() -> dict[str, str]:
    """``{path: SHA-256}`` of the photographs; a clear error names a missing package or file."""
    out = {}
    for package, rel in PHOTOS:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise GfldetError(f"the photo backdrops need the package {package!r} for {rel} (scikit-learn comes with "
                              "gfldet's 'deploy' or 'test' extra: pip install -e '.[test]')")
        path = Path(list(spec.submodule_search_locations)[0]) / rel
        if not path.is_file():
            raise GfldetError(f"photo backdrop {path} not found (package {package!r} installed without its sample data?)")
        out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@functools.lru_cache(maxsize=1)
def _photos() -> tuple[np.ndarray, ...]:
    return tuple(np.asarray(Image.open(p).convert("RGB")) for p in photo_files())


def photo_backdrop(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random ``(h, w, 3)`` float32 crop in [0, 255] of one of the photographs (see the module docstring)."""
    photos = _photos()
    photo = photos[int(rng.integers(len(photos)))]
    ph, pw = photo.shape[:2]
    aspect = w / h
    short = min(ph, pw / aspect)  # the largest crop height with the output's aspect ratio
    ch = short * float(np.exp(rng.uniform(np.log(1 / 8), 0.0)))
    cw = min(ch * aspect, pw)
    x0, y0 = rng.uniform(0, pw - cw), rng.uniform(0, ph - ch)
    crop = Image.fromarray(photo).resize((w, h), Image.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))
    img = np.asarray(crop, dtype=np.float32)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    gain = rng.uniform(0.6, 1.3) * rng.uniform(0.85, 1.15, size=3).astype(np.float32)  # brightness and colour cast
    contrast = rng.uniform(0.6, 1.2)
    mean = img.mean(axis=(0, 1), keepdims=True)
    img = (mean + contrast * (img - mean)) * gain[None, None]
    return np.ascontiguousarray(np.clip(img, 0, 255), dtype=np.float32)
