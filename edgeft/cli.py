"""The ``edgeft`` command line: a thin typer layer over the stage functions.

Every command prints its result and the next useful command. Bad input prints one line
(``error: ...``) and exits 2 without a traceback; a failed gate or validity check exits 3 with its outputs
kept (the rule: edgeft/errors.py).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from . import __version__, nextsteps
from .errors import EdgeftError, Interrupted
from .utils import log

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None,
                  help="Fine-tune, compress, export and honestly benchmark vision and speech models for the edge.")
data_app = typer.Typer(no_args_is_help=True, help="Prepare data: export built-in sets to folders, make test media.")
app.add_typer(data_app, name="data")
devices_app = typer.Typer(no_args_is_help=True, help="Devices to bench on over SSH: edgeft devices add NAME ssh://USER@HOST")
app.add_typer(devices_app, name="devices")

SetOpt = typer.Option(None, "--set", help="override a recipe key, e.g. --set train.lr=0.01 (repeatable)")
def _d(section: str, field: str):
    """A setting's default, from the one place defaults live (the recipe sections): for --help."""
    from . import sections

    cls = {"prune": sections.PruneCfg, "qat": sections.QatCfg, "export": sections.ExportCfg}[section]
    return cls.model_fields[field].default


def _scenarios() -> list[str]:
    from .bench.scenarios import scenario_names

    return scenario_names()


TrustOpt = typer.Option(None, "--trust", help="trusted ed25519 public key (repeatable): only bundles signed by one "
                                              "of them are accepted (also EDGEFT_TRUSTED_KEYS, "
                                              "~/.config/edgeft/trusted_keys/*.pub)")


def _trust(keys):
    """--trust KEY.pub: read now (one line if unreadable), honoured by every bundle load inside the block."""
    import contextlib

    from .bundle import trusting

    return trusting(keys) if keys else contextlib.nullcontext()


def _version(v: bool):
    if v:
        typer.echo(f"edgeft {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="print the version and exit"),
          quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars or per-epoch logs (CI)")):
    log.set_quiet(quiet or log.quiet())


# ------------------------------------------------------------------------------------------ finetune
@app.command()
def finetune(
    recipe: Optional[str] = typer.Option(None, "--recipe", "-r", help="recipe YAML path or name (see `edgeft recipes`)"),
    data: Optional[str] = typer.Option(None, "--data", help="dataset folder or built-in name (overrides data.source)"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="run directory (default runs/<recipe name>)"),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="override train.epochs"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --out from its last saved epoch"),
    devices: int = typer.Option(1, "--devices", min=1, help="processes for DDP (launches torchrun; gloo on CPU)"),
    strict: bool = typer.Option(False, "--strict", help="fail on corrupt/empty files instead of skipping them"),
    set_: Optional[List[str]] = SetOpt,
):
    """Fine-tune a model (classifier, keyword spotter, detector): edgeft finetune --recipe image_cls/resnet18 --out runs/r18"""
    if devices > 1 and "LOCAL_RANK" not in os.environ:
        raise typer.Exit(_launch_torchrun(devices))
    from . import api

    m = api.finetune(recipe, out=out, data=data, epochs=epochs, resume=resume,
                     overrides=[*(set_ or ()), *(["data.strict=true"] if strict else [])])
    if m:
        o = out or Path("runs") / (m.get("recipe") or "run")
        log.result(f"run: {o}")
        log.next_step(*nextsteps.after_finetune(o))



def _launch_torchrun(n: int) -> int:
    import subprocess

    args = [a for a in sys.argv[1:]]
    cleaned, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        if a == "--devices":
            skip = True
            continue
        if a.startswith("--devices="):
            continue
        cleaned.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", "-m", "edgeft",
           *cleaned]
    log.info(f"launching {n} processes: {' '.join(cmd[2:])}")
    return subprocess.call(cmd)


# ------------------------------------------------------------------------------------- prune / qat
@app.command()
def prune(
    run: Path = typer.Argument(..., help="run directory to prune (from finetune)"),
    ratio: Optional[float] = typer.Option(None, "--ratio", help="fraction of channels to remove per layer "
                                           f"(recipe compress.prune.ratio, else {_d('prune', 'ratio')})"),
    method: Optional[str] = typer.Option(None, "--method", help="magnitude | taylor | bn_scale | random"),
    round_to: Optional[int] = typer.Option(None, "--round-to", min=1, help=f"keep channel counts multiples of N "
                                            f"({_d('prune', 'round_to')})"),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=0, help=f"recovery fine-tuning epochs per step "
                                         f"({_d('prune', 'epochs')})"),
    iterative: Optional[int] = typer.Option(None, "--iterative", min=1, help=f"prune in K steps ({_d('prune', 'iterative')})"),
    lr: Optional[float] = typer.Option(None, "--lr", min=0, help="recovery LR (default train.lr / 10)"),
    distill: Optional[float] = typer.Option(None, "--distill", min=0, max=1, help="KD weight from the unpruned model"),
    global_pruning: Optional[bool] = typer.Option(None, "--global/--per-layer", help="rank channels globally instead "
                                                  "of per layer (recipe compress.prune.global_pruning)"),
    target_macs: Optional[float] = typer.Option(None, "--target-macs", help="search the ratio: MACs fraction (<=1) "
                                                "or absolute MACs"),
    target_latency: Optional[float] = typer.Option(None, "--target-latency", help="search the ratio: ONNX Runtime "
                                                   "p50 ms"),
    max_drop: Optional[float] = typer.Option(None, "--max-drop", min=0, help="fail if the validation metric (top-1, mAP...) drops more (points)"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="new run directory (default RUN-prunedNN)"),
    resume: bool = typer.Option(False, "--resume", help="continue an interrupted prune in --out"),
):
    """Structured channel pruning + recovery fine-tuning: edgeft prune runs/r18 --ratio 0.5 --epochs 2"""
    from . import api

    m = api.prune(run, out=out, ratio=ratio, method=method, round_to=round_to, epochs=epochs, iterative=iterative,
                  lr=lr, distill=distill, global_pruning=global_pruning, max_drop=max_drop, target_macs=target_macs,
                  target_latency_ms=target_latency, resume=resume)
    o = out or Path(str(run) + f"-pruned{int(round(m['config']['ratio'] * 100))}")
    log.next_step(f"edgeft qat {nextsteps.q(o)} --epochs 1", f"edgeft export {nextsteps.q(o)} --format openvino --int8")


@app.command()
def qat(
    run: Path = typer.Argument(..., help="FP32 (or pruned) run directory"),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=0, help=f"QAT epochs (recipe compress.qat.epochs, "
                                         f"else {_d('qat', 'epochs')})"),
    lr: Optional[float] = typer.Option(None, "--lr", min=0, help="QAT LR (default train.lr / 100)"),
    flavour: Optional[str] = typer.Option(None, "--flavour", help="cpu (ORT/OpenVINO) | tensorrt (symmetric s8s8)"),
    target: Optional[str] = typer.Option(None, "--target", help="device class the INT8 weights are for: host "
                                         "(default) | x86-avx2 (7-bit) | x86-vnni | x86-bf16 | x86-amx | arm64"),
    calib_size: Optional[int] = typer.Option(None, "--calib-size", min=1, help=f"samples for the PTQ init "
                                              f"({_d('qat', 'calib_size')})"),
    max_drop: Optional[float] = typer.Option(None, "--max-drop", min=0, help="fail if the validation metric (top-1, mAP...) drops more (points)"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="new run directory (default RUN-qat)"),
    resume: bool = typer.Option(False, "--resume", help="continue an interrupted QAT in --out"),
):
    """Quantization-aware training (NNCF) -> Q/DQ ONNX: edgeft qat runs/r18-pruned50 --epochs 1"""
    from . import api

    m = api.qat(run, out=out, epochs=epochs, lr=lr, flavour=flavour, target=target, calib_size=calib_size,
                max_drop=max_drop, resume=resume)
    trt = m["flavour"] == "tensorrt"
    o = out or Path(str(run) + ("-qat-trt" if trt else "-qat"))
    fmt = "tensorrt" if trt else "openvino"
    log.next_step(*([] if trt else [f"edgeft export {nextsteps.q(o)} --format openvino --int8"]),
                  f"edgeft export {nextsteps.q(o)} --format onnxruntime --int8",
                  *([f"edgeft export {nextsteps.q(o)} --format tensorrt --int8  (on a machine with an NVIDIA GPU and "
                     f"TensorRT)"] if trt else []))


@app.command()
def optimize(
    run: Path = typer.Argument(..., help="FP32 run directory (from finetune or prune)"),
    max_drop: Optional[float] = typer.Option(None, "--max-drop", help="accuracy budget: points of val top-1 the "
                                             "chosen bundle may lose vs the run's PyTorch FP32 model (recipe "
                                             "optimize.max_drop, else 1.0)"),
    backend: Optional[List[str]] = typer.Option(None, "--backend", help="openvino | onnxruntime (repeatable; "
                                                "default both)"),
    target: Optional[str] = typer.Option(None, "--target", help="device class the bundles are for (default: host)"),
    device: Optional[str] = typer.Option(None, "--device", help="time the candidates on this device "
                                         "(`edgeft devices add`) instead of here"),
    time_budget: Optional[str] = typer.Option(None, "--time-budget", help="stop trying new steps after this long, "
                                              "e.g. 30m, 1h, 900s (the latency and report runs are reserved)"),
    prune: Optional[bool] = typer.Option(None, "--prune/--no-prune", help="bisect a pruning ratio against the budget"),
    prune_epochs: Optional[int] = typer.Option(None, "--prune-epochs", help="recovery fine-tuning epochs per pruning probe"),
    max_ratio: Optional[float] = typer.Option(None, "--max-ratio", help="largest pruning ratio tried"),
    max_probes: Optional[int] = typer.Option(None, "--max-probes", help="pruning probes (each one a recovery fine-tune)"),
    distill: Optional[float] = typer.Option(None, "--distill", help="KD weight from the unpruned model during recovery"),
    qat: Optional[bool] = typer.Option(None, "--qat/--no-qat", help="QAT when no post-training INT8 meets the budget"),
    qat_epochs: Optional[int] = typer.Option(None, "--qat-epochs", help="QAT epochs"),
    mixed: Optional[bool] = typer.Option(None, "--mixed/--no-mixed", help="INT8 mixed precision when plain PTQ misses"),
    profile: Optional[str] = typer.Option(None, "--profile", help="bench profile of the candidates' latency run"),
    report_profile: Optional[str] = typer.Option(None, "--report-profile", help="bench profile of the test-split report"),
    report_data: Optional[str] = typer.Option(None, "--report-data", help="test data for the report (default: the "
                                              "recipe's bench data)"),
    select: Optional[str] = typer.Option(None, "--select", help="within budget: upper (default: the paired 95% "
                                         "upper bound of the val drop) | point (the point estimate)"),
    threads: Optional[int] = typer.Option(None, "--threads", help="inference threads (default: all cores)"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="search folder (default RUN/optimize)"),
    resume: bool = typer.Option(False, "--resume", help="continue an interrupted search in --out"),
):
    """The fastest bundle within an accuracy budget: edgeft optimize runs/r18 --max-drop 1.0 --time-budget 30m"""
    from . import api

    api.optimize(run, max_drop=max_drop, backends=tuple(backend) if backend else None, target=target,
                       device=device, time_budget=time_budget, prune=prune, prune_epochs=prune_epochs,
                       max_ratio=max_ratio, max_probes=max_probes, distill=distill, qat=qat, qat_epochs=qat_epochs,
                       mixed=mixed, profile=profile, report_profile=report_profile, report_data=report_data,
                       select=select, threads=threads, out=out, resume=resume)
    o = Path(out or Path(run) / "optimize")
    chosen = o / "chosen"
    log.next_step(*nextsteps.after_export(Path(run), chosen), f"edgeft serve {nextsteps.q(chosen)}")


# -------------------------------------------------------------------------------------------- export
@app.command()
def export(
    run: Path = typer.Argument(..., help="run directory (from finetune, prune or qat)"),
    format: str = typer.Option("onnx", "--format", "-f", help="onnx | onnxruntime | openvino | tensorrt"),
    fp16: bool = typer.Option(False, "--fp16", help="FP16 precision"),
    bf16: bool = typer.Option(False, "--bf16", help="BF16 compute (OpenVINO on CPUs with AVX512_BF16 or AMX)"),
    int8: bool = typer.Option(False, "--int8", help="INT8 (post-training quantization, or the QAT graph)"),
    calib_data: Optional[str] = typer.Option(None, "--calib-data", help="folder of calibration images "
                                             "(default: the run's train split)"),
    calib_size: Optional[int] = typer.Option(None, "--calib-size", min=1, help=f"calibration samples "
                                             f"(default {_d('export', 'calib_size')})"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="bundle folder (default RUN/bundles/FORMAT-PRECISION)"),
    max_drop: Optional[float] = typer.Option(None, "--max-drop", min=0, help="fail if the validation metric (top-1, mAP...) drops more (points)"),
    parity_samples: Optional[int] = typer.Option(None, "--parity-samples", min=1, help=f"val samples for parity "
                                                  f"({_d('export', 'parity_samples')})"),
    target: Optional[str] = typer.Option(None, "--target", help="device class the bundle is for: host (this CPU, "
                                         "default) | x86-avx2 | x86-vnni | x86-bf16 | x86-amx | arm64 | tensorrt; "
                                         "decides the INT8 weight range, Q/DQ flavour and bf16/fp16 compute"),
    force: bool = typer.Option(False, "--force", help="replace an existing bundle (never anything else)"),
    sign_key: Optional[Path] = typer.Option(None, "--sign-key", help="ed25519 private key: sign the manifest "
                                            "(edgeft keygen, or ssh-keygen -t ed25519)"),
):
    """Export a run to a verified bundle: edgeft export runs/r18 --format openvino --int8"""
    from . import api
    from .errors import UnsupportedError

    if fp16 + bf16 + int8 > 1:
        given = " and ".join(f for f, on in (("--fp16", fp16), ("--bf16", bf16), ("--int8", int8)) if on)
        raise UnsupportedError(f"{given} are mutually exclusive", hint="pick one precision per bundle")
    precision = "int8" if int8 else "fp16" if fp16 else "bf16" if bf16 else "fp32"
    m = api.export(run, format=format, precision=precision, calib_data=calib_data, calib_size=calib_size, out=out,
                   max_drop=max_drop, parity_samples=parity_samples, target=target, force=force,
                   sign_key=str(sign_key) if sign_key else None)
    b = out or m.get("_out") or _bundle_path(run, format, m["precision"], target)
    log.next_step(*nextsteps.after_export(Path(run), Path(b)))


def _bundle_path(run, fmt, precision, target):
    from .stages.export import default_out

    return default_out(Path(run), fmt, precision, target)


@app.command()
def build(bundle: Path = typer.Argument(..., help="a TensorRT bundle (format tensorrt)")):
    """(Re)build a TensorRT engine on this device from the bundle's ONNX: edgeft build BUNDLE"""
    from .backends import backend_for
    from .backends import tensorrt as trt
    from .bundle import read_manifest, write_manifest
    from .errors import UnsupportedError

    m = read_manifest(bundle)
    if m["format"] != "tensorrt":
        raise UnsupportedError(f"{bundle} is a {m['format']} bundle; only TensorRT engines are device-specific",
                               hint="export a TensorRT bundle: edgeft export RUN --format tensorrt")
    backend_for("tensorrt")        # BackendUnavailable (exit 2) with the install hint
    old = (m.get("engine") or {}).get("gpu")
    log.info(f"building the TensorRT engine for this GPU from {m['model_files']['onnx']} (takes a while) ...")
    built = trt.rebuild(bundle, m)
    m["engine"] = built["engine"]
    if built.get("quantization"):
        m["quantization"] = built["quantization"]
    m.pop("files", None)
    write_manifest(bundle, m)
    e = m["engine"]
    log.result(f"built {bundle}/model.engine for {e['gpu']} (compute {e['compute_capability']}, TensorRT "
               f"{e['tensorrt']}) in {e['build_seconds']}s" + (f"; was built for {old}" if old and old != e["gpu"] else ""))
    log.next_step(f"edgeft bench {nextsteps.q(bundle)}{nextsteps.data_opt(Path(bundle))}")


@app.command()
def keygen(out: Path = typer.Option(..., "--out", "-o", help="private key file to write (KEY; KEY.pub beside it)"),
           force: bool = typer.Option(False, "--force", help="overwrite an existing key")):
    """Make an ed25519 key pair for signing bundles: edgeft keygen --out ~/.config/edgeft/signing.key"""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from .bundle import _raw_public, key_id
    from .errors import DataError
    from .utils.io import atomic_write_bytes

    pub_path = Path(str(out) + ".pub")
    for p in (out, pub_path):
        if p.exists() and not force:
            raise DataError(f"{str(p)!r} already exists", hint="pass --force to overwrite it, or another --out")
    k = Ed25519PrivateKey.generate()
    priv = k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    pub = k.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    old = os.umask(0o077)
    try:
        atomic_write_bytes(out, priv)
    finally:
        os.umask(old)
    os.chmod(out, 0o600)
    atomic_write_bytes(pub_path, pub)
    log.result(f"wrote {out} (private, keep it safe) and {pub_path}; key id {key_id(_raw_public(k.public_key()))}")
    log.next_step(f"edgeft export RUN --format openvino --int8 --sign-key {out}",
                  f"edgeft predict BUNDLE IMAGE --trust {pub_path}")


@app.command()
def sign(bundle: Path = typer.Argument(..., help="bundle folder to sign"),
         key: Path = typer.Option(..., "--key", help="ed25519 private key (edgeft keygen / ssh-keygen -t ed25519)")):
    """Sign a bundle's manifest (and through it every file's checksum): edgeft sign BUNDLE --key KEY"""
    from .bundle import FolderLock, load_private_key, read_manifest, write_manifest

    k = load_private_key(key)
    read_manifest(bundle, trust={})   # a clear error for a missing or broken bundle before taking its lock
    lock = FolderLock(bundle)
    lock.acquire()
    try:
        m = read_manifest(bundle, trust={})     # its files and digest must verify before we vouch for them
        m = write_manifest(bundle, m, sign_key=k, files=m["files"])   # exactly the table that was verified
    finally:
        lock.release()
    sig = m["integrity"]["signature"]
    log.result(f"signed {bundle} with key {sig['key_id']}")
    log.next_step(f"edgeft predict {bundle} IMAGE --trust {key}.pub")


# ------------------------------------------------------------------------------------------- predict
@app.command()
def predict(
    bundle: Path = typer.Argument(..., help="bundle folder (from edgeft export)"),
    inputs: List[Path] = typer.Argument(..., help="image files or folders (audio: .wav files)"),
    top_k: int = typer.Option(5, "--top-k", "-k", min=1),
    json_out: bool = typer.Option(False, "--json", help="machine-readable output"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1),
    allow_failed: bool = typer.Option(False, "--allow-failed", help="use a bundle marked failed by its gate"),
    trust: Optional[List[Path]] = TrustOpt,
):
    """Classify images (or audio clips) with a bundle, torch-free: edgeft predict BUNDLE img.png"""
    args = {k: v for k, v in locals().items() if k != "trust"}
    with _trust(trust):
        _predict_body(**args)


def _predict_body(bundle, inputs, top_k, json_out, threads, allow_failed):
    import json as _json

    from . import runtime
    from .errors import DataError

    for p in inputs:
        if not p.exists():
            raise DataError(f"input {str(p)!r} does not exist", hint="pass files or folders")
    with runtime.load(bundle, threads=threads, allow_failed=allow_failed) as model:
        exts, word = model.task.input_exts, model.task.input_word
        files: list[Path] = []
        for p in inputs:
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in exts) if p.is_dir() else [p]
        if not files:
            raise DataError(f"no {word} found in {', '.join(map(str, inputs))}",
                            hint=f"a {model.task_name} bundle reads {', '.join(sorted(exts))}")
        preds, skipped = [], []
        for f in files:
            try:
                preds.append((f, model.predict([f], top_k=top_k)[0]))
            except DataError as e:      # unreadable input (corrupt, bomb, truncated wav): skipped and counted
                skipped.append((f, e.message))
    if not preds:
        raise DataError(f"none of the {len(files)} input(s) could be read: {skipped[0][1]}",
                        hint=f"pass readable {word}")
    task = model.task
    if json_out:
        log.result(_json.dumps([{"input": str(f), **task.prediction_json(pr)} for f, pr in preds]
                               + [{"input": str(f), "error": why} for f, why in skipped], indent=1))
    else:
        for f, pr in preds:
            log.result(f"{f}: {task.format_prediction(pr)}")
    if skipped:
        log.warn(f"skipped {len(skipped)} unreadable input(s): " + "; ".join(why for _, why in skipped[:3]))
    folder_acc = _class_folder_accuracy(preds, model.labels, any(p.is_dir() for p in inputs), top_k)
    if folder_acc:
        log.result(folder_acc)
    if not json_out:
        if model.task_name == "kws":
            log.next_step(f"edgeft bench {nextsteps.q(bundle)} --scenario audio_stream --profile quick")
        else:
            log.next_step(f"edgeft bench {nextsteps.q(bundle)}{nextsteps.data_opt(Path(bundle))}")


def _class_folder_accuracy(preds, labels, from_dir: bool, top_k: int) -> str | None:
    """A folder tree of class sub-folders named after the labels (what `data export-images` writes): the accuracy
    of the predictions against the folder names, with its 95% Wilson interval."""
    from .stats import wilson_ci

    if not from_dir or not preds or not isinstance(preds[0][1], list) or not preds[0][1] \
            or not isinstance(preds[0][1][0], tuple):
        return None
    lab = set(labels)
    scored = [(f.parent.name, [p[0] for p in pr]) for f, pr in preds if f.parent.name in lab]
    if not scored:
        return None
    n = len(scored)
    k1 = sum(top[0] == truth for truth, top in scored)
    lo, hi = wilson_ci(k1, n)
    line = f"accuracy against the class folders: top-1 {k1 / n:.4f} [95% CI {lo:.4f}, {hi:.4f}] ({k1}/{n})"
    if top_k > 1:
        kk = sum(truth in top for truth, top in scored)
        line += f", top-{top_k} {kk / n:.4f}"
    if n < len(preds):
        line += f"; {len(preds) - n} file(s) outside a label-named folder not scored"
    return line



@app.command()
def doctor():
    """Which backends, data and tools are usable here, and why not otherwise."""
    from . import backends
    from .backends.base import support_table
    from .data.images import find_fashion_mnist
    from .utils.env import fingerprint, versions

    from .targets import cpu_features, host_target, real_cpu_features

    fp = fingerprint()
    log.result(f"machine: {fp['cpu_model']} ({fp['cores_logical']} cores, ISA {','.join(fp['isa'])}), {fp['os']}")
    real, pol = real_cpu_features(), cpu_features()
    log.result(f"cpu class: {host_target(real).name} — {host_target(real).description}; features "
               f"{', '.join(sorted(real.features)) or 'baseline'}")
    if pol.simulated:
        log.result(f"simulated: EDGEFT_CPU_FEATURES={pol.simulated} -> policy uses class {host_target(pol).name} "
                   f"({', '.join(sorted(pol.features)) or 'baseline'})")
    for name, why in backends.report().items():
        log.result(f"backend {name:12s} {'ok' if why is None else 'unavailable: ' + why}")
    fm = find_fashion_mnist()
    log.result(f"Fashion-MNIST: {fm or 'not found (sudo apt-get install dataset-fashion-mnist)'}")
    import shutil

    import sysconfig

    # tools installed into this environment (benchmark_app) are found even when it is not activated
    here = os.pathsep.join(dict.fromkeys([sysconfig.get_path("scripts"), str(Path(sys.prefix) / "bin"),
                                          str(Path(sys.executable).parent)]))
    for tool in ("espeak-ng", "flite", "g++", "benchmark_app", "ssh"):
        log.result(f"tool {tool:13s} {shutil.which(tool) or shutil.which(tool, path=here) or 'not found'}")
    log.result("versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()))
    log.result(f"format x precision on this CPU ({host_target(pol).name}; fast = native, f32 = FP16 weights computed "
               f"in f32, 7bit = INT8 with 7-bit weights, no = refused here, – = backend not installed):\n"
               + support_table(host_target(pol), installed=[b for b, why in backends.report().items() if why is None]))
    if backends.report().get("openvino") is None:
        from .bench.harness import default_threads
        from .bench.roofline import peak_gmacs

        roof = peak_gmacs(default_threads())
        log.result(f"peak GMAC/s ({roof['gemm']} GEMM, {roof['threads']} threads): " + ", ".join(
            f"{p} {v['gmacs']}" if v.get("gmacs") else f"{p} unavailable ({v.get('unavailable', '')})"
            for p, v in roof["peaks"].items()))
    log.next_step("edgeft recipes")


# --------------------------------------------------------------------------------------------- bench
@app.command()
def bench(
    artifacts: List[Path] = typer.Argument(None, help="bundles and/or run folders (a run = PyTorch FP32 reference)"),
    data: Optional[str] = typer.Option(None, "--data", help="folder of class sub-folders or built-in name[:split] "
                                       "(default: the model's built-in dataset, test split)"),
    scenario: str = typer.Option("single_stream", "--scenario", help=" | ".join(_scenarios() + ["server"])),
    profile: str = typer.Option("dev", "--profile", help="smoke (CI, ~3 s/artifact) | quick (3 x 3 s, >= 300 samples) | dev (5 x 10 s, >= 5 x 1024) | report (5 x 120 s)"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="threads for every backend (default: all cores)"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="result folder (default runs/bench/<run id>)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="result JSON path"),
    md_out: Optional[Path] = typer.Option(None, "--md", help="Markdown table path"),
    plots_dir: Optional[Path] = typer.Option(None, "--plots", help="folder for PNG plots"),
    batch: int = typer.Option(32, "--batch", min=1, help="batch size for the accuracy run and --scenario offline"),
    data_limit: Optional[int] = typer.Option(None, "--data-limit", min=1, help="accuracy run on N samples only"),
    fps: float = typer.Option(30.0, "--fps", help="camera: offered frames per second"),
    duration: Optional[float] = typer.Option(None, "--duration", help="camera: seconds per artifact (profile default)"),
    handoff: str = typer.Option("latest", "--handoff", help="camera: latest | fifo:N | block"),
    source: Optional[str] = typer.Option(None, "--source", help="camera: video file (pre-decoded)"),
    deadline_ms: Optional[float] = typer.Option(None, "--deadline-ms", help="camera: deadline (default one period)"),
    stream: Optional[str] = typer.Option(None, "--stream", help="audio_stream: stream .wav (its truth .json beside)"),
    replay: str = typer.Option("both", "--replay", help="audio_stream: realtime | asfast | both"),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="audio_stream: detection threshold"),
    streams: str = typer.Option("1,auto", "--streams", help="throughput: inference streams to try, e.g. 1,2,auto "
                                "(auto: OpenVINO's choice; ORT one per thread)"),
    batches: str = typer.Option("1", "--batches", help="throughput: batch sizes to sweep, e.g. 1,4,8"),
    profile_layers: bool = typer.Option(False, "--profile-layers", help="also time each layer of every bundle "
                                        "(OpenVINO performance counters, ONNX Runtime profiler): layers_*.md"),
    url: Optional[str] = typer.Option(None, "--url", help="server: the predict URL of `edgeft serve` "
                                      "(http://HOST:PORT/v1/models/NAME/predict)"),
    clients: int = typer.Option(8, "--clients", help="server: concurrent clients (closed loop)"),
    qps: Optional[float] = typer.Option(None, "--qps", help="server: open loop, Poisson arrivals at this rate"),
    latency_bound_ms: Optional[float] = typer.Option(None, "--latency-bound-ms", help="server: p99 bound to check"),
    api_key_file: Optional[Path] = typer.Option(None, "--api-key-file", help="server: file whose first key is sent"),
    allow_failed: bool = typer.Option(False, "--allow-failed", help="include bundles marked failed by a gate"),
    allow_dvfs: bool = typer.Option(False, "--allow-dvfs", help="allow --profile report without the performance governor"),
    device: Optional[List[str]] = typer.Option(None, "--device", help="run on a device over SSH: ssh://USER@HOST[:PORT] "
                                               "or a name from `edgeft devices list` (repeatable: in parallel)"),
    trust: Optional[List[Path]] = TrustOpt,
):
    """Accuracy + latency of several artifacts in one interleaved run: edgeft bench RUN BUNDLE... --data DIR"""
    args = {k: v for k, v in locals().items() if k != "trust"}
    with _trust(trust):
        _bench_body(**args)


def _bench_body(artifacts, data, scenario, profile, threads, out, json_out, md_out, plots_dir, batch, data_limit, fps,
                duration, handoff, source, deadline_ms, stream, replay, threshold, streams, batches, profile_layers,
                url, clients, qps, latency_bound_ms, api_key_file, allow_failed, allow_dvfs, device):
    from .bench.harness import BenchConfig, bench as run_bench
    from .bench.report import markdown, plots, save_json, save_markdown
    from .errors import DataError

    if scenario == "server" or url is not None:
        return _bench_server(artifacts, scenario, url, data, profile, clients, qps, duration, latency_bound_ms,
                             api_key_file, out, json_out)

    if not artifacts:
        raise DataError("no artifacts given", hint="edgeft bench RUN_DIR BUNDLE_DIR... (see `edgeft bench --help`)")
    cfg = BenchConfig(data=data or _default_data(artifacts), scenario=scenario, profile=profile, threads=threads,
                      batch=batch, data_limit=data_limit, fps=fps, duration=duration, handoff=handoff, source=source,
                      deadline_ms=deadline_ms, stream=stream, replay=replay, threshold=threshold,
                      streams=streams, batches=batches, allow_failed=allow_failed, allow_dvfs=allow_dvfs, command="edgeft " + " ".join(sys.argv[1:]))
    if device:
        return _bench_devices(artifacts, cfg, device, out, json_out, md_out)
    for where in (out or Path("runs") / "bench", json_out, md_out, plots_dir):
        if where is not None:
            _check_writable(where)
    doc = run_bench([str(a) for a in artifacts], cfg)
    o = out or Path("runs") / "bench" / doc["run_id"].replace(":", "")
    jp = json_out or o / "result.json"
    save_json(doc, jp)
    save_markdown([doc], md_out or o / "result.md")
    made = []
    try:
        made = plots(doc, plots_dir or o / "plots")
    except ImportError:
        log.warn("matplotlib not installed: plots skipped (pip install 'edgeft[runtime]')")
    log.result(markdown([doc]))
    log.result(f"results: {jp}" + (f"; plots: {', '.join(str(p) for p in made)}" if made else ""))
    if profile_layers:
        _profile_layers(artifacts, cfg, o)
    _raise_if_invalid([doc], str(jp))
    log.next_step(f"edgeft report {nextsteps.q(jp)}  (add result JSONs from other machines: one table)")


def _profile_layers(artifacts, cfg, out_dir: Path) -> None:
    """--profile-layers: each bundle's per-layer times on one real sample of --data (after the bench, untimed)."""
    from .bench import layers
    from .bench.data import load_samples
    from .bundle import MANIFEST, read_manifest
    from .tasks import device_task

    for a in artifacts:
        if not (Path(a) / MANIFEST).is_file():
            continue
        m = read_manifest(a)
        s = load_samples(cfg.data, m["task"], list(m["labels"]), 1)
        feeds = device_task(m["task"]).preprocessor(m)([s.raw(0)])
        prof = layers.profile_layers(a, feeds, threads=cfg.threads)
        p = layers.write(prof, out_dir, Path(a).name if Path(a).parent.name != "bundles"
                         else f"{Path(a).parent.parent.name}_{Path(a).name}")
        log.result(layers.markdown(prof, top=10))
        log.result(f"per-layer table: {p}")


def _raise_if_invalid(docs: list[dict], where: str) -> None:
    """A bench whose result is not valid exits 3 (its files are written): CI can gate on `edgeft bench`."""
    from .errors import CheckFailed

    bad = [c for d in docs for c in d["validity"]["checks"] if not c["passed"] and not c.get("warn_only")]
    if bad:
        shown = "; ".join(f"{c['name']} ({c.get('detail', '')})" for c in bad[:3])
        raise CheckFailed(f"bench finished but the result is not valid: {shown}"
                          f"{f' (+{len(bad) - 3} more)' if len(bad) > 3 else ''}; results kept at {where}",
                          hint="fix what the check names (e.g. a lower --fps, --threads matching the runtime), "
                               "or read the table above")


def _bench_server(artifacts, scenario, url, data, profile, clients, qps, duration, latency_bound_ms, api_key_file,
                  out, json_out) -> None:
    """--scenario server: load on a running `edgeft serve` (MLPerf Server style), results written like a bench."""
    import time as _time

    from .bench.server_load import markdown, server_bench
    from .bench.timing import PROFILES
    from .errors import CheckFailed, UnsupportedError
    from .serve import read_keys
    from .utils.io import atomic_write_json, atomic_write_text

    if scenario != "server":
        raise UnsupportedError(f"--url with --scenario {scenario}: --url is for --scenario server",
                               hint="add --scenario server")
    if url is None:
        raise UnsupportedError("--scenario server needs --url http://HOST:PORT/v1/models/NAME/predict",
                               hint="start a server with `edgeft serve BUNDLE`; it prints the URL")
    if artifacts:
        raise UnsupportedError("--scenario server benches a running server: pass --url, not artifacts",
                               hint="edgeft bench --scenario server --url URL")
    if profile not in PROFILES:
        raise UnsupportedError(f"unknown profile {profile!r}. Valid: {', '.join(PROFILES)}")
    keys = read_keys(api_key_file, "--api-key-file") if api_key_file else []
    o = out or Path("runs") / "bench" / (_time.strftime("%Y-%m-%dT%H%M%SZ", _time.gmtime()) + "-server")
    for where in (o, json_out):
        if where is not None:
            _check_writable(where)
    r = server_bench(url, data=data, profile=profile, clients=clients, qps=qps, duration=duration,
                     latency_bound_ms=latency_bound_ms, api_key=keys[0] if keys else None)
    from .utils.env import fingerprint

    r["client_machine"] = fingerprint()
    r["profile"] = profile
    jp = json_out or o / "result.json"
    atomic_write_json(jp, r)
    atomic_write_text(o / "result.md", markdown(r))
    log.result(markdown(r))
    log.result(f"results: {jp}")
    if r.get("bound_held") is False or r["ok"] == 0:
        raise CheckFailed(f"server bench: {'no request succeeded' if r['ok'] == 0 else 'the p99 latency bound was missed'}"
                          f" (p99 {r['latency_ms']['p99']} ms, errors {r['errors']}); results kept at {jp}",
                          hint="lower --qps / --clients, or enable dynamic batching (edgeft serve --max-batch 8)")
    log.next_step(f"edgeft bench --scenario server --url {nextsteps.q(url)} --qps "
                  f"{max(1, int(r['throughput_rps'] * 0.8))} --latency-bound-ms "
                  f"{max(1, int((r['latency_ms']['p99'] or 10) * 2))} --profile {profile}  (open loop at 80% of the "
                  f"closed-loop throughput)")


def _bench_devices(artifacts, cfg, devices, out, json_out, md_out) -> None:
    """`bench --device`: the same bench on each device (in parallel), results copied back, one merged table."""
    import time as _time

    from .bench.report import markdown, save_markdown
    from .errors import UnsupportedError
    from .remote import bench_remote

    if json_out:
        raise UnsupportedError("--json with --device: each device writes OUT/<device>/result.json",
                               hint="use --out DIR")
    cfg.validate()
    o = out or Path("runs") / "bench" / (_time.strftime("%Y-%m-%dT%H%M%SZ", _time.gmtime()) + "-devices")
    _check_writable(o)
    docs = bench_remote([str(a) for a in artifacts], cfg, list(devices), o)
    for d in docs:
        save_markdown([d], o / d["remote"]["device"] / "result.md")
    save_markdown(docs, md_out or o / "result.md")
    log.result(markdown(docs))
    log.result("results: " + ", ".join(str(o / d["remote"]["device"] / "result.json") for d in docs))
    _raise_if_invalid(docs, str(o))
    log.next_step(f"edgeft report {' '.join(nextsteps.q(o / d['remote']['device'] / 'result.json') for d in docs)}"
                  f"  (add this machine's result JSON: one table across machines)")


def _check_writable(d: Path) -> None:
    """Results must have somewhere to go before minutes of benchmarking: try a file in the nearest existing folder
    (os.access says yes to root on read-only or special file systems)."""
    import tempfile

    from .errors import DataError

    p = Path(d).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        if not p.is_dir():
            raise NotADirectoryError(f"{p} is not a folder")
        fd, tmp = tempfile.mkstemp(prefix=".edgeft-write-test-", dir=p)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise DataError(f"cannot write results under {str(d)!r}: {str(p)!r} is not writable "
                        f"({e.strerror or e})", hint="pass --out DIR on a writable disk (checked before any work)") \
            from None


def _default_data(artifacts) -> str:
    """The built-in dataset the artifacts were trained on (test split), if any."""
    import json as _json

    from .data.images import BUILTIN
    from .errors import DataError

    for a in artifacts:
        if not Path(a).exists():
            from .errors import RunError

            raise RunError(f"artifact {str(a)!r} does not exist",
                           hint="pass bundle folders (edgeft export) or run folders (edgeft finetune)")
    for a in artifacts:
        a = Path(a)
        src = None
        if (a / "manifest.json").is_file():
            src = (_json.loads((a / "manifest.json").read_text()).get("source") or {}).get("data")
        elif (a / "recipe.yaml").is_file():
            import yaml

            src = ((yaml.safe_load((a / "recipe.yaml").read_text()) or {}).get("data") or {}).get("source")
        from .tasks import builtin_source_task

        if src in BUILTIN or builtin_source_task(src):
            return f"{src}:test"
    raise DataError("--data is required: the artifacts were not trained on a built-in dataset",
                    hint="pass --data DIR (class sub-folders named after the labels)")


@app.command()
def report(results: List[Path] = typer.Argument(..., help="result JSON files (from several machines)"),
           md_out: Optional[Path] = typer.Option(None, "--md", help="write the merged Markdown table here")):
    """Merge bench results from several machines into one table: edgeft report a.json b.json"""
    from .bench.report import markdown, merge, save_markdown

    docs = merge(results)
    log.result(markdown(docs))
    if md_out:
        save_markdown(docs, md_out)
        log.result(f"written: {md_out}")
    log.next_step("edgeft devices list  (bench the same artifacts on another machine with --device NAME, then "
                  "report all the result files together)")


@app.command()
def camera(
    bundle: Path = typer.Argument(..., help="image-classification or detection bundle (boxes drawn)"),
    source: str = typer.Option(..., "--source", help="video file, or a camera index (0, 1, ...)"),
    fps: float = typer.Option(30.0, "--fps", min=0.1, help="video files: playback rate (cameras run at their own rate)"),
    duration: float = typer.Option(30.0, "--duration", min=0.1, help="seconds"),
    handoff: str = typer.Option("latest", "--handoff", help="latest | fifo:N | block"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1),
    display: bool = typer.Option(True, "--display/--no-display", help="on-screen overlay when a display exists"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the camera report here"),
    save: Optional[Path] = typer.Option(None, "--save", help="write the frames with the results drawn (.mp4/.avi)"),
    jsonl: Optional[Path] = typer.Option(None, "--jsonl", help="write one JSON line per processed frame "
                                         "(frame, time, e2e ms, label/score or boxes)"),
):
    """Run a bundle on a live camera or a video at a fixed rate, with an overlay: edgeft camera B --source 0"""
    from .bench.live import live_camera

    rep = live_camera(bundle, source, fps=fps, duration=duration, handoff=handoff, threads=threads, display=display,
                      save=str(save) if save else None, jsonl=str(jsonl) if jsonl else None)
    if json_out:
        from .utils.io import atomic_write_json

        atomic_write_json(json_out, rep)
    c = rep["camera"]
    e = rep["latency"]["e2e"]
    log.result(f"camera {source}: offered {c['offered_frames']} frames at {c['offered_fps']:.1f} fps, processed "
               f"{c['processed_frames']}, dropped {c['dropped_frames']} ({100 * c['drop_rate']:.2f}%), deadline misses "
               f"{100 * c['deadline_miss_rate']:.2f}%; e2e p50 {e.get('p50', float('nan')):.2f} ms p99 "
               f"{e.get('p99', float('nan')):.2f} ms; producer on time: {c['producer_on_time']}")
    for k, what in (("saved_video", "video with results drawn"), ("jsonl", "per-frame JSON lines")):
        if rep.get(k):
            log.result(f"{what}: {rep[k]['path'] if isinstance(rep[k], dict) else rep[k]}")
    src = f" --source {nextsteps.q(source)}" if not source.isdigit() else ""
    log.next_step(f"edgeft bench {nextsteps.q(bundle)} --scenario camera --fps {fps:g}{src} --profile quick")


@data_app.command("export-images")
def data_export_images(source: str = typer.Argument(..., help="built-in dataset, e.g. fashion-mnist"),
                       out: Path = typer.Option(..., "--out", "-o"),
                       split: str = typer.Option("test", "--split", help="train | test"),
                       limit: Optional[int] = typer.Option(None, "--limit", min=1)):
    """Write a built-in dataset as PNG class folders (for predict, bench --data, --calib-data on a device); the
    detection scenes as PNGs + a COCO instances JSON."""
    from .data.images import export_builtin_images

    if source == "objects-on-photos":
        from .tasks.detection.data import export_scenes

        n = export_scenes(out, split, limit)
    else:
        n = export_builtin_images(source, out, split, limit)
    log.result(f"wrote {n} images to {out}")
    task = "detection" if source == "objects-on-photos" else "image_cls"
    make, b = nextsteps.bundle_or_demo(task, source)
    log.next_step(*make, f"edgeft predict {nextsteps.q(b)} {nextsteps.q(out)}",
                  f"edgeft bench {nextsteps.q(b)} --data {nextsteps.q(out)}")


@data_app.command("make-video")
def data_make_video(out: Path = typer.Argument(..., help="video file to write (.mp4 or .avi)"),
                    data: str = typer.Option("fashion-mnist:test", "--data", help="built-in name[:split] or folder"),
                    fps: float = typer.Option(30.0, "--fps"), seconds: float = typer.Option(20.0, "--seconds", min=0.1),
                    size: int = typer.Option(224, "--size", min=8, help="frame width = height")):
    """Make an offline test video from dataset images (OpenCV VideoWriter)."""
    from .bench.camera import frames_from_samples, make_video
    from .errors import DataError
    from .tasks import builtin_source_task, device_task

    name, _, split = data.partition(":")
    task = builtin_source_task(name)
    if task == "detection":
        from .tasks.detection.data import Scenes

        s = device_task("detection").samples(data, list(Scenes(split or "test").classes), None)
    elif task == "image_cls":
        from .data.images import builtin_split_raw

        s = device_task("image_cls").samples(data, builtin_split_raw(name, split or "test")[2], None)
    elif task is None and Path(data).expanduser().is_dir():
        s = device_task("image_cls").samples(data, sorted(d.name for d in Path(data).expanduser().iterdir()
                                                          if d.is_dir()), None)
    else:
        raise DataError(f"--data {data!r}: {'a ' + task + ' set has no images' if task else 'no such folder'}; "
                        f"valid are fashion-mnist, digits, objects-on-photos ([:split]) or a folder of class folders",
                        hint="e.g. --data objects-on-photos:test for a detection video")
    n = int(round(fps * seconds))
    frames = frames_from_samples(s, n, size=size)
    while len(frames) < n:
        frames += frames[: n - len(frames)]
    make_video(str(out), frames, fps)
    log.result(f"wrote {out}: {n} frames, {size}x{size}, {fps:g} fps")
    make, b = nextsteps.bundle_or_demo(task or "image_cls", name if task else None)
    log.next_step(*make, f"edgeft camera {nextsteps.q(b)} --source {nextsteps.q(out)} --duration 10",
                  f"edgeft bench {nextsteps.q(b)} --scenario camera --source {nextsteps.q(out)} --fps {fps:g} "
                  f"--profile quick")


# --------------------------------------------------------------------------------------------- serve
@app.command()
def serve(
    bundles: List[str] = typer.Argument(None, help="bundle folders, or NAME=BUNDLE (served as version 1)"),
    repo: Optional[Path] = typer.Option(None, "--repo", help="model repository: REPO/NAME/VERSION/ bundles (Triton's "
                                        "layout); versions can be swapped and rolled back at run time"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to bind (default: this machine only)"),
    port: int = typer.Option(8000, "--port"),
    api_key_file: Optional[Path] = typer.Option(None, "--api-key-file", help="keys for predict/models/metrics, "
                                                "one per line (>= 16 characters)"),
    admin_key_file: Optional[Path] = typer.Option(None, "--admin-key-file", help="keys for /v1/admin (load, "
                                                  "rollback, rescan); admin is off without it"),
    max_batch: int = typer.Option(1, "--max-batch", help="dynamic batching: samples per inference (1 = off)"),
    max_wait_ms: float = typer.Option(2.0, "--max-wait-ms", help="dynamic batching: longest wait for a batch to fill"),
    max_body_mb: float = typer.Option(8.0, "--max-body-mb", help="largest request body (413 above)"),
    timeout_ms: float = typer.Option(5000.0, "--timeout-ms", help="per-request inference timeout (504 after)"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="runtime threads per model"),
    allow_unauthenticated: bool = typer.Option(False, "--allow-unauthenticated", help="bind beyond 127.0.0.1 "
                                               "without API keys (a trusted network only)"),
    trust: Optional[List[Path]] = TrustOpt,
):
    """Serve bundles over HTTP (FastAPI): edgeft serve runs/r18/bundles/openvino-int8 --port 8000"""
    from .serve import serve as run_serve

    def ready(reg):
        names = ", ".join(f"{n} (v{reg.active[n]})" for n in sorted(reg.active))
        first = sorted(reg.active)[0]
        shown = "localhost" if host in ("127.0.0.1", "::1", "localhost") else host
        log.result(f"serving {names} at http://{shown}:{port} (Ctrl-C stops): GET /v1/models, POST "
                   f"/v1/models/NAME/predict, /metrics, /healthz, /readyz"
                   + (f"; dynamic batching up to {max_batch} within {max_wait_ms:g} ms" if max_batch > 1 else ""))
        log.next_step(f"curl -s http://{shown}:{port}/v1/models"
                      + ("  (add -H 'Authorization: Bearer KEY')" if api_key_file else ""),
                      f"edgeft bench --scenario server --url http://{shown}:{port}/v1/models/{first}/predict "
                      f"--profile quick" + ("  (add --api-key-file with your key file)" if api_key_file else ""))

    with _trust(trust):
        run_serve(bundles or [], repo=repo, host=host, port=port, api_key_file=api_key_file,
                  admin_key_file=admin_key_file, max_batch=max_batch, max_wait_ms=max_wait_ms, max_body_mb=max_body_mb,
                  timeout_ms=timeout_ms, threads=threads, allow_unauthenticated=allow_unauthenticated, on_ready=ready)


@app.command("export-serving")
def export_serving_cmd(
    bundle: Path = typer.Argument(..., help="bundle folder (onnx, onnxruntime, openvino or tensorrt)"),
    triton: Path = typer.Option(..., "--triton", help="model repository folder to write into"),
    name: Optional[str] = typer.Option(None, "--name", help="model name (default: RUN-BUNDLE)"),
    max_batch: int = typer.Option(8, "--max-batch", help="Triton max_batch_size and dynamic batching"),
    max_delay_us: int = typer.Option(2000, "--max-delay-us", min=0, help="Triton dynamic batching queue delay"),
    instances: int = typer.Option(1, "--instances", min=1, help="Triton instance_group count"),
    ovms_base: str = typer.Option("/models", "--ovms-base", help="where DIR is mounted in the OVMS container"),
):
    """A bundle as a Triton Inference Server model repository (+ an OpenVINO Model Server config)."""
    from .serve.triton import export_serving

    r = export_serving(bundle, triton, name=name, max_batch=max_batch, max_delay_us=max_delay_us,
                       instances=instances, ovms_base=ovms_base)
    log.result(f"Triton model {r['model']} ({r['backend']} backend): {r['config']}, {', '.join(r['files'])}; OpenVINO "
               f"Model Server config: {r['ovms_config']}")
    d = nextsteps.q(Path(triton).resolve())
    log.next_step(f"docker run --rm -p8000:8000 -v {d}:/models nvcr.io/nvidia/tritonserver:25.01-py3 tritonserver "
                  f"--model-repository=/models  (on a machine with Docker)")


# ----------------------------------------------------------------------------------------------- run
@app.command("run")
def run_cmd(
    recipe: str = typer.Argument(..., help="recipe YAML path or name"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="pipeline folder (default runs/<recipe name>)"),
    profile: Optional[str] = typer.Option(None, "--profile", help="bench profile override: smoke | quick | dev | report"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="bench threads (default: all cores)"),
    until: Optional[str] = typer.Option(None, "--until", help="stop after: finetune | prune | qat | export | optimize | bench"),
    set_: Optional[List[str]] = SetOpt,
):
    """The whole pipeline from one recipe, resumable stage by stage: edgeft run image_cls/default"""
    from . import api

    from .recipe import load_recipe

    o = out or Path("runs") / (load_recipe(recipe, set_ or ()).name or "run")
    again = nextsteps.rerun_command(recipe, out, profile, threads, until, set_)
    try:
        api.run(recipe, out=o if out else None, overrides=set_ or (), profile=profile, threads=threads, until=until)
    except EdgeftError as e:
        if e.exit_code == 3:   # stages failed a gate: say where everything is and how to re-run before exiting 3
            log.result(f"pipeline folder: {o} (summary.md)")
            log.next_step(f"{again}  (after fixing the failed step; finished stages are kept)")
        raise
    log.result(f"pipeline folder: {o} (summary.md, bench/result.json, bench/plots/)")
    log.next_step(*nextsteps.after_run(o), f"{again}  (re-run: finished stages are kept)")


# -------------------------------------------------------------------------------------------- listen
@app.command()
def listen(
    bundle: Path = typer.Argument(..., help="keyword-spotting bundle"),
    source: str = typer.Option(..., "--source", help="a .wav file, or 'mic' (needs the sounddevice package)"),
    mode: str = typer.Option("auto", "--mode", help="auto | window (re-run the window every hop) | streaming"),
    realtime: bool = typer.Option(True, "--realtime/--asfast", help="file replay at real speed or as fast as possible"),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="detection threshold (bundle default)"),
    seconds: Optional[float] = typer.Option(None, "--seconds", min=0.1, help="stop after N seconds of audio"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1),
):
    """Print keyword detections from a wav file or the microphone: edgeft listen BUNDLE --source talk.wav"""
    from .bench.listen import listen as run_listen

    dets, summary = run_listen(bundle, source, mode=mode, realtime=realtime, threshold=threshold, seconds=seconds,
                               threads=threads)
    log.result(summary)
    log.next_step(f"edgeft bench {bundle} --scenario audio_stream")


@app.command()
def calibrate(
    bundle: Path = typer.Argument(..., help="keyword-spotting bundle (its manifest is rewritten in place)"),
    stream: List[Path] = typer.Option(..., "--stream", help="a .wav recorded where the detector will run, with its "
                                      "truth .json beside it (events: label, start_s, end_s; [] for audio without "
                                      "keywords); repeat for several"),
    target_fa_per_hour: float = typer.Option(1.0, "--target-fa-per-hour",
                                             help="false accepts allowed per hour of audio without keywords"),
    max_substitution_rate: float = typer.Option(0.01, "--max-substitution-rate",
                                                help="share of keywords said that may fire as another keyword"),
    sign_key: Optional[Path] = typer.Option(None, "--sign-key", help="ed25519 private key: sign the manifest "
                                            "(a signed bundle: required, the key that signed it)"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1),
):
    """Choose a keyword bundle's detection threshold again, on your own streams: edgeft calibrate BUNDLE --stream
    room.wav --stream keywords.wav"""
    from .bench.kws_calibrate import calibrate as run_calibrate

    c = run_calibrate(bundle, stream, target_fa_per_hour=target_fa_per_hour,
                      max_substitution_rate=max_substitution_rate, sign_key=sign_key, threads=threads)
    fa_h = f"{c['fa_per_hour']:.2f}/h" if c["fa_per_hour"] is not None else "-"
    log.result(f"{bundle}: threshold {c['previous']['threshold']} -> {c['threshold']} on {c['audio_hours'] * 60:.1f} "
               f"min of audio ({c['keywords']} keywords, {c['negative_hours'] * 60:.1f} min without keywords): FRR "
               f"{c['frr']:.3f}, {c['fa']} false accept(s) = {fa_h} (allowed {c['fa_allowed']}), {c['substitutions']} "
               f"substitution(s) (allowed {c['substitutions_allowed']})")
    log.next_step(f"edgeft listen {bundle} --source {stream[0]} --asfast")


@data_app.command("make-kws")
def data_make_kws(out: Optional[Path] = typer.Option(None, "--out", "-o", help="default ~/.cache/edgeft/..."),
                  seed: int = typer.Option(0, "--seed")):
    """Generate the built-in keyword dataset offline: espeak-ng + flite + festival, real human speech, near-miss
    words and phrases as _unknown_ (deterministic, cached)."""
    from .data.audio import make_kws_tts

    p = make_kws_tts(out, seed=seed)
    import json as _json

    m = _json.loads((p / "manifest.json").read_text())
    log.result(f"keyword dataset: {p} ({m['tts_clips']} TTS clips, of them {m.get('near_miss_clips', 0)} near-miss "
               f"words, {m.get('phrase_clips', 0)} phrase cuts and "
               f"{m.get('other_language_unknown', {}).get('clips', 0)} other-language clips as _unknown_, "
               f"{m.get('keyword_in_context_clips', 0)} "
               f"keywords between other words; {m['silence']} silence, "
               f"{m['real_unknown_clips']} real-voice unknown clips)")
    log.next_step(f"edgeft finetune --recipe {nextsteps.KWS_RECIPE} --data {nextsteps.q(p)} --out runs/kws")


@data_app.command("make-stream")
def data_make_stream(out: Path = typer.Option(..., "--out", "-o", help="folder for stream_*.wav + truth .json"),
                     data: str = typer.Option("speech-commands-tts:test", "--data"),
                     profile: str = typer.Option("dev", "--profile", help="smoke | quick | dev | report (stream lengths)"),
                     seed: int = typer.Option(0, "--seed")):
    """Build the seeded long keyword streams (positive, negative-only, real-speech-only) with MLPerf-Tiny-style truth
    files."""
    from .bench.audio_data import build_streams
    from .data.audio import KEYWORDS, SILENCE, UNKNOWN

    s = build_streams(data, KEYWORDS + [UNKNOWN, SILENCE], profile, out, seed=seed)
    for k, v in s.items():
        log.result(f"{k}: {v['path']} ({v['truth']['length_sec']:.0f} s, {len(v['truth']['events'])} keywords)")
    make, b = nextsteps.bundle_or_demo("kws")
    log.next_step(*make, f"edgeft listen {nextsteps.q(b)} --source {nextsteps.q(s['positive']['path'])} --asfast",
                  f"edgeft bench {nextsteps.q(b)} --scenario audio_stream --stream {nextsteps.q(s['positive']['path'])}"
                  f" --profile quick")


# --------------------------------------------------------------------------------------- listings
@app.command()
def models(pattern: Optional[str] = typer.Argument(None, help="glob, e.g. 'mobilenet*'"),
           task: Optional[str] = typer.Option(None, help="image_cls | kws")):
    """List registered models."""
    from .errors import DataError, did_you_mean
    from .models import MODELS, list_models

    tasks = sorted({MODELS.get(n).task for n in list_models()})
    if task is not None and task not in tasks:
        raise DataError(f"--task {task!r}: valid are {', '.join(tasks)}")
    names = list_models(pattern, task)
    if not names:
        raise DataError(f"no registered model matches {pattern!r}{f' for task {task}' if task else ''}."
                        f"{did_you_mean(pattern or '', list_models(None, task))}",
                        hint="`edgeft models` lists them all; patterns are globs, e.g. 'mobilenet*'")
    for n in names:
        s = MODELS.get(n)
        log.result(f"{n:22s} {s.task:9s} {'pretrained' if s.pretrained else '          '}  {s.description}")
    first = names[0]
    log.next_step(f"edgeft finetune {nextsteps.recipe_for_model(first, MODELS.get(first).task)} --out "
                  f"runs/{first}")


@app.command()
def recipes():
    """List the recipes shipped in recipes/."""
    from .recipe import REPO_RECIPES, list_recipes

    for n in list_recipes():
        log.result(f"{n:36s} {REPO_RECIPES / (n + '.yaml')}")
    log.next_step("edgeft finetune --recipe image_cls/default --out runs/default")


# ------------------------------------------------------------------------------------------ devices
@devices_app.command("add")
def devices_add(name: str = typer.Argument(..., help="a short name, e.g. jetson"),
                url: str = typer.Argument(..., help="ssh://USER@HOST[:PORT]"),
                identity: Optional[str] = typer.Option(None, "--identity", help="private key file"),
                known_hosts: Optional[str] = typer.Option(None, "--known-hosts", help="known_hosts file"),
                python: Optional[str] = typer.Option(None, "--python", help="Python on the device (default python3)"),
                workdir: Optional[str] = typer.Option(None, "--workdir", help="work folder on the device "
                                                      "(default ~/.cache/edgeft-device)"),
                force: bool = typer.Option(False, "--force", help="replace a device of the same name")):
    """Remember a device: edgeft devices add jetson ssh://ubuntu@192.168.1.20"""
    from .remote import _devices_file, add_device

    d = add_device(name, url, identity=identity, known_hosts=known_hosts, python=python, workdir=workdir, force=force)
    log.result(f"device {d.name}: {d.url} (saved in {_devices_file()})")
    log.next_step(f"edgeft devices check {d.name}", f"edgeft bench BUNDLE... --device {d.name}")


@devices_app.command("list")
def devices_list():
    """The devices `edgeft bench --device NAME` knows."""
    from .remote import load_devices

    devs = load_devices()
    for d in devs.values():
        extra = ", ".join(f"{k} {v}" for k, v in (("python", d.python), ("workdir", d.workdir),
                                                    ("identity", d.identity)) if v)
        log.result(f"{d.name:16s} {d.url}" + (f"  ({extra})" if extra else ""))
    if not devs:
        log.result("no devices yet")
    log.next_step("edgeft devices add NAME ssh://USER@HOST[:PORT]")


@devices_app.command("remove")
def devices_remove(name: str = typer.Argument(...)):
    """Forget a device (nothing on the device is touched)."""
    from .remote import remove_device

    d = remove_device(name)
    log.result(f"removed device {d.name} ({d.url})")


@devices_app.command("check")
def devices_check(device: str = typer.Argument(..., help="a device name or ssh://USER@HOST[:PORT]")):
    """Connect and report what the device has: Python, platform, runtimes (torch should be absent)."""
    from .remote import check

    r = check(device)
    log.result(f"{r['device']} ({r['url']}): {r['cpu']}, {r['machine']}, Python {'.'.join(map(str, r['python']))} "
               f"at {r['executable']}")
    missing = [m for m in r["missing"] if m != "torch"]
    log.result(f"runtime packages: {'all present' if not missing else 'missing ' + ', '.join(missing) + ' (bench --device makes an environment from wheels copied from here)'}; "
               f"torch {'absent' if 'torch' in r['missing'] else 'present'}")
    log.next_step(f"edgeft bench BUNDLE... --device {device}")


# ------------------------------------------------------------------------------------------- main
from .bundle import INTERRUPTED_MSG as INTERRUPTED   # noqa: E402 - one wording for both interrupt paths


def _exit_interrupted(msg: str = INTERRUPTED, hard: bool = True) -> None:
    """Say what was kept and exit 130. Temporary folders were already removed while the exception unwound; a
    native library that printed the KeyboardInterrupt on its way (CPython then re-kills itself with SIGINT at
    shutdown: exit -2, seen once with OpenVINO) must not change the exit code, so the process ends here (``hard``:
    the console entry point; ``main(argv)`` called in-process raises SystemExit(130) instead)."""
    from .utils.io import exit_now, say_flushed

    if not hard:
        say_flushed(msg)
        sys.exit(130)
    exit_now(msg, 130)


def _unblock_sigint() -> None:
    """A process starts with its parent's blocked-signal mask: started from a thread or tool that blocked SIGINT
    (seen inside the test suite), Ctrl-C would stay pending until exit and a long export would finish and exit 0
    instead of stopping. Unblock it (a deliberate SIG_IGN, e.g. a background job, is left alone)."""
    import signal

    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    except (AttributeError, OSError, ValueError):   # no pthread_sigmask (Windows) or not the main thread
        pass


def main(argv: list[str] | None = None) -> None:
    """Entry point: usage errors and edgeft's own errors both become one line + exit 2."""
    from .utils.env import tune_malloc

    tune_malloc()
    _unblock_sigint()
    if argv is None:    # the console: Ctrl-C during a bundle build ends the process cleanly (bundle.HARD_INTERRUPT)
        from . import bundle

        bundle.HARD_INTERRUPT = True
    try:
        rc = app(args=argv, prog_name="edgeft", standalone_mode=False)
        if rc == 130:   # typer turns Ctrl-C into a return code of 130 before our handlers could see it
            _exit_interrupted(hard=argv is None)
        sys.exit(rc if isinstance(rc, int) else 0)
    except typer.TyperException as e:  # typer's command-line errors (its vendored click's UsageError etc.)
        usage = hasattr(e, "ctx") and type(e).__name__ != "NoArgsIsHelpError"  # `edgeft` alone: show the help
        if usage:
            where = e.ctx.command_path if e.ctx is not None else "edgeft"
            sys.stderr.write(f"error: {e.format_message()} — see `{where} --help`\n")
        else:
            e.show()
        sys.exit(getattr(e, "exit_code", 2))
    except typer.Abort:
        _exit_interrupted(hard=argv is None)
    except EdgeftError as e:
        sys.stderr.write(f"error: {e.one_line()}\n")
        sys.exit(e.exit_code)
    except Interrupted as e:
        _exit_interrupted(f"interrupted: {e.epoch} completed epoch(s) are saved in {e.path}; "
                          f"continue with: {e.resume_cmd}\n", hard=argv is None)
    except KeyboardInterrupt:
        _exit_interrupted(hard=argv is None)
    except Exception as e:  # a full or read-only disk is the user's to fix; anything else is a bug (traceback)
        from .utils.io import disk_error

        de = disk_error(e)
        if de is None:
            raise
        sys.stderr.write(f"error: {de.one_line()}\n")
        sys.exit(de.exit_code)
