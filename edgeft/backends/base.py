"""What each format supports, in one table, and the Runner contract shared by all backends (torch-free)."""
from __future__ import annotations

import time
from enum import Enum
from typing import Any

import numpy as np

from ..errors import UnsupportedError, did_you_mean


class Precision(str, Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"


FORMATS = ("onnx", "onnxruntime", "openvino", "tensorrt")

# (format, precision) -> None when supported, else why not and what to use instead.
SUPPORT: dict[tuple[str, str], str | None] = {
    ("onnx", "fp32"): None,
    ("onnx", "fp16"): "a plain ONNX bundle is the portable FP32 (or QAT Q/DQ) graph; for FP16 use "
                      "--format openvino --fp16 or --format tensorrt --fp16",
    ("onnx", "int8"): None,  # only from a QAT run (the Q/DQ graph is the model); PTQ needs a runtime: see below
    ("onnxruntime", "fp32"): None,
    ("onnxruntime", "fp16"): "ONNX Runtime's CPU execution provider has no fast FP16 kernels; use "
                             "--format openvino --fp16 or --format tensorrt --fp16",
    ("onnxruntime", "int8"): None,
    ("openvino", "fp32"): None,
    ("openvino", "fp16"): None,
    ("openvino", "int8"): None,
    ("tensorrt", "fp32"): None,
    ("tensorrt", "fp16"): None,
    ("tensorrt", "int8"): None,
}


def support_table() -> str:
    rows = ["format       fp32  fp16  int8"]
    for f in FORMATS:
        cells = ["yes " if SUPPORT[(f, p)] is None else "no  " for p in ("fp32", "fp16", "int8")]
        rows.append(f"{f:12s} " + "  ".join(cells))
    return "\n".join(rows)


def check_supported(fmt: str, precision: str, *, from_qat: bool = False, qat_flavour: str | None = None) -> None:
    """Raise UnsupportedError (before any work) for combinations the table rules out."""
    if fmt not in FORMATS:
        raise UnsupportedError(f"unknown format {fmt!r}.{did_you_mean(fmt, FORMATS)} Valid: {', '.join(FORMATS)}")
    if precision not in {p.value for p in Precision}:
        raise UnsupportedError(f"unknown precision {precision!r}. Valid: fp32, fp16, int8")
    why = SUPPORT[(fmt, precision)]
    if why:
        ok = [f"{f}/{p}" for (f, p), w in SUPPORT.items() if w is None and p == precision]
        raise UnsupportedError(f"--format {fmt} does not support {precision}: {why}",
                               hint=f"supported for {precision}: {', '.join(ok)}")
    if fmt == "onnx" and precision == "int8" and not from_qat:
        raise UnsupportedError("--format onnx --int8 needs a QAT run (its Q/DQ graph is the model); post-training "
                               "INT8 is built for a runtime",
                               hint="use --format onnxruntime --int8 or --format openvino --int8, or run `edgeft qat` first")
    if fmt == "tensorrt" and from_qat and qat_flavour not in (None, "tensorrt"):
        raise UnsupportedError(f"this QAT run is the {qat_flavour!r} flavour: its Q/DQ graph has uint8 activations and "
                               f"7-bit weights, which TensorRT's explicit quantization does not accept",
                               hint="run `edgeft qat PARENT --flavour tensorrt` (symmetric int8) and export that run")
    if from_qat and precision == "fp16":
        raise UnsupportedError("a QAT run exports an INT8 Q/DQ graph; FP16 of it makes no sense",
                               hint="export the QAT run with --int8 (or export its FP32 parent with --fp16)")


class Runner:
    """Context manager over a loaded model: ``with Runner(...) as r: y = r.infer(x)``.

    Subclasses implement ``_load()`` and ``_infer(x)``; the base records load time and the first call."""

    input_name = "input"

    def __init__(self, bundle_dir, manifest: dict, threads: int | None = None, device: str | None = None):
        self.bundle_dir = bundle_dir
        self.manifest = manifest
        self.threads = threads
        self.device = device
        self.load_ms: float | None = None
        self.first_inference_ms: float | None = None
        self.info: dict[str, Any] = {}

    def __enter__(self):
        from ..errors import BundleError, EdgeftError

        t = time.perf_counter()
        try:
            self._load()
        except EdgeftError:
            raise
        except Exception as e:  # noqa: BLE001 - a model file the runtime cannot read is a bundle problem
            files = ", ".join((self.manifest.get("model_files") or {}).values())
            raise BundleError(f"cannot load {files} from {self.bundle_dir} with {type(self).__module__.split('.')[-1]}: "
                              f"{type(e).__name__}: {' '.join(str(e).split())[:200]}",
                              hint="the model file is not a valid model for this backend; re-export the bundle") from None
        self.load_ms = (time.perf_counter() - t) * 1e3
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self) -> None:
        pass

    def infer(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.first_inference_ms is None:
            t = time.perf_counter()
            y = self._infer(x)
            self.first_inference_ms = (time.perf_counter() - t) * 1e3
            return y
        return self._infer(x)

    # -- for backends
    def _load(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _infer(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def compute_ms(self) -> float | None:
        """Device compute time of the last call when the backend can tell (TensorRT); else None."""
        return None
