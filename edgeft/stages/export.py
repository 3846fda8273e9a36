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


from .. import __version__
from ..backends import BuildConfig, Precision, backend_for, check_supported
from ..bundle import STATUS_OK, BundleWriter, describe
from ..errors import GateFailed, RunError, UnsupportedError
from ..targets import bundle_target, check_precision, qat_target_name
from ..targets import resolve as resolve_target
from ..utils.env import versions
from ..utils.io import sha256_file
from ..utils.log import info, result, step
from .calib import calibration_batches
from .parity import judge, parity_report, streaming_parity

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
    desc = json.loads(p.read_text())
    if desc.get("qat"):
        from ..rundir import RunDir

        m = RunDir(run).read_metrics()
        state = m.get("status")
        if state not in ("complete", "failed_gate") or not (Path(run) / desc["qat"]["onnx"]).is_file():
            why = f" ({m['status_reason']})" if m.get("status_reason") else ""
            raise RunError(f"{str(run)!r} is an unfinished QAT run (status: {state or 'unknown'}{why}); its Q/DQ "
                           f"graph is not the trained model", hint=f"re-run `edgeft qat {desc['qat']['parent']['run']}"
                                                                   f" --out {run}` (add --resume to continue)")
    return desc


def export(run: str | Path, *, format: str = "onnx", precision: str = "fp32", calib_data: str | None = None,
           calib_size: int | None = None, out: str | Path | None = None, max_drop: float | None = None,
           parity_samples: int | None = None, opset: int | None = None, target: str | None = None,
           force: bool = False, sign_key: str | None = None, quant_options: dict | None = None) -> dict:
    """Export a run to a bundle; returns the manifest. Raises GateFailed (bundle kept, marked failed).

    ``sign_key``: an ed25519 private key file; the manifest (which holds every file's sha256) is signed.
    ``quant_options`` (INT8 PTQ, used by ``edgeft optimize``): ``{"exclude": [layer names kept in float]}``,
    ``{"accuracy_control": {"max_drop": points, "val_samples": n}}`` (OpenVINO: NNCF accuracy control on n val
    samples) or ``{"nncf_defaults": True}`` (OpenVINO: plain NNCF PTQ defaults, a peer to compare with)."""
    run = Path(run)
    desc = read_run_desc(run)
    qat = desc.get("qat")
    if qat and precision == "fp32":
        precision = "int8"  # a QAT run *is* an int8 model; say so rather than silently exporting FP32
        info("QAT run: exporting its INT8 Q/DQ graph")
    check_supported(format, precision, from_qat=bool(qat), qat_flavour=(qat or {}).get("flavour"))
    if quant_options and (precision != "int8" or qat):
        raise UnsupportedError("quantization options apply to post-training INT8 only",
                               hint="export an FP32 (or pruned) run with --int8")
    if quant_options and format == "tensorrt":
        raise UnsupportedError("mixed-precision / accuracy-control options are for the CPU runtimes",
                               hint="use --format openvino or onnxruntime")
    tgt = _qat_target(qat, target) if qat else resolve_target(target, format)
    check_precision(tgt, format, precision)
    _check_verifiable(tgt, format, precision)
    backend = backend_for(format)  # BackendUnavailable before any work
    key = None
    if sign_key is not None:
        from ..bundle import load_private_key

        key = load_private_key(sign_key)
    if calib_data is not None and precision == "int8" and not qat:
        from ..recipe import load_recipe
        from ..tasks import device_task
        from .calib import check_calib_dir

        check_calib_dir(calib_data, device_task(load_recipe(Path(run) / "recipe.yaml").task))
    out = Path(out) if out else default_out(run, format, precision, target)
    writer = BundleWriter(out, force=force)
    try:
        return _export(run, desc, backend, writer, format, precision, calib_data, calib_size, max_drop,
                       parity_samples, opset, tgt, target, key, dict(quant_options or {}))
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


def _export(run, desc, backend, writer, fmt, precision, calib_data, calib_size, max_drop, parity_samples, opset,
            tgt, requested, key=None, options=None):
    import torch

    from ..recipe import load_recipe
    from ..rundir import RunDir, load_model
    from ..tasks import get_task

    t0 = time.perf_counter()
    rd = RunDir(run)
    recipe = load_recipe(rd.recipe)
    labels = rd.read_labels()
    task = get_task(recipe.task)
    spec = task.io_spec(recipe, labels)
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
    with step(f"loading {recipe.data.source} (val split)"):
        data = task.load_data(recipe)
    tmp = writer.tmp
    onnx_tmp = tmp / ".export.onnx"
    if desc.get("qat"):
        src = rd.path / desc["qat"]["onnx"]
        onnx_tmp.write_bytes(src.read_bytes())
        exp = {"exporter": desc["qat"].get("exporter", "torchscript (legacy)"), "opset": desc["qat"].get("opset"),
               "note": "QAT Q/DQ graph exported by `edgeft qat`; consumed without re-quantizing"}
        with step("rebuilding the QAT run's fake-quant PyTorch model (the parity reference)"):
            ref_model = _qat_reference(rd, desc)
    else:
        with step(f"exporting ONNX (opset {opset})"):
            exp = export_onnx(model, task.example_input(recipe, 2), onnx_tmp, opset, labels=labels,
                              preprocess=task.preprocess_spec(recipe), task=recipe.task, io_spec=spec)
        ref_model = model
    onnx_sha = sha256_file(onnx_tmp)
    calib, calib_meta = None, None
    if precision == "int8" and not desc.get("qat"):
        with step(f"reading {calib_size} calibration samples"):
            calib, calib_meta = calibration_batches(task, recipe, data, calib_data, calib_size)
    options = options or {}
    if "accuracy_control" in options:
        ac = dict(options["accuracy_control"])
        ac["val"] = _val_items(task, recipe, data.val, int(ac.pop("val_samples", 1000)))
        options["accuracy_control"] = ac
    cfg = BuildConfig(format=fmt, precision=Precision(precision), target=tgt, calib=calib,
                      from_qat=bool(desc.get("qat")), qat_quantization=(desc.get("qat") or {}).get("quantization"),
                      options=options)
    with step(f"building {fmt}/{precision}" + (" (quantizing)" if calib is not None else "")):
        built = backend.build(onnx_tmp, tmp, cfg)
    built["model_files"].update(task.bundle_files(recipe, model, tmp))
    if fmt in ("onnx", "tensorrt") and not (tmp / "model.onnx").exists():
        onnx_tmp.rename(tmp / "model.onnx")
    if onnx_tmp.exists():
        onnx_tmp.unlink()
    stream_meta = None
    if hasattr(task, "streaming_model") and not desc.get("qat"):
        stream_meta = _export_streaming(task, recipe, model, tmp, backend, built, spec)
    quant = built.get("quantization")
    if quant and calib_meta:
        quant = {**quant, "calibration": calib_meta}
    manifest = {
        "edgeft_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "status": STATUS_OK,
        "task": recipe.task, "labels": labels, "preprocess": task.preprocess_spec(recipe),
        "inputs": spec["inputs"], "outputs": spec["outputs"],
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
    manifest.update(task.extra_manifest(recipe))
    if stream_meta:
        manifest["streaming_model"] = stream_meta
    # parity + accuracy, through the same runtime a device uses
    with step(f"parity against PyTorch on {min(parity_samples, len(data.val))} val samples, and val accuracy"):
        manifest["parity"] = parity_report(tmp, manifest, ref_model, model, task, recipe, data, precision,
                                           parity_samples, ref_cache=rd.path / "parity_reference.json")
    if stream_meta:
        manifest["parity"]["streaming"] = streaming_parity(tmp, manifest, model, task, recipe, data)
    if hasattr(task, "calibrate_bundle") and getattr(getattr(recipe, "stream", None), "calibrate", False):
        with step(f"calibrating the detection threshold on the validation streams "
                  f"(target {recipe.stream.target_fa_per_hour:g} false accepts/h)"):
            manifest["stream"] = task.calibrate_bundle(tmp, manifest, recipe, recipe.data.source)
    status, reason = judge(task, manifest["parity"], precision, max_drop)
    manifest["status"] = status
    if reason:
        manifest["status_reason"] = reason
    manifest["export"]["seconds"] = round(time.perf_counter() - t0, 1)
    m = writer.commit(manifest, sign_key=key)
    _print_summary(writer.out, m, task)
    if status != STATUS_OK:
        raise GateFailed(f"export {fmt}/{precision} {status}: {reason}; bundle kept at {writer.out} marked "
                         f"{status!r}", hint=_gate_hint(precision, desc))
    return m


def _val_items(task, recipe, val, n: int) -> list:
    """(input, label) pairs of a seeded val subset, deployment-preprocessed (NNCF accuracy control's data)."""
    import numpy as np

    idx = np.sort(np.random.default_rng(4321).permutation(len(val))[: min(n, len(val))])
    feeds = task.eval_inputs(val, recipe, idx)
    x = next(iter(feeds.values()))
    return [(x[i:i + 1], int(val.targets[j])) for i, j in enumerate(idx)]


def _macs(model, task, recipe) -> int:
    from ..models.surgery import count_macs

    return count_macs(model, task.example_input(recipe))


def _export_streaming(task, recipe, model, tmp: Path, backend, built, spec) -> dict | None:
    """Export the exact streaming (stateful) form of a streamable model next to the full-window model: one call
    per hop, audio samples in, logits and smoothed posteriors out, the state carried between calls."""
    sm = task.streaming_model(model, recipe, int(spec["outputs"][0]["shape"][-1]))
    if sm is None:
        return None
    import torch

    wrapper, facts = sm
    io_spec = wrapper.io_spec()
    (in_name, in_shape), = io_spec["inputs"]
    names = [n for n, _ in io_spec["states"]]
    args = (torch.zeros(in_shape), *(torch.zeros(s) for _, s in io_spec["states"]))
    outputs = [*io_spec["outputs"], *[n + "_out" for n in names]]      # data outputs, then the states' next values
    p = tmp / ".stream.onnx"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper.eval(), args, str(p), dynamo=False, opset_version=17,
                          input_names=[in_name, *names], output_names=outputs)
    # FP32 at every bundle precision: the front end's log(power + 1e-6) and the posterior ring need f32 (1e-6 is
    # below f16's normal range), and a 50k-MAC graph gains nothing from bf16/f16
    f = backend.convert_extra(p, tmp, "stream", "fp32")
    p.unlink()
    built["model_files"]["stream"] = f
    return {"file": f, **facts, "inputs": [in_name, *names], "outputs": outputs,
            "states": [{"name": n, "shape": list(s)} for n, s in io_spec["states"]],
            "precision": "fp32",
            "front_end": "in the graph: the hop's frames (Gather), Hann-windowed DFT as a MatMul over the bins the "
                         "mel filters use, power, mel, log" + (", DCT" if recipe.features.logmel().n_mfcc else ""),
            "note": "exact streaming form (external state, Rybakov et al. 2020): a hop's audio + state in, logits, "
                    "smoothed posteriors + state out; equals the numpy front end + the full-window model + the "
                    "detector's trailing average, hop by hop"}


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
                io_spec: dict | None = None) -> dict:
    """torch -> ONNX with the task's input/output names and a dynamic batch on every tensor whose spec starts
    with "batch". The legacy TorchScript exporter first (compact graphs, standard pooling ops); the dynamo
    exporter when it fails. Returns which one worked."""
    import onnx
    import torch

    sp = io_spec or {"inputs": [{"name": "input", "shape": ["batch"]}],
                     "outputs": [{"name": "logits", "shape": ["batch"]}]}
    in_names = [t["name"] for t in sp["inputs"]]
    out_names = [t["name"] for t in sp["outputs"]]
    dyn = {t["name"]: {0: "batch"} for t in sp["inputs"] + sp["outputs"] if t["shape"] and t["shape"][0] == "batch"}
    model = model.eval()
    errors = []
    for exporter in ("torchscript", "dynamo"):
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                    contextlib.redirect_stderr(io.StringIO()):
                warnings.simplefilter("ignore")
                if exporter == "torchscript":
                    torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=opset,
                                      input_names=in_names, output_names=out_names, dynamic_axes=dyn,
                                      do_constant_folding=True)
                else:
                    batch = torch.export.Dim("batch", min=1, max=4096)
                    torch.onnx.export(model, (example,), str(path), dynamo=True, opset_version=max(opset, 18),
                                      input_names=in_names, output_names=out_names,
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
    meta = {"edgeft_version": __version__, "edgeft_task": task or "", "edgeft_labels": json.dumps(labels or []),
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


def _print_summary(out: Path, m: dict, task) -> None:
    p = m["parity"]
    a = p["accuracy"]
    metric = a.get("metric", "top1")
    name = {"top1": "top-1", "map": "mAP"}.get(metric, metric)
    size = sum(f["bytes"] for f in m["files"].values())
    result(f"exported {describe(m)} -> {out} ({size / 1e6:.2f} MB, {m['export']['seconds']}s) status: {m['status']}")
    result(f"  parity on {p['samples']} val samples vs {p['reference']}: {task.device.summary_line(p)}")
    result(f"  val {name} (n={a['n']}): {a[metric]:.4f} vs PyTorch FP32 {a[f'{metric}_pytorch_fp32']:.4f} "
           f"(drop {a['drop_points']:+.2f} points)")
