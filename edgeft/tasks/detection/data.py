"""Detection data (numpy + Pillow, torch-free): the built-in ``objects-on-photos`` scenes and the formats users
have (COCO JSON, YOLO txt, Pascal VOC XML), all as :class:`DetSplit` (images resized to the model's square input,
boxes in its pixels, xyxy).

``objects-on-photos`` is synthetic and says so: Fashion-MNIST items (real photographs of clothes, 28x28 grey),
scaled to 40-150 px, tinted and alpha-blended onto crops of real photos (scikit-image's sample images), 1-4 per
scene, with exact boxes (the tight box of each pasted item's mask). It is a pure function of (split, index,
seed): nothing is downloaded or cached, and every epoch can draw fresh training scenes. Train and validation
scenes use Fashion-MNIST's train items and one set of background photos; test scenes use its test items and
other photos, so test objects and backgrounds were never seen in training.
"""
from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ...errors import DataError
from ...utils.log import warn

BUILTIN_SCENES = "objects-on-photos"
# scikit-image's bundled sample photos (files inside the wheel: no download): training / held-out test backgrounds
TRAIN_BACKGROUNDS = ("astronaut.png", "brick.png", "camera.png", "chelsea.png", "coins.png", "grass.png",
                     "gravel.png", "hubble_deep_field.jpg", "ihc.png", "motorcycle_left.png", "page.png", "retina.jpg")
TEST_BACKGROUNDS = ("coffee.png", "rocket.jpg", "moon.png", "motorcycle_right.png", "color.png")
SPLIT_SIZES = {"train": 100_000, "val": 300, "test": 500}   # train scenes are drawn fresh per epoch
_SPLIT_SALT = {"train": 11, "val": 23, "test": 37}


@dataclass
class DetSplit:
    """Images at the model's input size (``image(i)`` -> HxWx3 uint8) with their boxes (xyxy, input pixels) and
    labels; ``targets[i] = {"boxes": (n, 4) float32, "labels": (n,) int64}``."""

    name: str
    size: int
    n: int
    image_fn: object
    target_fn: object
    ids: list = field(default_factory=list)
    skipped: list = field(default_factory=list)

    def __len__(self) -> int:
        return self.n

    def image(self, i: int) -> np.ndarray:
        return self.image_fn(int(i))

    def target(self, i: int) -> dict:
        return self.target_fn(int(i))

    @property
    def targets(self) -> "_Targets":
        return _Targets(self)


class _Targets:
    """``split.targets[idx]`` like an array of per-image target dicts (what the metric accumulators take)."""

    def __init__(self, split: DetSplit):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return [self.split.target(i) for i in range(*idx.indices(len(self.split)))]
        if np.ndim(idx):
            return [self.split.target(int(i)) for i in np.asarray(idx).ravel()]
        return self.split.target(int(idx))


# ------------------------------------------------------------------------------------ built-in scenes
def _skimage_photo(name: str) -> np.ndarray:
    import importlib.util

    spec = importlib.util.find_spec("skimage")
    path = Path(spec.origin).parent / "data" / name if spec and spec.origin else None
    if path is None or not path.is_file():
        raise DataError(f"the built-in {BUILTIN_SCENES} scenes need scikit-image's sample photos ({name} not found)",
                        hint="pip install scikit-image (part of edgeft[train])")
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), np.uint8)


class Scenes:
    """The scene generator for one split (deterministic in (seed, split, index))."""

    def __init__(self, split: str, size: int = 320, seed: int = 0, min_objects: int = 1, max_objects: int = 4,
                 min_side: int = 40, max_side: int = 150):
        from ...data.images import builtin_split_raw

        if split not in SPLIT_SIZES:
            raise DataError(f"split {split!r} of {BUILTIN_SCENES}: valid are {', '.join(SPLIT_SIZES)}")
        self.split, self.size, self.seed = split, size, seed
        self.min_objects, self.max_objects, self.min_side, self.max_side = min_objects, max_objects, min_side, max_side
        try:
            x, y, classes = builtin_split_raw("fashion-mnist", "test" if split == "test" else "train")
        except DataError:
            warn(f"{BUILTIN_SCENES}: Fashion-MNIST is not installed; the scenes use scikit-learn's 8x8 digits "
                 f"(sudo apt-get install dataset-fashion-mnist for the real set)")
            x, y, classes = builtin_split_raw("digits", "test")
            x = np.clip(x.astype(np.float32) * (255 / 16), 0, 255).astype(np.uint8)
        if split != "test" and len(x) > 50_000:             # val items are held out of the train items
            x, y = (x[:54_000], y[:54_000]) if split == "train" else (x[54_000:], y[54_000:])
        self.items, self.item_labels, self.classes = x, np.asarray(y, np.int64), list(classes)
        names = TEST_BACKGROUNDS if split == "test" else TRAIN_BACKGROUNDS
        self.backgrounds = [_skimage_photo(n) for n in names]
        self._cache: dict[int, tuple] = {}

    def _rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, _SPLIT_SALT[self.split], int(i)])

    def render(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image HxWx3 uint8, boxes (n, 4) xyxy float32, labels (n,) int64) of scene ``i``."""
        if i in self._cache:
            return self._cache[i]
        rng = self._rng(i)
        s = self.size
        bg = self.backgrounds[int(rng.integers(len(self.backgrounds)))]
        h, w = bg.shape[:2]
        side = int(rng.integers(min(h, w) // 2, min(h, w) + 1))
        y0, x0 = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        img = np.asarray(Image.fromarray(bg[y0:y0 + side, x0:x0 + side]).resize((s, s), Image.BILINEAR),
                         np.float32)
        boxes, labels = [], []
        for _ in range(int(rng.integers(self.min_objects, self.max_objects + 1))):
            k = int(rng.integers(len(self.items)))
            o = max(8, min(s, round(int(rng.integers(self.min_side, self.max_side + 1)) * s / 320)))  # sides at 320 px
            item = np.asarray(Image.fromarray(self.items[k]).resize((o, o), Image.BILINEAR), np.float32) / 255.0
            ys, xs = np.nonzero(item > 0.1)
            if len(ys) == 0:
                continue
            for _try in range(10):
                py, px = int(rng.integers(0, s - o + 1)), int(rng.integers(0, s - o + 1))
                box = np.array([px + xs.min(), py + ys.min(), px + xs.max() + 1, py + ys.max() + 1], np.float32)
                if not boxes or _iou(box, np.stack(boxes)).max() < 0.2:
                    break
            else:
                continue
            tint = rng.uniform(80, 255, 3).astype(np.float32)
            a = item[..., None]
            region = img[py:py + o, px:px + o]
            img[py:py + o, px:px + o] = region * (1 - a) + tint * a
            boxes.append(box)
            labels.append(int(self.item_labels[k]))
        out = (np.clip(img + 0.5, 0, 255).astype(np.uint8),
               np.stack(boxes).astype(np.float32) if boxes else np.zeros((0, 4), np.float32),
               np.asarray(labels, np.int64))
        if len(self._cache) < 4096 and self.split != "train":
            self._cache[i] = out
        return out

    def split_view(self, n: int | None = None, offset: int = 0) -> DetSplit:
        n = min(n or SPLIT_SIZES[self.split], SPLIT_SIZES[self.split])
        return DetSplit(f"{BUILTIN_SCENES}:{self.split}", self.size, n,
                        lambda i: self.render(offset + i)[0],
                        lambda i: dict(zip(("boxes", "labels"), self.render(offset + i)[1:])),
                        ids=[f"{self.split}-{offset + i}" for i in range(n)])


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / (area(box) + area(boxes) - inter + 1e-9)


# ------------------------------------------------------------------------------------ user formats
@dataclass
class _Item:
    path: Path
    boxes: np.ndarray     # xyxy in the file's pixels
    labels: np.ndarray    # indices into the class list


def detect_format(root: Path) -> str:
    if list(root.glob("*.json")) or list(root.glob("annotations/*.json")):   # (VOC's Annotations/ on a
        return "coco"                                                          # case-insensitive disk holds XML)
    if list(root.rglob("*.xml")):
        return "voc"
    if list(root.rglob("*.txt")):
        return "yolo"
    raise DataError(f"{str(root)!r} holds no annotations: expected COCO JSON (annotations/*.json), Pascal VOC XML "
                    f"(Annotations/*.xml) or YOLO txt (labels/*.txt + classes.txt)",
                    hint="convert your labels to one of those, or use the built-in objects-on-photos scenes")


def read_folder(root: str | os.PathLike, classes: list[str] | None = None, strict: bool = False) -> tuple[list[_Item], list[str], list[str]]:
    """(items, class names, skipped) from a COCO / VOC / YOLO folder, with clear errors and counted skips:
    boxes outside the image are clipped (and dropped when nothing is left), images without boxes are kept
    (negatives), unknown categories are an error naming them, unreadable files are skipped (or fatal when
    ``strict``)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"detection data {str(root)!r} does not exist or is not a folder",
                        hint="pass a COCO / Pascal VOC / YOLO folder, or objects-on-photos")
    fmt = detect_format(root)
    items, names, skipped = {"coco": _read_coco, "voc": _read_voc, "yolo": _read_yolo}[fmt](root, classes)
    if not items:
        raise DataError(f"{str(root)!r} ({fmt}): no images with readable annotations")
    return items, names, skipped


def _read_coco(root: Path, classes):
    files = sorted((root / "annotations").glob("*.json")) if (root / "annotations").is_dir() else sorted(root.glob("*.json"))
    if len(files) != 1:
        raise DataError(f"{str(root)!r}: expected one COCO annotation JSON, found {len(files)}",
                        hint="keep one instances_*.json per split folder")
    try:
        d = json.loads(files[0].read_text())
        cats = {c["id"]: c["name"] for c in d["categories"]}
        imgs = {im["id"]: im for im in d["images"]}
        anns = d["annotations"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{files[0]}: not a COCO instances file ({type(e).__name__}: {e})") from None
    names = classes or [cats[k] for k in sorted(cats)]
    per: dict = {k: ([], []) for k in imgs}
    for a in anns:
        name = cats.get(a.get("category_id"))
        if name is None or name not in names:
            raise DataError(f"{files[0]}: annotation {a.get('id')} has category {a.get('category_id')!r} "
                            f"({name!r}), not among {names[:10]}", hint="fix the category ids, or list the "
                                                                        "classes the model was trained on")
        if a.get("image_id") not in per:
            raise DataError(f"{files[0]}: annotation {a.get('id')} refers to a missing image {a.get('image_id')!r}")
        try:
            x, y, w, h = map(float, a["bbox"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{files[0]}: annotation {a.get('id')} has no valid bbox [x, y, w, h] "
                            f"(got {str(a.get('bbox'))[:40]})", hint="fix or remove that annotation") from None
        per[a["image_id"]][0].append([x, y, x + w, y + h])
        per[a["image_id"]][1].append(names.index(name))
    img_root = root / "images" if (root / "images").is_dir() else root
    bad = [k for k in per if not isinstance(imgs[k].get("file_name"), str)]
    if bad:
        raise DataError(f"{files[0]}: image {bad[0]!r} has no file_name", hint="every COCO image needs a file_name")
    items = [_Item(img_root / imgs[k]["file_name"], np.asarray(b, np.float32).reshape(-1, 4),
                   np.asarray(lab, np.int64)) for k, (b, lab) in sorted(per.items())]
    return items, names, []


def _read_voc(root: Path, classes):
    xmls = sorted(root.rglob("*.xml"))
    parsed, found, skipped = [], set(), []
    for x in xmls:
        try:
            t = ET.parse(x).getroot()
            fname = t.findtext("filename")
            # VOC pixel coordinates are 1-based: xmin/ymin - 1 gives the 0-based box edge (as detectron2 reads them)
            objs = [((o.findtext("name") or "").strip(),
                     [float(o.find("bndbox").findtext(k)) - (1.0 if k in ("xmin", "ymin") else 0.0)
                      for k in ("xmin", "ymin", "xmax", "ymax")])
                    for o in t.findall("object")]
            if any(not n for n, _ in objs):
                raise ValueError("an object without a <name>")
        except (ET.ParseError, AttributeError, TypeError, ValueError) as e:
            skipped.append(f"{x.name} ({type(e).__name__})")
            continue
        found |= {n for n, _ in objs}
        img_dir = x.parent.parent / "JPEGImages" if (x.parent.parent / "JPEGImages").is_dir() else x.parent
        parsed.append((img_dir / (fname or x.with_suffix(".jpg").name), objs))
    names = classes or sorted(found)
    items = []
    for path, objs in parsed:
        unknown = [n for n, _ in objs if n not in names]
        if unknown:
            raise DataError(f"{path.name}: unknown categories {sorted(set(unknown))}, not among {names[:10]}",
                            hint="list the classes the model was trained on, or relabel")
        items.append(_Item(path, np.asarray([b for _, b in objs], np.float32).reshape(-1, 4),
                           np.asarray([names.index(n) for n, _ in objs], np.int64)))
    return items, names, skipped


def _read_yolo(root: Path, classes):
    cls_file = next((p for p in (root / "classes.txt", root / "obj.names", root / "data.names") if p.is_file()), None)
    names = classes or ([ln.strip() for ln in _text(cls_file).splitlines() if ln.strip()] if cls_file else None)
    if not names:
        raise DataError(f"{str(root)!r} (YOLO): no classes.txt naming the class ids",
                        hint="add classes.txt with one class name per line")
    from ...data.images import IMAGE_EXTS

    img_dir = root / "images" if (root / "images").is_dir() else root
    items, skipped, labelled = [], [], 0
    for img in sorted(p for p in img_dir.rglob("*") if p.suffix.lower() in IMAGE_EXTS):
        lab = (root / "labels" / img.relative_to(img_dir)).with_suffix(".txt") if (root / "labels").is_dir() \
            else img.with_suffix(".txt")
        rows = []
        if lab.is_file():
            for ln in _text(lab).splitlines():
                parts = ln.split()
                if not parts:
                    continue
                try:
                    if len(parts) != 5:    # a segmentation polygon (c x1 y1 x2 y2 ...) is not a box
                        raise ValueError("expected 'class cx cy w h'")
                    c, cx, cy, w, h = int(parts[0]), *map(float, parts[1:5])
                except (ValueError, TypeError):
                    skipped.append(f"{lab.name} (bad line {ln[:30]!r})")
                    rows = None
                    break
                if not 0 <= c < len(names):
                    raise DataError(f"{lab}: class id {c} is not among the {len(names)} classes of {cls_file}",
                                    hint="fix the label or classes.txt")
                rows.append((c, cx, cy, w, h))
        if rows is None:
            continue
        items.append(_Item(img, np.asarray([(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2) for _, cx, cy, w, h in rows],
                                           np.float32).reshape(-1, 4),   # normalised: scaled when the image is read
                           np.asarray([c for c, *_ in rows], np.int64)))
        items[-1].normalized = True
        labelled += lab.is_file()
    if items and not labelled:
        raise DataError(f"{str(root)!r} (YOLO): none of the {len(items)} images has a label file (looked for "
                        f"{'labels/<image>.txt' if (root / 'labels').is_dir() else '<image>.txt beside each image'})",
                        hint="put labels/ next to images/ with one .txt per image")
    return items, names, skipped


def _text(p: Path) -> str:
    """A label file as text: UTF-8 (a BOM from Windows editors tolerated); anything else is a clear error."""
    try:
        return p.read_text(encoding="utf-8-sig")
    except (UnicodeDecodeError, OSError) as e:
        raise DataError(f"{str(p)!r}: not a UTF-8 text file ({type(e).__name__})",
                        hint="save labels and classes.txt as UTF-8") from None


def folder_split(items: list[_Item], size: int, name: str, strict: bool = False) -> DetSplit:
    """Images resized to size x size (boxes scaled and clipped to the image; emptied boxes dropped)."""
    from ...data.images import UnreadableImage, open_image

    cache: dict[int, tuple] = {}
    skipped: list[str] = []

    def load(i: int):
        if i in cache:
            return cache[i]
        it = items[i]
        im = open_image(it.path)
        w, h = im.size
        b = it.boxes.copy()
        if getattr(it, "normalized", False):
            b *= np.array([w, h, w, h], np.float32)
        b = np.clip(b, 0, [w, h, w, h]) * np.array([size / w, size / h, size / w, size / h], np.float32)
        keep = (b[:, 2] - b[:, 0] >= 1) & (b[:, 3] - b[:, 1] >= 1)
        out = (np.asarray(im.resize((size, size), Image.BILINEAR)), b[keep], it.labels[keep])
        if len(cache) < 2048:
            cache[i] = out
        return out

    ok = []
    for i, it in enumerate(items):
        try:
            load(i)
            ok.append(i)
        except UnreadableImage as e:
            if strict:
                raise
            skipped.append(f"{it.path.name} ({e.message.split(': ')[-1][:60]})")
    if skipped:
        warn(f"{name}: skipped {len(skipped)} unreadable image(s), e.g. {'; '.join(skipped[:3])}")
    if items and not ok:
        raise DataError(f"{name}: none of the {len(items)} images could be read (e.g. {skipped[0]})",
                        hint="check that the annotation's file names match the image files (COCO: images/ or "
                             "the folder of the JSON)")
    return DetSplit(name, size, len(ok), lambda i: load(ok[i])[0],
                    lambda i: dict(zip(("boxes", "labels"), load(ok[i])[1:])), ids=[str(items[i].path) for i in ok],
                    skipped=skipped)


def export_scenes(out: str | os.PathLike, split: str = "test", limit: int | None = None, size: int = 320) -> int:
    """Write ``objects-on-photos`` scenes as a COCO folder (images/*.png + annotations/instances.json) that
    ``read_folder`` (and other tools) read back; written beside ``out`` and renamed into place."""
    import shutil

    out = Path(out).expanduser()
    if out.exists() and any(out.iterdir()) if out.is_dir() else out.exists():
        raise DataError(f"--out {str(out)!r} already exists and is not empty", hint="pick a new folder")
    s = Scenes(split, size=size)
    n = min(limit or SPLIT_SIZES[split], SPLIT_SIZES[split])
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    (tmp / "annotations").mkdir()
    coco = {"info": {"description": f"{BUILTIN_SCENES}:{split} (edgeft, synthetic: Fashion-MNIST items on "
                                    f"scikit-image photos)"},
            "images": [], "annotations": [], "categories": [{"id": i + 1, "name": c} for i, c in enumerate(s.classes)]}
    try:
        for i in range(n):
            img, boxes, labels = s.render(i)
            fn = f"{split}_{i:05d}.png"
            Image.fromarray(img).save(tmp / "images" / fn)
            coco["images"].append({"id": i + 1, "file_name": fn, "width": size, "height": size})
            for b, lab in zip(boxes.tolist(), labels.tolist()):
                coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": i + 1,
                                            "category_id": lab + 1, "iscrowd": 0, "area": (b[2] - b[0]) * (b[3] - b[1]),
                                            "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]})
        (tmp / "annotations" / "instances.json").write_text(json.dumps(coco))
        if out.is_dir():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return n
