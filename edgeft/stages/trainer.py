"""The one training loop (finetune, prune recovery and QAT all use it): resumable, DDP-aware, deterministic.

Per epoch: seeded batches (a pure function of seed and epoch), optional head-only warm start, AMP on CUDA,
gradient clipping, optional knowledge distillation; then validation on rank 0, best-model save and an
atomically written ``last.pt`` holding model, optimizer, scheduler, scaler, RNG state and history.
A killed run loses at most the epoch in progress and ``--resume`` replays from the last saved epoch.
"""
from __future__ import annotations

import math
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from ..errors import RunError
from ..rundir import RunDir, save_model
from ..tasks.base import num_batches
from ..utils.io import atomic_write_with
from ..utils.log import info, progress

CKPT_FORMAT = "edgeft-ckpt/1"


# ---------------------------------------------------------------------------------- distributed setup
@dataclass
class DistCtx:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()

    def broadcast(self, obj):
        if not self.active:
            return obj
        buf = [obj]
        torch.distributed.broadcast_object_list(buf, src=0)
        return buf[0]


def init_distributed(device_pref: str = "auto") -> DistCtx:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): NCCL on CUDA, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistCtx()
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_pref != "cpu"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local)
    return DistCtx(rank, world, local)


def pick_device(pref: str, ctx: DistCtx) -> torch.device:
    if pref == "auto":
        pref = "cuda" if torch.cuda.is_available() else "cpu"
    if pref.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RunError(f"train.device={pref!r} but no CUDA device is available",
                           hint="use train.device=cpu (or auto)")
        return torch.device(f"cuda:{ctx.local_rank}" if ctx.active else pref)
    return torch.device("cpu")


def set_determinism(seed: int, deterministic: bool, device: str = "auto") -> None:
    """Seed everything. On CUDA also force deterministic kernels; the CPU kernels used here are already
    deterministic run to run (the exact-resume test checks it), and the global flag slows some of them
    (DS-CNN training 1.4x on this CPU)."""
    import random

    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)
    if deterministic and torch.cuda.is_available() and device != "cpu":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


# ------------------------------------------------------------------------------------ optimisation
def make_optimizer(model: nn.Module, cfg, lr: float) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)  # no weight decay on norms and biases
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
    return torch.optim.AdamW(groups, lr=lr)


def make_scheduler(opt, cfg, steps_per_epoch: int, epochs: int):
    total = max(steps_per_epoch * epochs, 1)
    warm = int(round(cfg.warmup_epochs * steps_per_epoch)) if epochs > 1 else 0
    floor = cfg.min_lr_ratio

    def factor(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if cfg.scheduler == "constant":
            return 1.0
        t = min((step - warm) / max(total - warm, 1), 1.0)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def amp_dtype(cfg, device: torch.device):
    """Autocast dtype. GPUs: bf16 where supported, else fp16 (``auto``). CPUs: only when asked (``amp: bf16``, on a
    CPU with AVX512_BF16 or AMX): measured on a Zen 4 CPU (AVX512_BF16, no AMX), bf16 autocast trained
    EfficientNet-Lite0 at 64 px at 193 img/s against 243 img/s in fp32 (channels_last both;
    benchmarks/train_speed.py), so ``auto`` stays fp32 on CPUs."""
    if cfg.amp == "off":
        return None
    if device.type != "cuda":
        if cfg.amp == "fp16":
            from ..errors import UnsupportedError

            raise UnsupportedError("train.amp=fp16 on a CPU: CPU autocast trains in bf16 only",
                                   hint="use train.amp=bf16 (AVX512_BF16/AMX CPUs) or auto")
        if cfg.amp == "bf16":
            from ..targets import cpu_features

            if not cpu_features().has("bf16"):
                from ..errors import UnsupportedError

                raise UnsupportedError(f"train.amp=bf16 on a CPU without AVX512_BF16 or AMX ({cpu_features().describe()})",
                                       hint="use train.amp=auto (fp32 on CPUs)")
            return torch.bfloat16
        return None
    if cfg.amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[cfg.amp]


def make_ema(model: nn.Module, decay: float):
    """An exponential moving average of the weights (and BatchNorm buffers), PyTorch's AveragedModel, with timm's
    warm-up: the decay is min(decay, (1 + n) / (10 + n)) after n updates, so a short fine-tune is not dominated by
    the starting weights (a randomly initialised head)."""
    from torch.optim.swa_utils import AveragedModel

    def ema_update(ema_params, params, num_averaged):
        if not ema_params[0].is_floating_point():      # BatchNorm's num_batches_tracked: copied
            torch._foreach_copy_(ema_params, params)
            return
        n = int(num_averaged)
        d = min(decay, (1 + n) / (10 + n))
        torch._foreach_lerp_(ema_params, params, 1 - d)

    return AveragedModel(model, multi_avg_fn=ema_update, use_buffers=True)


# --------------------------------------------------------------------------------------- evaluation
def evaluate(model: nn.Module, task, split, recipe, device, batch_size: int | None = None,
             want_confusion: bool = False, num_classes: int | None = None) -> dict:
    """The task's metrics on a whole split (its primary metric under ``task.primary``)."""
    return task.evaluate(model, split, recipe, device, batch_size=batch_size, want_confusion=want_confusion,
                         num_classes=num_classes)


# ------------------------------------------------------------------------------------ fault injection
def _fault_point(stage: str, epoch: int, batch: int) -> None:
    """Test hook: EDGEFT_FAULT='finetune:epoch=1:batch=3' SIGKILLs this process at that point (a real kill)."""
    spec = os.environ.get("EDGEFT_FAULT")
    if not spec:
        return
    parts = spec.split(":")
    if parts[0] != stage:
        return
    kv = dict(p.split("=") for p in parts[1:])
    if int(kv.get("epoch", -1)) == epoch and int(kv.get("batch", -1)) == batch:
        os.kill(os.getpid(), signal.SIGKILL)


# ------------------------------------------------------------------------------------------- the loop
@dataclass
class FitResult:
    history: list = field(default_factory=list)
    best: dict = field(default_factory=dict)
    epochs_done: int = 0
    train_time_s: float = 0.0
    images_seen: int = 0
    stopped_early: bool = False
    best_val: dict | None = None        # the full validation result of the best epoch (this process's epochs)


def _rng_state() -> dict:
    st = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _batch_size(x, y) -> int:
    """Samples in a batch: a tensor's first dim, or the length of a list of targets (detection)."""
    return int(y.shape[0]) if hasattr(y, "shape") else len(y)


def load_checkpoint(rd: RunDir) -> dict | None:
    if not rd.last.is_file():
        return None
    try:
        ck = torch.load(rd.last, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise RunError(f"{rd.last}: cannot read the training checkpoint ({type(e).__name__}: {str(e)[:160]})",
                       hint="it is truncated or corrupt; start a new run with --out NEW_DIR") from None
    if not isinstance(ck, dict) or ck.get("format") != CKPT_FORMAT:
        raise RunError(f"{rd.last}: not an edgeft training checkpoint")
    return ck


def set_bn_momentum(model: nn.Module, momentum: float | None) -> int:
    """Set every BatchNorm's running-stat momentum (None: leave the model's own); returns how many changed."""
    if momentum is None:
        return 0
    n = 0
    for mod in model.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.momentum != momentum:
            mod.momentum = momentum
            n += 1
    return n


def freeze_params(model: nn.Module, prefixes, model_name: str = "the model") -> int:
    """Keep the parameters under ``prefixes`` (``train.freeze``) fixed: no gradients, so no backward through
    them either (their BatchNorm statistics still adapt). A prefix that matches nothing is an error."""
    if not prefixes:
        return 0
    names = [n for n, _ in model.named_parameters()]
    for pre in prefixes:
        if not any(n.startswith(pre) for n in names):
            tops = sorted({n.split(".")[0] for n in names})
            from ..errors import RecipeError

            raise RecipeError(f"train.freeze {pre!r} matches no parameter of {model_name}; its parameters start "
                              f"with {', '.join(tops)}", hint="use parameter-name prefixes such as 'backbone.'")
    n = 0
    for name, p in model.named_parameters():
        if name.startswith(tuple(prefixes)):
            p.requires_grad_(False)
            n += p.numel()
    return n


def fit(model: nn.Module, task, recipe, data, *, rd: RunDir | None, ctx: DistCtx, device: torch.device,
        epochs: int, lr: float, model_name: str, num_classes: int, model_kwargs: dict | None = None,
        head: str | None = None, freeze_epochs: int = 0, teacher: nn.Module | None = None, distill: float = 0.0,
        resume: dict | None = None, stage: str = "finetune", resume_cmd: str = "",
        model_extra: dict | None = None, on_epoch: Callable[[dict], None] | None = None,
        save_fn: Callable[[nn.Module], None] | None = None) -> FitResult:
    """Train ``model`` for ``epochs`` on ``data`` and keep the best weights (the task's primary validation
    metric, e.g. top-1) in ``rd``. The loss and the metrics are the task's."""
    cfg = recipe.train
    raw_model = model
    set_bn_momentum(model, cfg.bn_momentum)
    model.to(device)
    # channels_last: faster on CUDA and with oneDNN on CPU too (measured: ResNet-18 +17%, EfficientNet-Lite0 2x,
    # DS-CNN-S 1.45x training throughput on a 2-core AVX2 CPU)
    cl = cfg.channels_last == "on" or cfg.channels_last == "auto"
    if cl:
        model.to(memory_format=torch.channels_last)
    if teacher is not None:
        teacher.to(device).eval()
    freeze_params(raw_model, cfg.freeze, model_name)
    if (stage == "finetune" or stage.startswith("prune")) and hasattr(task, "prepare_training"):
        # e.g. detection: the frozen early stages run once per training image, the rest trains on their output
        import dataclasses

        data = dataclasses.replace(data, train=task.prepare_training(raw_model, data, recipe, device))
    if ctx.active:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    steps = num_batches(len(data.train), cfg.batch_size, ctx.world)
    if cfg.max_batches_per_epoch:
        steps = min(steps, cfg.max_batches_per_epoch)
    opt = make_optimizer(raw_model, cfg, lr)
    sched = make_scheduler(opt, cfg, steps, epochs)
    dtype = amp_dtype(cfg, device)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    ema = make_ema(raw_model, cfg.ema_decay) if cfg.ema_decay else None
    eval_model = ema.module if ema is not None else model
    primary = task.primary
    head_params = set()
    if head and freeze_epochs:
        head_params = {id(p) for p in raw_model.get_submodule(head).parameters()}

    res = FitResult()
    start = 0
    if resume is not None:
        raw_model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optimizer"])
        sched.load_state_dict(resume["scheduler"])
        if scaler is not None and resume.get("scaler"):
            scaler.load_state_dict(resume["scaler"])
        if ema is not None and resume.get("ema"):
            ema.load_state_dict(resume["ema"])
        _set_rng_state(resume["rng"])
        start = int(resume["epoch"])
        res.history = list(resume["history"])
        res.best = dict(resume["best"])
        res.train_time_s = float(resume["train_time_s"])
        res.images_seen = int(resume["images_seen"])
        res.epochs_done = start
        bad_epochs = int(resume.get("bad_epochs", 0))
        if start < epochs:
            info(f"resuming {stage} at epoch {start + 1}/{epochs} (best val {primary} so far "
                 f"{res.best.get(f'val_{primary}', float('nan')):.4f})")
    else:
        bad_epochs = 0

    with progress() as prog:
        for epoch in range(start, epochs):
            _fault_point(stage, epoch, -1)
            if stage == "finetune" and hasattr(task, "before_epoch") and ctx.world == 1:
                # e.g. keyword spotting's hard-negative mining: the training set grows; the steps per epoch (and so
                # the learning-rate schedule) stay as planned
                data = task.before_epoch(raw_model, data, recipe, epoch, epochs, device, rd) or data
            model.train()
            freeze = epoch < freeze_epochs and bool(head_params)
            t0 = time.perf_counter()
            seen, loss_sum, counts = 0, 0.0, {}
            bar = prog.add_task(f"{stage} epoch {epoch + 1}/{epochs}", total=steps, status="")
            for step, (x, y) in enumerate(task.train_batches(data, recipe, epoch, ctx.rank, ctx.world, str(device))):
                if step >= steps:
                    break
                _fault_point(stage, epoch, step)
                if cl and x.ndim == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    loss, batch_counts = task.loss(model, x, y, recipe, teacher=teacher, distill=distill)
                opt.zero_grad(set_to_none=True)
                (scaler.scale(loss) if scaler else loss).backward()
                if freeze:  # head-only warm start: backbone grads dropped (DDP-safe, no requires_grad toggling)
                    for p in raw_model.parameters():
                        if id(p) not in head_params:
                            p.grad = None
                if cfg.grad_clip:
                    if scaler:
                        scaler.unscale_(opt)
                    nn.utils.clip_grad_norm_(raw_model.parameters(), cfg.grad_clip)
                if scaler:
                    scaler.step(opt)
                    scaler.update()
                else:
                    opt.step()
                sched.step()
                if ema is not None:
                    ema.update_parameters(raw_model)
                bs = _batch_size(x, y)
                seen += bs
                loss_sum += float(loss.detach()) * bs
                for k, v in batch_counts.items():
                    counts[k] = counts.get(k, 0) + v
                prog.update(bar, advance=1, status=f"loss {loss_sum / seen:.3f}  "
                                                   f"{seen * ctx.world / (time.perf_counter() - t0):.0f} img/s")
            prog.remove_task(bar)
            dt = time.perf_counter() - t0
            res.train_time_s += dt
            res.images_seen += seen * ctx.world
            checked = (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == epochs
            val = evaluate(eval_model, task, data.val, recipe, device, num_classes=num_classes) \
                if ctx.main and checked else None
            val = ctx.broadcast(val) if checked else {}
            row = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1),
                   **{f"train_{k}": v / max(seen, 1) for k, v in counts.items()},
                   **{f"val_{k}": val[k] for k in task.history_metrics if k in val},
                   "lr": opt.param_groups[0]["lr"], "epoch_time_s": round(dt, 2),
                   "images_per_s": round(seen * ctx.world / dt, 1), "frozen_backbone": freeze}
            res.history.append(row)
            improved = checked and val[primary] > res.best.get(f"val_{primary}", -1.0)
            if improved:
                res.best = {**{f"val_{k}": val[k] for k in task.history_metrics if k in val}, "epoch": epoch + 1}
                res.best_val = val
                bad_epochs = 0
                best_model = ema.module if ema is not None else raw_model   # what was evaluated is what is kept
                if save_fn is not None and ctx.main:
                    save_fn(best_model)
                elif rd is not None and ctx.main:
                    save_model(rd, best_model, model_name, num_classes, kwargs=model_kwargs, extra=model_extra)
            elif checked:
                bad_epochs += 1
            res.epochs_done = epoch + 1
            shown = "  ".join(f"{k} {val[k]:.4f}" for k in task.history_metrics if k in val) or \
                f"(checked every {cfg.eval_every} epochs)"
            info(f"{stage} epoch {epoch + 1}/{epochs}: loss {row['train_loss']:.4f}  val {shown}  "
                 f"{row['images_per_s']:.0f} img/s{'  (best)' if improved else ''}")
            if rd is not None and ctx.main:
                ck = {"format": CKPT_FORMAT, "stage": stage, "epoch": epoch + 1, "model": raw_model.state_dict(),
                      "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                      "scaler": scaler.state_dict() if scaler else None, "rng": _rng_state(),
                      "ema": ema.state_dict() if ema is not None else None,
                      "history": res.history, "best": res.best, "bad_epochs": bad_epochs,
                      "train_time_s": res.train_time_s, "images_seen": res.images_seen}
                atomic_write_with(rd.last, lambda tmp: torch.save(ck, tmp))
            if on_epoch and ctx.main:
                on_epoch({"history": res.history, "best": res.best, "epochs_done": res.epochs_done})
            ctx.barrier()
            if cfg.early_stopping_patience and bad_epochs >= cfg.early_stopping_patience:
                info(f"early stopping: no val {primary} gain for {bad_epochs} epoch(s)")
                res.stopped_early = True
                break
    return res


def open_parent(run, out, default_out: str, resume: bool, threads: int | None, refuse_qat: str):
    """Open a parent run for a compression stage: (parent RunDir, its model.json, out RunDir, recipe, task, data)."""
    import json
    from pathlib import Path

    from ..errors import UnsupportedError
    from ..recipe import load_recipe
    from ..rundir import open_run
    from ..tasks import get_task

    parent = open_run(run)
    pdesc = json.loads(parent.model_json.read_text())
    if pdesc.get("qat"):
        raise UnsupportedError(refuse_qat.format(run=run), hint="use its FP32 (or pruned) parent run")
    out = RunDir(out or Path(str(parent.path) + default_out))
    if out.path.exists() and any(out.path.iterdir()) and not resume:
        raise RunError(f"{str(out.path)!r} already exists", hint="pass --resume to continue it or --out NEW_DIR")
    recipe = load_recipe(parent.recipe)
    if threads:
        torch.set_num_threads(threads)
    set_determinism(recipe.train.seed, recipe.train.deterministic, recipe.train.device)
    task = get_task(recipe.task)
    data = task.load_data(recipe)
    if list(data.classes) != parent.read_labels():
        raise RunError(f"the data of {parent.path} no longer has the classes of its labels.txt",
                       hint="restore the run's original data (recipe.yaml data.source)")
    return parent, pdesc, out, recipe, task, data
