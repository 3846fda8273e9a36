"""Object detection, training side: the data (built-in scenes or COCO / VOC / YOLO folders), flips, the SSD loss,
COCO mAP through the same decoding the device runs, the exported outputs and the anchors file."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ...data.images import Preprocess, normalize_batch
from ...errors import DataError
from ..base import TaskData, epoch_batches
from ..image_input import SquareImageInput
from .data import BUILTIN_SCENES, DetSplit, Scenes, folder_split, read_folder
from .device import DEVICE
from .metric import MeanAP
from .recipe import DetectionRecipe  # noqa: F401  (registers the recipe class)

OUTPUTS = ("cls_logits", "bbox_regression")


def preprocess_of(recipe) -> Preprocess:
    i = recipe.input
    return Preprocess(size=i.size, resize=i.size, resize_mode="square", interpolation="bilinear",
                      mean=tuple(i.mean), std=tuple(i.std))


class _EpochScenes:
    """Training scenes drawn fresh each epoch: scene ``epoch * n + k`` (deterministic, resumable)."""

    def __init__(self, scenes: Scenes, n: int):
        self.scenes, self.n = scenes, n

    def __len__(self) -> int:
        return self.n

    def sample(self, epoch: int, k: int):
        return self.scenes.render(epoch * self.n + int(k))     # epoch 0 is also the trunk cache's set

    def image(self, k: int):                                    # calibration draws from epoch 0's scenes
        return self.sample(0, k)[0]

    def target(self, k: int) -> dict:
        return dict(zip(("boxes", "labels"), self.sample(0, k)[1:]))


class _CachedTrain:
    """Training images already through the frozen trunk (float16 maps) with their targets."""

    def __init__(self, feats, targets):
        self.feats, self.targets = feats, targets

    def __len__(self) -> int:
        return len(self.targets)


class Task(SquareImageInput):
    name = "detection"
    device = DEVICE
    primary = "map"
    history_metrics = ("map", "map50", "loss")

    def preprocess(self, recipe) -> Preprocess:
        return preprocess_of(recipe)

    # ----------------------------------------------------------------------------------------- data
    def load_data(self, recipe, source: str | None = None) -> TaskData:
        src = source or recipe.data.source
        s, c = recipe.input.size, recipe.scenes
        if src == BUILTIN_SCENES:
            mk = lambda split: Scenes(split, size=s, seed=c.seed, min_objects=c.min_objects,  # noqa: E731
                                      max_objects=c.max_objects, min_side=c.min_side, max_side=c.max_side)
            val = mk("val")
            return TaskData(src, list(val.classes), _EpochScenes(mk("train"), c.train_per_epoch),
                            val.split_view(recipe.data.val_limit or c.val),
                            mk("test").split_view(recipe.data.test_limit or c.test),
                            {"kind": "synthetic scenes: Fashion-MNIST items on real photos (scikit-image)"})
        root = Path(src).expanduser()
        if not root.is_dir():
            raise DataError(f"detection data {src!r} does not exist or is not a folder; valid are a folder with "
                            f"train/ and val/ (COCO / Pascal VOC / YOLO) or the built-in {BUILTIN_SCENES}",
                            hint="check the path, or pass --data objects-on-photos")
        if not (root / "train").is_dir() or not (root / "val").is_dir():
            raise DataError(f"detection data {src!r}: expected {src}/train and {src}/val (each a COCO / Pascal VOC / "
                            f"YOLO folder), or the built-in {BUILTIN_SCENES}",
                            hint="split your images into train/ and val/ (and optionally test/)")
        items, classes, skipped = read_folder(root / "train", strict=recipe.data.strict)
        splits = {"train": folder_split(items[:recipe.data.train_limit], s, f"{src}/train", recipe.data.strict)}
        for name in ("val", "test"):
            if (root / name).is_dir():
                it, _, sk = read_folder(root / name, classes=classes, strict=recipe.data.strict)
                lim = recipe.data.val_limit if name == "val" else recipe.data.test_limit
                splits[name] = folder_split(it[:lim], s, f"{src}/{name}", recipe.data.strict)
                skipped += sk
        return TaskData(src, classes, splits["train"], splits["val"], splits.get("test"),
                        {"skipped_annotations": skipped[:20]})

    def _train_item(self, split, epoch: int, k: int):
        if isinstance(split, _EpochScenes):
            return split.sample(epoch, k)
        t = split.target(k)
        return split.image(k), t["boxes"], t["labels"]

    def model_kwargs(self, recipe) -> dict:
        """The anchors are fixed by the input size: the model is built (and rebuilt from a run) at that size."""
        return {"size": int(recipe.input.size)}

    def prepare_training(self, model, data: TaskData, recipe, device):
        """With ``trunk_cache``: the frozen trunk runs once per training image (eval mode, no gradients) and
        training continues on its float16 output."""
        if not recipe.trunk_cache:
            return data.train
        from ...errors import RecipeError
        from ...utils.log import info

        core = _core(model)
        need = core.trunk_prefixes
        if not need:
            raise RecipeError(f"trunk_cache: {recipe.model.name} has no cacheable trunk",
                              hint="set trunk_cache: false")
        missing = [p for p in need if not any(p.startswith(f) or f.startswith(p) for f in recipe.train.freeze)]
        frozen = all(not q.requires_grad for n, q in core.named_parameters() if n.startswith(need))
        if missing or not frozen:
            raise RecipeError(f"trunk_cache needs the trunk frozen: add {need} to train.freeze (it has "
                              f"{list(recipe.train.freeze)})", hint="or set trunk_cache: false")
        import time

        t0 = time.perf_counter()
        split, p, size = data.train, preprocess_of(recipe), recipe.input.size
        mods = [m for n, m in core.named_modules() if n and any(f"{n}.".startswith(q) for q in need)]
        was = [m.training for m in mods]
        for m in mods:
            m.eval()
        feats, targets = [], []
        for s in range(0, len(split), 32):
            items = [self._train_item(split, 0, k) for k in range(s, min(len(split), s + 32))]
            x = torch.from_numpy(normalize_batch(np.stack([a for a, _, _ in items]), p)).to(device)
            feats.append(core.trunk_features(x.contiguous(memory_format=torch.channels_last)).half().cpu())
            targets += [(np.asarray(b, np.float32), np.asarray(lab, np.int64)) for _, b, lab in items]
        for m, w in zip(mods, was):
            m.train(w)
        f = torch.cat(feats)
        info(f"trunk cache: {len(targets)} training images through the frozen {', '.join(need)} in "
             f"{time.perf_counter() - t0:.0f}s ({f.numel() * 2 / 1e6:.0f} MB float16, {size} px)")
        return _CachedTrain(f, targets)

    def train_batches(self, data: TaskData, recipe, epoch: int, rank: int = 0, world: int = 1,
                      device: str = "cpu") -> Iterator[tuple]:
        split = data.train
        g, batches = epoch_batches(len(split), recipe, epoch, rank, world)
        if isinstance(split, _CachedTrain):
            for idx in batches:
                yield (split.feats[torch.from_numpy(idx)].to(device).float(),
                       [{"boxes": torch.from_numpy(split.targets[k][0]).to(device),
                         "labels": torch.from_numpy(split.targets[k][1]).to(device)} for k in idx.tolist()])
            return
        p = preprocess_of(recipe)
        size = recipe.input.size
        for idx in batches:
            idx = idx.tolist()
            imgs, targets = [], []
            flips = (torch.rand(len(idx), generator=g) < 0.5).tolist() if recipe.augment.hflip else [False] * len(idx)
            for k, flip in zip(idx, flips):
                img, boxes, labels = self._train_item(split, epoch, k)
                boxes = np.asarray(boxes, np.float32).copy()
                if flip:
                    img = img[:, ::-1]
                    boxes[:, [0, 2]] = size - boxes[:, [2, 0]]
                imgs.append(img)
                targets.append({"boxes": torch.from_numpy(boxes).to(device),
                                "labels": torch.from_numpy(np.asarray(labels, np.int64)).to(device)})
            yield torch.from_numpy(normalize_batch(np.stack(imgs), p)).to(device), targets

    def eval_batches(self, split, recipe, batch_size: int, device: str = "cpu") -> Iterator[tuple]:
        p = preprocess_of(recipe)
        for s in range(0, len(split), batch_size):
            idx = range(s, min(s + batch_size, len(split)))
            yield (torch.from_numpy(normalize_batch(np.stack([split.image(i) for i in idx]), p)).to(device),
                   [split.target(i) for i in idx])

    def eval_inputs(self, split, recipe, idx: np.ndarray) -> dict[str, np.ndarray]:
        return {"input": normalize_batch(np.stack([split.image(int(i)) for i in np.asarray(idx)]), preprocess_of(recipe))}

    # ---------------------------------------------------------------------------------- training
    def loss(self, model, x, y, recipe, teacher=None, distill: float = 0.0):
        m = model.module if hasattr(model, "module") else model
        return _core(m).loss(model(x), y), {}

    @torch.no_grad()
    def evaluate(self, model, split, recipe, device, batch_size: int | None = None, want_confusion: bool = False,
                 num_classes: int | None = None) -> dict:
        """COCO mAP (with a bootstrap CI) of the model's detections, decoded as the device decodes them, and the
        loss."""
        m = model.module if hasattr(model, "module") else model
        was = m.training
        m.eval()
        core = _core(m)
        dev = self.device.bound({**self.extra_manifest(recipe), "preprocess": self.preprocess_spec(recipe),
                                 "_anchors": core.anchors.cpu().numpy()})
        acc = MeanAP(core.num_classes - 1, boots=100)
        loss_sum, n = 0.0, 0
        for x, targets in self.eval_batches(split, recipe, batch_size or 32, str(device)):
            out = m(x)
            tt = [{"boxes": torch.as_tensor(t["boxes"], device=x.device),
                   "labels": torch.as_tensor(t["labels"], device=x.device)} for t in targets]
            loss_sum += float(core.loss(out, tt)) * len(targets)
            n += len(targets)
            acc.add(dev.decode({k: v.float().cpu().numpy() for k, v in zip(OUTPUTS, out)}), targets)
        m.train(was)
        if n == 0:
            raise DataError("evaluation split is empty")
        return {**acc.result(), "loss": loss_sum / n, "n": n}

    # -------------------------------------------------------------------------------- deployment
    def io_spec(self, recipe, labels: list[str]) -> dict:
        return {"inputs": [self.input_spec(recipe)],
                "outputs": [{"name": "cls_logits", "shape": ["batch", "anchors", len(labels) + 1], "dtype": "float32"},
                            {"name": "bbox_regression", "shape": ["batch", "anchors", 4], "dtype": "float32"}]}

    def extra_manifest(self, recipe) -> dict:
        d = recipe.detect
        return {"detection": {"decoder": "ssd", "anchors": "anchors.npy", "box_coder_weights": [10.0, 10.0, 5.0, 5.0],
                              "score_thresh": d.score_thresh, "nms_iou": d.nms_iou, "topk": d.topk,
                              "max_det": d.max_det, "labels_offset": 1,
                              "where": "decoding and NMS in the torch-free runtime (numpy)"}}

    def bundle_files(self, recipe, model, out_dir) -> dict:
        np.save(Path(out_dir) / "anchors.npy", _core(model).anchors.cpu().numpy().astype(np.float32))
        return {"anchors": "anchors.npy"}

    def reference_extra(self, model) -> dict:
        return {"_anchors": _core(model).anchors.cpu().numpy()}

    def torch_outputs(self, model, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.no_grad():
            out = model(*[torch.from_numpy(v) for v in feeds.values()])
        return {k: v.float().numpy() for k, v in zip(OUTPUTS, out)}


def _core(m):
    """The SSDDetector inside a model (NNCF or DDP wrappers keep it reachable)."""
    for cand in (m, getattr(m, "module", None), getattr(m, "_nncf", None)):
        if cand is not None and hasattr(cand, "anchors") and hasattr(cand, "loss"):
            return cand
    raise DataError(f"{type(m).__name__} is not an SSD detector (no anchors)")
