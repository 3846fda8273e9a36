"""``edgeft bench``: an accuracy run and a separate, interleaved performance run for several artifacts.

Example::

    from edgeft.bench.harness import BenchConfig, bench
    res = bench(["runs/r18", "runs/r18/bundles/openvino-int8"], BenchConfig(data="fashion-mnist:test"))

Order of work: open all artifacts (bundles with ``runtime.load``; a run folder as the PyTorch reference);
machine checks; then the scenario (:mod:`edgeft.bench.scenarios`) runs them: typically an accuracy run on the
whole ``--data`` (batched, every sample once, the task's metric) and a performance run; the rows become one
result document (:mod:`edgeft.bench.result`).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError, UnsupportedError
from ..utils.env import governors
from ..utils.log import info, progress
from .artifacts import Artifact, open_artifact
from .timing import PROFILES, Profile

SCHEMA_VERSION = "1.0"
REPLAYS = ("realtime", "asfast", "both")


@dataclass
class BenchConfig:
    data: str = "fashion-mnist:test"
    scenario: str = "single_stream"
    profile: str = "dev"
    threads: int | None = None
    data_limit: int | None = None
    perf_samples: int = 256
    batch: int = 32
    seed: int = 1234
    allow_failed: bool = False
    allow_dvfs: bool = False
    device: str | None = None
    # camera
    fps: float = 30.0
    duration: float | None = None
    handoff: str = "latest"
    source: str | None = None
    deadline_ms: float | None = None
    # throughput
    streams: str = "1,auto"
    batches: str = "1"
    # audio_stream
    stream: str | None = None
    replay: str = "both"
    threshold: float | None = None
    command: str = ""
    extra: dict = field(default_factory=dict)

    def profile_obj(self) -> Profile:
        return PROFILES[self.profile]

    def validate(self) -> None:
        """Every setting is checked before any work, whatever the scenario: a bad value is never ignored."""
        from ..runtime.kws import check_threshold
        from .camera import parse_handoff

        from .scenarios import get_scenario

        scenario = get_scenario(self.scenario)       # a clear error for an unknown name
        if self.profile not in PROFILES:
            raise UnsupportedError(f"unknown profile {self.profile!r}. Valid: {', '.join(PROFILES)}")
        parse_handoff(self.handoff)
        for opt, v in (("--fps", self.fps), ("--duration", self.duration), ("--deadline-ms", self.deadline_ms)):
            if v is not None and not v > 0:
                raise UnsupportedError(f"{opt} {v:g}: must be > 0")
        if self.replay not in REPLAYS:
            raise UnsupportedError(f"--replay {self.replay!r}: valid are {', '.join(REPLAYS)}")
        check_threshold(self.threshold)
        scenario.validate(self)



def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass
class BenchContext:
    """What a scenario gets: the opened artifacts, the settings, and the machine checks so far."""

    arts: list[Artifact]
    cfg: BenchConfig
    prof: Profile
    threads: int
    task: str
    labels: list[str]
    checks: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    samples: object = None        # set by scenarios that use --data


def bench(paths, cfg: BenchConfig) -> dict:
    """Benchmark artifacts (bundles and/or run dirs) in one run; returns the results document."""
    from .result import assemble
    from .scenarios import get_scenario

    if not paths:
        raise DataError("no artifacts to benchmark", hint="pass bundle folders and/or a run folder")
    cfg.validate()
    scenario = get_scenario(cfg.scenario)
    threads = cfg.threads or default_threads()
    arts = [open_artifact(p, threads=threads, allow_failed=cfg.allow_failed, device=cfg.device) for p in paths]
    _dedupe_names(arts)
    tasks = {a.task for a in arts}
    if len(tasks) > 1:
        raise DataError(f"mixed tasks in one bench: {', '.join(f'{a.name}={a.task}' for a in arts)}",
                        hint="bench image and speech artifacts in separate runs")
    task = tasks.pop()
    labels = arts[0].labels
    for a in arts[1:]:
        if a.labels != labels:
            raise DataError(f"artifacts disagree on labels: {arts[0].name} has {labels[:5]}..., {a.name} has "
                            f"{a.labels[:5]}...", hint="compare variants of the same model (same labels.txt)")
    scenario.check_task(task)
    ctx = BenchContext(arts, cfg, cfg.profile_obj(), threads, task, labels)
    _machine_checks(ctx)
    rows = scenario.run(ctx)
    doc = assemble(ctx, scenario, rows)
    for a in arts:
        a.close()
    return doc


def _machine_checks(ctx: BenchContext) -> None:
    cfg = ctx.cfg
    gov = governors()
    if gov and gov != ["performance"]:
        msg = f"CPU governor is {','.join(gov)} (not 'performance'): frequency scaling adds noise"
        if cfg.profile == "report" and not cfg.allow_dvfs:
            raise UnsupportedError(msg, hint="set the performance governor, or pass --allow-dvfs")
        ctx.warnings.append(msg)
    ctx.checks.append({"name": "governor", "passed": (not gov) or gov == ["performance"] or cfg.allow_dvfs,
                       "detail": ",".join(gov) if gov else "not readable (VM/container)"})
    others = _others_cpu_percent()
    busy = others > 25.0
    if busy:
        ctx.warnings.append(f"machine busy: other processes used {others:.0f}% of all cores just before the run "
                            f"(they compete with the benchmark; spin-waiting thread pools such as PyTorch's suffer "
                            f"most)")
    ctx.checks.append({"name": "idle_machine", "passed": not busy, "warn_only": True,
                       "detail": f"other processes {others:.0f}% CPU at start"})


def _others_cpu_percent(interval: float = 0.5) -> float:
    """CPU used by other processes (percent of the whole machine) over a short idle interval."""
    import psutil

    me = psutil.Process()
    me.cpu_percent(None)
    total = psutil.cpu_percent(interval=interval)
    mine = me.cpu_percent(None) / (os.cpu_count() or 1)
    return max(total - mine, 0.0)


def _dedupe_names(arts: list[Artifact]) -> None:
    seen: dict[str, int] = {}
    for a in arts:
        if a.name in seen:
            seen[a.name] += 1
            a.name = f"{a.name}#{seen[a.name]}"
        else:
            seen[a.name] = 1


def load_ctx_samples(ctx: BenchContext):
    """The ``--data`` samples (loaded once per bench)."""
    if ctx.samples is None:
        from .data import load_samples

        limit = ctx.cfg.data_limit or ctx.cfg.profile_obj().accuracy_limit
        ctx.samples = load_samples(ctx.cfg.data, ctx.task, ctx.labels, limit)
        if ctx.cfg.data_limit is None and limit is not None and len(ctx.samples) >= limit:
            ctx.samples.limited_by = f"profile {ctx.cfg.profile}: first {limit} samples"
        if len(ctx.samples) == 0:
            raise DataError(f"--data {ctx.cfg.data!r} has no samples")
    return ctx.samples


# ------------------------------------------------------------------------------------- accuracy run
def accuracy_run(a: Artifact, samples, batch: int, keep_idx: np.ndarray) -> dict:
    """Every sample once, in order, batched through the same pre/infer/post code as the timed run; the task's
    metric with its interval. The outputs of ``keep_idx`` are kept for the compliance check."""
    pre = a.pre()
    acc = a.device.accumulator(len(a.labels))
    n = len(samples)
    keep = {int(i): None for i in keep_idx}
    t0 = time.perf_counter()
    with progress() as prog:
        bar = prog.add_task(f"accuracy {a.name}", total=n, status="")
        for s in range(0, n, batch):
            idx = range(s, min(s + batch, n))
            out = a.infer(pre([samples.raw(i) for i in idx]))
            acc.update(out, samples.targets[s:s + len(idx)])
            for j, i in enumerate(idx):
                if i in keep:
                    keep[i] = {k: v[j].copy() for k, v in out.items()}
            prog.update(bar, advance=len(idx))
    return {**acc.result(), "seconds": round(time.perf_counter() - t0, 2), "_outputs": keep}
