"""ONNX Runtime backend: FP32 ONNX as is, INT8 by static Q/DQ quantization, and a CPU/CUDA Runner.

INT8 flavours (recorded in the manifest), chosen by the bundle's target (:mod:`edgeft.targets`):

- ``u8s8`` (CPU targets): uint8 asymmetric activations, int8 symmetric per-channel weights; with 7-bit
  weights (``reduce_range``) for ``x86-avx2``, where full-range u8 x s8 products saturate in the AVX2 kernels
  and accuracy collapses (measured: DS-CNN top-1 agreement 0.06 -> 0.78).
- ``s8s8_sym`` (target ``tensorrt``): int8 symmetric activations and weights, zero points 0 (TensorRT
  explicit quantization); much slower in ORT on AVX2 CPUs, so never the CPU default.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from .base import Runner as _Runner


def unavailable_reason() -> str | None:
    try:
        import onnxruntime  # noqa: F401
    except ImportError as e:
        return f"{e}"
    return None


def version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def convert_extra(onnx_path: Path, out_dir: Path, stem: str, precision: str) -> str:
    """Ship an auxiliary FP32 graph (e.g. a streaming model) as is."""
    shutil.copyfile(onnx_path, out_dir / f"{stem}.onnx")
    return f"{stem}.onnx"


def build(onnx_path: Path, out_dir: Path, precision: str, calib: list[np.ndarray] | None, options: dict) -> dict:
    """Write ``out_dir/model.onnx`` for ONNX Runtime; returns manifest details."""
    out = out_dir / "model.onnx"
    if options.get("from_qat") and options.get("format", "onnxruntime") == "onnxruntime":
        # the QAT Q/DQ graph as it is, with its weight quantizers folded into int8 constants (same outputs);
        # format onnx keeps the graph untouched (the portable Q->DQ weight pattern TensorRT parses)
        from ..qdq import fold_weight_quantizers

        fold = fold_weight_quantizers(onnx_path, out)
        q = dict(options.get("qat_quantization") or {})
        q["weights_stored"] = f"int8 constants ({fold['folded']} weight QuantizeLinear folded)" if fold["folded"] \
            else "fp32 behind QuantizeLinear"
        return {"model_files": {"model": "model.onnx"}, "quantization": q}
    if precision == "fp32" or options.get("from_qat"):
        shutil.copyfile(onnx_path, out)
        return {"model_files": {"model": "model.onnx"},
                "quantization": options.get("qat_quantization") if options.get("from_qat") else None}
    if precision != "int8":  # pragma: no cover - excluded by the support table
        raise ValueError(precision)
    return quantize_static_qdq(onnx_path, out, calib, options) | {"model_files": {"model": "model.onnx"}}


def quantize_static_qdq(onnx_path: Path, out: Path, calib: list[np.ndarray], options: dict) -> dict:
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    target = options["target"]
    sym = target.qdq_flavour == "s8s8_sym"
    reduce_range = (not sym) and not target.int8_full_range
    input_name = options.get("input_name", "input")
    pre = out.with_name("pre.onnx")
    try:
        from ..utils.log import captured

        with captured("quant_pre_process"):
            quant_pre_process(str(onnx_path), str(pre), skip_symbolic_shape=True)
        src = pre
    except Exception:  # noqa: BLE001 - pre-processing is an optimisation; quantize the raw graph instead
        src = onnx_path

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(calib)

        def get_next(self):
            b = next(self._it, None)
            return None if b is None else {input_name: b}

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[options.get("calibration", "minmax")]
    from ..utils.log import captured

    with captured("onnxruntime.quantization"):
        quantize_static(str(src), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8 if sym else QuantType.QUInt8, weight_type=QuantType.QInt8,
                        reduce_range=reduce_range, calibrate_method=method,
                        extra_options={"ActivationSymmetric": sym, "WeightSymmetric": True})
    if pre.exists():
        pre.unlink()
    for extra in out.parent.glob("*.onnx-*"):  # ORT may leave calibration side files
        extra.unlink()
    return {"quantization": {
        "method": "ptq", "tool": f"onnxruntime {version()} quantize_static", "format": "QDQ",
        "qdq_flavour": "s8s8_sym" if sym else "u8s8", "target": target.name,
        "activations": "int8 symmetric per-tensor" if sym else "uint8 asymmetric per-tensor",
        "weights": "int8 symmetric per-channel" + (f" (7-bit range: target {target.name})" if reduce_range else ""),
        "reduce_range": reduce_range, "calibration_method": options.get("calibration", "minmax")}}


class Runner(_Runner):
    """ONNX Runtime session with an explicit thread count (read back into ``info``).

    ``exact_qdq=True`` disables graph optimizations so Q/DQ pairs run as float maths: a faithful
    simulation of integer arithmetic without the saturation of AVX2 int8 kernels (slow; for checks)."""

    def __init__(self, *a, exact_qdq: bool = False, **k):
        super().__init__(*a, **k)
        self.exact_qdq = exact_qdq

    def _load(self) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        if self.threads:
            so.intra_op_num_threads = int(self.threads)
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_DISABLE_ALL if self.exact_qdq
                                       else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
        so.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        if self.device and self.device.startswith("cuda"):
            providers.insert(0, "CUDAExecutionProvider")
        path = Path(self.bundle_dir) / self.manifest["model_files"]["model"]
        self.sess = ort.InferenceSession(str(path), so, providers=providers)
        self.input_name = self.sess.get_inputs()[0].name
        self.output_name = self.sess.get_outputs()[0].name
        used = self.sess.get_providers()
        self.info = {"backend": "onnxruntime", "version": ort.__version__, "providers": used,
                     "intra_op_threads": self.threads or "default (physical cores)",
                     "graph_optimization": "ORT_DISABLE_ALL (exact Q/DQ)" if self.exact_qdq else "ORT_ENABLE_ALL",
                     "runs": ("int8 simulated in f32 (Q/DQ as float maths)" if self.exact_qdq else
                              "int8 + f32" if self.manifest.get("precision") == "int8" else "f32")}
        if self.device and self.device.startswith("cuda") and used[0] != "CUDAExecutionProvider":
            self.info["fallback"] = f"asked for {self.device} but ONNX Runtime runs on {used[0]}"

    def _infer(self, x: np.ndarray) -> np.ndarray:
        return self.sess.run([self.output_name], {self.input_name: x})[0]

    def io(self):
        dims = lambda a: [d if isinstance(d, int) and d > 0 else None for d in a.shape]  # noqa: E731
        return ([(a.name, dims(a)) for a in self.sess.get_inputs()], [(a.name, dims(a)) for a in self.sess.get_outputs()])

    def infer_outputs(self, feeds: dict) -> list:
        """All outputs for named inputs (streaming models with state)."""
        return self.sess.run(None, feeds)

    def close(self) -> None:
        self.sess = None
