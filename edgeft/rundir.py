"""Run directories: what a training-side stage (finetune, prune, qat) leaves behind, and how to load it.

A run directory holds ``recipe.yaml`` (resolved), ``labels.txt``, ``model.json`` + ``model.safetensors``
(the best model), ``last.pt`` (the resumable training state), ``metrics.json`` and plots. Models are
stored as safetensors plus a JSON description; a pruned model is rebuilt from its registry name and the
tensor shapes, so nothing is unpickled.
"""
from __future__ import annotations

import json
from pathlib import Path

from .errors import RunError
from .utils.io import atomic_write_json, atomic_write_text, atomic_write_with, read_json

MODEL_FORMAT = "edgeft-model/1"


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    recipe = property(lambda s: s.path / "recipe.yaml")
    labels = property(lambda s: s.path / "labels.txt")
    model_json = property(lambda s: s.path / "model.json")
    weights = property(lambda s: s.path / "model.safetensors")
    last = property(lambda s: s.path / "last.pt")
    metrics = property(lambda s: s.path / "metrics.json")
    split = property(lambda s: s.path / "split.json")

    def exists(self) -> bool:
        return self.model_json.is_file() and self.weights.is_file()

    def read_labels(self) -> list[str]:
        return [line for line in self.labels.read_text(encoding="utf-8").splitlines() if line]

    def write_labels(self, classes: list[str]) -> None:
        atomic_write_text(self.labels, "\n".join(classes) + "\n")

    def read_metrics(self) -> dict:
        return read_json(self.metrics) if self.metrics.is_file() else {}

    def write_metrics(self, m: dict) -> None:
        atomic_write_json(self.metrics, m)

    def describe(self) -> dict:
        return read_json(self.model_json)


def open_run(path: str | Path, need_model: bool = True) -> RunDir:
    """A run directory that a stage can consume; clear errors when it is not one."""
    rd = RunDir(path)
    if not rd.path.is_dir():
        raise RunError(f"run directory {str(path)!r} does not exist",
                       hint="pass the --out folder of an `edgeft finetune` (or prune/qat) run")
    missing = [p.name for p in (rd.recipe, rd.labels) if not p.is_file()]
    if need_model and not rd.exists():
        missing += [p.name for p in (rd.model_json, rd.weights) if not p.is_file()]
    if missing:
        state = rd.read_metrics().get("status") if rd.metrics.is_file() else None
        extra = f" (training status: {state})" if state else ""
        raise RunError(f"{str(path)!r} is not a complete edgeft run: missing {', '.join(missing)}{extra}",
                       hint="finish it with `edgeft finetune --resume --out RUN` or pick another run")
    return rd


def save_model(rd: RunDir, model, name: str, num_classes: int, *, kwargs: dict | None = None,
               extra: dict | None = None) -> None:
    """Write model.safetensors + model.json atomically (weights first, description second)."""
    from safetensors.torch import save_file

    from .models.surgery import shape_signature

    m = model.module if hasattr(model, "module") else model
    sd = {k: v.detach().cpu().contiguous() for k, v in m.state_dict().items()}
    atomic_write_with(rd.weights, lambda tmp: save_file(sd, str(tmp)))
    desc = {"format": MODEL_FORMAT, "name": name, "num_classes": int(num_classes), "kwargs": kwargs or {},
            "shapes": shape_signature(m), **(extra or {})}
    atomic_write_json(rd.model_json, desc)


def load_model(rd: RunDir | str | Path):
    """Rebuild the run's model (pruned architectures included) and load its weights; returns (model, desc)."""
    from safetensors.torch import load_file

    from .models import create_model, get_spec
    from .models.surgery import reshape_to_state_dict

    rd = rd if isinstance(rd, RunDir) else open_run(rd)
    try:
        desc = json.loads(rd.model_json.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RunError(f"{rd.model_json}: unreadable model description ({e})") from None
    if desc.get("format") != MODEL_FORMAT:
        raise RunError(f"{rd.model_json}: unknown model format {desc.get('format')!r} (expected {MODEL_FORMAT})")
    if desc.get("qat"):
        raise RunError(f"{rd.path} is a QAT run: its model is the INT8 Q/DQ graph ({desc['qat']['onnx']}), not a "
                       f"plain PyTorch model", hint="export it (`edgeft export RUN --int8`); use its parent run "
                                                    f"({desc['qat']['parent']['run']}) as the FP32 reference")
    try:
        sd = load_file(str(rd.weights))
    except Exception as e:  # noqa: BLE001
        raise RunError(f"{rd.weights}: cannot read weights ({type(e).__name__}: {e})",
                       hint="the file is truncated or not safetensors; re-run the stage that wrote it") from None
    model = create_model(desc["name"], desc["num_classes"], **desc.get("kwargs", {}))
    reshape_to_state_dict(model, sd)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise RunError(f"{rd.weights} does not fit {desc['name']}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    model.eval()
    get_spec(desc["name"])
    return model, desc
