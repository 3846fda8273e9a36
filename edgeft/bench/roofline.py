"""The machine's practical FP32 peak: a large GEMM through the installed runtime, measured once and cached.

Each artifact's achieved GMAC/s (model MACs / infer p50) is reported against it: how much of the machine
a model actually uses (small or depthwise-heavy models use little)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..utils.env import cpu_model

N = 1024  # 1024^3 = 1.07 GMAC per call


def _cache_file(threads: int) -> Path:
    safe = "".join(c if c.isalnum() else "_" for c in cpu_model())[:60]
    return Path.home() / ".cache" / "edgeft" / f"roofline-{safe}-{threads}t.json"


def peak_gmacs(threads: int, use_cache: bool = True, seconds: float = 1.5) -> dict:
    cf = _cache_file(threads)
    if use_cache and cf.is_file():
        try:
            return json.loads(cf.read_text())
        except (OSError, json.JSONDecodeError):
            pass
    res = None
    for fn in (_openvino, _onnxruntime, _numpy):
        try:
            res = fn(threads, seconds)
            break
        except Exception:  # noqa: BLE001 - try the next runtime
            continue
    if res is None:
        return {}
    res.update({"threads": threads, "gemm": f"{N}x{N}x{N} fp32", "measured": time.strftime("%Y-%m-%d")})
    try:
        cf.parent.mkdir(parents=True, exist_ok=True)
        cf.write_text(json.dumps(res))
    except OSError:
        pass
    return res


def _time(call, seconds: float) -> float:
    call()
    best = float("inf")
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - t)
    return best


def _openvino(threads: int, seconds: float) -> dict:
    import openvino as ov
    import openvino.opset13 as ops

    a = ops.parameter([N, N], np.float32, name="a")
    b = ops.constant(np.random.default_rng(0).standard_normal((N, N)).astype(np.float32))
    model = ov.Model([ops.matmul(a, b, False, False)], [a], "gemm")
    cm = ov.Core().compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"})
    req = cm.create_infer_request()
    x = np.random.default_rng(1).standard_normal((N, N)).astype(np.float32)
    t = _time(lambda: req.infer({0: x}), seconds)
    return {"gmacs": round(N ** 3 / t / 1e9, 1), "runtime": f"openvino {ov.get_version()}"}


def _onnxruntime(threads: int, seconds: float) -> dict:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    b = numpy_helper.from_array(np.random.default_rng(0).standard_normal((N, N)).astype(np.float32), "b")
    g = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["y"])], "gemm",
                          [helper.make_tensor_value_info("a", TensorProto.FLOAT, [N, N])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [N, N])], [b])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((N, N)).astype(np.float32)
    t = _time(lambda: s.run(None, {"a": x}), seconds)
    del onnx
    return {"gmacs": round(N ** 3 / t / 1e9, 1), "runtime": f"onnxruntime {ort.__version__}"}


def _numpy(threads: int, seconds: float) -> dict:
    a = np.random.default_rng(0).standard_normal((N, N)).astype(np.float32)
    b = np.random.default_rng(1).standard_normal((N, N)).astype(np.float32)
    t = _time(lambda: a @ b, seconds)
    return {"gmacs": round(N ** 3 / t / 1e9, 1), "runtime": f"numpy {np.__version__} BLAS"}
