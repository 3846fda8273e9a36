"""Benchmark samples and the one timed pass (pre -> infer -> post), torch-free and task-agnostic.

Samples are decoded but not preprocessed: decoding is untimed (like MLPerf's in-memory sample library, and
like frames arriving from a camera); preprocessing (resize, crop, normalise, features) is timed as ``pre``.
"""
from __future__ import annotations

import time
from typing import Callable

from ..tasks import device_task
from ..tasks.base import Samples  # noqa: F401  (re-exported)


def load_samples(spec: str, task: str, labels: list[str], limit: int | None = None) -> Samples:
    """The task's benchmark samples for ``--data`` (a built-in set or a folder)."""
    return device_task(task).samples(spec, labels, limit)


def timed_pass(pre: Callable, infer: Callable, post: Callable, raws: list) -> tuple[dict, object, dict]:
    """Raw samples (one, or a batch) through pre -> infer -> post: the unit every scenario times.

    Returns (outputs, post-processed result, {"pre", "infer", "post", "e2e"} in ms)."""
    clock = time.perf_counter_ns
    t0 = clock()
    feeds = pre(raws)
    t1 = clock()
    y = infer(feeds)
    t2 = clock()
    res = post(y)
    t3 = clock()
    return y, res, {"pre": (t1 - t0) / 1e6, "infer": (t2 - t1) / 1e6, "post": (t3 - t2) / 1e6,
                    "e2e": (t3 - t0) / 1e6}
