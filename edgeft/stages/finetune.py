"""``edgeft finetune``: train a classifier from a recipe into a run directory.

Example::

    from edgeft.stages.finetune import finetune
    metrics = finetune("recipes/image_cls/resnet18.yaml", "runs/r18", epochs=3)

CLI: ``edgeft finetune --recipe recipes/image_cls/resnet18.yaml --out runs/r18 --epochs 3``
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from .. import __version__
from ..errors import DataError, RunError
from ..models import create_model, get_spec
from ..models.surgery import count_params
from ..recipe import load_recipe
from ..rundir import RunDir, load_model
from ..tasks import get_task
from ..tasks.base import metric_name, prefixed
from ..utils.env import versions
from ..utils.io import atomic_write_json, atomic_write_text
from ..utils.log import info, result, warn
from ..errors import Interrupted
from .trainer import (DistCtx, FitResult, evaluate, fit, init_distributed, load_checkpoint,
                      pick_device, set_determinism)


def resolve_for_run(recipe, out, resume: bool, overrides, epochs: int | None, data: str | None):
    """Pick the recipe (the run's own one when resuming without --recipe) and apply CLI overrides."""
    ov = list(overrides or ())
    if epochs is not None:
        ov.append(f"train.epochs={epochs}")
    if data is not None:
        ov.append(f"data.source={data}")
    if recipe is None:
        if not (resume and out and (Path(out) / "recipe.yaml").is_file()):
            raise RunError("no recipe given", hint="pass --recipe PATH (or --resume --out RUN to continue a run)")
        recipe = Path(out) / "recipe.yaml"
    return load_recipe(recipe, ov)


def finetune(recipe=None, out: str | Path | None = None, *, data: str | None = None, epochs: int | None = None,
             resume: bool = False, overrides=()) -> dict:
    """Fine-tune the recipe's model on its data; returns the final metrics (also in ``RUN/metrics.json``)."""
    if hasattr(recipe, "train"):  # a Recipe object
        r = recipe.model_copy(deep=True)
        if epochs:
            r.train.epochs = epochs
        if data:
            r.data.source = data
    else:
        r = resolve_for_run(recipe, out, resume, overrides, epochs, data)
    ctx = init_distributed(r.train.device)
    rd = RunDir(out or Path("runs") / (r.name or "run"))
    ck = _check_run_dir(rd, resume, ctx)
    if r.train.threads:
        torch.set_num_threads(r.train.threads)
    set_determinism(r.train.seed, r.train.deterministic, r.train.device)
    device = pick_device(r.train.device, ctx)
    task = get_task(r.task)
    t_data = time.perf_counter()
    data_ = task.load_data(r)
    info(f"data: {data_.source} {data_.sizes()} ({len(data_.classes)} classes) in {time.perf_counter() - t_data:.1f}s")
    if resume and rd.labels.is_file():
        old = rd.read_labels()
        if old != list(data_.classes):
            raise DataError(f"--resume: the data's classes differ from the run's labels.txt "
                            f"(run: {old[:6]}{'...' if len(old) > 6 else ''}; data: {data_.classes[:6]}"
                            f"{'...' if len(data_.classes) > 6 else ''})",
                            hint="resume with the run's original data, or start a new run with --out NEW_DIR")
    if ck is not None and ck["model"] and resume:
        _check_same_model(rd, r)
    nc = len(data_.classes)
    spec = get_spec(r.model.name)
    if spec.task != r.task:
        raise RunError(f"model {r.model.name!r} is a {spec.task} model but the recipe's task is {r.task!r}")
    model = create_model(r.model.name, nc, pretrained=r.model.pretrained and ck is None,
                         weights=r.model.weights if ck is None else None, **_kw(r, task))
    if ctx.main:
        rd.path.mkdir(parents=True, exist_ok=True)
        header = f"# resolved by edgeft {__version__} (recipe hash {r.hash()})\n"
        atomic_write_text(rd.recipe, r.to_yaml(header))
        rd.write_labels(list(data_.classes))
        atomic_write_json(rd.split, {"source": data_.source, "sizes": data_.sizes(), **data_.info})
    ctx.barrier()
    info(f"model: {r.model.name} ({count_params(model) / 1e6:.2f}M params), "
         f"{'pretrained' if r.model.pretrained else ('weights ' + r.model.weights if r.model.weights else 'from scratch')}"
         f", device {device}{f', {ctx.world} processes' if ctx.active else ''}, threads {torch.get_num_threads()}")
    status = {"status": "running", "stage": "finetune", "recipe": r.name, "recipe_hash": r.hash(),
              "model": r.model.name, "pretrained": r.model.pretrained, "data": {"source": data_.source,
                                                                                 "sizes": data_.sizes(), **data_.info},
              "num_classes": nc, "device": str(device), "world_size": ctx.world,
              "threads": torch.get_num_threads(), "versions": versions()}
    if ctx.main:
        rd.write_metrics({**rd.read_metrics(), **status})
    resume_cmd = f"edgeft finetune --resume --out {rd.path}"
    try:
        res = fit(model, task, r, data_, rd=rd, ctx=ctx, device=device, epochs=r.train.epochs, lr=r.train.lr,
                  model_name=r.model.name, num_classes=nc, model_kwargs=_kw(r, task), head=spec.head,
                  freeze_epochs=r.train.freeze_backbone_epochs, resume=ck if resume else None,
                  resume_cmd=resume_cmd,
                  on_epoch=lambda st: rd.write_metrics({**status, **_progress_metrics(st)}))
    except KeyboardInterrupt:
        done = (load_checkpoint(rd) or {}).get("epoch", 0) if ctx.main else 0
        if ctx.main:
            rd.write_metrics({**rd.read_metrics(), "status": "interrupted"})
        raise Interrupted(rd.path, done, resume_cmd) from None
    metrics = {}
    if ctx.main:
        metrics = finish_run(rd, task, r, data_, res, status, device)
    ctx.barrier()
    if ctx.active:
        torch.distributed.destroy_process_group()
    return metrics


def _kw(r, task) -> dict:
    """Build arguments that the saved model needs again to be rebuilt (dropout; a task's own, e.g. input size)."""
    kw = {"dropout": r.model.dropout} if r.model.dropout is not None else {}
    if hasattr(task, "model_kwargs"):
        kw.update(task.model_kwargs(r))
    return kw


def _progress_metrics(st: dict) -> dict:
    best = st["best"]
    return {"epochs": st["epochs_done"], "best_epoch": best.get("epoch"),
            **{k: v for k, v in best.items() if k.startswith("val_")}, "history": st["history"]}


def _check_run_dir(rd: RunDir, resume: bool, ctx: DistCtx):
    """Refuse to overwrite an existing run; load its checkpoint when resuming."""
    if resume:
        if not rd.path.is_dir():
            raise RunError(f"--resume: run directory {str(rd.path)!r} does not exist",
                           hint="drop --resume to start a new run there")
        ck = load_checkpoint(rd)
        if ck is None:
            warn(f"--resume: {rd.path} has no last.pt yet; starting from epoch 1")
        return ck
    if rd.path.exists() and any(rd.path.iterdir()):
        m = rd.read_metrics()
        what = f"a {m.get('status', 'previous')} run ({m.get('epochs', 0)} epochs)" if m else "files"
        raise RunError(f"{str(rd.path)!r} already holds {what}",
                       hint="pass --resume to continue it, or --out NEW_DIR for a new run (nothing is overwritten)")
    return None


def _check_same_model(rd: RunDir, r) -> None:
    if rd.model_json.is_file():
        desc = json.loads(rd.model_json.read_text())
        if desc.get("name") != r.model.name:
            raise RunError(f"--resume: the run trained {desc.get('name')!r} but the recipe asks for {r.model.name!r}",
                           hint="resume without --recipe (uses the run's recipe) or use --out NEW_DIR")


def finish_run(rd: RunDir, task, r, data_, res: FitResult, status: dict, device) -> dict:
    """Evaluate the best model on val (and test), plot the confusion matrix, write metrics.json."""
    model, _ = load_model(rd)
    model.to(device)
    nc = len(data_.classes)
    eval_split, eval_name = (data_.test, "test") if data_.test is not None else (data_.val, "val")
    # the best epoch's validation was computed on these very weights while training: reused unless the confusion
    # matrix must come from it
    val = res.best_val if res.best_val is not None and eval_name != "val" else \
        evaluate(model, task, data_.val, r, device, num_classes=nc, want_confusion=eval_name == "val")
    test = evaluate(model, task, data_.test, r, device, num_classes=nc, want_confusion=True) \
        if data_.test is not None else None
    cm = (test or val).get("confusion")
    from ..models.surgery import count_macs

    p = task.primary
    metrics = {
        **status, "status": "complete", "epochs": res.epochs_done, "best_epoch": res.best.get("epoch"),
        "stopped_early": res.stopped_early, **prefixed("val", val), **prefixed("test", test),
        "train_time_s": round(res.train_time_s, 1),
        "images_per_s": round(res.images_seen / res.train_time_s, 1) if res.train_time_s else None,
        "params": count_params(model), "macs": count_macs(model, task.example_input(r).to(device)),
        **({"confusion_split": eval_name, "confusion_matrix": cm} if cm is not None else {}), "history": res.history,
    }
    rd.write_metrics(metrics)
    _seed_parity_reference(rd, r, data_, val, p)
    if cm is not None:
        try:
            plot_confusion(cm, data_.classes, rd.path / "confusion_matrix.png",
                           title=f"{r.model.name} on {data_.source} ({eval_name}), {metric_name(p)} "
                                 f"{(test or val)[p]:.4f}")
        except ImportError:
            warn("matplotlib not installed: confusion_matrix.png skipped")
    line = f"val {metric_name(p)} {val[p]:.4f} (n={val['n']})"
    if test:
        ci = test.get(f"{p}_ci95")
        line += f"; test {metric_name(p)} {test[p]:.4f}" + (f" [95% CI {ci[0]:.4f}, {ci[1]:.4f}]" if ci else "") + \
            f" (n={test['n']})"
    result(f"finetune done: {r.model.name} on {data_.source}: {line}; best epoch {res.best.get('epoch')}/"
           f"{res.epochs_done}; train time {res.train_time_s:.0f}s ({metrics['images_per_s']} img/s)")
    return metrics


def _seed_parity_reference(rd: RunDir, r, data_, val: dict, primary: str) -> None:
    """Export compares every bundle with PyTorch FP32 on the whole validation split; this run just computed that
    number for its saved weights, so the bundles' parity reports reuse it (stages/parity.py, same key)."""
    from ..utils.io import atomic_write_json, sha256_file

    key = f"{sha256_file(rd.weights)}-{r.hash()}-val-{len(data_.val)}"
    try:
        atomic_write_json(rd.path / "parity_reference.json",
                          {key: {primary: float(val[primary]), "n": int(val["n"]), "metric": primary,
                                 "computed_by": "finetune (best epoch, PyTorch FP32)"}})
    except (OSError, TypeError, ValueError, KeyError):
        pass


def plot_confusion(cm, classes, path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from ..utils.io import atomic_write_with

    a = np.asarray(cm, dtype=float)
    norm = a / np.maximum(a.sum(1, keepdims=True), 1)
    n = len(classes)
    fig, ax = plt.subplots(figsize=(max(5, 0.55 * n + 2), max(4.5, 0.5 * n + 1.5)), dpi=110)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, int(a[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, label="row-normalised")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
