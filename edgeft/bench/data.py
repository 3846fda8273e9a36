"""Benchmark samples and per-task pipelines (pre / post), torch-free.

Samples are decoded but not preprocessed: decoding is untimed (like MLPerf's in-memory sample library, and
like frames arriving from a camera); preprocessing (resize, crop, normalise) is timed as the ``pre`` stage.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import DataError, did_you_mean
from ..runtime import softmax
from ..utils.log import warn


@dataclass
class Samples:
    """Raw samples for one task: ``raw(i)`` gives sample i (HWC uint8 RGB image, or a float32 waveform)."""

    name: str
    task: str
    classes: list[str]
    targets: np.ndarray
    raw: Callable[[int], np.ndarray]
    sha256: str = ""
    skipped: list = field(default_factory=list)    # unreadable files left out (name and why)

    def __len__(self) -> int:
        return int(len(self.targets))


def load_samples(spec: str, task: str, labels: list[str], limit: int | None = None) -> Samples:
    if task == "image_cls":
        return _image_samples(spec, labels, limit)
    if task == "kws":
        from .audio_data import kws_samples

        return kws_samples(spec, labels, limit)
    raise DataError(f"no benchmark data loader for task {task!r}")


def _image_samples(spec: str, labels: list[str], limit: int | None) -> Samples:
    from ..data.images import BUILTIN, UnreadableImage, builtin_split_raw, open_image, scan_class_folder
    from ..utils.io import sha256_bytes

    name, _, split = spec.partition(":")
    if name in BUILTIN:
        x, y, classes = builtin_split_raw(name, split or "test")
        _check_labels(classes, labels, spec)
        if limit:
            x, y = x[:limit], y[:limit]
        y = np.asarray([labels.index(classes[t]) for t in y], np.int64)
        digest = sha256_bytes(x.tobytes() + y.tobytes())[:16]
        return Samples(f"{name}:{split or 'test'}", "image_cls", list(labels), y,
                       lambda i: np.repeat(x[i][..., None], 3, -1), digest)
    root = Path(spec).expanduser()
    if not root.is_dir():
        raise DataError(f"--data {spec!r} is neither a built-in dataset ({', '.join(BUILTIN)}[:split]) nor a folder",
                        hint="pass a folder of class sub-folders named after the model's labels")
    if (root / "train").is_dir():
        for cand in ("test", "val", "validation"):
            if (root / cand).is_dir():
                root = root / cand
                break
    files = scan_class_folder(root)
    _check_labels(sorted(files), labels, spec)
    items = [(f, labels.index(c)) for c in sorted(files) for f in files[c]]
    if limit and limit < len(items):
        keep = np.sort(np.random.default_rng(0).permutation(len(items))[:limit])
        items = [items[i] for i in keep]
    # every file is decoded once before timing (decoding is untimed, like MLPerf's sample library): unreadable
    # ones (corrupt, decompression bombs, unsupported pixel formats) are skipped and counted, never a traceback
    ok, skipped, cache, held = [], [], [], 0
    for f, t in items:
        try:
            a = np.asarray(open_image(f))
        except UnreadableImage as e:
            skipped.append(f"{f.name} ({e.message.split(': ')[-1][:60]})")
            continue
        ok.append((f, t))
        held += a.nbytes
        if cache is not None:
            cache.append(a)
            if held > 512 << 20:      # large data: decode again when needed rather than hold it all
                cache = None
    if skipped:
        warn(f"--data: skipped {len(skipped)} unreadable image(s), e.g. {'; '.join(skipped[:3])}")
    if not ok:
        raise DataError(f"--data {spec!r}: none of the {len(items)} images could be read")
    paths = [f for f, _ in ok]
    y = np.asarray([t for _, t in ok], np.int64)

    def raw(i: int) -> np.ndarray:
        return cache[i] if cache is not None else np.asarray(open_image(paths[i]))

    digest = sha256_bytes("\n".join(f"{p.relative_to(root)}:{t}" for p, t in ok).encode())[:16]
    return Samples(str(root), "image_cls", list(labels), y, raw, digest, skipped=skipped)


def _check_labels(classes: list[str], labels: list[str], spec: str) -> None:
    unknown = [c for c in classes if c not in labels]
    if unknown:
        hint = did_you_mean(unknown[0], labels)
        raise DataError(f"the classes of --data {spec!r} do not match the model's labels: {unknown[:5]} are not "
                        f"among {labels[:10]}{' ...' if len(labels) > 10 else ''}.{hint}",
                        hint="benchmark with data labelled like the model (its labels.txt / manifest.json)")


# ------------------------------------------------------------------------------------- pipelines
def postprocess(logits: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Softmax + top-k, what an application does with the logits."""
    p = softmax(logits)
    k = min(k, p.shape[-1])
    idx = np.argpartition(-p, k - 1, axis=-1)[..., :k]
    order = np.take_along_axis(p, idx, -1).argsort(-1)[..., ::-1]
    return np.take_along_axis(idx, order, -1), p


def timed_pass(pre: Callable, infer: Callable, raws: list, k: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Raw samples (one, or a batch) through pre -> infer -> post: the unit every image scenario times.

    Returns (logits, top-k indices, probabilities, {"pre", "infer", "post", "e2e"} in ms)."""
    clock = time.perf_counter_ns
    t0 = clock()
    x = pre(raws)
    t1 = clock()
    y = infer(x)
    t2 = clock()
    top, p = postprocess(y, k)
    t3 = clock()
    return y, top, p, {"pre": (t1 - t0) / 1e6, "infer": (t2 - t1) / 1e6, "post": (t3 - t2) / 1e6,
                       "e2e": (t3 - t0) / 1e6}


def make_pre(task: str, preprocess: dict) -> Callable[[list[np.ndarray]], np.ndarray]:
    if task == "image_cls":
        from ..data.images import Preprocess, preprocess_images

        p = Preprocess.from_dict(preprocess)
        return lambda raws: preprocess_images(raws, p)
    if task == "kws":
        from ..runtime.features import LogMel

        lm = LogMel.from_spec(preprocess)
        return lambda raws: np.stack([lm.clip_features(r)[None] for r in raws]).astype(np.float32)
    raise DataError(f"no preprocessing for task {task!r}")
