"""Image classification: data loading, batched torch augmentation, the deployment preprocessing spec."""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ...data.images import Preprocess, load_image_dataset, normalize_batch
from ..base import TaskData, epoch_batches
from ..classify_torch import TorchClassification
from ..image_input import SquareImageInput
from .device import DEVICE


def preprocess_of(recipe) -> Preprocess:
    i = recipe.input
    return Preprocess(size=i.size, resize=i.resize_to, resize_mode=i.resize_mode, interpolation=i.interpolation,
                      mean=tuple(i.mean), std=tuple(i.std))


class Task(SquareImageInput, TorchClassification):
    name = "image_cls"
    device = DEVICE

    def preprocess(self, recipe) -> Preprocess:
        return preprocess_of(recipe)

    # ------------------------------------------------------------------------------------ data
    def load_data(self, recipe, source: str | None = None) -> TaskData:
        d = recipe.data
        ds = load_image_dataset(source or d.source, preprocess_of(recipe), val_fraction=d.val_fraction,
                                test_fraction=d.test_fraction, split_seed=d.split_seed,
                                limits={"train": d.train_limit, "val": d.val_limit, "test": d.test_limit},
                                strict=d.strict, workers=d.workers)
        return TaskData(ds.source, ds.classes, ds.train, ds.val, ds.test, ds.info)

    def train_batches(self, data: TaskData, recipe, epoch: int, rank: int = 0, world: int = 1,
                      device: str = "cpu") -> Iterator[tuple]:
        """Shuffled, augmented, normalised batches; a pure function of (recipe.train.seed, epoch, rank)."""
        split = data.train
        g, batches = epoch_batches(len(split), recipe, epoch, rank, world)
        p = preprocess_of(recipe)
        for idx in batches:
            x = torch.from_numpy(split.images[idx]).permute(0, 3, 1, 2)  # (B, C, R, R) uint8
            x = augment(x, recipe.augment, p.size, g)
            yield normalize(x, p).to(device), torch.from_numpy(split.targets[idx]).to(device)

    def eval_batches(self, split, recipe, batch_size: int, device: str = "cpu") -> Iterator[tuple]:
        p = preprocess_of(recipe)
        for s in range(0, len(split), batch_size):
            x = torch.from_numpy(normalize_batch(split.images[s:s + batch_size], p))
            yield x.to(device), torch.from_numpy(split.targets[s:s + batch_size]).to(device)

    def eval_inputs(self, split, recipe, idx: np.ndarray) -> dict[str, np.ndarray]:
        """Deployment-preprocessed feeds for the given sample indices (numpy path)."""
        return {"input": normalize_batch(split.images[np.asarray(idx)], preprocess_of(recipe))}

    # ------------------------------------------------------------------------------ deployment
    # example_input, input_spec, preprocess_spec, calib_from_dir: SquareImageInput (from preprocess())


# -------------------------------------------------------------------------------- augmentation
def augment(x: torch.Tensor, cfg, size: int, g: torch.Generator) -> torch.Tensor:
    """Random crop (pad-crop or random-resized-crop) to ``size`` and horizontal flip, batched, uint8 in/out
    except for random-resized-crop (float out)."""
    b, _, r, _ = x.shape
    if cfg.random_resized_crop:
        x = _random_resized_crop(x.float(), size, cfg.random_resized_crop, g)
    else:
        if cfg.pad_crop:
            x = F.pad(x, [cfg.pad_crop] * 4)
        h = x.shape[-1]
        if h > size:
            offs = torch.randint(0, h - size + 1, (b, 2), generator=g)
            x = torch.stack([x[i, :, oy:oy + size, ox:ox + size] for i, (oy, ox) in enumerate(offs.tolist())])
        elif h == size:
            pass
        else:  # pragma: no cover - guarded by recipe validation (resize >= size)
            raise ValueError("image smaller than the crop")
    if cfg.hflip:
        flip = torch.rand(b, generator=g) < 0.5
        if flip.any():
            x = x.clone()
            x[flip] = x[flip].flip(-1)
    return x


def _random_resized_crop(x: torch.Tensor, size: int, scale, g: torch.Generator) -> torch.Tensor:
    from torchvision.ops import roi_align

    b, _, h, w = x.shape
    area = torch.empty(b).uniform_(scale[0], scale[1], generator=g) * h * w
    logr = torch.empty(b).uniform_(math.log(3 / 4), math.log(4 / 3), generator=g)
    ratio = torch.exp(logr)
    cw = torch.sqrt(area * ratio).clamp(1, w)
    ch = torch.sqrt(area / ratio).clamp(1, h)
    x0 = torch.rand(b, generator=g) * (w - cw)
    y0 = torch.rand(b, generator=g) * (h - ch)
    boxes = torch.stack([torch.arange(b, dtype=torch.float32), x0, y0, x0 + cw, y0 + ch], 1)
    return roi_align(x, boxes, output_size=size, spatial_scale=1.0, sampling_ratio=2, aligned=True)


def normalize(x: torch.Tensor, p: Preprocess) -> torch.Tensor:
    """uint8/float (B, C, S, S) in 0..255 -> normalised float32 (B, 3, S, S), the same maths as the runtime."""
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    x = x.float() * (1 / 255)
    mean = torch.tensor(p.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(p.std, dtype=torch.float32).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()
