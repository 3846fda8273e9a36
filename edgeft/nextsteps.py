"""The "Next:" commands every command ends with: runnable exactly as printed.

Each suggestion is built from what the user typed (``--out``, ``--set``, ``--profile``...) and from what is on
disk (the bundle's task, the run's data, a QAT run's FP32 parent), never a placeholder such as ``<IMAGE>``:
where a command needs inputs, the command that makes them offline comes first. ``tests/test_release.py`` runs
them.
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path

from .tasks import builtin_source_task

# the keyword-spotting recipe suggested: the fewest false accepts measured on real speech, streaming (RESULTS §15m)
KWS_RECIPE = "kws/ds_tcn_m"


def q(x) -> str:
    return shlex.quote(str(x))


def _read(p: Path) -> dict:
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}


def run_source(run: Path) -> str | None:
    """data.source of a run (or of a bundle's source run)."""
    run = Path(run)
    if (run / "manifest.json").is_file():
        return (_read(run / "manifest.json").get("source") or {}).get("data")
    try:
        import yaml

        return ((yaml.safe_load((run / "recipe.yaml").read_text()) or {}).get("data") or {}).get("source")
    except (OSError, ValueError, AttributeError):
        return None


def run_task(run: Path) -> str | None:
    run = Path(run)
    if (run / "manifest.json").is_file():
        return _read(run / "manifest.json").get("task")
    try:
        import yaml

        return (yaml.safe_load((run / "recipe.yaml").read_text()) or {}).get("task")
    except (OSError, ValueError, AttributeError):
        return None


def reference_run(run: Path) -> Path:
    """The run to bench as the PyTorch reference: a QAT run's FP32 parent (its own model is a simulation)."""
    qat = _read(Path(run) / "model.json").get("qat")
    return Path(qat["parent"]["run"]) if qat and qat.get("parent", {}).get("run") else Path(run)


def data_opt(run_or_bundle: Path) -> str:
    """`--data X` that bench accepts for this artifact: the built-in test split, or the run's own held-out folder
    ('' when bench's default is right or nothing held out is known)."""
    src = run_source(run_or_bundle)
    if src and builtin_source_task(src):
        return f" --data {src}:test"
    if src and Path(src).is_dir():
        for cand in ("test", "val", "validation"):
            if (Path(src) / cand).is_dir():
                return f" --data {q(Path(src) / cand)}"
    return ""


def inputs_for(bundle: Path, workdir: str = ".") -> tuple[list[str], str | None]:
    """(commands that make sample inputs offline, the input path to pass) for predicting with ``bundle``."""
    task = run_task(bundle)
    src = run_source(bundle)
    if task == "kws":
        d = Path(workdir) / "kws-streams"
        return [f"edgeft data make-stream --out {q(d)} --profile smoke"], str(d / "stream_positive.wav")
    if src and builtin_source_task(src):
        d = Path(workdir) / f"{src}-test"
        return [f"edgeft data export-images {src} --out {q(d)} --limit 16"], str(d)
    if src and Path(src).is_dir():
        for cand in ("test", "val", "validation", ""):
            p = Path(src) / cand
            if p.is_dir():
                return [], str(p)
    return [], None


def after_export(run: Path, bundle: Path) -> list[str]:
    task = run_task(bundle)
    ref = reference_run(run)
    if task == "kws":
        make, wav = inputs_for(bundle, str(run))
        return make + [f"edgeft listen {q(bundle)} --source {q(wav)} --asfast",
                       f"edgeft bench {q(bundle)} --scenario audio_stream --profile quick"]
    make, inp = inputs_for(bundle, str(run))
    cmds = make + ([f"edgeft predict {q(bundle)} {q(inp)}"] if inp else [])
    return cmds + [f"edgeft bench {q(ref)} {q(bundle)}{data_opt(run)} --profile quick"]


def after_finetune(run: Path) -> list[str]:
    if run_task(run) == "kws":
        return [f"edgeft export {q(run)} --format onnxruntime"]
    return [f"edgeft export {q(run)} --format openvino --int8", f"edgeft bench {q(run)}{data_opt(run)} --profile quick"]


def rerun_command(recipe: str, out, profile, threads, until, sets) -> str:
    """The `edgeft run` command as the user typed it (re-running it keeps finished stages)."""
    parts = ["edgeft run", q(recipe)]
    if out is not None:
        parts += ["--out", q(out)]
    if profile:
        parts += ["--profile", q(profile)]
    if threads:
        parts += ["--threads", str(threads)]
    if until:
        parts += ["--until", q(until)]
    for s in sets or ():
        parts += ["--set", q(s)]
    return " ".join(parts)


def after_run(root: Path) -> list[str]:
    bundles = sorted(p for p in (Path(root) / "bundles").glob("*") if (p / "manifest.json").is_file()
                     and _read(p / "manifest.json").get("status") == "ok")
    if not bundles:
        ft = Path(root) / "finetune"
        return [f"edgeft export {q(ft)} --format onnxruntime"] if (ft / "model.json").is_file() else []
    b = next((p for p in bundles if p.name.endswith("int8")), bundles[0])
    if run_task(b) == "kws":
        make, wav = inputs_for(b, str(root))
        return make + [f"edgeft listen {q(b)} --source {q(wav)} --asfast"]
    make, inp = inputs_for(b, str(root))
    return make + ([f"edgeft predict {q(b)} {q(inp)}"] if inp else [])


def recipe_for_model(name: str, task: str) -> str:
    """A shipped recipe that trains ``name``, else the task's base recipe with ``--set model.name=NAME``."""
    from .recipe import REPO_RECIPES, list_recipes

    import yaml

    for r in list_recipes():
        try:
            d = yaml.safe_load((REPO_RECIPES / f"{r}.yaml").read_text()) or {}
        except (OSError, ValueError):
            continue
        if (d.get("model") or {}).get("name") == name:
            return f"--recipe {r}"
    base = {"kws": KWS_RECIPE, "detection": "detection/default"}.get(task, "image_cls/resnet18")
    return f"--recipe {base} --set model.name={q(name)}"


def find_bundle(task: str | None = None, source: str | None = None, root: Path = Path("runs")) -> Path | None:
    """A usable bundle under ./runs for ``task`` (and trained on ``source``), newest first; None if there is none."""
    found = []
    for m in list(root.glob("*/bundles/*/manifest.json")) + list(root.glob("*/*/bundles/*/manifest.json")):
        d = _read(m)
        if d.get("status") != "ok" or (task and d.get("task") != task):
            continue
        if source and (d.get("source") or {}).get("data") != source:
            continue
        found.append((m.stat().st_mtime, m.parent))
    return max(found)[1] if found else None


def bundle_or_demo(task: str, source: str | None = None) -> tuple[list[str], Path]:
    """A bundle to suggest: one already made here, else the demo pipeline's INT8 bundle after running it."""
    b = find_bundle(task, source) or find_bundle(task)
    if b is not None:
        return [], b
    recipe = {"detection": "detection/default", "kws": KWS_RECIPE}.get(task, "image_cls/default")
    root = Path("runs") / {"detection": "detection-default", "kws": KWS_RECIPE.split("/")[1]}.get(task, "default")
    fmt = "onnx-fp32" if task == "kws" else "openvino-int8"
    return [f"edgeft run {recipe}"], root / "bundles" / fmt
