"""The Task contract used by every stage (finetune, prune, qat, export) and by the reference bench row."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol

import numpy as np


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
    name: str

    def load_data(self, recipe, source: str | None = None) -> TaskData: ...

    def train_batches(self, data: TaskData, recipe, epoch: int, rank: int = 0, world: int = 1,
                      device: str = "cpu") -> Iterator[tuple]: ...

    def eval_batches(self, split, recipe, batch_size: int, device: str = "cpu") -> Iterator[tuple]: ...

    def eval_inputs(self, split, recipe, idx: np.ndarray) -> np.ndarray: ...

    def example_input(self, recipe, batch: int = 1): ...

    def input_spec(self, recipe) -> dict: ...

    def preprocess_spec(self, recipe) -> dict: ...


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
