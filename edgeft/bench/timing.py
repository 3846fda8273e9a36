"""The one timing loop. perf_counter_ns, warm-up bounded by time AND count, windows that end only when
both their minimum duration and minimum count are met (LoadGen / trtexec semantics). Torch-free."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..stats import summarize

STAGES = ("pre", "infer", "compute", "post", "e2e")  # compute: device time (TensorRT CUDA events)


@dataclass(frozen=True)
class Profile:
    name: str
    warmup_s: float
    warmup_iters: int
    window_s: float
    window_count: int
    windows: int
    rewarm_iters: int = 5       # discarded iterations before each interleaved block (caches of the other runner)
    accuracy_limit: int | None = None   # the accuracy pass reads at most this many samples (None: all of --data)


PROFILES = {
    # smoke: a seconds-long check that everything runs (CI); its accuracy pass is bounded too (the table says so)
    "smoke": Profile("smoke", 0.5, 10, 2.0, 64, 1, accuracy_limit=1000),
    # quick: dev's statistics bounded for slow models (a 70 ms detector would need 6 min per dev row): 3 windows of
    # >= 3 s and >= 100 samples each
    "quick": Profile("quick", 1.0, 10, 3.0, 100, 3),
    "dev": Profile("dev", 2.0, 20, 10.0, 1024, 5),
    "report": Profile("report", 10.0, 100, 120.0, 1024, 5),
}


class Clock:
    """Injectable clock (tests use a fake one)."""

    def now_ns(self) -> int:
        return time.perf_counter_ns()


@dataclass
class Window:
    index: int
    samples: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    start_ns: int = 0
    end_ns: int = 0

    @property
    def count(self) -> int:
        return len(self.samples["e2e"])

    @property
    def seconds(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9

    def summary(self) -> dict:
        e = summarize(self.samples["e2e"])
        i = summarize(self.samples["infer"])
        return {"index": self.index, "count": self.count, "seconds": round(self.seconds, 3),
                "e2e": {"p50": e.get("p50"), "p99": e.get("p99")}, "infer": {"p50": i.get("p50")},
                "throughput_sps": self.count / self.seconds if self.seconds > 0 else None}


def warmup(step: Callable[[int], None], min_s: float, min_iters: int, clock: Clock | None = None) -> dict:
    """Run ``step(i)`` until both min_s seconds and min_iters iterations have passed."""
    clock = clock or Clock()
    t0 = clock.now_ns()
    i = 0
    while i < min_iters or (clock.now_ns() - t0) / 1e9 < min_s:
        step(i)
        i += 1
    s = (clock.now_ns() - t0) / 1e9
    return {"iterations": i, "seconds": round(s, 3), "mean_ms": round(s * 1e3 / max(i, 1), 4)}


def run_window(step: Callable[[int], dict[str, float]], index: int, min_s: float, min_count: int, start_at: int = 0,
               clock: Clock | None = None, max_s: float | None = None) -> Window:
    """Call ``step(i)`` (returns per-stage ms) until min_s AND min_count are met (or max_s elapses)."""
    clock = clock or Clock()
    w = Window(index)
    w.start_ns = clock.now_ns()
    i = start_at
    while True:
        st = step(i)
        for k in STAGES:
            if k in st:
                w.samples[k].append(st[k])
        i += 1
        elapsed = (clock.now_ns() - w.start_ns) / 1e9
        if (w.count >= min_count and elapsed >= min_s) or (max_s is not None and elapsed >= max_s):
            break
    w.end_ns = clock.now_ns()
    return w


def pooled(windows: list[Window]) -> dict:
    """Per-stage LatencyStats over all windows, plus window-to-window spread of the medians."""
    out = {}
    for k in STAGES:
        vals = [v for w in windows for v in w.samples[k]]
        if vals:
            out[k] = summarize(vals)
    meds = [float(np.median(w.samples["e2e"])) for w in windows if w.samples["e2e"]]
    if meds and "e2e" in out:
        # order-statistic CI for the median of window medians: with W windows, [min, max] covers 1 - 2*0.5^W
        out["e2e"]["p50_windows"] = {"median": float(np.median(meds)), "min": min(meds), "max": max(meds),
                                     "coverage": round(1 - 2 * 0.5 ** len(meds), 4) if len(meds) > 1 else None}
    return out
