"""Image data, torch-free (numpy + Pillow): ImageFolder layouts, built-in datasets, canonical preprocessing.

Canonical preprocessing (the same code runs at training, at export parity and in the device runtime):

1. decode, convert to RGB;
2. ``square``: resize to (R, R); ``shorter``: resize the shorter side to R, then center-crop R x R;
3. center-crop S x S (offset (R - S) // 2)  -- training replaces this step by random crops;
4. float32 / 255, (x - mean) / std, NCHW.

Datasets are decoded once to uint8 arrays at size R x R (step 2), so training batches need no decoding.
"""
from __future__ import annotations

import gzip
import os
import warnings
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError, did_you_mean
from ..utils.log import info, warn

# refused explicitly in open_image (a warning filter there would not be thread-safe in the decoding pool)
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
_INTERP = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}

FASHION_MNIST_CLASSES = ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle_boot"]
FASHION_MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                       "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
FASHION_MNIST_DIRS = ["/usr/share/datasets/fashion-mnist", "~/.cache/edgeft/fashion-mnist"]
FASHION_MNIST_HOWTO = ("install it with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or download the "
                       "four idx .gz files from https://github.com/zalandoresearch/fashion-mnist into "
                       "~/.cache/edgeft/fashion-mnist, or set EDGEFT_FASHION_MNIST_DIR")


# ---------------------------------------------------------------------------------------- containers
@dataclass
class ImageSplit:
    images: np.ndarray            # (N, R, R, C) uint8, C = 1 (grey) or 3 (RGB)
    targets: np.ndarray           # (N,) int64
    ids: list[str] = field(default_factory=list)   # file paths or "<dataset>:<split>:<index>"

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def subset(self, idx: np.ndarray) -> "ImageSplit":
        idx = np.asarray(idx)
        return ImageSplit(self.images[idx], self.targets[idx], [self.ids[i] for i in idx] if self.ids else [])


@dataclass
class ImageDataset:
    source: str
    classes: list[str]
    train: ImageSplit
    val: ImageSplit
    test: ImageSplit | None = None
    info: dict = field(default_factory=dict)   # how it was split, skipped files, fallbacks


@dataclass(frozen=True)
class Preprocess:
    size: int
    resize: int
    resize_mode: str = "square"
    interpolation: str = "bilinear"
    mean: tuple = (0.485, 0.456, 0.406)
    std: tuple = (0.229, 0.224, 0.225)

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        return cls(size=int(d["size"]), resize=int(d["resize"]), resize_mode=d.get("resize_mode", "square"),
                   interpolation=d.get("interpolation", "bilinear"), mean=tuple(d["mean"]), std=tuple(d["std"]))

    def to_dict(self) -> dict:
        return {"size": self.size, "resize": self.resize, "resize_mode": self.resize_mode,
                "interpolation": self.interpolation, "crop": "center", "mean": list(self.mean),
                "std": list(self.std), "scale": 1 / 255, "layout": "NCHW", "color": "RGB", "dtype": "float32"}


# ------------------------------------------------------------------------------------- preprocessing
def resize_pil(img: Image.Image, p: Preprocess) -> Image.Image:
    """Step 2 of the canonical pipeline: returns an R x R image."""
    r = p.resize
    interp = _INTERP[p.interpolation]
    if p.resize_mode == "square":
        return img.resize((r, r), interp)
    w, h = img.size
    if w <= h:
        nw, nh = r, max(r, int(round(h * r / w)))
    else:
        nw, nh = max(r, int(round(w * r / h))), r
    img = img.resize((nw, nh), interp)
    left, top = (nw - r) // 2, (nh - r) // 2
    return img.crop((left, top, left + r, top + r))


def center_crop_offset(r: int, s: int) -> int:
    return (r - s) // 2


class UnreadableImage(DataError):
    """An image file that cannot be decoded (corrupt, a decompression bomb, an unsupported pixel format)."""


def open_image(path: str | os.PathLike, grey: bool = False) -> Image.Image:
    """Decode a file to an 8-bit RGB (or "L") PIL image; :class:`UnreadableImage` for anything else.

    High-bit-depth files are scaled, not clipped: Pillow's ``convert("RGB")`` of a 16-bit PNG saturates every
    value above 255 (an all-white image, silently classified). Decompression bombs (Pillow's pixel limit,
    warnings included) are unreadable like corrupt files. EXIF orientation is applied (a phone photo is seen, and
    its boxes were drawn, upright)."""
    from PIL import ImageOps

    try:
        with Image.open(path) as im:
            w, h = im.size
            if Image.MAX_IMAGE_PIXELS and w * h > Image.MAX_IMAGE_PIXELS:   # Pillow only warns up to 2x its limit
                raise UnreadableImage(f"{str(path)!r} is a decompression bomb ({w}x{h} = {w * h} pixels, over "
                                      f"{Image.MAX_IMAGE_PIXELS})", hint="images this large are refused; resize it "
                                                                        "first")
            im.load()
            return to_8bit(ImageOps.exif_transpose(im), grey, str(path))
    except UnreadableImage:
        raise
    except Image.DecompressionBombError as e:
        raise UnreadableImage(f"{str(path)!r} is a decompression bomb ({' '.join(str(e).split())[:100]})",
                              hint="images this large are refused; resize it first") from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, EOFError, MemoryError) as e:
        raise UnreadableImage(f"unreadable image {str(path)!r}: {type(e).__name__}: {' '.join(str(e).split())[:120]}",
                              hint="remove or replace the file") from None


def to_8bit(im: Image.Image, grey: bool = False, where: str = "image") -> Image.Image:
    """Any Pillow mode -> 8-bit "RGB" (or "L" when ``grey`` and the source is single-channel)."""
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(im).astype(np.int64)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise UnreadableImage(f"{where}: {mode} pixel values {a.min()}..{a.max()} are outside 16-bit range",
                                  hint="convert it to an 8- or 16-bit image")
        peak = 255 if (mode == "I" and a.size and a.max() <= 255) else 65535
        im = Image.fromarray(((a * 255 + peak // 2) // peak).astype(np.uint8), "L")
        mode = "L"
    elif mode == "F":
        raise UnreadableImage(f"{where}: floating-point pixels (mode F) have no defined 8-bit range",
                              hint="convert it to an 8- or 16-bit integer image")
    single = mode in ("L", "1", "LA")
    return im.convert("L" if (grey and single) else "RGB")


def decode_resized(path: str | os.PathLike, p: Preprocess, keep_grey: bool = False) -> np.ndarray:
    """Decode a file and apply steps 1-2. Returns (R, R, 3) uint8 (or (R, R, 1) for grey files when asked)."""
    im = open_image(path, grey=keep_grey)
    arr = np.asarray(resize_pil(im, p), dtype=np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


def read_calib_images(d: str, n: int, rng, p: Preprocess) -> np.ndarray:
    """Up to ``n`` images drawn (seeded) from a folder of representative images, decoded and resized for ``p``
    (uint8 batch); unreadable ones are skipped and counted, none readable is an error (``--calib-data``)."""
    files = sorted(f for f in Path(d).rglob("*") if f.suffix.lower() in IMAGE_EXTS)
    files = [files[i] for i in np.sort(rng.permutation(len(files))[:n])]
    arrs, bad = [], 0
    for f in files:
        try:
            arrs.append(decode_resized(f, p))
        except UnreadableImage:
            bad += 1
    if not arrs:
        raise DataError(f"--calib-data {d!r}: none of the images could be read")
    if bad:
        warn(f"--calib-data: skipped {bad} unreadable image(s)")
    return np.stack(arrs)


def normalize_batch(u8: np.ndarray, p: Preprocess) -> np.ndarray:
    """Steps 3-4 for a batch of (N, R, R, C) uint8 -> (N, 3, S, S) float32."""
    o = center_crop_offset(u8.shape[1], p.size)
    x = u8[:, o:o + p.size, o:o + p.size, :]
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    x = x.astype(np.float32) * np.float32(1 / 255)
    x = (x - np.asarray(p.mean, np.float32)) / np.asarray(p.std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def preprocess_images(images, p: Preprocess) -> np.ndarray:
    """Full pipeline for a list of paths, PIL images or HWC uint8 RGB arrays -> (N, 3, S, S) float32."""
    out = []
    for im in images:
        if isinstance(im, (str, os.PathLike)):
            out.append(decode_resized(im, p))
        else:
            if isinstance(im, np.ndarray):
                im = Image.fromarray(im)
            im = to_8bit(im)
            out.append(np.asarray(resize_pil(im, p), dtype=np.uint8))
    return normalize_batch(np.stack(out), p)


# ------------------------------------------------------------------------------------------ idx files
def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse an idx file (optionally .gz) directly: Debian's copies have other gzip headers than upstream."""
    path = str(path)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DataError(f"{path}: not a uint8 idx file (magic {data[:4].hex()})")
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise DataError(f"{path}: truncated idx file ({arr.size} values, header says {int(np.prod(dims))})")
    return arr.reshape(dims)


def find_fashion_mnist() -> Path | None:
    cands = [os.environ.get("EDGEFT_FASHION_MNIST_DIR", "")] + FASHION_MNIST_DIRS
    for c in cands:
        if not c:
            continue
        d = Path(c).expanduser()
        if all(_idx_file(d, n) for pair in FASHION_MNIST_FILES.values() for n in pair):
            return d
    return None


def _idx_file(d: Path, stem: str) -> Path | None:
    for cand in (d / f"{stem}.gz", d / stem):
        if cand.is_file():
            return cand
    return None


def load_fashion_mnist_raw(split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 28, 28) uint8, labels (N,) int64) for 'train' (60k) or 'test' (10k)."""
    d = find_fashion_mnist()
    if d is None:
        raise DataError("Fashion-MNIST not found", hint=FASHION_MNIST_HOWTO)
    img_stem, lbl_stem = FASHION_MNIST_FILES[split]
    x = read_idx(_idx_file(d, img_stem))
    y = read_idx(_idx_file(d, lbl_stem)).astype(np.int64)
    if x.shape[0] != y.shape[0]:
        raise DataError(f"Fashion-MNIST {split}: {x.shape[0]} images but {y.shape[0]} labels in {d}")
    return x, y


def load_digits_raw() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 1,797 real 8x8 handwritten digits as uint8 0..255."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError("the 'digits' dataset needs scikit-learn", hint="pip install scikit-learn") from None
    d = load_digits()
    x = np.clip(np.round(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    return x, d.target.astype(np.int64)


def _resize_grey_array(x: np.ndarray, p: Preprocess) -> np.ndarray:
    """(N, h, w) uint8 grey -> (N, R, R, 1) via the canonical PIL resize (identical to decoding a PNG of it)."""
    out = np.empty((x.shape[0], p.resize, p.resize, 1), np.uint8)
    for i in range(x.shape[0]):
        out[i, :, :, 0] = np.asarray(resize_pil(Image.fromarray(x[i], "L"), p))
    return out


BUILTIN = {
    "fashion-mnist": "Fashion-MNIST (Zalando): 60k train / 10k test, 28x28 grey, 10 classes (Debian dataset-fashion-mnist)",
    "digits": "scikit-learn digits: 1,797 real 8x8 handwritten digits, 10 classes (bundled with scikit-learn)",
}


OFFICIAL_SPLITS = ("train", "test")


def builtin_split_raw(name: str, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Raw grey arrays of a built-in dataset's *official* split, plus class names (no recipe splitting).

    Fashion-MNIST has train (60k) and test (10k); digits has no official split (both give all 1,797)."""
    if split not in OFFICIAL_SPLITS:
        raise DataError(f"split {split!r} of built-in dataset {name!r}: valid are {', '.join(OFFICIAL_SPLITS)}",
                        hint=f"use {name}:test or {name}:train (a run's own val split exists only inside the run)")
    if name == "fashion-mnist":
        x, y = load_fashion_mnist_raw("test" if split == "test" else "train")
        return x, y, list(FASHION_MNIST_CLASSES)
    if name == "digits":
        x, y = load_digits_raw()
        return x, y, [str(i) for i in range(10)]
    raise DataError(f"unknown built-in dataset {name!r}.{did_you_mean(name, BUILTIN)} Valid: {', '.join(BUILTIN)}")


# ------------------------------------------------------------------------------------ dataset loading
def load_image_dataset(source: str, p: Preprocess, *, val_fraction: float = 0.1, test_fraction: float = 0.0,
                       split_seed: int = 0, limits: dict | None = None, strict: bool = False,
                       workers: int = 0) -> ImageDataset:
    """Load a built-in dataset name or an ImageFolder path into memory at the recipe's resize size."""
    limits = limits or {}
    if source in BUILTIN:
        ds = _load_builtin(source, p, val_fraction, test_fraction, split_seed)
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise DataError(f"data source {source!r} is neither a built-in dataset ({', '.join(BUILTIN)}) "
                            f"nor an existing folder", hint="pass --data DIR with class sub-folders")
        ds = _load_folder(path, p, val_fraction, test_fraction, split_seed, strict, workers)
    rng = np.random.default_rng(split_seed + 1)
    for split in ("train", "val", "test"):
        n = limits.get(split)
        s = getattr(ds, split)
        if n and s is not None and n < len(s):
            idx = np.sort(rng.permutation(len(s))[:n])
            setattr(ds, split, s.subset(idx))
            ds.info.setdefault("limits", {})[split] = n
    return ds


def _load_builtin(name: str, p: Preprocess, val_fraction: float, test_fraction: float, seed: int) -> ImageDataset:
    if name == "fashion-mnist":
        if find_fashion_mnist() is None:
            warn(f"Fashion-MNIST not found; {FASHION_MNIST_HOWTO}. Falling back to scikit-learn's digits.")
            ds = _load_builtin("digits", p, val_fraction, max(test_fraction, 0.2), seed)
            ds.info["fallback_from"] = "fashion-mnist"
            return ds
        xtr, ytr = load_fashion_mnist_raw("train")
        xte, yte = load_fashion_mnist_raw("test")
        tr_idx, va_idx, _ = stratified_split(ytr, val_fraction, 0.0, seed)
        ids = [f"fashion-mnist:train:{i}" for i in range(len(ytr))]
        train_all = ImageSplit(_resize_grey_array(xtr, p), ytr, ids)
        test = ImageSplit(_resize_grey_array(xte, p), yte, [f"fashion-mnist:test:{i}" for i in range(len(yte))])
        return ImageDataset("fashion-mnist", list(FASHION_MNIST_CLASSES), train_all.subset(tr_idx),
                            train_all.subset(va_idx), test,
                            {"split": f"official 60k/10k; val = {len(va_idx)} of train (stratified, seed {seed})"})
    x, y = load_digits_raw()
    tr_idx, va_idx, te_idx = stratified_split(y, val_fraction, test_fraction, seed)
    all_ = ImageSplit(_resize_grey_array(x, p), y, [f"digits:{i}" for i in range(len(y))])
    return ImageDataset("digits", [str(i) for i in range(10)], all_.subset(tr_idx), all_.subset(va_idx),
                        all_.subset(te_idx) if len(te_idx) else None,
                        {"split": f"auto stratified val {val_fraction} test {test_fraction} seed {seed}"})


def stratified_split(y: np.ndarray, val_fraction: float, test_fraction: float, seed: int):
    """Per-class seeded split; every class with >= 3 samples gets at least one val sample."""
    rng = np.random.default_rng(seed)
    tr, va, te = [], [], []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(len(idx))]
        n_te = int(round(len(idx) * test_fraction))
        n_va = max(int(round(len(idx) * val_fraction)), 1 if len(idx) >= 3 else 0)
        te.extend(idx[:n_te])
        va.extend(idx[n_te:n_te + n_va])
        tr.extend(idx[n_te + n_va:])
    return np.sort(np.array(tr, int)), np.sort(np.array(va, int)), np.sort(np.array(te, int))


def _class_dirs(root: Path) -> list[Path]:
    return sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def _images_in(d: Path) -> list[Path]:
    return sorted(f for f in d.rglob("*") if f.suffix.lower() in IMAGE_EXTS and f.is_file()
                  and not any(part.startswith(".") for part in f.relative_to(d).parts))


def scan_class_folder(root: Path) -> dict[str, list[Path]]:
    """{class: [files]} for a folder of class sub-folders, with clear errors for bad layouts."""
    if not root.is_dir():
        raise DataError(f"data folder {str(root)!r} does not exist or is not a folder")
    dirs = _class_dirs(root)
    if not dirs:
        loose = [f for f in root.iterdir() if f.suffix.lower() in IMAGE_EXTS]
        what = f"{len(loose)} loose image files but " if loose else ""
        raise DataError(f"data folder {str(root)!r} has {what}no class sub-folders",
                        hint="use the ImageFolder layout: DIR/<class>/*.jpg (or DIR/train/<class>, DIR/val/<class>)")
    classes = {d.name: _images_in(d) for d in dirs}
    empty = [c for c, fs in classes.items() if not fs]
    if empty:
        raise DataError(f"empty class folder(s) in {str(root)!r}: {', '.join(empty[:5])}",
                        hint=f"every class needs images ({', '.join(sorted(IMAGE_EXTS))}); add images or remove "
                             f"the folder")
    if len(classes) < 2:
        raise DataError(f"data folder {str(root)!r} has a single class ({next(iter(classes))!r})",
                        hint="a classifier needs at least 2 class folders")
    return classes


_VAL_NAMES = ("val", "valid", "validation")


def _load_folder(root: Path, p: Preprocess, val_fraction: float, test_fraction: float, seed: int,
                 strict: bool, workers: int) -> ImageDataset:
    info_: dict = {"root": str(root)}
    if (root / "train").is_dir():
        train = scan_class_folder(root / "train")
        classes = sorted(train)
        val_dir = next((root / n for n in _VAL_NAMES if (root / n).is_dir()), None)
        test = scan_class_folder(root / "test") if (root / "test").is_dir() else None
        if val_dir is not None:
            val = scan_class_folder(val_dir)
            _check_same_classes(classes, sorted(val), "train", val_dir.name, root)
            info_["split"] = f"folders train/ and {val_dir.name}/"
        else:
            train, val = _split_files(train, val_fraction, seed)
            info_["split"] = f"train/ auto-split val {val_fraction} seed {seed}"
            info_["val_files"] = sorted(str(f) for fs in val.values() for f in fs)
        if test is not None:
            _check_same_classes(classes, sorted(test), "train", "test", root)
    else:
        allf = scan_class_folder(root)
        classes = sorted(allf)
        test = None
        if test_fraction > 0:
            allf, test = _split_files(allf, test_fraction, seed + 7919)
        train, val = _split_files(allf, val_fraction, seed)
        info_["split"] = f"auto-split val {val_fraction} test {test_fraction} seed {seed}"
        info_["val_files"] = sorted(str(f) for fs in val.values() for f in fs)
        if test:
            info_["test_files"] = sorted(str(f) for fs in test.values() for f in fs)
    skipped: list[str] = []
    splits = {}
    for name, files in (("train", train), ("val", val), ("test", test)):
        if files is None:
            continue
        splits[name] = decode_split(files, classes, p, skipped, strict, workers, name)
    if skipped:
        info_["skipped"] = len(skipped)
        info_["skipped_files"] = skipped[:50]
        warn(f"skipped {len(skipped)} unreadable image file(s), e.g. {', '.join(skipped[:3])} "
             f"(use --strict to fail instead)")
    for name, s in splits.items():
        if len(s) == 0:
            raise DataError(f"no readable images left in the {name} split of {str(root)!r}")
    return ImageDataset(str(root), classes, splits["train"], splits["val"], splits.get("test"), info_)


def _check_same_classes(a: list[str], b: list[str], an: str, bn: str, root: Path) -> None:
    if a != b:
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        raise DataError(f"class folders differ between {an}/ and {bn}/ in {str(root)!r}: only in {an}: "
                        f"{only_a or '-'}; only in {bn}: {only_b or '-'}",
                        hint="both splits need the same class folders")


def _split_files(files: dict[str, list[Path]], fraction: float, seed: int):
    rng = np.random.default_rng(seed)
    a, b = {}, {}
    for c in sorted(files):
        fs = list(files[c])
        order = rng.permutation(len(fs))
        n = max(int(round(len(fs) * fraction)), 1 if len(fs) >= 3 else 0)
        b[c] = [fs[i] for i in sorted(order[:n])]
        a[c] = [fs[i] for i in sorted(order[n:])]
        if not a[c]:
            raise DataError(f"class {c!r} has only {len(fs)} image(s): too few to split off a validation set",
                            hint="add images or provide explicit train/ and val/ folders")
    return a, b


def decode_split(files: dict[str, list[Path]], classes: list[str], p: Preprocess, skipped: list[str],
                 strict: bool, workers: int, name: str = "") -> ImageSplit:
    items = [(f, classes.index(c)) for c in classes for f in files.get(c, [])]
    n_workers = workers or min(8, (os.cpu_count() or 2) * 2)

    def load(item):
        f, _ = item
        try:
            return decode_resized(f, p)
        except UnreadableImage as e:
            return e

    if len(items) > 2000:
        info(f"decoding {len(items)} {name} images at {p.resize}x{p.resize} ...")
    with ThreadPoolExecutor(n_workers) as ex:
        arrays = list(ex.map(load, items))
    imgs, tgts, ids = [], [], []
    for (f, t), a in zip(items, arrays):
        if isinstance(a, Exception):
            if strict:
                raise DataError(a.message, hint="remove or replace the file, or drop --strict to skip unreadable files")
            skipped.append(str(f))
            continue
        imgs.append(a)
        tgts.append(t)
        ids.append(str(f))
    arr = np.stack(imgs) if imgs else np.zeros((0, p.resize, p.resize, 3), np.uint8)
    return ImageSplit(arr, np.asarray(tgts, np.int64), ids)


def load_eval_split(source: str, p: Preprocess, split: str = "test", limit: int | None = None,
                    classes: list[str] | None = None, strict: bool = False) -> tuple[ImageSplit, list[str]]:
    """Evaluation data for bench/predict: a built-in ``name[:split]`` or an ImageFolder (whole folder = one split).

    When ``classes`` is given (a bundle's labels), the folder's classes must match them by name.
    """
    name, _, sp = source.partition(":")
    if name in BUILTIN:
        x, y, cls = builtin_split_raw(name, sp or split)
        if limit:
            x, y = x[:limit], y[:limit]
        s = ImageSplit(_resize_grey_array(x, p), y, [f"{name}:{sp or split}:{i}" for i in range(len(y))])
        return s, cls
    root = Path(source).expanduser()
    if not root.is_dir():
        raise DataError(f"data {source!r} is neither a built-in dataset ({', '.join(BUILTIN)}[:split]) nor a folder",
                        hint="pass --data DIR (class sub-folders) or e.g. --data fashion-mnist:test")
    if (root / "train").is_dir():  # split layout: evaluate on test/ (or val/)
        for cand in (split, "test", *_VAL_NAMES):
            if (root / cand).is_dir():
                root = root / cand
                break
    files = scan_class_folder(root)
    cls = sorted(files)
    if classes is not None:
        unknown = sorted(set(cls) - set(classes))
        if unknown:
            raise DataError(f"class folders in {str(root)!r} do not match the model's labels: unknown "
                            f"{unknown[:5]}; the model knows {classes[:12]}{' ...' if len(classes) > 12 else ''}",
                            hint="name the folders after the model's labels (labels.txt / manifest.json)")
        cls = list(classes)
    if limit:
        flat = [(c, f) for c in sorted(files) for f in files[c]]
        keep = set(np.random.default_rng(0).permutation(len(flat))[:limit].tolist())
        files = {}
        for i, (c, f) in enumerate(flat):
            if i in keep:
                files.setdefault(c, []).append(f)
    skipped: list[str] = []
    s = decode_split(files, cls, p, skipped, strict, 0, "eval")
    if skipped:
        warn(f"skipped {len(skipped)} unreadable image file(s), e.g. {', '.join(skipped[:3])}")
    return s, cls


def export_builtin_images(name: str, out: str | os.PathLike, split: str = "test", limit: int | None = None) -> int:
    """Write a built-in dataset split as PNG files in class folders (ImageFolder layout)."""
    x, y, classes = builtin_split_raw(name, split)
    if limit:
        x, y = x[:limit], y[:limit]
    out = Path(out)
    for c in classes:
        (out / c).mkdir(parents=True, exist_ok=True)
    for i in range(len(y)):
        Image.fromarray(x[i], "L").save(out / classes[y[i]] / f"{split}_{i:05d}.png")
    return len(y)
