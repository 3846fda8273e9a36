"""Classification, training side (torch): the loss (label smoothing, optional distillation), the evaluation
(torchmetrics top-1/top-5 with a Wilson interval, confusion matrix) and the named outputs of a model."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import RunError
from ..stats import wilson_ci
from .classify import OUTPUT


class TorchClassification:
    primary = "top1"
    history_metrics = ("top1", "top5", "loss")   # what each epoch's row records (val_top1, val_top5, val_loss)

    def io_spec(self, recipe, labels: list[str]) -> dict:
        return {"inputs": [self.input_spec(recipe)],
                "outputs": [{"name": OUTPUT, "shape": ["batch", len(labels)], "dtype": "float32"}]}

    def loss(self, model, x, y, recipe, teacher=None, distill: float = 0.0):
        """(loss, {metric: count}) for one batch: cross-entropy with label smoothing, plus a distillation term
        from ``teacher`` (KL at temperature 4) weighted by ``distill``."""
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=recipe.train.label_smoothing)
        if teacher is not None and distill > 0:
            with torch.no_grad():
                tl = teacher(x).float()
            t = 4.0
            kd = F.kl_div(F.log_softmax(logits.float() / t, 1), F.softmax(tl / t, 1), reduction="batchmean") * t * t
            loss = (1 - distill) * loss + distill * kd
        return loss, {"top1": int((logits.detach().argmax(1) == y).sum())}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split, recipe, device, batch_size: int | None = None,
                 want_confusion: bool = False, num_classes: int | None = None) -> dict:
        """top-1/top-5/loss on a whole split (torchmetrics), plus a Wilson 95% CI on top-1."""
        from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

        m = model.module if hasattr(model, "module") else model
        was = m.training
        m.eval()
        nc = num_classes or _num_classes(m)
        kw = {"sync_on_compute": False}  # rank 0 evaluates the whole split alone under DDP
        top1 = MulticlassAccuracy(num_classes=nc, top_k=1, average="micro", **kw).to(device)
        top5 = MulticlassAccuracy(num_classes=nc, top_k=min(5, nc), average="micro", **kw).to(device)
        cm = MulticlassConfusionMatrix(num_classes=nc, **kw).to(device) if want_confusion else None
        loss_sum, n = 0.0, 0
        for x, y in self.eval_batches(split, recipe, batch_size or recipe.train.eval_batch_size, str(device)):
            logits = m(x).float()
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            n += int(y.numel())
            top1.update(logits, y)
            top5.update(logits, y)
            if cm is not None:
                cm.update(logits, y)
        m.train(was)
        if n == 0:
            raise RunError("evaluation split is empty")
        t1 = float(top1.compute())
        correct = int(round(t1 * n))
        out = {"top1": t1, "top5": float(top5.compute()), "loss": loss_sum / n, "n": n,
               "top1_ci95": list(wilson_ci(correct, n))}
        if cm is not None:
            out["confusion"] = cm.compute().cpu().numpy().astype(int).tolist()
        return out

    def extra_manifest(self, recipe) -> dict:
        """Task-specific manifest sections (JSON)."""
        return {}

    def bundle_files(self, recipe, model, out_dir) -> dict:
        """Extra files the task writes into a bundle; returns {role: file name} for ``model_files``."""
        return {}

    def reference_extra(self, model) -> dict:
        """What the device half needs from a PyTorch model to post-process its outputs (the bench's reference)."""
        return {}

    def torch_outputs(self, model: nn.Module, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The model's outputs under the bundle's output names (the parity reference)."""
        with torch.no_grad():
            y = model(*[torch.from_numpy(v) for v in feeds.values()])
        return {OUTPUT: y.numpy()}


def _num_classes(m: nn.Module) -> int:
    last = [mod for mod in m.modules() if isinstance(mod, nn.Linear)]
    return last[-1].out_features if last else 2
