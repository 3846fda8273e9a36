"""What ``edgeft bench`` can time: a bundle (device runtime) or a run directory (the PyTorch FP32 reference).

Both expose the same pipeline: ``pre(raw) -> x``, ``infer(x) -> logits``, ``post(logits) -> (top-k, probs)``.
Only a run-directory artifact imports torch, and only when it is benched.
"""
from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path

import numpy as np

from ..bundle import MANIFEST, read_manifest
from ..errors import BundleError, RunError, UnsupportedError


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Artifact:
    kind = "bundle"

    def __init__(self, path: Path, name: str | None = None):
        self.path = Path(path)
        self.name = name or self.path.name
        self.manifest: dict = {}
        self.load_ms = None
        self.rss_delta = None

    # filled by subclasses
    labels: list[str]
    task: str
    preprocess: dict
    precision: str
    fmt: str

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "path": str(self.path), "format": self.fmt,
                "precision": self.precision, "bytes": self.size_bytes(), "sha256": self.sha256(),
                "params": self.params(), "macs": self.macs()}


class BundleArtifact(Artifact):
    kind = "bundle"

    def __init__(self, path: Path, threads: int | None = None, batch: int | None = 1, allow_failed: bool = False,
                 device: str | None = None, name: str | None = None):
        super().__init__(path, name)
        self.manifest = read_manifest(path)
        from ..runtime import check_preprocess

        check_preprocess(self.manifest, str(path))
        if self.manifest.get("status", "ok") != "ok" and not allow_failed:
            raise BundleError(f"bundle {str(path)!r} is marked {self.manifest['status']!r}",
                              hint="pass --allow-failed to bench it anyway")
        self.labels = list(self.manifest["labels"])
        self.task = self.manifest["task"]
        self.preprocess = self.manifest["preprocess"]
        self.precision = self.manifest["precision"]
        self.fmt = self.manifest["format"]
        if self.name == path.name and path.parent.name == "bundles":
            self.name = f"{path.parent.parent.name}/{path.name}"
        self.threads, self.batch, self.device = threads, batch, device
        self.runner = None

    def open(self):
        from ..backends import backend_module

        r0 = rss_bytes()
        mod = backend_module(self.fmt)
        kw = {"batch": self.batch} if self.fmt == "openvino" else {}
        self.runner = mod.Runner(self.path, self.manifest, threads=self.threads, device=self.device, **kw)
        self.runner.__enter__()
        self.warnings = list(self.runner.warnings)
        self.load_ms = self.runner.load_ms
        self.rss_delta = rss_bytes() - r0
        return self

    def reopen_dynamic(self):
        """Accuracy runs use batches; OpenVINO's static batch-1 model is recompiled with a dynamic batch."""
        if self.fmt == "openvino" and self.batch is not None:
            self.close()
            self.batch = None
            self.open()

    def reopen_static(self):
        if self.fmt == "openvino" and self.batch is None:
            self.close()
            self.batch = 1
            self.open()

    def infer(self, x: np.ndarray) -> np.ndarray:
        return self.runner.infer(x)

    def first_inference_ms(self):
        return self.runner.first_inference_ms

    def compute_ms(self):
        return self.runner.compute_ms()

    def close(self):
        if self.runner is not None:
            self.runner.__exit__(None, None, None)
            self.runner = None

    def runtime_info(self) -> dict:
        return dict(self.runner.info) if self.runner else {}

    def target_info(self) -> dict:
        """What the bundle was built for, what runs here, and speed-only mismatch warnings (bench table)."""
        t = self.manifest.get("target") or {}
        runs = (self.runner.info.get("runs") if self.runner else None) or self.compute_precision()
        return {"name": t.get("name", "unknown (manifest before targets)"), "runs": runs,
                "requires": t.get("requires", []), "warnings": getattr(self, "warnings", [])}

    def size_bytes(self) -> int:
        return sum(self.manifest["files"][f]["bytes"] for f in self.manifest["model_files"].values())

    def sha256(self) -> str:
        f = next(iter(self.manifest["model_files"].values()))
        return self.manifest["files"][f]["sha256"]

    def params(self):
        return (self.manifest.get("source") or {}).get("params")

    def macs(self):
        return (self.manifest.get("source") or {}).get("macs")

    def reference_top1(self):
        return ((self.manifest.get("parity") or {}).get("accuracy") or {}).get("top1_pytorch_fp32")

    def compute_precision(self) -> str:
        from ..targets import bundle_compute

        return bundle_compute(self.manifest)


class TorchArtifact(Artifact):
    """A run directory benched with PyTorch eager FP32: the honest reference row."""

    kind = "pytorch"

    def __init__(self, path: Path, threads: int | None = None, name: str | None = None):
        super().__init__(path, name)
        from ..rundir import open_run
        from ..recipe import load_recipe

        rd = open_run(path)
        self.rd = rd
        self.recipe = load_recipe(rd.recipe)
        self.labels = rd.read_labels()
        self.task = self.recipe.task
        desc = json.loads(rd.model_json.read_text())
        if desc.get("qat"):
            raise UnsupportedError(f"{str(path)!r} is a QAT run: its PyTorch model is a fake-quant simulation, "
                                   f"not a deployment", hint="bench its exported bundle, and its FP32 parent run as "
                                                              "the reference")
        from ..tasks import get_task

        t = get_task(self.task)
        self.preprocess = t.preprocess_spec(self.recipe)
        self.precision, self.fmt = "fp32", "pytorch"
        self.name = name or f"{self.path.name}/pytorch-fp32"
        self.threads = threads
        self.model = None
        self._macs = None
        self._first = None
        self.example = t.example_input(self.recipe)

    def open(self):
        import torch

        from ..models.surgery import count_macs
        from ..rundir import load_model

        if self.threads:
            torch.set_num_threads(int(self.threads))
        r0 = rss_bytes()
        t = time.perf_counter()
        self.model, _ = load_model(self.rd)
        self.model.eval()
        self.load_ms = (time.perf_counter() - t) * 1e3
        self.rss_delta = rss_bytes() - r0
        self._macs = count_macs(self.model, self.example)
        return self

    def infer(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            if self._first is None:
                t = time.perf_counter()
                y = self.model(torch.from_numpy(x)).numpy()
                self._first = (time.perf_counter() - t) * 1e3
                return y
            return self.model(torch.from_numpy(x)).numpy()

    def first_inference_ms(self):
        return self._first

    def compute_ms(self):
        return None

    def reopen_dynamic(self):
        pass

    def reopen_static(self):
        pass

    def close(self):
        self.model = None

    def runtime_info(self) -> dict:
        import torch

        return {"backend": "pytorch eager", "version": torch.__version__, "intra_op_threads": torch.get_num_threads()}

    def size_bytes(self) -> int:
        return self.rd.weights.stat().st_size

    def sha256(self) -> str:
        from ..utils.io import sha256_file

        return sha256_file(self.rd.weights)

    def params(self):
        return json.loads(self.rd.metrics.read_text()).get("params") if self.rd.metrics.is_file() else None

    def macs(self):
        return self._macs

    def reference_top1(self):
        return None

    def compute_precision(self) -> str:
        return "f32"

    def target_info(self) -> dict:
        return {"name": "workstation (PyTorch eager)", "runs": "f32", "requires": [], "warnings": []}


def open_artifact(path: str | os.PathLike, threads: int | None = None, allow_failed: bool = False,
                  device: str | None = None) -> Artifact:
    p = Path(path)
    if (p / MANIFEST).is_file():
        return BundleArtifact(p, threads=threads, allow_failed=allow_failed, device=device)
    if (p / "model.json").is_file() and (p / "recipe.yaml").is_file():
        return TorchArtifact(p, threads=threads)
    if not p.exists():
        raise RunError(f"artifact {str(p)!r} does not exist", hint="pass bundle folders (edgeft export) or run "
                                                                 "folders (edgeft finetune)")
    raise RunError(f"{str(p)!r} is neither a bundle (no manifest.json) nor a run directory (no model.json)",
                   hint="pass bundle folders (edgeft export) or run folders (edgeft finetune)")
