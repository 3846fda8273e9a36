"""Training side: image data as image_cls, a two-head model (registered here), loss = CE + embedding penalty."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from edgeft.models import MODELS, ModelSpec
from edgeft.tasks.classify import OUTPUT
from edgeft.tasks.image_cls.task import Task as ImageTask

from .device import DEVICE


class TwoHeads(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.fc = nn.Linear(128, num_classes)
        self.emb = nn.Linear(128, 4)

    def forward(self, x):
        h = self.features(x)
        return self.fc(h), self.emb(h)


if "toy_two_heads_net" not in MODELS:
    MODELS.add("toy_two_heads_net", ModelSpec(name="toy_two_heads_net", task="toy_two_heads",
                                              build=lambda nc, **kw: TwoHeads(nc), head="fc",
                                              description="two-head toy"))


class Task(ImageTask):
    name = "toy_two_heads"
    device = DEVICE

    def io_spec(self, recipe, labels):
        s = super().io_spec(recipe, labels)
        s["outputs"].append({"name": "embedding", "shape": ["batch", 4], "dtype": "float32"})
        return s

    def loss(self, model, x, y, recipe, teacher=None, distill: float = 0.0):
        logits, emb = model(x)
        loss = F.cross_entropy(logits.float(), y) + recipe.embedding_weight * emb.float().pow(2).mean()
        return loss, {"top1": int((logits.detach().argmax(1) == y).sum())}

    @torch.no_grad()
    def evaluate(self, model, split, recipe, device, batch_size=None, want_confusion=False, num_classes=None):
        m = model.module if hasattr(model, "module") else model
        was = m.training
        m.eval()
        correct, n, loss = 0, 0, 0.0
        for x, y in self.eval_batches(split, recipe, batch_size or 256, str(device)):
            logits, _ = m(x)
            correct += int((logits.argmax(1) == y).sum())
            loss += float(F.cross_entropy(logits, y, reduction="sum"))
            n += len(y)
        m.train(was)
        return {"top1": correct / n, "top5": correct / n, "loss": loss / n, "n": n}

    def torch_outputs(self, model, feeds):
        with torch.no_grad():
            logits, emb = model(torch.from_numpy(feeds["input"]))
        return {OUTPUT: logits.numpy(), "embedding": emb.numpy()}
