"""The PyTorch FP32 reference row of ``edgeft bench``: a run folder benched with PyTorch eager (training side:
imports torch; the bench imports this module only when a run folder is benched)."""
from __future__ import annotations

import json
import time
from pathlib import Path

from .bench.artifacts import Artifact, rss_bytes
from .errors import UnsupportedError


class TorchArtifact(Artifact):
    kind = "pytorch"

    def __init__(self, path: Path, threads: int | None = None, name: str | None = None):
        from .recipe import load_recipe
        from .rundir import open_run
        from .tasks import get_task

        self.path = Path(path)
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
        self.torch_task = get_task(self.task)
        self.spec = {"preprocess": self.torch_task.preprocess_spec(self.recipe),
                     **self.torch_task.io_spec(self.recipe, self.labels), **self.torch_task.extra_manifest(self.recipe)}
        self.device = self.torch_task.device     # bound to the model once it is loaded (open)
        self.precision, self.fmt = "fp32", "pytorch"
        self.name = name or f"{self.path.name}/pytorch-fp32"
        self.threads = threads
        self.model = None
        self._macs = None
        self._first = None
        self.example = self.torch_task.example_input(self.recipe)
        self.warnings: list[str] = []

    def open(self):
        import torch

        from .models.surgery import count_macs
        from .rundir import load_model

        if self.model is not None:
            return self
        if self.threads:
            torch.set_num_threads(int(self.threads))
        r0 = rss_bytes()
        t = time.perf_counter()
        self.model, _ = load_model(self.rd)
        self.model.eval()
        self.load_ms = (time.perf_counter() - t) * 1e3
        self.rss_delta = rss_bytes() - r0
        self._macs = count_macs(self.model, self.example)
        self.device = self.torch_task.device.bound({**self.spec, **self.torch_task.reference_extra(self.model)}, None)
        return self

    def set_batch(self, batch) -> None:
        pass

    def infer(self, feeds) -> dict:
        import torch

        with torch.inference_mode():
            if self._first is None:
                t = time.perf_counter()
                y = self.torch_task.torch_outputs(self.model, feeds)
                self._first = (time.perf_counter() - t) * 1e3
                return y
            return self.torch_task.torch_outputs(self.model, feeds)

    def first_inference_ms(self):
        return self._first

    def compute_ms(self):
        return None

    def close(self):
        self.model = None

    def runtime_info(self) -> dict:
        import torch

        return {"backend": "pytorch eager", "version": torch.__version__, "intra_op_threads": torch.get_num_threads()}

    def target_info(self) -> dict:
        return {"name": "workstation (PyTorch eager)", "runs": "f32", "requires": [], "warnings": []}

    def compute_precision(self) -> str:
        return "f32"

    def size_bytes(self) -> int:
        return self.rd.weights.stat().st_size

    def sha256(self) -> str:
        from .utils.io import sha256_file

        return sha256_file(self.rd.weights)

    def params(self):
        return json.loads(self.rd.metrics.read_text()).get("params") if self.rd.metrics.is_file() else None

    def macs(self):
        return self._macs

    def stream_model(self, threads):
        """A window-mode keyword model over this run, so the streaming detector can drive PyTorch too."""
        from .runtime.features import LogMel

        self.open()
        art = self

        class _TorchKws:
            labels = self.labels
            lm = LogMel.from_spec(self.spec["preprocess"])
            frames = int(self.spec["preprocess"]["frames"])
            stream_cfg = self.recipe.stream.model_dump() | {"keywords": list(self.recipe.keywords)}
            streaming = None

            class runner:  # noqa: N801 - the attribute name the detector uses
                @staticmethod
                def infer(x):
                    return art.infer({"input": x})

            def open(self_):
                return self_

            def close(self_):
                pass

        return _TorchKws()
