"""``edgeft prune``: structured channel pruning with Torch-Pruning (DepGraph) + recovery fine-tuning.

Example::

    from edgeft.stages.prune import prune
    m = prune("runs/r18", out="runs/r18-p50", ratio=0.5, epochs=2)

CLI: ``edgeft prune runs/r18 --ratio 0.5 --epochs 2 --out runs/r18-p50``

Channels are removed from whole dependency groups (residual adds and depthwise convs stay consistent),
the classifier head is never pruned, kept channels are rounded to a multiple of ``round_to`` for fast
kernels, and ``--iterative K`` prunes in K steps with recovery fine-tuning (optionally distilled from
the unpruned model) after each. The result is an ordinary run directory: safetensors + a JSON that lets
``load_model`` rebuild the pruned shapes without unpickling anything.
"""
from __future__ import annotations

import copy
import time
import warnings
from pathlib import Path

import torch
import numpy as np
import torch.nn as nn

from ..errors import GateFailed, UnsupportedError
from ..models import get_spec
from ..models.surgery import count_macs, count_params
from ..rundir import load_model, save_model
from ..tasks.base import metric_name, prefixed
from ..utils.env import versions
from ..utils.io import atomic_write_json, atomic_write_text, read_json, sha256_file
from ..utils.log import info, result, warn
from .trainer import DistCtx, evaluate, fit, load_checkpoint, open_parent, pick_device

METHODS = ("magnitude", "taylor", "bn_scale", "random")


def _importance(method: str):
    import torch_pruning as tp

    return {"magnitude": lambda: tp.importance.GroupMagnitudeImportance(p=2),
            "taylor": lambda: tp.importance.GroupTaylorImportance(),
            "bn_scale": lambda: tp.importance.BNScaleImportance(),
            "random": lambda: tp.importance.RandomImportance()}[method]()


def check_ratio(model: nn.Module, ratio: float, round_to: int | None, ignored: list[nn.Module]) -> None:
    """Refuse (instead of Torch-Pruning's silent skip) a uniform ratio that would empty a layer."""
    ign = {id(m) for m in ignored}
    for name, m in model.named_modules():
        if id(m) in ign or not isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)):
            continue
        if isinstance(m, nn.modules.conv._ConvNd) and m.groups > 1 and m.groups == m.in_channels:
            continue  # depthwise convs follow their input's group
        c = m.out_channels if isinstance(m, nn.modules.conv._ConvNd) else m.out_features
        keep = int(c * (1 - ratio))
        if round_to:
            keep -= keep % round_to
        if keep < 1:
            rt = round_to or 1
            best = max(0.0, 1 - rt / c)
            raise UnsupportedError(
                f"--ratio {ratio} would remove all {c} channels of layer {name!r}"
                f"{f' (kept channels are rounded down to a multiple of --round-to {round_to})' if round_to else ''}",
                hint=f"use --ratio <= {best:.2f}" + (" or a smaller --round-to" if round_to and round_to > 1 else ""))


def prune_step(model: nn.Module, example: torch.Tensor, ratio: float, method: str, round_to: int | None,
               ignored: list[nn.Module], global_pruning: bool, grad_batches=None) -> None:
    """One Torch-Pruning step removing ``ratio`` of the channels of every prunable group of ``model``."""
    import torch_pruning as tp

    imp = _importance(method)
    if method == "taylor":
        if grad_batches is None:
            raise UnsupportedError("--method taylor needs training batches for gradients")
        model.train()
        model.zero_grad()
        for x, y in grad_batches:
            nn.functional.cross_entropy(model(x), y).backward()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruner = tp.pruner.BasePruner(model, example, importance=imp, pruning_ratio=ratio,
                                      global_pruning=global_pruning, max_pruning_ratio=0.9 if global_pruning else 1.0,
                                      ignored_layers=ignored, round_to=round_to)
        pruner.step()
    model.zero_grad(set_to_none=True)
    for n, m in model.named_modules():
        w = getattr(m, "weight", None)
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) and w is not None and 0 in w.shape:
            raise UnsupportedError(f"pruning emptied layer {n!r}", hint="use a smaller --ratio")


def interleaved_latency(models: dict[str, nn.Module], example: torch.Tensor, threads: int | None = None,
                        rounds: int = 5, window_s: float = 0.3, count: int = 60) -> dict[str, dict]:
    """Single-sample latency of several models through ONNX Runtime (the runtime pruning is meant for), measured
    the harness's way: warm-up, then ``rounds`` interleaved rounds (every model one window per round, the order
    rotating), so drift and noise hit every model alike. Returns per model the p50 over all samples and each
    round's p50 (the spread a single measurement hides)."""
    import contextlib
    import tempfile

    from ..backends.onnxruntime import Runner
    from ..bench.timing import run_window, warmup
    from .export import export_onnx

    x = example[:1].numpy()
    samples: dict[str, list[float]] = {k: [] for k in models}
    per_round: dict[str, list[float]] = {k: [] for k in models}
    with tempfile.TemporaryDirectory() as d, contextlib.ExitStack() as stack:
        runners = {}
        for i, (name, model) in enumerate(models.items()):
            export_onnx(copy.deepcopy(model).eval(), example[:1], Path(d) / f"m{i}.onnx", 17)
            runners[name] = stack.enter_context(Runner(d, {"model_files": {"model": f"m{i}.onnx"}}, threads=threads))
            warmup(lambda j, r=runners[name]: r.infer(x), 0.3, 20)
        names = list(models)
        for k in range(rounds):
            for name in names[k % len(names):] + names[:k % len(names)]:
                r = runners[name]
                r.infer(x)   # re-warm after the other model

                def step(i, r=r):
                    t = time.perf_counter_ns()
                    r.infer(x)
                    return {"infer": (time.perf_counter_ns() - t) / 1e6, "e2e": 0.0}

                w = run_window(step, k, window_s, count)
                samples[name] += w.samples["infer"]
                per_round[name].append(float(np.median(w.samples["infer"])))
    return {k: {"p50": float(np.median(samples[k])), "rounds": per_round[k], "min": min(per_round[k]),
                "max": max(per_round[k]), "count": len(samples[k])} for k in models}


def measure_latency_ms(model: nn.Module, example: torch.Tensor, threads: int | None = None, rounds: int = 3) -> dict:
    """One model's p50 over ``rounds`` windows, with the rounds' range (see :func:`interleaved_latency`)."""
    return interleaved_latency({"m": model}, example, threads, rounds=rounds)["m"]


def ignored_names(model, spec, recipe) -> list[str]:
    """Modules pruning leaves alone: the model's head(s), and what ``train.freeze`` keeps frozen (recovery
    fine-tuning could not adapt a pruned frozen layer)."""
    names = list(spec.prune_ignored)
    for pre in recipe.train.freeze:
        tops = [n for n, _ in model.named_modules() if n and f"{n}.".startswith(pre)]
        names += [n for n in tops if not any(n.startswith(f"{t}.") for t in tops)]
    return list(dict.fromkeys(names))


def search_ratio(model, example, ignored_names, method, round_to, global_pruning, target_macs=None,
                 target_latency_ms=None, threads=None) -> tuple[float, dict]:
    """Bisect the smallest ratio whose pruned model meets the MAC or latency target (no training)."""
    def metric(r: float) -> float:
        m = copy.deepcopy(model)
        ign = [m.get_submodule(n) for n in ignored_names]
        if r > 0:
            prune_step(m, example, r, "magnitude" if method == "taylor" else method, round_to, ign, global_pruning)
        if target_latency_ms:   # conservative: every round must meet the target, not just the median
            return measure_latency_ms(m, example, threads)["max"]
        return count_macs(m, example)

    target = target_latency_ms if target_latency_ms else target_macs
    base = metric(0.0)
    if base <= target:
        return 0.0, {"base": base, "target": target, "note": "already meets the target"}
    lo, hi, best = 0.0, 0.9, None
    trail = []
    for _ in range(7):
        mid = round((lo + hi) / 2, 4)
        try:
            v = metric(mid)
        except UnsupportedError:
            hi = mid
            continue
        trail.append((mid, v))
        if v <= target:
            best, hi = mid, mid
        else:
            lo = mid
    if best is None:
        raise UnsupportedError(f"no pruning ratio up to 0.9 reaches the target ({target}); smallest reached: "
                               f"{min(v for _, v in trail) if trail else base}",
                               hint="relax the target or use a smaller model")
    return best, {"base": base, "target": target, "trail": trail}


def prune(run, *, out, ratio: float | None, method: str, round_to: int | None, epochs: int, iterative: int,
          lr: float | None, distill: float, global_pruning: bool, max_drop: float | None, target_macs: float | None,
          target_latency_ms: float | None, resume: bool, threads: int | None) -> dict:
    """Prune a run's model and fine-tune it back; returns metrics (also RUN2/metrics.json). Every setting is
    explicit here: :func:`edgeft.prune` fills them from the recipe (``compress.prune``)."""
    if method not in METHODS:
        from ..errors import did_you_mean

        raise UnsupportedError(f"unknown --method {method!r}.{did_you_mean(method, METHODS)} Valid: {', '.join(METHODS)}")
    if ratio is not None and not 0 < ratio < 1 and not (target_macs or target_latency_ms):
        raise UnsupportedError(f"--ratio {ratio}: must be between 0 and 1 (exclusive)")
    if iterative < 1:
        raise UnsupportedError(f"--iterative {iterative}: must be >= 1")
    parent, pdesc, out, recipe, task, data = open_parent(
        run, out, f"-pruned{int(round((ratio or 0) * 100))}", resume, threads,
        "{run} is a QAT run: prune the FP32 run, then run QAT on the pruned run")
    labels = parent.read_labels()
    model, _ = load_model(parent)
    teacher = copy.deepcopy(model).eval() if distill > 0 else None
    spec = get_spec(pdesc["name"])
    ignored = ignored_names(model, spec, recipe)
    example = task.example_input(recipe)
    ctx = DistCtx()
    device = pick_device(recipe.train.device, ctx)
    nc = len(labels)
    p = task.primary
    before = {"params": count_params(model), "macs": count_macs(model, example),
              f"val_{p}": evaluate(model, task, data.val, recipe, device, num_classes=nc)[p]}
    parent_model = copy.deepcopy(model).cpu().eval()   # timed again beside the pruned model at the end
    info(f"before: {before['params'] / 1e6:.3f}M params, {before['macs'] / 1e6:.1f}M MACs, val {metric_name(p)} "
         f"{before[f'val_{p}']:.4f}")
    search = None
    if target_macs or target_latency_ms:
        tm = target_macs * before["macs"] if target_macs and target_macs <= 1 else target_macs
        ratio, search = search_ratio(model, example, ignored, method, round_to, global_pruning,
                                     target_macs=tm, target_latency_ms=target_latency_ms, threads=threads)
        info(f"ratio search: {ratio:.3f} meets the target ({search['target']}) before fine-tuning" + (
            " (latency: the slowest of 3 ONNX Runtime rounds)" if target_latency_ms else ""))
        if ratio == 0:
            raise UnsupportedError("the model already meets the target: nothing to prune")
    check_ratio(model, ratio, round_to, [model.get_submodule(n) for n in ignored])
    out.path.mkdir(parents=True, exist_ok=True)
    state_p = out.path / "prune_state.json"
    state = read_json(state_p) if (resume and state_p.is_file()) else {"steps_done": 0}
    lr = lr or recipe.train.lr / 10
    t0 = time.perf_counter()
    cfg = {"ratio": ratio, "method": method, "round_to": round_to, "iterative": iterative, "epochs": epochs,
           "lr": lr, "distill": distill, "global_pruning": global_pruning, "target_macs": target_macs,
           "target_latency_ms": target_latency_ms}
    atomic_write_text(out.recipe, parent.recipe.read_text())
    out.write_labels(labels)
    extra = {"stage": "prune", "pruned": cfg, "parent": {"run": str(parent.path.resolve()),
                                                        "model_sha256": sha256_file(parent.weights)}}
    if state["steps_done"] > 0:  # resume: rebuild the last finished step's pruned model
        model, _ = load_model(out)
    res = None
    for k in range(state["steps_done"], iterative):
        done_frac, target_frac = ratio * k / iterative, ratio * (k + 1) / iterative
        step_ratio = 1 - (1 - target_frac) / (1 - done_frac)  # relative to the current (partly pruned) model
        ck = load_checkpoint(out) if resume else None
        if ck is None or ck.get("stage") != f"prune{k}":
            grads = None
            if method == "taylor":
                grads = list(_take(task.train_batches(data, recipe, 10_000 + k), 4))
            prune_step(model, example, step_ratio, method, round_to, [model.get_submodule(n) for n in ignored],
                       global_pruning, grads)
            ck = None
        info(f"step {k + 1}/{iterative}: {count_params(model) / 1e6:.3f}M params, "
             f"{count_macs(model, example) / 1e6:.1f}M MACs; recovery fine-tuning {epochs} epoch(s)")
        if ck is not None:  # interrupted during this step's fine-tuning: its pruned shapes are in the checkpoint
            from ..models.surgery import reshape_to_state_dict

            reshape_to_state_dict(model, ck["model"])
        if epochs > 0:
            if out.last.is_file() and ck is None:
                out.last.unlink()
            res = fit(model, task, recipe, data, rd=out, ctx=ctx, device=device, epochs=epochs, lr=lr,
                      model_name=pdesc["name"], num_classes=nc, model_kwargs=pdesc.get("kwargs", {}),
                      teacher=teacher, distill=distill, resume=ck, stage=f"prune{k}", model_extra=extra)
            model, _ = load_model(out)  # the best epoch of this step
        else:
            save_model(out, model, pdesc["name"], nc, kwargs=pdesc.get("kwargs", {}), extra=extra)
        state["steps_done"] = k + 1
        atomic_write_json(state_p, state)
    if res is None and state["steps_done"] == iterative and not out.exists():
        save_model(out, model, pdesc["name"], nc, kwargs=pdesc.get("kwargs", {}), extra=extra)
    model, _ = load_model(out)
    model.to(device)
    val = evaluate(model, task, data.val, recipe, device, num_classes=nc)
    test = evaluate(model, task, data.test, recipe, device, num_classes=nc) if data.test is not None else None
    after = {"params": count_params(model), "macs": count_macs(model, example), f"val_{p}": val[p]}
    info("timing the parent and the pruned model in ONNX Runtime (5 interleaved rounds) ...")
    lat = interleaved_latency({"before": parent_model, "after": copy.deepcopy(model).cpu().eval()}, example, threads)
    before["latency_ms_ort"], after["latency_ms_ort"] = lat["before"]["p50"], lat["after"]["p50"]
    before["latency_rounds_ms_ort"], after["latency_rounds_ms_ort"] = lat["before"]["rounds"], lat["after"]["rounds"]
    sp = [b / a for b, a in zip(lat["before"]["rounds"], lat["after"]["rounds"])]
    speed = {"median": float(np.median(sp)), "min": float(min(sp)), "max": float(max(sp)), "rounds": len(sp),
             "method": "per-round p50 ratio, 5 interleaved rounds, ONNX Runtime, batch 1"}
    target_met = None if not target_latency_ms else lat["after"]["max"] <= target_latency_ms
    drop = (before[f"val_{p}"] - after[f"val_{p}"]) * 100
    metrics = {"status": "complete", "stage": "prune", "model": pdesc["name"], "parent": str(parent.path),
               "config": cfg, "search": search, "before": before, "after": after,
               "params_ratio": after["params"] / before["params"], "macs_ratio": after["macs"] / before["macs"],
               "latency_speedup_ort": speed["median"], "latency_speedup_ort_range": speed,
               "target_latency_met": target_met,
               **prefixed("val", val), f"val_{p}_parent": before[f"val_{p}"], "drop_points": round(drop, 3),
               **prefixed("test", test),
               "epochs": epochs * iterative, "seconds": round(time.perf_counter() - t0, 1),
               "history": (res.history if res else []), "params": after["params"], "versions": versions()}
    status_ok = max_drop is None or drop <= max_drop
    if not status_ok:
        metrics["status"] = "failed_gate"
        metrics["status_reason"] = f"val {metric_name(p)} dropped {drop:.2f} points > --max-drop {max_drop}"
    out.write_metrics(metrics)
    result(f"pruned {pdesc['name']}: params {before['params'] / 1e6:.3f}M -> {after['params'] / 1e6:.3f}M "
           f"({100 * metrics['params_ratio']:.0f}%), MACs {before['macs'] / 1e6:.1f}M -> {after['macs'] / 1e6:.1f}M "
           f"({100 * metrics['macs_ratio']:.0f}%), ONNX Runtime p50 {before['latency_ms_ort']:.3f} -> "
           f"{after['latency_ms_ort']:.3f} ms [rounds {lat['after']['min']:.3f}-{lat['after']['max']:.3f}] "
           f"({speed['median']:.2f}x, range {speed['min']:.2f}-{speed['max']:.2f}x over {speed['rounds']} interleaved "
           f"rounds); val {metric_name(p)} {before[f'val_{p}']:.4f} -> {after[f'val_{p}']:.4f} ({-drop:+.2f} points)")
    if target_met is False:
        warn(f"--target-latency {target_latency_ms} ms not met after fine-tuning: p50 {after['latency_ms_ort']:.3f} ms, "
             f"slowest round {lat['after']['max']:.3f} ms (the search met it on the untrained pruned model); prune "
             f"a little more (--ratio above {ratio:.3f})")
    if not status_ok:
        raise GateFailed(f"prune: {metrics['status_reason']}; run kept at {out.path} marked 'failed_gate'",
                         hint="prune less (--ratio), fine-tune longer (--epochs), or use --iterative / --distill")
    return metrics


def _take(it, n):
    for i, x in enumerate(it):
        if i >= n:
            break
        yield x

