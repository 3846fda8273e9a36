"""``edgeft export``: a run -> a verified, deployable bundle (ONNX / ONNX Runtime / OpenVINO / TensorRT).

Example::

    from edgeft.stages.export import export
    manifest = export("runs/r18", format="openvino", precision="int8")

CLI: ``edgeft export runs/r18 --format openvino --int8``

Every export ends with a parity check on real validation samples (max-abs-diff, cosine similarity,
top-1 agreement against the PyTorch model) and an accuracy comparison on the validation split; both
go into the manifest. ``--max-drop`` turns the accuracy comparison into a gate.
"""
from __future__ import annotations

import contextlib
import io
import json
import time
import warnings
from pathlib import Path

import numpy as np

from ..backends import backend_module
from ..backends.base import check_supported
from ..bundle import STATUS_OK, BundleWriter, describe
from ..targets import bundle_target, check_precision
from ..targets import resolve as resolve_target
from ..errors import DataError, GateFailed, RunError, UnsupportedError
from ..utils.env import versions
from ..utils.io import sha256_bytes, sha256_file
from ..utils.log import info, result, warn

# parity tolerances per precision (recorded in every manifest)
TOLERANCE = {
    "fp32": {"max_abs_diff_rel": 1e-4, "top1_agreement_min": 0.995},
    "fp16": {"cosine_min": 0.999, "top1_agreement_min": 0.98},
    "bf16": {"cosine_min": 0.999, "top1_agreement_min": 0.98},
    "int8": {"gate": "--max-drop on validation top-1 (points)"},
}


def default_out(run: Path, fmt: str, precision: str, target: str | None = None) -> Path:
    """RUN/bundles/FORMAT-PRECISION, with -TARGET when a target other than this machine's class was asked for."""
    suffix = f"-{target}" if target and target != "host" and fmt != "tensorrt" else ""
    return Path(run) / "bundles" / f"{fmt}-{precision}{suffix}"


def read_run_desc(run: Path) -> dict:
    p = Path(run) / "model.json"
    if Path(run).is_file() and str(run).endswith(".onnx"):
        raise RunError(f"{str(run)!r} is an ONNX file; `edgeft export` takes a run directory (it needs the "
                       f"recipe, labels and PyTorch model for the parity check)",
                       hint="pass the --out folder of `edgeft finetune` / `prune` / `qat`")
    if not p.is_file():
        from ..rundir import open_run

        open_run(run)  # raises the precise error
    return json.loads(p.read_text())


def export(run: str | Path, *, format: str = "onnx", precision: str = "fp32", calib_data: str | None = None,
           calib_size: int | None = None, out: str | Path | None = None, max_drop: float | None = None,
           parity_samples: int | None = None, opset: int | None = None, target: str | None = None,
           force: bool = False, sign_key: str | None = None) -> dict:
    """Export a run to a bundle; returns the manifest. Raises GateFailed (bundle kept, marked failed).

    ``sign_key``: an ed25519 private key file; the manifest (which holds every file's sha256) is signed."""
    run = Path(run)
    desc = read_run_desc(run)
    qat = desc.get("qat")
    if qat and precision == "fp32":
        precision = "int8"  # a QAT run *is* an int8 model; say so rather than silently exporting FP32
        info("QAT run: exporting its INT8 Q/DQ graph")
    check_supported(format, precision, from_qat=bool(qat), qat_flavour=(qat or {}).get("flavour"))
    tgt = _qat_target(qat, target) if qat else resolve_target(target, format)
    check_precision(tgt, format, precision)
    _check_verifiable(tgt, format, precision)
    backend = backend_module(format)  # BackendUnavailable before any work
    key = None
    if sign_key is not None:
        from ..bundle import load_private_key

        key = load_private_key(sign_key)
    if calib_data is not None and precision == "int8" and not qat:
        _check_calib_dir(calib_data)
    out = Path(out) if out else default_out(run, format, precision, target)
    writer = BundleWriter(out, force=force)
    try:
        return _export(run, desc, backend, writer, format, precision, calib_data, calib_size, max_drop,
                       parity_samples, opset, tgt, target, key)
    except BaseException as e:
        writer.abort()
        from ..utils.io import disk_error

        if isinstance(e, Exception) and (de := disk_error(e, out)) is not None:
            raise de from None
        raise


def _qat_target(qat: dict, asked: str | None):
    """A QAT run's weights were trained for one target: its bundles are for that target."""
    from ..targets import HOST, TARGETS

    name = qat_target_name(qat)
    if asked not in (None, HOST, name):
        raise UnsupportedError(f"--target {asked}: this QAT run was trained for {name} "
                               f"({TARGETS[name].description})",
                               hint=f"export it without --target, or re-run `edgeft qat PARENT --target {asked}`")
    return TARGETS[name]


def qat_target_name(qat: dict) -> str:
    """The target of a QAT run (runs made before targets: from the flavour and the overflow fix)."""
    if qat.get("target"):
        return qat["target"]
    if qat.get("flavour") == "tensorrt":
        return "tensorrt"
    return "x86-avx2" if (qat.get("quantization") or {}).get("overflow_fix") == "enable" else "x86-vnni"


def _check_verifiable(tgt, fmt: str, precision: str) -> None:
    """bf16/f16 compute cannot be simulated: the bundle is verified on a CPU that computes it, or not built."""
    from ..targets import _REQ, real_cpu_features, requirements

    real = real_cpu_features()
    for req in requirements(tgt, fmt, precision)[1]:
        if req in ("bf16", "f16") and not _REQ[req][0](real):
            raise UnsupportedError(f"a {precision} bundle for {tgt.name} is checked against PyTorch by running it, and "
                                   f"this CPU cannot compute {req} ({real.describe()})",
                                   hint=f"export it on an {tgt.name} machine (or bench it there with --device), or "
                                        f"export fp32/--int8 here")


def _check_calib_dir(d: str) -> None:
    from ..data.images import IMAGE_EXTS

    p = Path(d)
    if not p.is_dir():
        raise DataError(f"--calib-data {d!r} does not exist or is not a folder",
                        hint="pass a folder of representative images, or omit it to use the run's train split")
    if not any(f.suffix.lower() in IMAGE_EXTS for f in p.rglob("*")):
        raise DataError(f"--calib-data {d!r} contains no images ({', '.join(sorted(IMAGE_EXTS))})",
                        hint="pass a folder of representative images, or omit it to use the run's train split")


def _export(run, desc, backend, writer, fmt, precision, calib_data, calib_size, max_drop, parity_samples, opset,
            tgt, requested, key=None):
    import torch

    from ..recipe import load_recipe
    from ..rundir import RunDir, load_model
    from ..tasks import get_task

    t0 = time.perf_counter()
    rd = RunDir(run)
    recipe = load_recipe(rd.recipe)
    labels = rd.read_labels()
    task = get_task(recipe.task)
    if desc.get("qat"):
        from .qat import load_parent_fp32

        model = load_parent_fp32(rd, desc)   # the FP32 parent: accuracy reference, params and MACs
    else:
        model, _ = load_model(rd)
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    calib_size = calib_size or recipe.export.calib_size
    parity_samples = parity_samples or recipe.export.parity_samples
    max_drop = max_drop if max_drop is not None else recipe.export.max_drop
    opset = opset or recipe.export.opset
    data = task.load_data(recipe)
    tmp = writer.tmp
    onnx_tmp = tmp / ".export.onnx"
    if desc.get("qat"):
        src = rd.path / desc["qat"]["onnx"]
        onnx_tmp.write_bytes(src.read_bytes())
        exp = {"exporter": desc["qat"].get("exporter", "torchscript (legacy)"), "opset": desc["qat"].get("opset"),
               "note": "QAT Q/DQ graph exported by `edgeft qat`; consumed without re-quantizing"}
        ref_model = _qat_reference(rd, desc)
    else:
        exp = export_onnx(model, task.example_input(recipe, 2), onnx_tmp, opset, labels=labels,
                          preprocess=task.preprocess_spec(recipe), task=recipe.task)
        ref_model = model
    onnx_sha = sha256_file(onnx_tmp)
    calib, calib_meta = None, None
    if precision == "int8" and not desc.get("qat"):
        calib, calib_meta = calibration_batches(task, recipe, data, calib_data, calib_size)
    options = {"format": fmt, "target": tgt, "input_name": "input", "from_qat": bool(desc.get("qat")),
               "qat_quantization": (desc.get("qat") or {}).get("quantization")}
    info(f"building {fmt}/{precision} ...")
    built = backend.build(onnx_tmp, tmp, precision, calib, options)
    if fmt in ("onnx", "tensorrt") and not (tmp / "model.onnx").exists():
        onnx_tmp.rename(tmp / "model.onnx")
    if onnx_tmp.exists():
        onnx_tmp.unlink()
    stream_meta = None
    if hasattr(task, "streaming_model") and not desc.get("qat"):
        stream_meta = _export_streaming(task, recipe, model, tmp, backend, fmt, precision, built)
    quant = built.get("quantization")
    if quant and calib_meta:
        quant = {**quant, "calibration": calib_meta}
    manifest = {
        "edgeft_version": _version(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "status": STATUS_OK,
        "task": recipe.task, "labels": labels, "preprocess": task.preprocess_spec(recipe),
        "inputs": [task.input_spec(recipe)], "outputs": [task.output_spec(len(labels))],
        "format": fmt, "precision": precision, "target": bundle_target(tgt, fmt, precision, requested),
        "model_files": built["model_files"],
        "quantization": quant, "export": {**exp, "onnx_sha256": onnx_sha},
        "source": {"run": str(run.resolve()), "stage": desc.get("stage", "finetune"), "model": desc["name"],
                   "recipe": recipe.name, "recipe_hash": recipe.hash(), "model_sha256": sha256_file(rd.weights),
                   "params": int(sum(p.numel() for p in model.parameters())), "pruned": desc.get("pruned"),
                   "macs": _macs(model, task, recipe), "data": recipe.data.source, "parent": desc.get("parent")},
        "versions": versions(),
    }
    for k in ("compression", "engine"):
        if k in built:
            manifest[k] = built[k]
    if hasattr(task, "extra_manifest"):
        manifest.update(task.extra_manifest(recipe))
    if stream_meta:
        manifest["streaming_model"] = stream_meta
    # parity + accuracy, through the same runtime a device uses
    manifest["parity"] = parity_report(tmp, manifest, ref_model, model, task, recipe, data, precision,
                                       parity_samples)
    if stream_meta:
        manifest["parity"]["streaming"] = streaming_parity(tmp, manifest, model, task, recipe, data)
    status, reason = _judge(manifest["parity"], precision, max_drop)
    manifest["status"] = status
    if reason:
        manifest["status_reason"] = reason
    manifest["export"]["seconds"] = round(time.perf_counter() - t0, 1)
    m = writer.commit(manifest, sign_key=key)
    _print_summary(writer.out, m)
    if status != STATUS_OK:
        raise GateFailed(f"export {fmt}/{precision} {status}: {reason}; bundle kept at {writer.out} marked "
                         f"{status!r}", hint=_gate_hint(precision, desc))
    return m


def _macs(model, task, recipe) -> int:
    from ..models.surgery import count_macs

    return count_macs(model, task.example_input(recipe))


def _export_streaming(task, recipe, model, tmp: Path, backend, fmt, precision, built) -> dict | None:
    """Export the exact streaming (stateful) form of a streamable model next to the full-window model."""
    sm = task.streaming_model(model, recipe)
    if sm is None:
        return None
    import torch

    wrapper, new_frames = sm
    shapes = wrapper.state_shapes()
    n_mels = shapes[0][1]
    names = [f"state{i}" for i in range(len(shapes))]
    feats = torch.zeros(1, n_mels, new_frames)
    states = tuple(torch.zeros(s) for s in shapes)
    p = tmp / ".stream.onnx"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper.eval(), (feats, *states), str(p), dynamo=False, opset_version=17,
                          input_names=["feats", *names], output_names=["logits", *[n + "_out" for n in names]])
    f = backend.convert_extra(p, tmp, "stream", precision)
    p.unlink()
    built["model_files"]["stream"] = f
    return {"file": f, "new_frames": int(new_frames), "window_frames": int(task.input_spec(recipe)["shape"][-1]),
            "inputs": ["feats", *names], "outputs": ["logits", *[n + "_out" for n in names]],
            "states": [{"name": n, "shape": list(s)} for n, s in zip(names, shapes)],
            "precision": precision if precision in ("fp16", "bf16") and fmt == "openvino" else "fp32",
            "note": "exact streaming form (external state, Rybakov et al. 2020): new frames + state in, logits + "
                    "state out; equals re-running the full window every hop"}


def streaming_parity(bundle_dir: Path, manifest: dict, model, task, recipe, data, n: int = 32) -> dict:
    """Final logits after streaming a clip's frames vs the full-window PyTorch model on the same clip."""
    import torch

    from ..backends import backend_module as bm

    from ..bundle import streaming_view

    sm = manifest["streaming_model"]
    m2 = streaming_view(manifest)
    f = int(sm["new_frames"])
    idx = np.arange(min(n, len(data.val)))
    x = task.eval_inputs(data.val, recipe, idx)            # (n, 1, n_mels, T)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    got = []
    with bm(manifest["format"]).Runner(bundle_dir, m2, check_target=False) as r:
        for i in range(len(idx)):
            fr = x[i, 0]
            pad = (-fr.shape[1]) % f
            fr = np.concatenate([np.full((fr.shape[0], pad), fr.min(), np.float32), fr], 1) if pad else fr
            states = [np.zeros(s["shape"], np.float32) for s in sm["states"]]
            for t in range(0, fr.shape[1], f):
                outs = r.infer_outputs({"feats": fr[None, :, t:t + f], **{s["name"]: v for s, v in zip(sm["states"], states)}})
                states = [np.asarray(o) for o in outs[1:]]
            got.append(np.asarray(outs[0])[0])
    got = np.stack(got)
    return {"clips": int(len(idx)), "max_abs_diff": float(np.abs(got - ref).max()),
            "top1_agreement": float((got.argmax(1) == ref.argmax(1)).mean()),
            "reference": "full-window PyTorch model on the same clip"}


def _version() -> str:
    from .. import __version__

    return __version__


def _qat_reference(rd, desc):
    """The QAT run's fake-quant torch model, the right reference for its Q/DQ export."""
    from .qat import load_qat_reference

    return load_qat_reference(rd, desc)


def _gate_hint(precision: str, desc: dict) -> str:
    if precision == "int8" and not desc.get("qat"):
        return "post-training INT8 lost too much accuracy: try `edgeft qat RUN` (quantization-aware training), " \
               "more/better --calib-data, or raise --max-drop"
    if precision == "int8":
        return "QAT INT8 still exceeds the budget: see the per-layer error report of `edgeft qat`, train longer, " \
               "or keep sensitive layers in FP32"
    return "the exported model does not match PyTorch: report this with the manifest's parity section"


# ------------------------------------------------------------------------------------------ ONNX
def export_onnx(model, example, path: Path, opset: int, labels=None, preprocess=None, task=None,
                input_name: str = "input", output_name: str = "logits") -> dict:
    """torch -> ONNX with a dynamic batch. The legacy TorchScript exporter first (compact graphs,
    standard pooling ops); the dynamo exporter when it fails. Returns which one worked."""
    import onnx
    import torch

    model = model.eval()
    errors = []
    for exporter in ("torchscript", "dynamo"):
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                    contextlib.redirect_stderr(io.StringIO()):
                warnings.simplefilter("ignore")
                if exporter == "torchscript":
                    torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=opset,
                                      input_names=[input_name], output_names=[output_name],
                                      dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
                                      do_constant_folding=True)
                else:
                    batch = torch.export.Dim("batch", min=1, max=4096)
                    torch.onnx.export(model, (example,), str(path), dynamo=True, opset_version=max(opset, 18),
                                      input_names=[input_name], output_names=[output_name],
                                      dynamic_shapes={"x": {0: batch}} if _arg_name(model) == "x" else ({0: batch},),
                                      external_data=False)
            m = onnx.load(str(path))
            onnx.checker.check_model(m)
            break
        except Exception as e:  # noqa: BLE001 - try the next exporter, report both if all fail
            from ..utils.io import disk_error

            if (de := disk_error(e, path)) is not None:   # a full disk is not "an op ONNX cannot express"
                raise de from None
            errors.append(f"{exporter}: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
    else:
        raise RunError(f"ONNX export failed with both exporters ({'; '.join(errors)})",
                       hint="the model uses an op ONNX cannot express; see the errors above")
    meta = {"edgeft_version": _version(), "edgeft_task": task or "", "edgeft_labels": json.dumps(labels or []),
            "edgeft_preprocess": json.dumps(preprocess or {})}
    for k, v in meta.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    onnx.save(m, str(path))
    return {"exporter": "torchscript (legacy)" if exporter == "torchscript" else "dynamo",
            "opset": int(next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))),
            "fallback_reason": errors[0] if errors else None, "dynamic_batch": True}


def _arg_name(model) -> str:
    import inspect

    params = list(inspect.signature(model.forward).parameters)
    return params[0] if params else "x"


# ----------------------------------------------------------------------------------- calibration
def calibration_batches(task, recipe, data, calib_dir: str | None, n: int, batch: int = 16):
    """Preprocessed calibration inputs: a seeded subset of the run's train split, or a folder of images."""
    rng = np.random.default_rng(1234)
    if calib_dir:
        x = task.calib_from_dir(recipe, calib_dir, n) if hasattr(task, "calib_from_dir") else \
            _image_calib_from_dir(recipe, calib_dir, n, rng)
        src = f"folder {calib_dir}"
    else:
        if len(data.train) == 0:
            raise DataError("the run's train split is empty: nothing to calibrate INT8 with",
                            hint="pass --calib-data DIR")
        idx = np.sort(rng.permutation(len(data.train))[:n])
        x = task.eval_inputs(data.train, recipe, idx)
        src = "the run's train split (seeded subset, eval preprocessing)"
    meta = {"size": int(x.shape[0]), "source": src, "sha256": sha256_bytes(np.ascontiguousarray(x).tobytes())[:16]}
    return [x[s:s + batch] for s in range(0, len(x), batch)], meta


def _image_calib_from_dir(recipe, d: str, n: int, rng) -> np.ndarray:
    from ..data.images import IMAGE_EXTS, normalize_batch
    from ..tasks.image_cls import preprocess_of
    from ..data.images import decode_resized

    files = sorted(f for f in Path(d).rglob("*") if f.suffix.lower() in IMAGE_EXTS)
    files = [files[i] for i in np.sort(rng.permutation(len(files))[:n])]
    p = preprocess_of(recipe)
    arrs, bad = [], 0
    for f in files:
        try:
            arrs.append(decode_resized(f, p))
        except Exception:  # noqa: BLE001 - skip unreadable calibration images, counted
            bad += 1
    if not arrs:
        raise DataError(f"--calib-data {d!r}: none of the images could be read")
    if bad:
        warn(f"--calib-data: skipped {bad} unreadable image(s)")
    return normalize_batch(np.stack(arrs), p)


# --------------------------------------------------------------------------------------- parity
def parity_report(bundle_dir: Path, manifest: dict, ref_model, fp32_model, task, recipe, data, precision: str,
                  n: int, batch: int = 32) -> dict:
    """Run the artifact through the device runtime and compare with PyTorch on real validation data."""
    import torch


    val = data.val
    rng = np.random.default_rng(0)
    idx = np.sort(rng.permutation(len(val))[: min(n, len(val))])
    x = task.eval_inputs(val, recipe, idx)
    with torch.no_grad():
        ref = np.concatenate([ref_model(torch.from_numpy(x[s:s + batch])).numpy() for s in range(0, len(x), batch)])
    runner_cls, how = _parity_runner(manifest)
    with runner_cls(bundle_dir, manifest) as runner:
        got = np.concatenate([runner.infer(x[s:s + batch]) for s in range(0, len(x), batch)])
        acc_art, acc_n = _split_top1(lambda b: runner.infer(b), task, recipe, val, batch)
    with torch.no_grad():
        acc_ref, _ = _split_top1(lambda b: fp32_model(torch.from_numpy(b)).numpy(), task, recipe, val, batch)
    diff = np.abs(got - ref)
    cos = (got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1) + 1e-12)
    rep = {
        "samples": int(len(idx)), "split": "val", "reference": "pytorch fp32" if ref_model is fp32_model
        else "pytorch fake-quant (QAT)",
        "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
        "ref_max_abs_logit": float(np.abs(ref).max()),
        "cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
        "top1_agreement": float((got.argmax(1) == ref.argmax(1)).mean()),
        "accuracy": {"split": "val", "n": acc_n, "top1": acc_art, "top1_pytorch_fp32": acc_ref,
                     "drop_points": round((acc_ref - acc_art) * 100, 3)},
        "tolerance": TOLERANCE[precision], "runtime": how,
    }
    return rep


def _parity_runner(manifest: dict):
    """The runner that checks a bundle: natively when this CPU computes what the target's CPU computes, else a
    faithful simulation. Full-range INT8 (u8s8 for VNNI CPUs, s8s8 for TensorRT) saturates in the int8 kernels
    of x86 CPUs without VNNI, so there it is checked with Q/DQ (ONNX Runtime) or FakeQuantize (OpenVINO) run
    as float maths: the integer arithmetic a VNNI CPU or TensorRT performs."""
    from functools import partial

    from ..backends import backend_module as bm
    from ..errors import BundleError
    from ..targets import check_bundle, real_cpu_features

    fmt = manifest["format"]
    real = real_cpu_features()
    try:
        check_bundle(manifest, "parity", feats=real)
        return partial(bm(fmt).Runner, check_target=False), fmt
    except BundleError as e:
        why = f"this CPU cannot run it natively ({real.describe()})"
        if "int8_full_range" not in manifest["target"]["requires"]:
            raise UnsupportedError(f"cannot verify the bundle here: {e.message}") from None
    if fmt in ("onnx", "onnxruntime"):
        from ..backends.onnxruntime import Runner

        return partial(Runner, exact_qdq=True, check_target=False), \
            f"onnxruntime, Q/DQ simulated in float (exact int8 arithmetic; {why})"
    from ..backends.openvino import Runner

    return partial(Runner, exact_int8=True, check_target=False), \
        f"openvino, FakeQuantize simulated in float (exact int8 arithmetic; {why})"


def _split_top1(fn, task, recipe, split, batch: int) -> tuple[float, int]:
    correct, n = 0, len(split)
    for s in range(0, n, 256):
        idx = np.arange(s, min(s + 256, n))
        x = task.eval_inputs(split, recipe, idx)
        y = np.concatenate([fn(x[i:i + batch]) for i in range(0, len(x), batch)])
        correct += int((y.argmax(1) == split.targets[idx]).sum())
    return correct / max(n, 1), n


def _judge(par: dict, precision: str, max_drop: float | None) -> tuple[str, str | None]:
    if precision == "fp32":
        lim = TOLERANCE["fp32"]["max_abs_diff_rel"] * max(1.0, par["ref_max_abs_logit"])
        if par["max_abs_diff"] > lim or par["top1_agreement"] < TOLERANCE["fp32"]["top1_agreement_min"]:
            return "failed_parity", (f"FP32 max-abs-diff {par['max_abs_diff']:.2e} (limit {lim:.1e}), top-1 agreement "
                                     f"{par['top1_agreement']:.3f}")
    elif precision in ("fp16", "bf16"):
        t = TOLERANCE[precision]
        if par["cosine_min"] < t["cosine_min"] or par["top1_agreement"] < t["top1_agreement_min"]:
            return "failed_parity", (f"{precision.upper()} cosine min {par['cosine_min']:.5f}, top-1 agreement "
                                     f"{par['top1_agreement']:.3f}")
    if max_drop is not None and par["accuracy"]["drop_points"] > max_drop:
        a = par["accuracy"]
        return "failed_gate", (f"val top-1 {a['top1']:.4f} vs PyTorch FP32 {a['top1_pytorch_fp32']:.4f}: drop "
                               f"{a['drop_points']:.2f} points > --max-drop {max_drop}")
    return STATUS_OK, None


def _print_summary(out: Path, m: dict) -> None:
    p = m["parity"]
    a = p["accuracy"]
    size = sum(f["bytes"] for f in m["files"].values())
    result(f"exported {describe(m)} -> {out} ({size / 1e6:.2f} MB, {m['export']['seconds']}s) status: {m['status']}")
    result(f"  parity on {p['samples']} val samples vs {p['reference']}: max-abs-diff {p['max_abs_diff']:.2e}, "
           f"cosine min {p['cosine_min']:.6f}, top-1 agreement {p['top1_agreement']:.4f}")
    result(f"  val top-1 (n={a['n']}): {a['top1']:.4f} vs PyTorch FP32 {a['top1_pytorch_fp32']:.4f} "
           f"(drop {a['drop_points']:+.2f} points)")
