"""Calibration data for INT8 (post-training quantization and QAT initialisation): deployment-preprocessed feeds
from a seeded subset of the run's train split, or from a folder of representative samples."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError
from ..utils.io import sha256_bytes


def calibration_batches(task, recipe, data, calib_dir: str | None, n: int, batch: int = 16):
    """([{input name: batch}, ...], {"size", "source", "sha256"})."""
    rng = np.random.default_rng(1234)
    if calib_dir:
        if not hasattr(task, "calib_from_dir"):
            raise DataError(f"--calib-data: task {task.name!r} takes calibration data only from its train split")
        feeds = task.calib_from_dir(recipe, calib_dir, n, rng)
        src = f"folder {calib_dir}"
    else:
        if len(data.train) == 0:
            raise DataError("the run's train split is empty: nothing to calibrate INT8 with",
                            hint="pass --calib-data DIR")
        idx = np.sort(rng.permutation(len(data.train))[:n])
        feeds = task.eval_inputs(data.train, recipe, idx)
        src = "the run's train split (seeded subset, eval preprocessing)"
    size = int(next(iter(feeds.values())).shape[0])
    digest = sha256_bytes(b"".join(np.ascontiguousarray(feeds[k]).tobytes() for k in sorted(feeds)))[:16]
    meta = {"size": size, "source": src, "sha256": digest}
    return [{k: v[s:s + batch] for k, v in feeds.items()} for s in range(0, size, batch)], meta


def check_calib_dir(d: str, device_task) -> None:
    """Before any work: the folder exists and holds files the task reads."""
    p = Path(d)
    word = getattr(device_task, "input_word", "files")
    if not p.is_dir():
        raise DataError(f"--calib-data {d!r} does not exist or is not a folder",
                        hint=f"pass a folder of representative {word}, or omit it to use the run's train split")
    exts = device_task.input_exts
    if not any(f.suffix.lower() in exts for f in p.rglob("*")):
        raise DataError(f"--calib-data {d!r} contains no {word} ({', '.join(sorted(exts))})",
                        hint=f"pass a folder of representative {word}, or omit it to use the run's train split")
