"""What ``edgeft bench`` can time: a bundle (opened with ``runtime.load``, as a device opens it) or a run folder
(the PyTorch FP32 reference row, :mod:`edgeft.reference`, imported only when a run folder is benched).

Every artifact exposes the same pipeline: ``pre(raws) -> feeds`` (the task's preprocessing), ``infer(feeds) ->
outputs`` (named), and the task's post-processing; torch is never imported here.
"""
from __future__ import annotations

import os
import resource
from pathlib import Path

from ..bundle import MANIFEST
from ..errors import RunError


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Artifact:
    """The contract the scenarios rely on (BundleArtifact here, TorchArtifact in edgeft.reference)."""

    kind = "bundle"
    name: str
    labels: list[str]
    task: str                 # task name
    device: object            # the task's torch-free half (edgeft.tasks.<task>.device)
    spec: dict                # what the task's preprocessing reads: {"preprocess", "inputs", "outputs"}
    precision: str
    fmt: str
    load_ms: float | None = None
    rss_delta: int | None = None

    def pre(self):
        return self.device.preprocessor(self.spec)

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "path": str(self.path), "format": self.fmt,
                "precision": self.precision, "bytes": self.size_bytes(), "sha256": self.sha256(),
                "params": self.params(), "macs": self.macs()}


class BundleArtifact(Artifact):
    kind = "bundle"

    def __init__(self, path: Path, threads: int | None = None, batch: int | None = 1, allow_failed: bool = False,
                 device: str | None = None, name: str | None = None):
        from .. import runtime

        self.path = Path(path)
        self.model = runtime.load(path, threads=threads, device=device, batch=batch, allow_failed=allow_failed)
        self.manifest = m = self.model.manifest
        self.spec = m
        self.labels = list(m["labels"])
        self.task = m["task"]
        self.device = self.model.task
        self.precision = m["precision"]
        self.fmt = m["format"]
        self.name = name or self.path.name
        if name is None and self.path.parent.name == "bundles":
            self.name = f"{self.path.parent.parent.name}/{self.path.name}"
        self.warnings: list[str] = []

    def open(self):
        r0 = rss_bytes()
        self.model.open()
        self.warnings = self.model.warnings
        self.load_ms = self.model.runner.load_ms
        self.rss_delta = rss_bytes() - r0
        return self

    def set_batch(self, batch: int | None) -> None:
        """Static batch 1 for single-stream timing, dynamic for batched runs (recompiles OpenVINO only)."""
        self.model.reopen(batch)
        self.load_ms = self.model.runner.load_ms

    def infer(self, feeds) -> dict:
        return self.model.runner.infer(feeds)

    def first_inference_ms(self):
        return self.model.runner.first_inference_ms

    def compute_ms(self):
        return self.model.runner.compute_ms()

    def close(self):
        self.model.close()

    def runtime_info(self) -> dict:
        return dict(self.model.runner.info)

    def target_info(self) -> dict:
        """What the bundle was built for, what runs here, and speed-only mismatch warnings (bench table)."""
        t = self.manifest.get("target") or {}
        runs = self.model.runner.info.get("runs") or self.compute_precision()
        return {"name": t.get("name", "unknown (manifest before targets)"), "runs": runs,
                "requires": t.get("requires", []), "warnings": self.warnings}

    def compute_precision(self) -> str:
        from ..targets import bundle_compute

        return bundle_compute(self.manifest)

    def size_bytes(self) -> int:
        return sum(self.manifest["files"][f]["bytes"] for f in self.manifest["model_files"].values())

    def sha256(self) -> str:
        f = next(iter(self.manifest["model_files"].values()))
        return self.manifest["files"][f]["sha256"]

    def params(self):
        return (self.manifest.get("source") or {}).get("params")

    def macs(self):
        return (self.manifest.get("source") or {}).get("macs")

    def stream_model(self, threads):
        """The model the streaming scenarios drive (keyword spotting: clip model + streaming detector)."""
        return self.model.open()


def open_artifact(path: str | os.PathLike, threads: int | None = None, allow_failed: bool = False,
                  device: str | None = None) -> Artifact:
    p = Path(path)
    if (p / MANIFEST).is_file():
        return BundleArtifact(p, threads=threads, allow_failed=allow_failed, device=device)
    if (p / "model.json").is_file() and (p / "recipe.yaml").is_file():
        from ..reference import TorchArtifact   # the training side: torch, only for a run folder

        return TorchArtifact(p, threads=threads)
    if not p.exists():
        raise RunError(f"artifact {str(p)!r} does not exist", hint="pass bundle folders (edgeft export) or run "
                                                                 "folders (edgeft finetune)")
    raise RunError(f"{str(p)!r} is neither a bundle (no manifest.json) nor a run directory (no model.json)",
                   hint="pass bundle folders (edgeft export) or run folders (edgeft finetune)")
