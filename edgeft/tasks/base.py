"""The two halves of a task, as the rest of edgeft sees them.

:class:`DeviceTask` is torch-free: what ``runtime.load``, ``predict``, the bench and serving need from a task.
:class:`Task` is the training side: what finetune, prune, qat and export need. A task folder provides both
(``device.py`` and ``task.py``); no stage or backend knows which task it serves.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol

import numpy as np


@dataclass
class Samples:
    """Benchmark samples: ``raw(i)`` gives sample i decoded but not preprocessed (decoding is untimed, like
    MLPerf's sample library and like frames arriving from a camera); ``targets`` are what the metric needs."""

    name: str
    task: str
    classes: list[str]
    targets: Any
    raw: Callable[[int], Any]
    sha256: str = ""
    skipped: list = field(default_factory=list)    # unreadable files left out (name and why)
    limited_by: str | None = None                  # why only part of --data is read (e.g. the smoke profile)

    def __len__(self) -> int:
        return int(len(self.targets))


class Accumulator(Protocol):
    metric: str

    def update(self, outputs: dict, targets) -> None: ...

    def result(self) -> dict: ...


class DeviceTask(Protocol):
    """The torch-free half of a task."""

    name: str
    metric: str                       # the primary metric (higher is better): "top1", "map", ...
    input_exts: frozenset[str]        # files `edgeft predict` accepts

    def check_preprocess(self, manifest: dict) -> None: ...      # ValueError with what is wrong

    def preprocessor(self, manifest: dict) -> Callable[[list], dict[str, np.ndarray]]: ...

    def read(self, path) -> Any: ...                              # a file -> a raw sample (DataError if unreadable)

    def predictions(self, outputs: dict, labels: list[str], top_k: int = 5) -> list: ...

    def format_prediction(self, pred) -> str: ...

    def prediction_json(self, pred) -> dict: ...

    def accumulator(self, n_classes: int) -> Accumulator: ...

    def parity(self, ref: dict, got: dict) -> dict: ...

    def parity_failure(self, par: dict, precision: str) -> str | None: ...

    def samples(self, spec: str, labels: list[str], limit: int | None) -> Samples: ...


@dataclass
class TaskData:
    """In-memory splits plus the class names, as loaded for one recipe."""

    source: str
    classes: list[str]
    train: Any
    val: Any
    test: Any | None = None
    info: dict = field(default_factory=dict)

    def split(self, name: str):
        return {"train": self.train, "val": self.val, "test": self.test}[name]

    def sizes(self) -> dict[str, int]:
        return {k: len(v) for k, v in (("train", self.train), ("val", self.val), ("test", self.test)) if v is not None}


class Task(Protocol):
    """The training side of a task."""

    name: str
    device: DeviceTask
    primary: str                      # the metric that chooses the best epoch (device.metric)

    def load_data(self, recipe, source: str | None = None) -> TaskData: ...

    def train_batches(self, data: TaskData, recipe, epoch: int, rank: int = 0, world: int = 1,
                      device: str = "cpu") -> Iterator[tuple]: ...

    def eval_batches(self, split, recipe, batch_size: int, device: str = "cpu") -> Iterator[tuple]: ...

    def eval_inputs(self, split, recipe, idx: np.ndarray) -> dict[str, np.ndarray]: ...   # deployment feeds

    def example_input(self, recipe, batch: int = 1): ...

    def io_spec(self, recipe, labels: list[str]) -> dict: ...        # {"inputs": [...], "outputs": [...]}

    def preprocess_spec(self, recipe) -> dict: ...

    def loss(self, model, x, y, recipe, teacher=None, distill: float = 0.0) -> tuple[Any, dict]: ...

    def evaluate(self, model, split, recipe, device, batch_size: int | None = None, want_confusion: bool = False,
                 num_classes: int | None = None) -> dict: ...

    def torch_outputs(self, model, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def prefixed(prefix: str, metrics: dict | None) -> dict:
    """A task's metrics as record keys: {"top1": .9} -> {"val_top1": .9} (the confusion matrix is plotted, not
    recorded)."""
    return {f"{prefix}_{k}": v for k, v in (metrics or {}).items() if k != "confusion"}


METRIC_NAMES = {"top1": "top-1", "top5": "top-5", "map": "mAP", "map50": "mAP@.5"}


def metric_name(m: str) -> str:
    return METRIC_NAMES.get(m, m)


def epoch_generator(seed: int, epoch: int):
    """The RNG for one epoch's order and augmentation: a pure function of (seed, epoch), so --resume
    replays an epoch exactly."""
    import torch

    g = torch.Generator()
    g.manual_seed(int(seed) * 1_000_003 + int(epoch) * 7919 + 17)
    return g


def num_batches(n: int, batch_size: int, world: int) -> int:
    """Batches per epoch on each rank (last partial batch dropped, as ``shard_permutation`` shards)."""
    return max((n // world) // batch_size, 1)


def epoch_batches(n: int, recipe, epoch: int, rank: int = 0, world: int = 1):
    """``(g, batches)`` for one training epoch: the epoch's generator (the order is drawn from it first; tasks
    then draw their augmentation from it) and this rank's batches of sample indices (numpy int64; the last partial
    batch dropped, as ``num_batches`` counts)."""
    g = epoch_generator(recipe.train.seed, epoch)
    perm = shard_permutation(n, g, rank, world).numpy()
    bs = recipe.train.batch_size
    batches = (perm[b * bs:(b + 1) * bs] for b in range(num_batches(n, bs, world)))
    return g, [idx for idx in batches if len(idx)]     # slices only run empty at the end: same as stopping there


def shard_permutation(n: int, g, rank: int, world: int, drop_last: bool = True):
    """A seeded permutation split across ranks (DistributedSampler semantics, same on every rank)."""
    import torch

    perm = torch.randperm(n, generator=g)
    if world > 1:
        per = n // world if drop_last else -(-n // world)
        total = per * world
        if total > n:
            perm = torch.cat([perm, perm[: total - n]])
        perm = perm[:total][rank::world]
    return perm
