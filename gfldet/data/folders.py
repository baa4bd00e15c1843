"""Folders: the cache of generated data sets, and run folders that never overwrite an earlier run.

One implementation for the demo's data (:func:`gfldet.demo.demo_data`), the benchmark scenes
(:func:`bench.synth.scenes.scenes_data`) and run folders that must not be reused (results folders:
:func:`gfldet.files.check_output_folder`).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["cache_root", "cached_splits", "claim_dir", "generation_workers"]

log = logging.getLogger(__name__)


def cache_root() -> Path:
    """``$GFLDET_CACHE``, or ``~/.cache/gfldet``."""
    return Path(os.environ.get("GFLDET_CACHE") or Path.home() / ".cache" / "gfldet")


def generation_workers(limit: int = 8) -> int:
    """Threads for writing a generated data set: the CPUs this process may use, at most ``limit``."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cpus, limit))


def cached_splits(name: str, generate: Callable[[Path], dict[str, Any]], cache_dir: str | os.PathLike | None = None,
                  what: str = "data set") -> dict[str, str]:
    """A generated data set with ``train/`` and ``val/`` splits (each a folder with ``annotations.json``), made
    on first use in ``cache_dir / name`` and reused afterwards.

    ``generate(folder)`` writes both splits into ``folder`` and returns what to record in its ``done.json``. It
    writes beside the final place, which is then renamed into place, so an interrupted generation never leaves a
    half-written data set behind; a folder without ``done.json`` (not finished by this function) is moved aside,
    never deleted. Returns ``{"train_ann", "train_images", "val_ann", "val_images", "root"}``.
    """
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    folder = root / name
    paths = {"train_ann": str(folder / "train" / "annotations.json"), "train_images": str(folder / "train"),
             "val_ann": str(folder / "val" / "annotations.json"), "val_images": str(folder / "val"), "root": str(folder)}
    if (folder / "done.json").is_file():
        log.info("using the %s in %s", what, folder)
        return paths
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.perf_counter()
    try:
        done = generate(tmp)
        (tmp / "done.json").write_text(json.dumps(done))
        if folder.exists() and not (folder / "done.json").is_file():
            aside = root / f".{name}.incomplete{os.getpid()}"
            os.replace(folder, aside)
            log.warning("%s was incomplete (no done.json); moved it to %s and generated the data again", folder, aside)
        try:
            os.replace(tmp, folder)
        except OSError:
            if not (folder / "done.json").is_file():  # not another process finishing first: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("generated the %s in %s in %.1fs", what, folder, time.perf_counter() - t0)
    return paths


def claim_dir(path: str | os.PathLike) -> Path:
    """Create and return the first of ``path``, ``path-1``, ``path-2``, ... that does not exist yet. ``mkdir`` is
    atomic, so two runs started at once never share (and overwrite) a folder."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    k = 0
    while True:
        cand = out if k == 0 else Path(f"{out}-{k}")
        try:
            cand.mkdir()
            return cand
        except FileExistsError:
            k += 1
