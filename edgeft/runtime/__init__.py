"""The device-side runtime: load a bundle and predict, with numpy + Pillow + ONNX Runtime / OpenVINO only.

``load`` is the one way to open a bundle (``predict``, the bench and serving all use it). Importing this module
never imports torch.

Example::

    from edgeft import runtime
    with runtime.load("runs/r18/bundles/openvino-int8") as model:
        print(model.predict(["shoe.png"], top_k=3))
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path

import numpy as np

from ..backends import backend_for
from ..bundle import STATUS_OK, read_manifest
from ..errors import BundleError, DataError
from ..tasks import device_task
from ..tasks.classify import softmax  # noqa: F401  (re-exported: runtime.softmax)


def load(bundle: str | os.PathLike, *, threads: int | None = None, device: str | None = None, batch: int | None = None,
         allow_failed: bool = False, trust=None) -> "Model":
    """Verify the bundle's checksums and open it on its backend (use as a context manager).

    Opening checks the bundle's target against this CPU (:mod:`edgeft.targets`): a bundle whose results would
    change here (full-range INT8 without VNNI, bf16 without AVX512_BF16/AMX) is refused with what to do; one
    that would only run slower opens with ``model.warnings``. ``trust``: public key files; when given (or set in
    EDGEFT_TRUSTED_KEYS / ~/.config/edgeft/trusted_keys), only bundles signed by one of them open.
    ``batch``: a static batch size where the backend benefits (OpenVINO), else a dynamic batch."""
    keys = None
    if trust:
        from ..bundle import trusted_keys

        keys = trusted_keys(trust)
    m = read_manifest(bundle, trust=keys)
    task = device_task(m["task"])
    try:
        task.check_preprocess(m)
    except ValueError as e:
        raise BundleError(f"bundle {str(bundle)!r}: {e}", hint="the manifest was edited or is from a broken export; "
                                                               "re-export the bundle") from None
    status = m.get("status", STATUS_OK)
    if status != STATUS_OK and not allow_failed:
        raise BundleError(f"bundle {str(bundle)!r} is marked {status!r}: {m.get('status_reason', '')}",
                          hint="re-export it (e.g. with QAT), or pass --allow-failed to use it anyway")
    cls = Model
    if getattr(task, "runtime_model", None):
        mod, _, name = task.runtime_model.partition(":")
        cls = getattr(importlib.import_module(mod), name)
    return cls(Path(bundle), m, threads=threads, device=device, batch=batch)


class Model:
    """A loaded bundle: ``prepare`` (the task's preprocessing), ``infer`` (named outputs), ``predict``."""

    def __init__(self, path: Path, manifest: dict, threads=None, device=None, batch=None):
        self.path, self.manifest = path, manifest
        self.labels: list[str] = list(manifest["labels"])
        self.task_name = manifest.get("task", "image_cls")
        self.task = device_task(self.task_name).bound(manifest, path)
        self.preprocessor = self.task.preprocessor(manifest)
        self.threads, self.device, self.batch = threads, device, batch
        self.backend = backend_for(manifest["format"])
        self.runner = self._runner(batch)
        self._open = False

    def _runner(self, batch):
        kw = {"batch": batch} if self.manifest["format"] == "openvino" else {}
        return self.backend.Runner(self.path, self.manifest, threads=self.threads, device=self.device, **kw)

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def open(self) -> "Model":
        if not self._open:
            self.runner.__enter__()
            self._open = True
            from ..utils.log import warn

            for w in self.runner.warnings:   # a target mismatch that costs speed, not results
                warn(f"{self.path}: {w}")
        return self

    def close(self) -> None:
        if self._open:
            self.runner.__exit__(None, None, None)
            self._open = False

    def reopen(self, batch: int | None) -> None:
        """Recompile for another batch (OpenVINO: a static batch 1 for single-stream timing, dynamic for
        batches); a no-op where the backend does not care."""
        if self.manifest["format"] != "openvino" or batch == self.batch:
            return
        was = self._open
        self.close()
        self.batch = batch
        self.runner = self._runner(batch)
        if was:
            self.open()

    @property
    def warnings(self) -> list[str]:
        return list(self.runner.warnings)

    def read(self, path) -> np.ndarray:
        """A file as a raw sample (image, clip); DataError when unreadable."""
        try:
            return self.task.read(path)
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read {str(path)!r}: {type(e).__name__}: {e}") from None

    def prepare(self, inputs) -> dict[str, np.ndarray]:
        """Raw samples (or file paths) -> the model's feeds."""
        raws = [self.read(x) if isinstance(x, (str, os.PathLike)) else x for x in inputs]
        return self.preprocessor(raws)

    def infer(self, feeds) -> dict[str, np.ndarray]:
        self.open()
        return self.runner.infer(feeds)

    def predict(self, inputs, top_k: int = 5, batch_size: int = 32) -> list:
        """The task's predictions per input (classification: top-k (label, probability) pairs; detection: boxes in
        each input's pixels, label, score)."""
        inputs = list(inputs)
        out = []
        for s in range(0, len(inputs), batch_size):
            raws = [self.read(x) if isinstance(x, (str, os.PathLike)) else x for x in inputs[s:s + batch_size]]
            y = self.infer(self.preprocessor(raws))
            if getattr(self.task, "wants_input_sizes", False):     # boxes go back to each input's own pixels
                out += self.task.predictions(y, self.labels, top_k, sizes=[np.asarray(r).shape[1::-1] for r in raws])
            else:
                out += self.task.predictions(y, self.labels, top_k)
        return out
