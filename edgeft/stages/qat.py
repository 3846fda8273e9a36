"""``edgeft qat``: quantization-aware training with NNCF, exported as a Q/DQ ONNX graph.

Example::

    from edgeft.stages.qat import qat
    m = qat("runs/r18-p50", out="runs/r18-p50-qat", epochs=1)

CLI: ``edgeft qat runs/r18-p50 --epochs 1`` then ``edgeft export runs/r18-p50-qat --format openvino --int8``

Flow: fold BatchNorm into the convolutions (so runtimes can fuse Q/DQ+Conv into int8 kernels), initialise
quantizers by post-training quantization (``nncf.quantize``), fine-tune at a low LR, keep the best epoch,
``nncf.strip`` and export with the legacy TorchScript exporter (the dynamo exporter fails on NNCF models).

Two Q/DQ flavours:

- ``cpu``: NNCF's performance preset: symmetric int8 per-channel weights, per-tensor activations (uint8
  after ReLU); 7-bit weights (overflow fix) for ``--target x86-avx2`` (CPUs without VNNI), full 8-bit
  weights for VNNI/AMX/ARM targets. Fast and accurate on ORT/OpenVINO CPUs.
- ``tensorrt``: symmetric int8 activations *and* weights, zero points 0, per-channel weights on axis 0,
  full 8-bit weights: TensorRT's explicit-quantization rules. NNCF's HW config refuses signed activations
  as a quantize() option, so every activation quantizer is switched to signed after initialisation (its
  range is kept, its step doubles) and QAT then trains in that exact arithmetic.
"""
from __future__ import annotations

import contextlib
import copy
import io
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ..errors import GateFailed, RunError, UnsupportedError
from ..models.surgery import fold_batchnorm
from ..recipe import load_recipe
from ..rundir import MODEL_FORMAT, RunDir, load_model
from ..tasks import get_task
from ..tasks.base import metric_name, prefixed
from ..targets import TARGETS, HOST
from ..targets import resolve as resolve_target
from ..utils.env import versions
from ..utils.io import atomic_write_json, atomic_write_text, atomic_write_with, sha256_file
from ..utils.log import captured, info, result
from .trainer import DistCtx, evaluate, fit, load_checkpoint, open_parent, pick_device

FLAVOURS = ("cpu", "tensorrt")
QAT_STATE = "model.safetensors"
QDQ_ONNX = "model_qdq.onnx"


def _nncf():
    os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "0")  # first use compiles C++ (slow on busy 2-core CPUs)
    with captured("nncf import"):
        import nncf
    return nncf


def _calib_tensors(task, recipe, data, n: int) -> list[torch.Tensor]:
    from .calib import calibration_batches

    batches, _ = calibration_batches(task, recipe, data, None, n, batch=32)
    return [torch.from_numpy(next(iter(b.values()))) for b in batches]   # the model's one input


def build_qat_model(fp32: nn.Module, calib: list[torch.Tensor], flavour: str, target: str):
    """fold BN -> nncf.quantize (PTQ init) -> flavour adjustments. Deterministic for the same inputs."""
    nncf = _nncf()
    with captured("nncf import"):
        from nncf.quantization.advanced_parameters import QuantizationParameters
        from nncf.torch.quantization.layers import BaseQuantizer

    model = fold_batchnorm(copy.deepcopy(fp32).eval())
    if flavour == "tensorrt":
        fix = nncf.OverflowFix.DISABLE  # TensorRT computes int8 exactly: keep full 8-bit weights
    else:
        full = TARGETS[target].int8_full_range
        fix = nncf.OverflowFix.FIRST_LAYER if full else nncf.OverflowFix.ENABLE
    n = sum(int(b.shape[0]) for b in calib)
    items = [b[i:i + 1] for b in calib for i in range(b.shape[0])]
    with captured("nncf.quantize"):
        q = nncf.quantize(model, nncf.Dataset(items), preset=nncf.QuantizationPreset.PERFORMANCE, subset_size=n,
                          advanced_parameters=nncf.AdvancedQuantizationParameters(
                              overflow_fix=fix, activations_quantization_params=QuantizationParameters(per_channel=False)))
    flipped = 0
    for name, m in q.named_modules():
        if isinstance(m, BaseQuantizer) and flavour == "tensorrt" and ".post_hooks." in f".{name}." and not m.signed:
            m.signed = True   # int8 symmetric activations (zero point 0): TensorRT explicit quantization
            flipped += 1
    meta = {"method": "qat", "tool": f"nncf {nncf.__version__}", "flavour": flavour, "target": target,
            "qdq_flavour": "s8s8_sym" if flavour == "tensorrt" else "u8s8",
            "weights": "int8 symmetric per-channel (axis 0), zero point 0" + (
                "" if fix != nncf.OverflowFix.ENABLE else f", 7-bit range (overflow fix: target {target})"),
            "activations": "int8 symmetric per-tensor, zero point 0" if flavour == "tensorrt"
            else "per-tensor, zero point 0 (uint8 after ReLU, int8 elsewhere)",
            "overflow_fix": fix.value, "batchnorm_folded": int(getattr(model, "edgeft_folded_bn", 0)),
            "activations_made_signed": flipped, "init": f"nncf.quantize PTQ on {n} samples"}
    return q, meta


def strip_and_export(q: nn.Module, example: torch.Tensor, path: Path, opset: int = 17,
                     io_spec: dict | None = None) -> dict:
    """nncf.strip(NATIVE) -> torch FakeQuantize -> legacy exporter -> standard QuantizeLinear/DequantizeLinear,
    with the task's input/output names (a detector has two outputs)."""
    nncf = _nncf()
    import onnx

    q.eval()
    with captured("nncf.strip"):
        stripped = nncf.strip(q, do_copy=True, strip_format=nncf.StripFormat.NATIVE, example_input=example[:1])
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        sp = io_spec or {"inputs": [{"name": "input", "shape": ["batch"]}],
                         "outputs": [{"name": "logits", "shape": ["batch"]}]}
        tensors = sp["inputs"] + sp["outputs"]
        torch.onnx.export(stripped, (example,), str(path), dynamo=False, opset_version=opset,
                          input_names=[t["name"] for t in sp["inputs"]],
                          output_names=[t["name"] for t in sp["outputs"]],
                          dynamic_axes={t["name"]: {0: "batch"} for t in tensors if t["shape"] and t["shape"][0] == "batch"},
                          do_constant_folding=True)
    from ..qdq import fold_constant_casts, tensorrt_violations

    m = onnx.load(str(path))
    fold_constant_casts(m)   # zero points as plain int8/uint8 constants (TensorRT's parser wants constants)
    onnx.save(m, str(path))
    onnx.checker.check_model(m)
    ops = [n.op_type for n in m.graph.node]
    return {"exporter": "torchscript (legacy): the dynamo exporter fails on NNCF models", "opset": opset,
            "quantize_linear": ops.count("QuantizeLinear"), "dequantize_linear": ops.count("DequantizeLinear"),
            "tensorrt_rule_violations": tensorrt_violations(m)}


def _parent(desc: dict, rd: RunDir) -> RunDir:
    p = RunDir(desc["qat"]["parent"]["run"])
    if not p.exists():
        raise RunError(f"the QAT run {rd.path} needs its FP32 parent {p.path}, which is missing",
                       hint="keep parent runs next to their QAT runs (or re-run edgeft qat)")
    return p


def load_qat_reference(rd: RunDir, desc: dict) -> nn.Module:
    """The trained fake-quant torch model of a QAT run (the parity reference for its Q/DQ export)."""
    from safetensors.torch import load_file

    parent = _parent(desc, rd)
    fp32, _ = load_model(parent)
    recipe = load_recipe(rd.recipe)
    task = get_task(recipe.task)
    data = task.load_data(recipe)
    from ..targets import qat_target_name

    # The quantizers' placement, bit widths and overflow fix do not depend on the data, and every learned value
    # (scales, signedness, folded weights, biases) is in the saved state: a 2-sample PTQ builds the same skeleton
    # in a fraction of the time of the run's full calibration (~17 s for ResNet-18 on a 2-core CPU).
    calib = _calib_tensors(task, recipe, data, 2)
    q, _ = build_qat_model(fp32, calib, desc["qat"]["flavour"], qat_target_name(desc["qat"]))
    load_qat_state(q, load_file(str(rd.path / QAT_STATE)))
    return q.eval()


def load_qat_state(q: nn.Module, state: dict) -> None:
    """Load a saved QAT state into an NNCF model of the same structure (strict), then recompute each quantizer's
    integer levels from its restored signedness (NNCF keeps the levels in non-persistent buffers)."""
    with captured("nncf import"):
        from nncf.torch.quantization.layers import BaseQuantizer

    q.load_state_dict(state, strict=True)
    for m in q.modules():
        if isinstance(m, BaseQuantizer):
            m.set_levels()


def load_parent_fp32(rd: RunDir, desc: dict) -> nn.Module:
    return load_model(_parent(desc, rd))[0]


def layer_errors(fp: nn.Module, q: nn.Module, batches, top: int = 5) -> list[dict]:
    """Relative output error of each conv/linear layer, fake-quant vs FP32 (folded), over a few batches."""
    acc: dict[str, list[float]] = {}
    outs: dict[str, dict[str, torch.Tensor]] = {"f": {}, "q": {}}
    hooks = []
    for tag, model in (("f", fp), ("q", q)):
        for name, m in model.named_modules():
            if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)):
                hooks.append(m.register_forward_hook(
                    lambda mod, i, o, name=name, tag=tag: outs[tag].__setitem__(name, o.detach().float())))
    try:
        with torch.no_grad():
            for x in batches:
                fp(x)
                q(x)
                for name, f in outs["f"].items():
                    if name in outs["q"]:
                        acc.setdefault(name, []).append(float((outs["q"][name] - f).norm() / (f.norm() + 1e-12)))
    finally:
        for h in hooks:
            h.remove()
    rows = sorted(({"layer": k, "rel_error": float(np.mean(v))} for k, v in acc.items()), key=lambda r: -r["rel_error"])
    return rows[:top]


def qat(run, *, out, epochs: int, lr: float | None, flavour: str, target: str | None, calib_size: int,
        max_drop: float | None, resume: bool, threads: int | None) -> dict:
    """Quantization-aware training of a run (FP32 or pruned); returns metrics (also OUT/metrics.json). Every
    setting is explicit here: :func:`edgeft.qat` fills them from the recipe (``compress.qat``).

    ``target`` (default: this machine's CPU class) decides the INT8 weight range; ``flavour="tensorrt"`` is
    the same as ``target="tensorrt"``."""
    if flavour not in FLAVOURS:
        raise UnsupportedError(f"--flavour {flavour!r}: valid are {', '.join(FLAVOURS)}",
                               hint="cpu = fastest accurate INT8 on ORT/OpenVINO CPUs; tensorrt = symmetric s8s8")
    tgt = resolve_target(target, "onnxruntime")
    if flavour == "tensorrt" and target not in (None, HOST, "tensorrt"):
        raise UnsupportedError(f"--flavour tensorrt with --target {target}: the tensorrt flavour is for TensorRT",
                               hint="drop --target, or use --flavour cpu --target " + target)
    if flavour == "tensorrt" or tgt.name == "tensorrt":
        flavour, tgt = "tensorrt", TARGETS["tensorrt"]
    if epochs < 0:
        raise UnsupportedError(f"--epochs {epochs}: must be >= 0")
    parent, pdesc, out, recipe, task, data = open_parent(
        run, out, "-qat" if flavour == "cpu" else "-qat-trt", resume, threads, "{run} is already a QAT run")
    labels = parent.read_labels()
    nc = len(labels)
    fp32, _ = load_model(parent)
    device = pick_device(recipe.train.device, DistCtx())
    example = task.example_input(recipe, 2)
    t0 = time.perf_counter()
    p = task.primary
    fp32_val = evaluate(fp32, task, data.val, recipe, device, num_classes=nc)[p]
    calib = _calib_tensors(task, recipe, data, calib_size)
    info(f"QAT ({flavour}, target {tgt.name}): folding BatchNorm, PTQ initialisation on "
         f"{sum(len(b) for b in calib)} samples ...")
    q, qmeta = build_qat_model(fp32, calib, flavour, tgt.name)
    io_spec = task.io_spec(recipe, list(data.classes))
    if flavour == "tensorrt":
        _check_tensorrt_rules(q, example, recipe.export.opset, io_spec, pdesc["name"])
    ptq_val = evaluate(q, task, data.val, recipe, device, num_classes=nc)[p]
    info(f"FP32 val {metric_name(p)} {fp32_val:.4f}; INT8 after PTQ init (fake-quant) {ptq_val:.4f}")
    out.path.mkdir(parents=True, exist_ok=True)
    # until the end, the run says it is not finished: `edgeft export` refuses it (a crash leaves it "running",
    # an error "failed"), so a half-written QAT run never exports as if it were complete
    out.write_metrics({"status": "running", "stage": "qat", "flavour": flavour, "target": tgt.name})
    try:
        return _train_and_export(q, qmeta, fp32, calib, example, io_spec, parent, pdesc, out, recipe, task, data,
                                 labels, nc, device, p, fp32_val, ptq_val, flavour, tgt, epochs, lr, calib_size,
                                 max_drop, resume, t0)
    except GateFailed:
        raise
    except BaseException as e:
        state = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
        out.write_metrics({**out.read_metrics(), "status": state, "status_reason": f"{type(e).__name__}: {e}"[:500]})
        raise


def _check_tensorrt_rules(q: nn.Module, example: torch.Tensor, opset: int, io_spec: dict, name: str) -> None:
    """Export the PTQ-initialised model once and check TensorRT's Q/DQ rules before spending time on training
    (quantizer placement does not change during QAT, so what passes here passes at the end)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="edgeft-qat-check-") as d:
        viol = strip_and_export(q, example, Path(d) / "check.onnx", opset=opset,
                                io_spec=io_spec)["tensorrt_rule_violations"]
    if viol:
        raise UnsupportedError(f"{name}: the tensorrt-flavour Q/DQ graph would break TensorRT's rules: {viol[0]} "
                               f"(+{len(viol) - 1} more); checked before training, nothing written",
                               hint="use --flavour cpu for ORT/OpenVINO, or report this with the model name")


def _train_and_export(q, qmeta, fp32, calib, example, io_spec, parent, pdesc, out, recipe, task, data, labels, nc,
                      device, p, fp32_val, ptq_val, flavour, tgt, epochs, lr, calib_size, max_drop, resume, t0):
    atomic_write_text(out.recipe, parent.recipe.read_text())
    out.write_labels(labels)
    desc = {"format": MODEL_FORMAT, "name": pdesc["name"], "num_classes": nc, "kwargs": pdesc.get("kwargs", {}),
            "stage": "qat", "pruned": pdesc.get("pruned"),
            "qat": {"onnx": QDQ_ONNX, "flavour": flavour, "target": tgt.name, "calib_size": calib_size,
                    "quantization": qmeta,
                    "parent": {"run": str(parent.path.resolve()), "model_sha256": sha256_file(parent.weights)}}}

    def save_state(model: nn.Module) -> None:
        from safetensors.torch import save_file

        sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        atomic_write_with(out.path / QAT_STATE, lambda tmp: save_file(sd, str(tmp)))
        atomic_write_json(out.model_json, desc)

    save_state(q)  # the PTQ-initialised model is the baseline "best"
    lr = lr or recipe.train.lr / 100
    ck = load_checkpoint(out) if resume else None
    res = None
    if epochs > 0:
        r2 = recipe.model_copy(deep=True)
        r2.train.warmup_epochs = 0.0
        r2.train.label_smoothing = 0.0
        res = fit(q, task, r2, data, rd=out, ctx=DistCtx(), device=device, epochs=epochs, lr=lr,
                  model_name=pdesc["name"], num_classes=nc, resume=ck, stage="qat", save_fn=save_state)
        if res.best.get(f"val_{p}", -1) < ptq_val:  # QAT never returns something worse than its PTQ start
            q2, _ = build_qat_model(fp32, calib, flavour, tgt.name)
            save_state(q2)
    from safetensors.torch import load_file

    q.load_state_dict(load_file(str(out.path / QAT_STATE)))
    q.eval()
    exp = strip_and_export(q, example, out.path / QDQ_ONNX, opset=recipe.export.opset, io_spec=io_spec)
    desc["qat"].update({"exporter": exp["exporter"], "opset": exp["opset"]})
    desc["qat"]["quantization"]["qdq_nodes"] = {"Q": exp["quantize_linear"], "DQ": exp["dequantize_linear"]}
    viol = exp["tensorrt_rule_violations"]
    desc["qat"]["quantization"]["tensorrt_rules"] = "pass" if not viol else f"{len(viol)} violation(s), e.g. {viol[0]}"
    if flavour == "tensorrt" and viol:
        raise RunError(f"the tensorrt-flavour Q/DQ graph breaks TensorRT's rules: {viol[0]} (+{len(viol) - 1} more)",
                       hint="report this with the model name; the cpu flavour is unaffected")
    atomic_write_json(out.model_json, desc)
    val = evaluate(q, task, data.val, recipe, device, num_classes=nc)
    test = evaluate(q, task, data.test, recipe, device, num_classes=nc) if data.test is not None else None
    drop = (fp32_val - val[p]) * 100
    metrics = {"status": "complete", "stage": "qat", "flavour": flavour, "target": tgt.name,
               "parent": str(parent.path), **prefixed("val", val), f"val_{p}_fp32_parent": fp32_val,
               f"ptq_val_{p}": ptq_val, "drop_points": round(drop, 3),
               "qat_gain_points": round((val[p] - ptq_val) * 100, 3), **prefixed("test", test),
               "epochs": epochs, "lr": lr, "quantization": desc["qat"]["quantization"],
               "seconds": round(time.perf_counter() - t0, 1), "history": res.history if res else [],
               "versions": versions()}
    if max_drop is not None and drop > max_drop:
        fp_folded = fold_batchnorm(copy.deepcopy(fp32).eval())
        batches = [torch.from_numpy(next(iter(task.eval_inputs(data.val, recipe, np.arange(i * 32, (i + 1) * 32))
                                              .values()))) for i in range(min(4, len(data.val) // 32))]
        metrics["worst_layers"] = layer_errors(fp_folded, q, batches)
        metrics["status"] = "failed_gate"
        metrics["status_reason"] = f"val {metric_name(p)} dropped {drop:.2f} points vs FP32 > --max-drop {max_drop}"
    out.write_metrics(metrics)
    result(f"QAT {pdesc['name']} ({flavour}): val {metric_name(p)} FP32 {fp32_val:.4f} -> PTQ init {ptq_val:.4f} -> QAT "
           f"{val[p]:.4f} ({-drop:+.2f} points vs FP32) in {metrics['seconds']:.0f}s; Q/DQ ONNX: "
           f"{out.path / QDQ_ONNX} ({exp['quantize_linear']} Q / {exp['dequantize_linear']} DQ)")
    if metrics["status"] == "failed_gate":
        worst = ", ".join(f"{r['layer']} ({r['rel_error']:.3f})" for r in metrics["worst_layers"])
        raise GateFailed(f"QAT: {metrics['status_reason']}; layers with the largest fake-quant error: {worst}; run "
                         f"kept at {out.path} marked 'failed_gate'",
                         hint="train longer (--epochs), raise --lr a little, or keep those layers in FP32")
    return metrics
