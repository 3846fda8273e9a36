"""Classification on the device side (torch-free), shared by every classifying task (images, keywords):
softmax + top-k post-processing, top-1/top-5 with Wilson 95% intervals, and the parity rule for logits."""
from __future__ import annotations

import numpy as np

from ..stats import wilson_ci

OUTPUT = "logits"

# parity tolerances per precision (recorded in every manifest)
TOLERANCE = {
    "fp32": {"max_abs_diff_rel": 1e-4, "top1_agreement_min": 0.995},
    "fp16": {"cosine_min": 0.999, "top1_agreement_min": 0.98},
    "bf16": {"cosine_min": 0.999, "top1_agreement_min": 0.98},
    "int8": {"gate": "--max-drop on validation top-1 (points)"},
}


def softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def topk(logits: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Softmax + top-k, what an application does with the logits: (indices (N, k) best first, probabilities).
    Ties go to the lower class index, as ``argmax`` breaks them: an INT8 model's dequantized logits tie often, and
    every top-1 in edgeft (export's val metric, the bench, optimize's paired statistics) must pick the same class."""
    p = softmax(logits)
    k = min(k, p.shape[-1])
    # ranked on the logits, not on p: softmax can round two close logits to one probability
    idx = np.argsort(-np.asarray(logits), axis=-1, kind="stable")[..., :k]
    return idx, p


class ClassificationMixin:
    """The device-side half every classifier shares; a task adds its preprocessing and data."""

    metric = "top1"
    output = OUTPUT
    tolerance = TOLERANCE

    def bound(self, manifest: dict, bundle_dir=None):
        """This task for one bundle: a classifier needs nothing from the bundle beyond the manifest."""
        return self

    # ---------------------------------------------------------------------------------- predictions
    def postprocess(self, outputs: dict, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        return topk(outputs[self.output], k)

    def predictions(self, outputs: dict, labels: list[str], top_k: int = 5) -> list[list[tuple[str, float]]]:
        """Per sample: the top-k (label, probability) pairs."""
        idx, p = topk(outputs[self.output], min(top_k, len(labels)))
        return [[(labels[i], float(pr[i])) for i in row] for row, pr in zip(idx, p)]

    def format_prediction(self, pred) -> str:
        return ", ".join(f"{label} {prob:.3f}" for label, prob in pred)

    def prediction_json(self, pred) -> dict:
        return {"top": [{"label": label, "prob": round(prob, 6)} for label, prob in pred]}

    # ------------------------------------------------------------------------------------- accuracy
    def accumulator(self, n_classes: int) -> "TopK":
        return TopK()

    # --------------------------------------------------------------------------------------- parity
    def parity(self, ref: dict, got: dict) -> dict:
        """Artifact outputs vs the PyTorch reference on the same inputs."""
        r, g = np.asarray(ref[self.output]), np.asarray(got[self.output])
        diff = np.abs(g - r)
        cos = (g * r).sum(1) / (np.linalg.norm(g, axis=1) * np.linalg.norm(r, axis=1) + 1e-12)
        return {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
                "ref_max_abs_logit": float(np.abs(r).max()), "cosine_mean": float(cos.mean()),
                "cosine_min": float(cos.min()), "top1_agreement": float((g.argmax(1) == r.argmax(1)).mean())}

    def parity_failure(self, par: dict, precision: str) -> str | None:
        """Why the outputs do not match PyTorch within the precision's tolerance (None when they do)."""
        if precision == "fp32":
            t = self.tolerance["fp32"]
            lim = t["max_abs_diff_rel"] * max(1.0, par["ref_max_abs_logit"])
            if par["max_abs_diff"] > lim or par["top1_agreement"] < t["top1_agreement_min"]:
                return (f"FP32 max-abs-diff {par['max_abs_diff']:.2e} (limit {lim:.1e}), top-1 agreement "
                        f"{par['top1_agreement']:.3f}")
        elif precision in ("fp16", "bf16"):
            t = self.tolerance[precision]
            if par["cosine_min"] < t["cosine_min"] or par["top1_agreement"] < t["top1_agreement_min"]:
                return (f"{precision.upper()} cosine min {par['cosine_min']:.5f}, top-1 agreement "
                        f"{par['top1_agreement']:.3f}")
        return None

    def summary_line(self, par: dict) -> str:
        return (f"max-abs-diff {par['max_abs_diff']:.2e}, cosine min {par['cosine_min']:.6f}, top-1 agreement "
                f"{par['top1_agreement']:.4f}")


class TopK:
    """Top-1/top-5 over a whole split, accumulated batch by batch, with Wilson 95% intervals; keeps the outputs
    of the samples asked for (the bench's compliance check)."""

    metric = "top1"

    def __init__(self):
        self.c1 = self.c5 = self.n = 0
        self.preds: list[np.ndarray] = []

    def update(self, outputs: dict, targets: np.ndarray) -> None:
        top, _ = topk(outputs[OUTPUT], 5)
        y = np.asarray(targets)
        self.c1 += int((top[:, 0] == y).sum())
        self.c5 += int((top == y[:, None]).any(1).sum())
        self.n += len(y)
        self.preds.append(top[:, 0])

    def result(self) -> dict:
        n = max(self.n, 1)
        return {"metric": "top1", "top1": self.c1 / n, "top5": self.c5 / n, "n": self.n,
                "top1_ci95": list(wilson_ci(self.c1, self.n)), "top5_ci95": list(wilson_ci(self.c5, self.n))}
