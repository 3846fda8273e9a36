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
    BF16 = "bf16"
    INT8 = "int8"


PRECISIONS = tuple(p.value for p in Precision)


FORMATS = ("onnx", "onnxruntime", "openvino", "tensorrt")

# (format, precision) -> None when supported, else why not and what to use instead.
SUPPORT: dict[tuple[str, str], str | None] = {
    ("onnx", "fp32"): None,
    ("onnx", "fp16"): "a plain ONNX bundle is the portable FP32 (or QAT Q/DQ) graph; for FP16 use "
                      "--format openvino --fp16 or --format tensorrt --fp16",
    ("onnx", "bf16"): "ONNX Runtime's CPU kernels have no bf16; for BF16 use --format openvino --bf16",
    ("onnx", "int8"): None,  # only from a QAT run (the Q/DQ graph is the model); PTQ needs a runtime: see below
    ("onnxruntime", "fp32"): None,
    ("onnxruntime", "fp16"): "ONNX Runtime's CPU execution provider has no fast FP16 kernels; use "
                             "--format openvino --fp16 or --format tensorrt --fp16",
    ("onnxruntime", "bf16"): "ONNX Runtime's CPU kernels have no bf16; use --format openvino --bf16",
    ("onnxruntime", "int8"): None,
    ("openvino", "fp32"): None,
    ("openvino", "fp16"): None,
    ("openvino", "bf16"): None,  # on targets with AVX512_BF16 or AMX (edgeft.targets)
    ("openvino", "int8"): None,
    ("tensorrt", "fp32"): None,
    ("tensorrt", "fp16"): None,
    ("tensorrt", "bf16"): "edgeft builds TensorRT engines in fp32, fp16 or int8; use --fp16",
    ("tensorrt", "int8"): None,
}


def support_table(target=None, installed=None) -> str:
    """The format x precision table; with a CPU target, each supported cell says whether it is native here,
    and with ``installed`` (backend names), formats whose backend is missing show '–'."""
    rows = ["format       " + "".join(f"{p:8s}" for p in PRECISIONS)]
    from . import RUNTIME_MODULE as runtime
    for f in FORMATS:
        cells = []
        for p in PRECISIONS:
            if SUPPORT[(f, p)] is not None:
                cells.append("no")
            elif installed is not None and runtime[f] not in installed:
                cells.append("–")
            elif target is not None and f != "tensorrt":
                cells.append(_native(target, f, p))
            else:
                cells.append("yes")
        rows.append(f"{f:12s} " + "".join(f"{c:8s}" for c in cells))
    return "\n".join(rows)


def _native(target, fmt: str, precision: str) -> str:
    """'fast' (native on this CPU class), 'slow' (runs, little gain) or 'no' (refused on this CPU)."""
    if precision not in target.precisions:
        return "no"
    if precision == "fp16":
        return "fast" if target.compute_precision("fp16") == "f16" else "f32"  # x86: FP16 weights, f32 compute
    if precision == "int8" and not target.int8_full_range:
        return "7bit"   # works (7-bit weights), small gain without VNNI
    if precision in ("bf16", "int8"):
        return "fast"
    return "yes"


def check_supported(fmt: str, precision: str, *, from_qat: bool = False, qat_flavour: str | None = None) -> None:
    """Raise UnsupportedError (before any work) for combinations the table rules out."""
    if fmt not in FORMATS:
        raise UnsupportedError(f"unknown format {fmt!r}.{did_you_mean(fmt, FORMATS)} Valid: {', '.join(FORMATS)}")
    if precision not in PRECISIONS:
        raise UnsupportedError(f"unknown precision {precision!r}. Valid: {', '.join(PRECISIONS)}")
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
    if from_qat and precision in ("fp16", "bf16"):
        raise UnsupportedError(f"a QAT run exports an INT8 Q/DQ graph; {precision.upper()} of it makes no sense",
                               hint="export the QAT run with --int8 (or export its FP32 parent with --fp16)")


def _fmt(shape) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


class Runner:
    """Context manager over a loaded model: ``with Runner(...) as r: y = r.infer(x)``.

    Subclasses implement ``_load()`` and ``_infer(x)``; the base records load time and the first call. Before
    loading, the bundle's target is checked against this CPU (:func:`edgeft.targets.check_bundle`): a mismatch
    that changes results is refused, one that costs speed lands in ``warnings``. ``check_target=False`` is for
    callers that chose a faithful way to run it themselves (the export's parity check)."""

    input_name = "input"

    def __init__(self, bundle_dir, manifest: dict, threads: int | None = None, device: str | None = None,
                 check_target: bool = True):
        self.bundle_dir = bundle_dir
        self.manifest = manifest
        self.threads = threads
        self.device = device
        self.check_target = check_target
        self.load_ms: float | None = None
        self.first_inference_ms: float | None = None
        self.info: dict[str, Any] = {}
        self.warnings: list[str] = []

    def __enter__(self):
        from ..errors import BundleError, EdgeftError

        if self.check_target and not (self.device or "").startswith("cuda"):
            from ..targets import check_bundle

            self.warnings = check_bundle(self.manifest, str(self.bundle_dir))
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
        try:
            self._check_io()
        except BaseException:
            self.close()
            raise
        return self

    def _check_io(self) -> None:
        """The model file must be the model the manifest describes: input dims and one output per label."""
        from ..errors import BundleError

        io = self.io()
        if io is None:
            return
        ins, outs = io
        m = self.manifest
        where = f"bundle {str(self.bundle_dir)!r}"
        if not outs:
            raise BundleError(f"{where}: the model has no outputs", hint="re-export the bundle")
        n = len(m.get("labels") or [])
        last = outs[0][1][-1] if outs[0][1] else None
        if "labels" in m and isinstance(last, int) and last != n:
            raise BundleError(f"{where}: the model's output {outs[0][0]!r} has {last} values per sample, but the "
                              f"manifest has {n} labels (model and labels disagree)",
                              hint="the model file or the labels were replaced; re-export the bundle")
        want = (m.get("inputs") or [None])[0]
        if want and ins:
            w = [d if isinstance(d, int) else None for d in want["shape"]]
            g = ins[0][1]
            if len(g) != len(w) or any(a is not None and b is not None and a != b for a, b in zip(g[1:], w[1:])):
                raise BundleError(f"{where}: the model's input {ins[0][0]!r} has shape {_fmt(g)}, the manifest says "
                                  f"{_fmt(w)}", hint="the model file was replaced; re-export the bundle")

    def io(self):
        """([(name, [dim or None, ...])], [...]) of the loaded model's inputs and outputs; None if unknown."""
        return None

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
