"""OpenVINO backend: IR via ``openvino.convert_model``, FP16 weight compression, INT8 via NNCF PTQ on the
OpenVINO model (or straight from a QAT Q/DQ ONNX, without re-quantizing), and a latency-hinted Runner.

The INT8 weight range follows the bundle's target (:mod:`edgeft.targets`): on x86 CPUs without VNNI, NNCF's
default overflow fix (first layer only) lets u8 x s8 products saturate in the AVX2 kernels, so ``x86-avx2``
bundles get ``overflow_fix=ENABLE`` (7-bit weights everywhere; measured: DS-CNN top-1 agreement 0.03 -> 0.84
on random inputs, no latency cost). VNNI targets keep full 8-bit weights.

The Runner pins ``INFERENCE_PRECISION_HINT`` to what the bundle claims (the CPU plugin would otherwise pick
BF16 on AVX512_BF16/AMX CPUs and FP16 on ARM) and reads it back after compiling: a bundle whose precision
this CPU cannot compute is refused rather than silently run in another one.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import Backend, BuildConfig, Precision
from .base import Runner as _Runner


# what the Runner pins: the bundle's compute precision (INT8 bundles: f32 for the layers left in float)
_HINT = {"f32": "f32", "bf16": "bf16", "f16": "f16", "int8": "f32"}


def _nncf_ptq(model, calib: list[dict[str, np.ndarray]], target, options: dict | None = None):
    """INT8 post-training quantization with NNCF. ``options`` (from ``edgeft optimize``):

    - ``nncf_defaults``: plain ``nncf.quantize(model, dataset)``, what a user calling NNCF would get (the peer
      that ``edgeft optimize`` compares against);
    - ``accuracy_control``: ``{"max_drop": points, "val": [(input, label), ...], "max_iterations": n}``: NNCF's
      ``quantize_with_accuracy_control`` keeps the most sensitive layers in float until the val top-1 drop is
      within ``max_drop``;
    - ``exclude``: operation names kept in float (an ignored scope)."""
    from ..utils.log import captured

    with captured("nncf"):
        import nncf

    options = options or {}
    vnni = target.int8_full_range
    fix = nncf.OverflowFix.FIRST_LAYER if vnni else nncf.OverflowFix.ENABLE
    # one sample per item, as NNCF expects; a one-input model gets the bare array (as before named feeds)
    items = [{k: v[i:i + 1] for k, v in b.items()} for b in calib for i in range(next(iter(b.values())).shape[0])]
    if all(len(it) == 1 for it in items):
        items = [next(iter(it.values())) for it in items]
    base = {"method": "ptq", "tool": f"nncf {nncf.__version__} (OpenVINO backend)",
            "format": "FakeQuantize (OpenVINO IR)", "qdq_flavour": "openvino_fq"}
    if options.get("nncf_defaults"):
        with captured("nncf.quantize"):
            q = nncf.quantize(model, nncf.Dataset(items))
        return q, {**base, "preset": "NNCF defaults (nncf.quantize(model, dataset), nothing else set)",
                   "overflow_fix": "NNCF default (first_layer)", "peer": "plain NNCF PTQ defaults", **_float_layers(q)}
    params = dict(preset=nncf.QuantizationPreset.PERFORMANCE, subset_size=len(items), fast_bias_correction=True)
    adv_q = nncf.AdvancedQuantizationParameters(overflow_fix=fix)
    if options.get("exclude"):
        params["ignored_scope"] = nncf.IgnoredScope(names=list(options["exclude"]), validate=False)
    ac = options.get("accuracy_control")
    info = {**base, "preset": "performance (symmetric int8 weights and activations)", "overflow_fix": fix.value,
            "reason": f"target {target.name}: " + ("int8 dot products without saturation (VNNI or non-x86)" if vnni
                                                   else "x86 without VNNI: 7-bit weights")}
    if ac:
        val = ac["val"]
        n_in = len(model.inputs)

        def validate(compiled, data) -> float:
            hits = n = 0
            for x, y in data:
                out = compiled(x if n_in > 1 else [x])[0]
                hits += int(np.argmax(out[0]) == y)
                n += 1
            return hits / max(n, 1)

        adv = nncf.AdvancedAccuracyRestorerParameters(max_num_iterations=int(ac.get("max_iterations", 20)))
        with captured("nncf.quantize_with_accuracy_control"):
            q = nncf.quantize_with_accuracy_control(
                model, nncf.Dataset(items), nncf.Dataset(val, lambda it: it[0]), validate,
                max_drop=float(ac["max_drop"]) / 100.0, drop_type=nncf.DropType.ABSOLUTE,
                advanced_quantization_parameters=adv_q, advanced_accuracy_restorer_parameters=adv, **params)
        info.update({"method": "ptq + accuracy control",
                     "accuracy_control": {"max_drop_points": float(ac["max_drop"]), "val_samples": len(val),
                                          "max_iterations": int(ac.get("max_iterations", 20)),
                                          "tool": "nncf.quantize_with_accuracy_control"}})
    else:
        with captured("nncf.quantize"):
            q = nncf.quantize(model, nncf.Dataset(items), advanced_parameters=adv_q, **params)
    fl = _float_layers(q)
    if fl["float_layers"]:
        info["mixed_precision"] = f"{len(fl['float_layers'])} of {fl['compute_layers']} layer(s) kept in float"
    return q, {**info, **fl}


_COMPUTE = ("Convolution", "GroupConvolution", "MatMul")


def _float_layers(model) -> dict:
    """Which compute layers (conv, matmul) of an OpenVINO model run in float: their data input does not come
    from a FakeQuantize (through Convert/Reshape at most)."""
    def quantized(port) -> bool:
        node = port.get_source_output().get_node()
        for _ in range(3):
            if node.get_type_name() == "FakeQuantize":
                return True
            if node.get_type_name() not in ("Convert", "Reshape", "Transpose") or node.get_input_size() == 0:
                return False
            node = node.input(0).get_source_output().get_node()
        return False

    ops = [op for op in model.get_ordered_ops() if op.get_type_name() in _COMPUTE]
    floats = [op.get_friendly_name() for op in ops if not quantized(op.input(0))]
    return {"compute_layers": len(ops), "float_layers": floats}


class Runner(_Runner):
    """A compiled model with PERFORMANCE_HINT=LATENCY (1 stream), explicit INFERENCE_NUM_THREADS and the
    bundle's inference precision pinned and verified.

    ``exact_int8=True`` turns off the CPU plugin's low-precision transformations, so FakeQuantize runs as
    float maths: the integer arithmetic of a CPU with VNNI, without the saturation of AVX2 int8 kernels
    (slow; for checking a full-range INT8 bundle on a CPU that cannot run it natively)."""

    def __init__(self, *a, batch: int | None = None, exact_int8: bool = False, **k):
        super().__init__(*a, **k)
        self.batch = batch
        self.exact_int8 = exact_int8

    def _load(self) -> None:
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(Path(self.bundle_dir) / self.manifest["model_files"]["model"]))
        if self.batch:  # static shape: what benchmark_app measures; faster than a dynamic batch on CPU
            shape = [self.batch] + [int(d) for d in self.manifest["inputs"][0]["shape"][1:]]
            model.reshape({model.inputs[0]: shape})
        st = self.manifest.get("stateful")
        if st:   # state inside the plugin (ReadValue/Assign): a call passes only the new input (see state_session)
            from openvino.passes import MakeStateful, Manager

            pm = Manager()
            pm.register_pass(MakeStateful({s["name"]: s["output"] for s in st["states"]}))
            pm.run_passes(model)
        cfg = {"PERFORMANCE_HINT": "LATENCY"}
        if self.threads:
            cfg["INFERENCE_NUM_THREADS"] = int(self.threads)
        dev = (self.device or "CPU").upper()
        from ..targets import bundle_compute

        want = _HINT[bundle_compute(self.manifest)]
        if dev == "CPU":
            cfg["INFERENCE_PRECISION_HINT"] = want
            if self.exact_int8:
                cfg["LP_TRANSFORMS_MODE"] = "NO"   # CPU plugin property: FakeQuantize as float maths
        self.compiled = core.compile_model(model, dev, cfg)
        self.req = self.compiled.create_infer_request()
        self.info = {"backend": "openvino", "version": ov.get_version(), "device": dev,
                     "static_batch": self.batch}
        for prop in ("PERFORMANCE_HINT", "INFERENCE_NUM_THREADS", "NUM_STREAMS", "INFERENCE_PRECISION_HINT"):
            try:
                self.info[prop.lower()] = str(self.compiled.get_property(prop))
            except Exception:  # noqa: BLE001 - not every device reports every property
                pass
        if dev == "CPU":
            got = _type_name(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
            self.info["runs"] = "int8 + f32" if self.manifest.get("precision") == "int8" and got == "f32" else got
            if self.exact_int8:
                self.info["runs"] = "int8 simulated in f32 (low-precision transformations off)"
            if got != want:
                from ..errors import BundleError

                raise BundleError(f"bundle {str(self.bundle_dir)!r} is {self.manifest.get('precision')} "
                                  f"(compute {want}), but OpenVINO compiles it in {got} on this CPU: it cannot "
                                  f"compute {want} natively", hint="use the fp32 or int8 bundle here, or run this "
                                                                   "one on a CPU with native " + want)

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import openvino as ov

        if len(feeds) == 1:   # the fast path benchmark_app takes: a shared-memory tensor, no dict lookups
            self.req.set_input_tensor(ov.Tensor(next(iter(feeds.values())), shared_memory=True))
            self.req.infer()
        else:
            self.req.infer(feeds)
        return {n: self.req.get_output_tensor(i).data.copy() for i, n in enumerate(self.output_names)}

    def state_session(self):
        """A stream's state as OpenVINO variables of its own infer request (the model was made stateful at load):
        a call copies only the new input and the outputs (RESULTS.md §15 has what that saves)."""
        if not self.manifest.get("stateful"):
            return super().state_session()
        return _OvStateSession(self)

    def io(self):
        def dims(port):
            return [d.get_length() if d.is_static else None for d in port.get_partial_shape()]

        name = lambda p: p.get_any_name() if p.get_names() else f"#{p.get_index()}"  # noqa: E731
        return ([(name(p), dims(p)) for p in self.compiled.inputs], [(name(p), dims(p)) for p in self.compiled.outputs])

    def close(self) -> None:
        self.req = None
        self.compiled = None


class _OvStateSession:
    def __init__(self, runner: Runner):
        spec = runner.manifest["stateful"]
        self.req = runner.compiled.create_infer_request()   # the variables (the stream's state) live here
        self.x = self.req.get_tensor(spec["input"])   # the request's own input buffer (static shape)
        names = [p.get_any_name() for p in runner.compiled.outputs]
        self.out_idx = [names.index(o) for o in spec["outputs"]]   # read after each call (a device may swap them)

    def reset(self) -> None:
        self.req.reset_state()

    def step(self, x: np.ndarray) -> list[np.ndarray]:
        self.x.data[...] = x
        self.req.infer()
        return [self.req.get_output_tensor(i).data.copy() for i in self.out_idx]


def _type_name(t) -> str:
    s = str(t).lower()
    for name in ("bf16", "f16", "f32"):
        if name in s or {"bf16": "bfloat16", "f16": "float16", "f32": "float32"}[name] in s:
            return name
    return s


class OpenVinoBackend(Backend):
    """Format ``openvino``: an IR (model.xml + model.bin) for OpenVINO's CPU plugin (or GPU/NPU with --device)."""

    name = "openvino"
    package = "openvino"
    install = "install with pip install 'edgeft[openvino]'"
    formats = {"openvino": {"fp32": None, "fp16": None,
                            "bf16": None,   # on targets with AVX512_BF16 or AMX (edgeft.targets)
                            "int8": None}}
    Runner = Runner

    def version(self) -> str:
        import openvino

        return openvino.get_version()

    def convert_extra(self, onnx_path: Path, out_dir: Path, stem: str, precision: str) -> str:
        """Convert an auxiliary FP32 graph (e.g. a streaming model) to IR; INT8 bundles keep it FP32."""
        import openvino as ov

        ov.save_model(ov.convert_model(str(onnx_path)), str(out_dir / f"{stem}.xml"),
                      compress_to_fp16=precision == "fp16")
        return f"{stem}.xml"

    def build(self, onnx_path: Path, out_dir: Path, cfg: BuildConfig) -> dict:
        import openvino as ov

        model = ov.convert_model(str(onnx_path))
        xml = out_dir / "model.xml"
        details: dict = {"model_files": {"model": "model.xml", "weights": "model.bin"}, "quantization": None}
        if cfg.from_qat:
            ov.save_model(model, str(xml), compress_to_fp16=False)
            details["quantization"] = cfg.qat_quantization
            return details
        target = cfg.target
        if cfg.precision == Precision.INT8:
            model, q = _nncf_ptq(model, cfg.calib, target, cfg.options)
            details["quantization"] = q
        ov.save_model(model, str(xml), compress_to_fp16=cfg.precision == Precision.FP16)
        if cfg.precision == Precision.FP16:
            details["compression"] = (f"weights stored as FP16 (compress_to_fp16); computed in "
                                      f"{target.compute_precision('fp16')} on {target.name} (pinned at load)")
        elif cfg.precision == Precision.BF16:
            details["compression"] = "FP32 weights in the IR; the CPU plugin computes in bf16 (pinned at load)"
        return details
