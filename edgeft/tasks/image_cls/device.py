"""Image classification, device side (numpy + Pillow): preprocessing from the manifest, the benchmark samples."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...data.images import IMAGE_EXTS, Preprocess, UnreadableImage, open_image, preprocess_images
from ...errors import DataError, did_you_mean
from ...utils.io import sha256_bytes
from ...utils.log import warn
from ..base import Samples
from ..classify import ClassificationMixin

INPUT = "input"


def _int(d: dict, k: str, lo: int, hi: int) -> int:
    v = d.get(k)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ValueError(f"preprocess.{k} = {v!r} (an integer in {lo}..{hi} expected)")
    return v


def check_image_preprocess(pp: dict) -> list[int]:
    """Every value in range; returns what the preprocessing produces per sample ([3, S, S])."""
    size = _int(pp, "size", 8, 4096)
    _int(pp, "resize", size, 8192)
    if pp.get("resize_mode", "square") not in ("square", "shorter"):
        raise ValueError(f"preprocess.resize_mode = {pp.get('resize_mode')!r} (square or shorter)")
    if pp.get("interpolation", "bilinear") not in ("bilinear", "bicubic", "nearest"):
        raise ValueError(f"preprocess.interpolation = {pp.get('interpolation')!r}")
    for k in ("mean", "std"):
        v = pp.get(k)
        if not (isinstance(v, list) and len(v) == 3 and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and -1e3 < x < 1e3 for x in v)):
            raise ValueError(f"preprocess.{k} = {v!r} (three numbers expected)")
    if min(pp["std"]) <= 0:
        raise ValueError(f"preprocess.std = {pp['std']!r} (must be > 0)")
    return [3, size, size]


class ImageClsDevice(ClassificationMixin):
    name = "image_cls"
    builtin_sources = ("fashion-mnist", "digits")
    title = "image classification"
    input_word = "images"
    input_exts = frozenset(IMAGE_EXTS)

    def check_preprocess(self, manifest: dict) -> None:
        want = check_image_preprocess(manifest.get("preprocess") or {})
        _check_shape(manifest, want)

    def preprocessor(self, manifest: dict):
        p = Preprocess.from_dict(manifest["preprocess"])
        name = manifest["inputs"][0]["name"] if manifest.get("inputs") else INPUT
        return lambda raws: {name: preprocess_images(raws, p)}

    def read(self, path) -> np.ndarray:
        return np.asarray(open_image(path))

    def samples(self, spec: str, labels: list[str], limit: int | None) -> Samples:
        return image_samples(spec, labels, limit)


def _check_shape(manifest: dict, want: list[int]) -> None:
    shape = list(((manifest.get("inputs") or [{}])[0] or {}).get("shape") or [])
    if len(shape) != len(want) + 1 or shape[1:] != want:
        raise ValueError(f"preprocessing produces [batch, {', '.join(map(str, want))}] but inputs[0].shape is {shape}")


def image_samples(spec: str, labels: list[str], limit: int | None) -> Samples:
    """A built-in set (``fashion-mnist[:test]``) or a folder of class sub-folders named after the labels."""
    from ...data.images import BUILTIN, builtin_split_raw, scan_class_folder

    name, _, split = spec.partition(":")
    if name in BUILTIN:
        x, y, classes = builtin_split_raw(name, split or "test")
        check_labels(classes, labels, spec)
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
    check_labels(sorted(files), labels, spec)
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


def check_labels(classes: list[str], labels: list[str], spec: str) -> None:
    unknown = [c for c in classes if c not in labels]
    if unknown:
        hint = did_you_mean(unknown[0], labels)
        raise DataError(f"the classes of --data {spec!r} do not match the model's labels: {unknown[:5]} are not "
                        f"among {labels[:10]}{' ...' if len(labels) > 10 else ''}.{hint}",
                        hint="benchmark with data labelled like the model (its labels.txt / manifest.json)")


DEVICE = ImageClsDevice()
