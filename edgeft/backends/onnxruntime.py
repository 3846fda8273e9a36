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

from .base import Backend, BuildConfig, Precision, StateSession
from .base import Runner as _Runner


def quantize_static_qdq(onnx_path: Path, out: Path, calib: list[dict[str, np.ndarray]], target,
                        calibration: str = "minmax", exclude: list[str] | None = None) -> dict:
    """ORT ``quantize_static`` to a Q/DQ graph in the flavour of ``target`` (u8s8, 7-bit weights without VNNI;
    s8s8 symmetric for TensorRT); ``calib`` is a list of feed dicts. ``exclude``: node names kept in float (mixed
    precision: ``edgeft optimize`` picks them by layer sensitivity)."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    sym = target.qdq_flavour == "s8s8_sym"
    reduce_range = (not sym) and not target.int8_full_range
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
            return next(self._it, None)

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[calibration]
    from ..utils.log import captured

    with captured("onnxruntime.quantization"):
        quantize_static(str(src), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8 if sym else QuantType.QUInt8, weight_type=QuantType.QInt8,
                        reduce_range=reduce_range, calibrate_method=method, nodes_to_exclude=list(exclude or []),
                        extra_options={"ActivationSymmetric": sym, "WeightSymmetric": True})
    if exclude:   # the float layers compute in float (their input Q/DQ pairs bypassed too)
        from ..optimize.sensitivity import keep_float

        keep_float(out, src, list(exclude))
    if pre.exists():
        pre.unlink()
    for extra in out.parent.glob("*.onnx-*"):  # ORT may leave calibration side files
        extra.unlink()
    return {"quantization": {
        "method": "ptq", "tool": f"onnxruntime {_ort_version()} quantize_static", "format": "QDQ",
        "qdq_flavour": "s8s8_sym" if sym else "u8s8", "target": target.name,
        "activations": "int8 symmetric per-tensor" if sym else "uint8 asymmetric per-tensor",
        "weights": "int8 symmetric per-channel" + (f" (7-bit range: target {target.name})" if reduce_range else ""),
        "reduce_range": reduce_range, "calibration_method": calibration,
        **({"float_layers": list(exclude), "mixed_precision": f"{len(exclude)} layer(s) kept in float (layer "
                                                               f"sensitivity)"} if exclude else {})}}


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


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
        used = self.sess.get_providers()
        self.info = {"backend": "onnxruntime", "version": ort.__version__, "providers": used,
                     "intra_op_threads": self.threads or "default (physical cores)",
                     "graph_optimization": "ORT_DISABLE_ALL (exact Q/DQ)" if self.exact_qdq else "ORT_ENABLE_ALL",
                     "runs": ("int8 simulated in f32 (Q/DQ as float maths)" if self.exact_qdq else
                              "int8 + f32" if self.manifest.get("precision") == "int8" else "f32")}
        if self.device and self.device.startswith("cuda") and used[0] != "CUDAExecutionProvider":
            self.info["fallback"] = f"asked for {self.device} but ONNX Runtime runs on {used[0]}"

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.sess.run(None, feeds)))

    def state_session(self):
        """A stream's state kept in ONNX Runtime's own buffers: two I/O bindings over two sets of state arrays,
        used in turn (the outputs of one call are the inputs of the next), so a call copies only the new input
        and the outputs (RESULTS.md §15 has what that saves)."""
        if self.exact_qdq or any(not isinstance(d, int) for a in (*self.sess.get_inputs(), *self.sess.get_outputs())
                                 for d in a.shape):
            return super().state_session()
        return _PingPongSession(self)

    def io(self):
        dims = lambda a: [d if isinstance(d, int) and d > 0 else None for d in a.shape]  # noqa: E731
        return ([(a.name, dims(a)) for a in self.sess.get_inputs()], [(a.name, dims(a)) for a in self.sess.get_outputs()])

    def close(self) -> None:
        self.sess = None


class _PingPongSession(StateSession):
    def __init__(self, runner: Runner):
        import onnxruntime as ort

        super().__init__(runner)
        sess = runner.sess
        shape = {a.name: tuple(a.shape) for a in (*sess.get_inputs(), *sess.get_outputs())}
        self.x = np.zeros(shape[self.input], np.float32)
        self.ys = [np.zeros(shape[o], np.float32) for o in self.outputs]
        self.bufs = [[np.zeros(shp, np.float32) for *_, shp in self.states] for _ in range(2)]
        value = ort.OrtValue.ortvalue_from_numpy          # shares the array's memory (CPU)
        self.binds = []
        for k in (0, 1):
            b = sess.io_binding()
            b.bind_ortvalue_input(self.input, value(self.x))
            for o, y in zip(self.outputs, self.ys):
                b.bind_ortvalue_output(o, value(y))
            for (n, o, _), a_in, a_out in zip(self.states, self.bufs[k], self.bufs[1 - k]):
                b.bind_ortvalue_input(n, value(a_in))
                b.bind_ortvalue_output(o, value(a_out))
            self.binds.append(b)
        self.sess = sess
        self.turn = 0

    def reset(self) -> None:
        for bufs in getattr(self, "bufs", ()):
            for a in bufs:
                a[...] = 0
        self.turn = 0

    def step(self, x: np.ndarray) -> list[np.ndarray]:
        self.x[...] = x
        self.sess.run_with_iobinding(self.binds[self.turn])
        self.turn ^= 1
        return [y.copy() for y in self.ys]


class OnnxRuntimeBackend(Backend):
    """Formats ``onnx`` (the portable graph: FP32, or a QAT run's Q/DQ graph) and ``onnxruntime``."""

    name = "onnxruntime"
    package = "onnxruntime"
    Runner = Runner
    install = "install with pip install 'edgeft[runtime]'"
    formats = {
        "onnx": {"fp32": None,
                 "fp16": "a plain ONNX bundle is the portable FP32 (or QAT Q/DQ) graph; for FP16 use --format "
                         "openvino --fp16 or --format tensorrt --fp16",
                 "bf16": "ONNX Runtime's CPU kernels have no bf16; for BF16 use --format openvino --bf16",
                 "int8": None},   # only from a QAT run (the Q/DQ graph is the model): check_supported says so
        "onnxruntime": {"fp32": None,
                        "fp16": "ONNX Runtime's CPU execution provider has no fast FP16 kernels; use --format "
                                "openvino --fp16 or --format tensorrt --fp16",
                        "bf16": "ONNX Runtime's CPU kernels have no bf16; use --format openvino --bf16",
                        "int8": None},
    }

    def convert_extra(self, onnx_path: Path, out_dir: Path, stem: str, precision: str) -> str:
        """Ship an auxiliary FP32 graph (e.g. a streaming model) as is."""
        shutil.copyfile(onnx_path, out_dir / f"{stem}.onnx")
        return f"{stem}.onnx"

    def build(self, onnx_path: Path, out_dir: Path, cfg: BuildConfig) -> dict:
        """Write ``out_dir/model.onnx`` for ONNX Runtime; returns manifest details."""
        out = out_dir / "model.onnx"
        if cfg.from_qat and cfg.format in ("onnxruntime", "onnx"):
            # the QAT Q/DQ graph as it is, with its weight quantizers folded into int8 constants (same outputs);
            # (int8 weight -> DequantizeLinear is the pre-quantized weight pattern TensorRT parses too)
            from ..qdq import fold_weight_quantizers

            fold = fold_weight_quantizers(onnx_path, out)
            q = dict(cfg.qat_quantization or {})
            q["weights_stored"] = f"int8 constants ({fold['folded']} weight QuantizeLinear folded)" \
                if fold["folded"] else "fp32 behind QuantizeLinear"
            return {"model_files": {"model": "model.onnx"}, "quantization": q}
        if cfg.precision == Precision.FP32 or cfg.from_qat:
            shutil.copyfile(onnx_path, out)
            return {"model_files": {"model": "model.onnx"}, "quantization": cfg.qat_quantization if cfg.from_qat else None}
        if cfg.precision != Precision.INT8:  # pragma: no cover - excluded by the support table
            raise ValueError(cfg.precision)
        return quantize_static_qdq(onnx_path, out, cfg.calib, cfg.target, cfg.options.get("calibration", "minmax"),
                                   exclude=cfg.options.get("exclude")) \
            | {"model_files": {"model": "model.onnx"}}
