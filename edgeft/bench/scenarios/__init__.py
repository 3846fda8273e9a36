"""Bench scenarios: one module each, registered by name (``edgeft bench --scenario NAME``).

A scenario validates its own settings, says which tasks it serves, runs the artifacts and returns one result row
per artifact (or per artifact and mode); :mod:`edgeft.bench.result` turns the rows into the result document.
Adding one is one module plus one line here."""
from __future__ import annotations

import importlib
from functools import lru_cache

from ...errors import UnsupportedError, did_you_mean

SCENARIOS: dict[str, str] = {
    "single_stream": "edgeft.bench.scenarios.single_stream:SingleStream",
    "offline": "edgeft.bench.scenarios.single_stream:Offline",
    "camera": "edgeft.bench.scenarios.camera:Camera",
    "audio_stream": "edgeft.bench.scenarios.audio_stream:AudioStream",
    "throughput": "edgeft.bench.scenarios.throughput:Throughput",
}


def scenario_names() -> list[str]:
    return list(SCENARIOS)


def register_scenario(name: str, path: str) -> None:
    SCENARIOS[name] = path
    get_scenario.cache_clear()


@lru_cache(maxsize=None)
def get_scenario(name: str):
    if name not in SCENARIOS:
        raise UnsupportedError(f"unknown scenario {name!r}.{did_you_mean(name, SCENARIOS)} "
                               f"Valid: {', '.join(SCENARIOS)}")
    mod, _, cls = SCENARIOS[name].partition(":")
    return getattr(importlib.import_module(mod), cls)()


class Scenario:
    """Base: ``tasks`` (None = every task), ``validate(cfg)``, ``run(ctx) -> rows``, the scenario's header."""

    name = ""
    tasks: tuple[str, ...] | None = None
    roofline = False            # rows get achieved GMAC/s vs the peak of their compute precision
    interleaved = True

    def validate(self, cfg) -> None:
        pass

    def check_task(self, task: str) -> None:
        if self.tasks is not None and task not in self.tasks:
            from ...tasks import device_task

            wanted = " or ".join(getattr(device_task(t), "title", t) for t in self.tasks)
            raise UnsupportedError(f"--scenario {self.name} needs {wanted} artifacts (these are {task})",
                                   hint="pick a scenario for this task (see `edgeft bench --help`)")

    def run(self, ctx) -> list[dict]:  # pragma: no cover - abstract
        raise NotImplementedError

    def header(self, ctx) -> dict:
        return {"name": self.name}
