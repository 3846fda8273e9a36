"""The public API: one verb per stage, the essential argument positional, every option keyword-only.

Defaults live in one place: the recipe's sections (:mod:`edgeft.sections`). An option left ``None`` takes the
run's recipe value (its ``compress.prune`` / ``compress.qat`` / ``export`` section), else the section's
default; the CLI is a thin layer that passes what the user typed.

Example::

    import edgeft
    edgeft.finetune("image_cls/resnet18", out="runs/r18", epochs=3)
    edgeft.prune("runs/r18", ratio=0.5, epochs=2)              # -> runs/r18-pruned50
    edgeft.qat("runs/r18-pruned50", epochs=1)                  # -> runs/r18-pruned50-qat
    m = edgeft.export("runs/r18-pruned50-qat", format="openvino", precision="int8")
    doc = edgeft.bench(["runs/r18", "runs/r18/bundles/openvino-int8"], data="fashion-mnist:test")
    with edgeft.load("runs/r18/bundles/openvino-int8") as model:
        print(model.predict(["shoe.png"]))
"""
from __future__ import annotations

from pathlib import Path


def _section(run, name: str, cls, given: dict) -> dict:
    """The run's recipe section ``compress.<name>`` (else the section's defaults), with what was given on top."""
    from .recipe import load_recipe

    base = None
    p = Path(run) / "recipe.yaml"
    if p.is_file():
        try:
            base = getattr(load_recipe(p).compress, name)
        except Exception:  # noqa: BLE001 - the stage reports a broken run precisely
            base = None
    values = (base or cls()).model_dump()
    values.update({k: v for k, v in given.items() if v is not None})
    return values


def _malloc_tuned(fn):
    """The verbs that run PyTorch or a benchmark keep large blocks in the heap (see utils.env.tune_malloc)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*a, **k):
        from .utils.env import tune_malloc

        tune_malloc()
        return fn(*a, **k)
    return wrapper


@_malloc_tuned
def finetune(recipe, *, out=None, data: str | None = None, epochs: int | None = None, resume: bool = False,
             overrides=()) -> dict:
    """Fine-tune a recipe's model (a recipe name, YAML path or Recipe); returns the run's metrics.

    CLI: ``edgeft finetune --recipe image_cls/resnet18 --out runs/r18 --epochs 3``"""
    from .stages.finetune import finetune as _finetune

    return _finetune(recipe, out, data=data, epochs=epochs, resume=resume, overrides=overrides)


@_malloc_tuned
def prune(run, *, out=None, ratio: float | None = None, method: str | None = None, round_to: int | None = None,
          epochs: int | None = None, iterative: int | None = None, lr: float | None = None,
          distill: float | None = None, global_pruning: bool | None = None, max_drop: float | None = None,
          target_macs: float | None = None, target_latency_ms: float | None = None, resume: bool = False,
          threads: int | None = None) -> dict:
    """Structured channel pruning + recovery fine-tuning; with ``target_macs`` / ``target_latency_ms`` the
    ratio is searched; ``round_to=0`` keeps channel counts unrounded.
    CLI: ``edgeft prune runs/r18 --ratio 0.5 --epochs 2``"""
    from .sections import PruneCfg
    from .stages.prune import prune as _prune

    cfg = _section(run, "prune", PruneCfg, dict(ratio=ratio, method=method, round_to=round_to, epochs=epochs,
                                                 iterative=iterative, lr=lr, distill=distill,
                                                 global_pruning=global_pruning, max_drop=max_drop))
    if (target_macs or target_latency_ms) and ratio is None:
        cfg["ratio"] = None             # searched
    if round_to == 0:
        cfg["round_to"] = None          # no rounding of channel counts
    return _prune(run, out=out, target_macs=target_macs, target_latency_ms=target_latency_ms, resume=resume,
                  threads=threads, **cfg)


@_malloc_tuned
def qat(run, *, out=None, epochs: int | None = None, lr: float | None = None, flavour: str | None = None,
        target: str | None = None, calib_size: int | None = None, max_drop: float | None = None,
        resume: bool = False, threads: int | None = None) -> dict:
    """Quantization-aware training (NNCF) -> a Q/DQ ONNX graph for ``target`` (default: this CPU's class).
    CLI: ``edgeft qat runs/r18-pruned50 --epochs 1``"""
    from .sections import QatCfg
    from .stages.qat import qat as _qat

    cfg = _section(run, "qat", QatCfg, dict(epochs=epochs, lr=lr, flavour=flavour, target=target,
                                            calib_size=calib_size, max_drop=max_drop))
    return _qat(run, out=out, resume=resume, threads=threads, **cfg)


@_malloc_tuned
def export(run, *, format: str = "onnx", precision: str = "fp32", target: str | None = None,
           calib_data: str | None = None, calib_size: int | None = None, out=None, max_drop: float | None = None,
           parity_samples: int | None = None, opset: int | None = None, force: bool = False,
           sign_key: str | None = None) -> dict:
    """Export a run to a verified bundle; returns its manifest (options left None: the run's recipe
    ``export`` section). CLI: ``edgeft export runs/r18 --format openvino --int8``"""
    from .stages.export import export as _export

    return _export(run, format=format, precision=precision, target=target, calib_data=calib_data,
                   calib_size=calib_size, out=out, max_drop=max_drop, parity_samples=parity_samples, opset=opset,
                   force=force, sign_key=sign_key)


@_malloc_tuned
def optimize(run, *, max_drop: float | None = None, backends=None, target: str | None = None,
             device: str | None = None, time_budget=None, prune: bool | None = None, prune_epochs: int | None = None,
             max_ratio: float | None = None, max_probes: int | None = None, distill: float | None = None,
             qat: bool | None = None, qat_epochs: int | None = None, mixed: bool | None = None,
             profile: str | None = None, report_profile: str | None = None, report_data: str | None = None,
             select: str | None = None, threads: int | None = None, out=None, resume: bool = False) -> dict:
    """The fastest verified bundle within ``max_drop`` points of val top-1 (options left None: the run's recipe
    ``optimize`` section, else its defaults); returns the search document (``choice``, ``candidates``,
    ``report``). CLI: ``edgeft optimize runs/r18 --max-drop 1.0 --time-budget 30m``"""
    from pydantic import ValidationError

    from .errors import UnsupportedError, did_you_mean
    from .optimize import BACKENDS
    from .optimize import optimize as _optimize
    from .sections import OptimizeCfg

    valid = (*BACKENDS, "tensorrt")
    for b in backends or ():
        if b not in valid:
            raise UnsupportedError(f"--backend {b!r}: unknown.{did_you_mean(b, valid)} Valid: {', '.join(valid)}")
    cfg = _optimize_section(run)
    given = dict(max_drop=max_drop, backends=list(backends) if backends else None, target=target, device=device,
                 time_budget=str(time_budget) if time_budget is not None else None, prune=prune,
                 prune_epochs=prune_epochs, max_ratio=max_ratio, max_probes=max_probes, distill=distill, qat=qat,
                 qat_epochs=qat_epochs, mixed=mixed, profile=profile, report_profile=report_profile,
                 report_data=report_data, select=select)
    values = (cfg or OptimizeCfg()).model_dump()
    values.update({k: v for k, v in given.items() if v is not None})
    try:
        settings = OptimizeCfg.model_validate(values).settings(threads=threads)
    except ValidationError as e:
        err = e.errors()[0]
        opt = "--" + str(err["loc"][0]).replace("_", "-").replace("backends", "backend") if err.get("loc") \
            else "option"
        raise UnsupportedError(f"{opt} {err.get('input')!r}: {err['msg']}",
                               hint="see `edgeft optimize --help` for valid values") from None
    return _optimize(run, out=out, settings=settings, resume=resume)


def _optimize_section(run):
    from .recipe import load_recipe

    p = Path(run) / "recipe.yaml"
    if p.is_file():
        try:
            return load_recipe(p).optimize
        except Exception:  # noqa: BLE001 - the search reports a broken run precisely
            return None
    return None


@_malloc_tuned
def bench(artifacts, *, data: str = "fashion-mnist:test", **settings) -> dict:
    """Accuracy + latency of several artifacts in one interleaved run; returns the result document.
    ``settings``: the fields of :class:`edgeft.bench.harness.BenchConfig` (scenario, profile, threads, ...).
    CLI: ``edgeft bench runs/r18 runs/r18/bundles/* --data fashion-mnist:test``"""
    from .bench.harness import BenchConfig
    from .bench.harness import bench as _bench

    return _bench([str(a) for a in artifacts], BenchConfig(data=data, **settings))


@_malloc_tuned
def run(recipe, *, out=None, overrides=(), profile: str | None = None, threads: int | None = None,
        until: str | None = None) -> str:
    """The whole pipeline from one recipe (finetune -> prune -> qat -> export -> bench), resumable stage by stage;
    returns the summary table. Raises CheckFailed (CLI exit 3) after writing everything when a stage failed a
    gate or the bench result is not valid. CLI: ``edgeft run image_cls/default``"""
    from .pipeline import run_pipeline

    return run_pipeline(recipe, out, overrides=overrides, profile=profile, threads=threads, until=until)


def load(bundle, **kw):
    """Open a bundle on its backend, torch-free (see :func:`edgeft.runtime.load`)."""
    from . import runtime

    return runtime.load(bundle, **kw)
