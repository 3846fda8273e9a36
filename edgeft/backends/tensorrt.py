"""TensorRT backend (NVIDIA GPUs, Jetson). Imported lazily: ``import edgeft`` never needs TensorRT.

Build: ONNX parser -> builder config (workspace limit, timing cache, one optimization profile for the dynamic
batch: min 1 / opt / max), FP16 by flag, INT8 either *explicit* (a Q/DQ graph from ``edgeft qat --flavour
tensorrt`` or ``export --target tensorrt``: no calibrator) or *implicit* PTQ with an entropy calibrator and a
calibration cache (when this TensorRT still has calibrators; otherwise a symmetric Q/DQ graph is made with
ONNX Runtime's quantizer and built explicitly).

Engines are not portable: each is stamped with the GPU name, compute capability and TensorRT version, and a
Runner refuses a mismatched engine with the command that rebuilds it on the device (``edgeft build BUNDLE``),
never silently on first inference. CUDA memory comes from torch when it is installed, else cuda-python; the
clock stops only after a stream synchronize, and GPU compute time is measured with CUDA events (as trtexec's
"GPU Compute Time").
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from ..errors import BackendUnavailable, BundleError, UnsupportedError
from .base import Backend, BuildConfig
from .base import Runner as _Runner

INSTALL = ("install TensorRT on an NVIDIA machine: pip install 'edgeft[tensorrt]' (NVIDIA's index), or use "
           "docker/Dockerfile.gpu (x86 + GPU) or docker/Dockerfile.jetson")
OPT_BATCH, MAX_BATCH = 1, 32
WORKSPACE = 1 << 30


# ------------------------------------------------------------------------------------------- CUDA
class _Cuda:
    """Device buffers, copies, a stream and events: torch when installed, else cuda-python.

    ``alloc(nbytes) -> (buf, ptr)``; ``h2d(buf, host)``; ``d2h(host, buf)``; buffers are opaque."""

    def __init__(self):
        self.torch = None
        try:
            import torch

            if torch.cuda.is_available():
                self.torch = torch
                self.stream = torch.cuda.Stream()
        except ImportError:
            pass
        if self.torch is None:
            from cuda.bindings import runtime as rt  # cuda-python

            self.rt = rt
            self.stream = self._ok(rt.cudaStreamCreate())

    @staticmethod
    def _ok(res):
        err, *vals = res if isinstance(res, tuple) else (res,)
        if int(err) != 0:
            raise RuntimeError(f"CUDA error {err}")
        return vals[0] if len(vals) == 1 else vals

    def alloc(self, nbytes: int):
        if self.torch:
            t = self.torch.empty(nbytes // 4 + 1, dtype=self.torch.float32, device="cuda")
            return t, t.data_ptr()
        ptr = self._ok(self.rt.cudaMalloc(nbytes))
        return ptr, int(ptr)

    def h2d(self, buf, host: np.ndarray) -> None:
        host = np.ascontiguousarray(host, dtype=np.float32)
        if self.torch:
            with self.torch.cuda.stream(self.stream):
                buf[:host.size].copy_(self.torch.from_numpy(host.reshape(-1)), non_blocking=True)
            return
        self._ok(self.rt.cudaMemcpyAsync(int(buf), host.ctypes.data, host.nbytes,
                                         self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream))

    def d2h(self, host: np.ndarray, buf) -> None:
        if self.torch:
            with self.torch.cuda.stream(self.stream):
                host.reshape(-1)[:] = buf[:host.size].cpu().numpy()
            return
        self._ok(self.rt.cudaMemcpyAsync(host.ctypes.data, int(buf), host.nbytes,
                                         self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream))

    @property
    def handle(self) -> int:
        return self.stream.cuda_stream if self.torch else int(self.stream)

    def event(self):
        if self.torch:
            return self.torch.cuda.Event(enable_timing=True)
        return self._ok(self.rt.cudaEventCreate())

    def record(self, ev) -> None:
        if self.torch:
            ev.record(self.stream)
        else:
            self._ok(self.rt.cudaEventRecord(ev, self.stream))

    def elapsed_ms(self, a, b) -> float:
        if self.torch:
            return float(a.elapsed_time(b))
        return float(self._ok(self.rt.cudaEventElapsedTime(a, b)))

    def sync(self) -> None:
        if self.torch:
            self.stream.synchronize()
        else:
            self._ok(self.rt.cudaStreamSynchronize(self.stream))


def gpu_stamp() -> dict:
    """What an engine is tied to: GPU name, compute capability, TensorRT version."""
    import tensorrt as trt

    try:
        import torch

        if not torch.cuda.is_available():
            raise ImportError
        p = torch.cuda.get_device_properties(0)
        name, cc = p.name, f"{p.major}.{p.minor}"
    except ImportError:
        from cuda.bindings import runtime as rt

        err, p = rt.cudaGetDeviceProperties(0)
        if int(err) != 0:
            raise RuntimeError(f"cudaGetDeviceProperties failed ({err})")
        name, cc = p.name.decode().rstrip("\x00"), f"{p.major}.{p.minor}"
    return {"gpu": name, "compute_capability": cc, "tensorrt": trt.__version__}


def check_stamp(stamp: dict, here: dict | None = None) -> None:
    """Refuse an engine built for another GPU / compute capability / TensorRT version."""
    here = here or gpu_stamp()
    diff = [k for k in ("gpu", "compute_capability", "tensorrt") if str(stamp.get(k)) != str(here.get(k))]
    if diff:
        built = ", ".join(f"{k} {stamp.get(k)}" for k in diff)
        now = ", ".join(f"{k} {here.get(k)}" for k in diff)
        raise BundleError(f"TensorRT engine was built for {built}; this device has {now} (engines are not portable)",
                          hint="rebuild it here from the bundle's ONNX: edgeft build BUNDLE")


# ------------------------------------------------------------------------------------------ build
def _logger():
    import tensorrt as trt

    return trt.Logger(trt.Logger.WARNING)


def _timing_cache_path(stamp: dict) -> Path:
    safe = "".join(c if c.isalnum() else "_" for c in f"{stamp['gpu']}-{stamp['tensorrt']}")
    from ..utils.io import cache_dir

    return cache_dir(f"trt-timing-{safe}.cache")


def has_qdq(onnx_path: Path) -> bool:
    import onnx

    return any(n.op_type == "QuantizeLinear" for n in onnx.load(str(onnx_path)).graph.node)


def build(onnx_path: Path, out_dir: Path, precision: str, calib: list[dict[str, np.ndarray]] | None,
          options: dict) -> dict:
    """Build ``out_dir/model.engine`` from the ONNX graph (kept as ``model.onnx`` for rebuilds on devices)."""
    import shutil

    import tensorrt as trt

    if reason := TensorRtBackend().unavailable_reason():
        raise BackendUnavailable(f"backend 'tensorrt' unavailable: {reason}", hint=INSTALL)
    onnx_out = out_dir / "model.onnx"
    if Path(onnx_path) != onnx_out:
        shutil.copyfile(onnx_path, onnx_out)
    stamp = gpu_stamp()
    t0 = time.perf_counter()
    quant = options.get("qat_quantization") if options.get("from_qat") else None
    src = onnx_out
    explicit = has_qdq(src)
    if precision == "int8" and not explicit and not hasattr(trt, "IInt8EntropyCalibrator2"):
        # this TensorRT has no calibrators: make a symmetric Q/DQ graph and build it explicitly
        from .onnxruntime import quantize_static_qdq

        qdq = out_dir / "model_qdq.onnx"
        from ..targets import TARGETS

        quant = quantize_static_qdq(onnx_out, qdq, calib, TARGETS["tensorrt"])["quantization"]
        src, explicit = qdq, True
    logger = _logger()
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt, "NetworkDefinitionCreationFlag") and hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(src).read_bytes()):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BundleError(f"TensorRT cannot parse {Path(src).name}: {errs[:300]}",
                          hint="check the ONNX opset/ops against this TensorRT version")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.get("workspace", WORKSPACE)))
    cache_p = _timing_cache_path(stamp)
    cache = config.create_timing_cache(cache_p.read_bytes() if cache_p.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        inp = network.get_input(i)
        dims = [int(d) for d in inp.shape][1:]
        profile.set_shape(inp.name, [1, *dims], [options.get("opt_batch", OPT_BATCH), *dims],
                          [options.get("max_batch", MAX_BATCH), *dims])
    config.add_optimization_profile(profile)
    if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # Ampere+ would otherwise run "fp32" convs/GEMMs in TF32
    if precision == "fp16":
        if not builder.platform_has_fast_fp16:
            raise UnsupportedError(f"{stamp['gpu']} has no fast FP16", hint="export --format tensorrt without --fp16")
        config.set_flag(trt.BuilderFlag.FP16)
    calib_cache = None
    if precision == "int8":
        if hasattr(trt, "BuilderFlag") and hasattr(trt.BuilderFlag, "INT8"):
            config.set_flag(trt.BuilderFlag.INT8)
        if not explicit:
            calib_cache = out_dir / "calibration.cache"
            config.int8_calibrator = _calibrator(trt, calib, calib_cache)
            quant = {"method": "ptq", "tool": f"TensorRT {trt.__version__} IInt8EntropyCalibrator2 (implicit)",
                     "calibration_cache": calib_cache.name, "qdq_flavour": None}
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BundleError("TensorRT engine build failed (see the TensorRT log above)")
    (out_dir / "model.engine").write_bytes(bytes(serialized))
    cache_p.parent.mkdir(parents=True, exist_ok=True)
    cache_p.write_bytes(bytes(config.get_timing_cache().serialize()))
    engine = {**stamp, "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "build_seconds": round(time.perf_counter() - t0, 1),
              "precision": precision, "tf32": False if precision == "fp32" else None, "int8_mode": ("explicit Q/DQ" if explicit else "implicit calibration")
              if precision == "int8" else None, "profile": {"min": 1, "opt": options.get("opt_batch", OPT_BATCH),
                                                            "max": options.get("max_batch", MAX_BATCH)},
              "workspace_bytes": int(options.get("workspace", WORKSPACE)), "timing_cache": str(cache_p)}
    (out_dir / "engine.json").write_text(json.dumps(engine, indent=1))
    files = {"model": "model.engine", "onnx": "model.onnx"}
    return {"model_files": files, "quantization": quant, "engine": engine}


def _calibrator(trt, calib, cache: Path):
    cuda = _Cuda()

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            super().__init__()
            self.batches = list(calib or [])     # feed dicts
            self.i = 0
            names = list(self.batches[0]) if self.batches else []
            self.bufs = {n: cuda.alloc(max(b[n].nbytes for b in self.batches)) for n in names}

        def get_batch_size(self):
            return int(next(iter(self.batches[0].values())).shape[0]) if self.batches else 1

        def get_batch(self, names):
            if self.i >= len(self.batches):
                return None
            for n in names:
                cuda.h2d(self.bufs[n][0], self.batches[self.i][n])
            cuda.sync()
            self.i += 1
            return [self.bufs[n][1] for n in names]

        def read_calibration_cache(self):
            return cache.read_bytes() if cache.is_file() else None

        def write_calibration_cache(self, data):
            cache.write_bytes(bytes(data))

    return EntropyCalibrator()


def rebuild(bundle_dir: Path, manifest: dict) -> dict:
    """Rebuild a bundle's engine on this device from its ONNX (``edgeft build``); returns the new details."""
    p = Path(bundle_dir)
    onnx = manifest["model_files"].get("onnx")
    if not onnx or not (p / onnx).is_file():
        raise BundleError(f"{p} has no ONNX graph to build from", hint="re-export with --format tensorrt")
    src = p / ("model_qdq.onnx" if (p / "model_qdq.onnx").is_file() else onnx)
    return build(src, p, manifest["precision"], None, {"from_qat": bool((manifest.get("quantization") or {})
                                                                        .get("method") == "qat")})


class Runner(_Runner):
    """A deserialized engine with device buffers for every I/O tensor at the max batch; GPU compute time via CUDA
    events (the clock stops only after a stream synchronize)."""

    def _load(self) -> None:
        import tensorrt as trt

        stamp = self.manifest.get("engine") or {}
        check_stamp(stamp)
        path = Path(self.bundle_dir) / self.manifest["model_files"]["model"]
        self.rt_ = trt.Runtime(_logger())
        self.engine = self.rt_.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise BundleError(f"TensorRT could not deserialize {path.name}", hint="edgeft build BUNDLE")
        self.ctx = self.engine.create_execution_context()
        self.cuda = _Cuda()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.ins = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        mb = int(stamp.get("profile", {}).get("max", MAX_BATCH))
        self.max_batch = mb
        self.bufs = {}
        for n in names:   # [max batch, *static dims]: every edgeft engine has a dynamic batch only
            tail = [int(d) for d in self.engine.get_tensor_shape(n)][1:]
            self.bufs[n] = (tail, *self.cuda.alloc(4 * mb * int(np.prod(tail))))
            self.ctx.set_tensor_address(n, self.bufs[n][2])
        self.ev = (self.cuda.event(), self.cuda.event())
        self._compute = None
        self.info = {"backend": "tensorrt", "version": trt.__version__, **{k: stamp.get(k) for k in
                     ("gpu", "compute_capability", "precision", "int8_mode")}, "max_batch": mb,
                     "runs": {"fp32": "f32 (TF32 off)", "fp16": "f16", "int8": "int8"}.get(stamp.get("precision"))}

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        b = int(next(iter(feeds.values())).shape[0])
        if b > self.max_batch:
            parts = [self._run({k: v[i:i + self.max_batch] for k, v in feeds.items()})
                     for i in range(0, b, self.max_batch)]
            return {n: np.concatenate([p[n] for p in parts]) for n in self.outs}
        for n in self.ins:
            self.ctx.set_input_shape(n, (b, *self.bufs[n][0]))
            self.cuda.h2d(self.bufs[n][1], feeds[n])
        self.cuda.record(self.ev[0])
        if not self.ctx.execute_async_v3(self.cuda.handle):
            raise BundleError("TensorRT execution failed")
        self.cuda.record(self.ev[1])
        out = {n: np.empty((b, *self.bufs[n][0]), np.float32) for n in self.outs}
        for n in self.outs:
            self.cuda.d2h(out[n], self.bufs[n][1])
        self.cuda.sync()  # the clock may stop only after this
        self._compute = self.cuda.elapsed_ms(*self.ev)
        return out

    def compute_ms(self) -> float | None:
        return self._compute

    def io(self):
        import tensorrt as trt

        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        dims = lambda n: [d if d >= 0 else None for d in self.engine.get_tensor_shape(n)]  # noqa: E731
        mode = self.engine.get_tensor_mode
        return ([(n, dims(n)) for n in names if mode(n) == trt.TensorIOMode.INPUT],
                [(n, dims(n)) for n in names if mode(n) == trt.TensorIOMode.OUTPUT])

    def close(self) -> None:
        self.ctx = None
        self.engine = None


class TensorRtBackend(Backend):
    """Format ``tensorrt``: an engine for the GPU it was built on, plus the ONNX graph to rebuild it."""

    name = "tensorrt"
    package = "tensorrt"
    install = INSTALL
    Runner = Runner
    formats = {"tensorrt": {"fp32": None, "fp16": None,
                            "bf16": "edgeft builds TensorRT engines in fp32, fp16 or int8; use --fp16", "int8": None}}

    def unavailable_reason(self) -> str | None:
        try:
            import tensorrt  # noqa: F401
        except ImportError as e:
            return f"{e} (TensorRT is not installed)"
        try:
            gpu_stamp()
        except Exception as e:  # noqa: BLE001 - no driver, no device
            return f"no usable NVIDIA GPU ({type(e).__name__}: {str(e)[:100]})"
        return None

    def build(self, onnx_path: Path, out_dir: Path, cfg: BuildConfig) -> dict:
        return build(onnx_path, out_dir, cfg.precision.value, cfg.calib,
                     {"from_qat": cfg.from_qat, "qat_quantization": cfg.qat_quantization, **cfg.options})


# ----------------------------------------------------------------------------------------- runner
