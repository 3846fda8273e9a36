"""This machine's practical peak per compute precision: a large GEMM through the installed runtime, measured once
per (CPU, threads) and cached.

Each artifact's achieved GMAC/s (model MACs / infer p50) is reported against the peak of the precision it
computes in (an INT8 model against the INT8 GEMM, BF16 against BF16): how much of the machine a model
actually uses (small or depthwise-heavy models use little).

- ``f32``: OpenVINO MatMul with ``INFERENCE_PRECISION_HINT=f32`` (ONNX Runtime, then numpy, as fallbacks).
- ``bf16``: the same with the hint ``bf16``, only where the plugin really compiles it in bf16 (read back).
- ``int8``: FakeQuantize'd u8 activations x s8 weights, which OpenVINO's low-precision transformations turn
  into an int8 GEMM (VNNI/AMX where the CPU has them); ONNX Runtime's ``MatMulInteger`` as the fallback.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..utils.env import cpu_model
from ..utils.io import atomic_write_json, cache_dir

N = 1024  # 1024^3 = 1.07 GMAC per call
PRECISIONS = ("f32", "bf16", "int8")
_CACHE_VERSION = 2


def _cache_file(threads: int) -> Path:
    safe = "".join(c if c.isalnum() else "_" for c in cpu_model())[:60]
    return cache_dir(f"roofline-v{_CACHE_VERSION}-{safe}-{threads}t.json")


def peak_gmacs(threads: int, use_cache: bool = True, seconds: float = 1.0) -> dict:
    """``{"peaks": {"f32": {"gmacs", "runtime"}, "bf16": {...} | {"unavailable": why}, "int8": {...}}, ...}``;
    ``gmacs`` at the top level is the f32 peak (what result files before per-precision peaks carried)."""
    cf = _cache_file(threads)
    if use_cache and cf.is_file():
        try:
            return json.loads(cf.read_text())
        except (OSError, json.JSONDecodeError):
            pass
    peaks: dict[str, dict] = {}
    for prec, fns in (("f32", (_openvino_f32, _onnxruntime_f32, _numpy_f32)), ("bf16", (_openvino_bf16,)),
                      ("int8", (_openvino_int8, _onnxruntime_int8))):
        errors = []
        for fn in fns:
            try:
                peaks[prec] = fn(threads, seconds)
                break
            except Exception as e:  # noqa: BLE001 - try the next runtime, say why if none works
                errors.append(' '.join(str(e).split())[:160])
        else:
            peaks[prec] = {"unavailable": "; ".join(errors)}
    res = {"peaks": peaks, "gmacs": peaks["f32"].get("gmacs"), "runtime": peaks["f32"].get("runtime"),
           "threads": threads, "gemm": f"{N}x{N}x{N}", "measured": time.strftime("%Y-%m-%d")}
    if peaks["f32"].get("gmacs") and peaks["int8"].get("gmacs"):   # a runtime missing today may be installed later
        try:
            atomic_write_json(cf, res)
        except OSError:
            pass
    return res


def peak_for(roof: dict, compute: str) -> float | None:
    """The peak GMAC/s for a compute precision (f32, bf16, f16, int8) from ``peak_gmacs``; None if unmeasured."""
    peaks = roof.get("peaks")
    if peaks is None:   # results written before per-precision peaks: an f32 GEMM only
        return roof.get("gmacs") if compute == "f32" else None
    return (peaks.get(compute) or {}).get("gmacs")


def _time(call, seconds: float) -> float:
    call()
    best = float("inf")
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - t)
    return best


def _gmacs(t: float) -> float:
    return round(N ** 3 / t / 1e9, 1)


def _ov_run(model, threads: int, seconds: float, hint: str) -> dict:
    import openvino as ov

    cm = ov.Core().compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                                                "INFERENCE_PRECISION_HINT": hint})
    got = str(cm.get_property("INFERENCE_PRECISION_HINT")).lower()
    if hint == "bf16" and "bf16" not in got and "bfloat16" not in got:
        raise RuntimeError("no native bf16 on this CPU (OpenVINO compiles the bf16 hint as f32)")
    req = cm.create_infer_request()
    x = np.abs(np.random.default_rng(1).standard_normal((N, N))).astype(np.float32)
    t = _time(lambda: req.infer({0: x}), seconds)
    return {"gmacs": _gmacs(t), "runtime": f"openvino {ov.get_version()}"}


def _ov_gemm(quantized: bool):
    import openvino as ov
    import openvino.opset13 as ops

    p = ops.parameter([N, N], np.float32, name="a")
    w = np.random.default_rng(0).standard_normal((N, N)).astype(np.float32)
    a, b = p, ops.constant(w)
    if quantized:  # NNCF's pattern: u8 activations, symmetric s8 weights -> an int8 MatMul after LPT
        c = lambda v: ops.constant(np.float32(v))  # noqa: E731
        wm = float(np.abs(w).max())
        a = ops.fake_quantize(p, c(0), c(4), c(0), c(4), 256)
        b = ops.fake_quantize(b, c(-wm), c(wm), c(-wm), c(wm), 255)
    return ov.Model([ops.matmul(a, b, False, False)], [p], "gemm")


def _openvino_f32(threads: int, seconds: float) -> dict:
    return _ov_run(_ov_gemm(False), threads, seconds, "f32")


def _openvino_bf16(threads: int, seconds: float) -> dict:
    return _ov_run(_ov_gemm(False), threads, seconds, "bf16")


def _openvino_int8(threads: int, seconds: float) -> dict:
    return _ov_run(_ov_gemm(True), threads, seconds, "f32")


def _ort_session(nodes, inputs, inits, threads: int):
    import onnxruntime as ort
    from onnx import helper

    g = helper.make_graph(nodes, "gemm", inputs, [helper.make_tensor_value_info("y", 0, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"]), ort.__version__


def _onnxruntime_f32(threads: int, seconds: float) -> dict:
    from onnx import TensorProto, helper, numpy_helper

    b = numpy_helper.from_array(np.random.default_rng(0).standard_normal((N, N)).astype(np.float32), "b")
    s, v = _ort_session([helper.make_node("MatMul", ["a", "b"], ["y"])],
                        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [N, N])], [b], threads)
    x = np.random.default_rng(1).standard_normal((N, N)).astype(np.float32)
    return {"gmacs": _gmacs(_time(lambda: s.run(None, {"a": x}), seconds)), "runtime": f"onnxruntime {v}"}


def _onnxruntime_int8(threads: int, seconds: float) -> dict:
    from onnx import TensorProto, helper, numpy_helper

    b = numpy_helper.from_array(np.random.default_rng(0).integers(-63, 64, (N, N), dtype=np.int8), "b")
    s, v = _ort_session([helper.make_node("MatMulInteger", ["a", "b"], ["y"])],
                        [helper.make_tensor_value_info("a", TensorProto.UINT8, [N, N])], [b], threads)
    x = np.random.default_rng(1).integers(0, 256, (N, N), dtype=np.uint8)
    return {"gmacs": _gmacs(_time(lambda: s.run(None, {"a": x}), seconds)), "runtime": f"onnxruntime {v} MatMulInteger"}


def _numpy_f32(threads: int, seconds: float) -> dict:
    a = np.random.default_rng(0).standard_normal((N, N)).astype(np.float32)
    b = np.random.default_rng(1).standard_normal((N, N)).astype(np.float32)
    return {"gmacs": _gmacs(_time(lambda: a @ b, seconds)), "runtime": f"numpy {np.__version__} BLAS"}
