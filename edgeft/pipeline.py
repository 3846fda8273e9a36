"""``edgeft run RECIPE``: finetune -> (prune) -> (qat) -> export every target -> (optimize) -> bench -> report.

Each stage writes into ``runs/<name>/<stage>`` and is recorded in ``pipeline.json``; a finished stage
whose inputs did not change is not redone, an interrupted fine-tune is resumed, and a changed recipe
for a finished stage is an error (never a silent overwrite).

Example::

    from edgeft.pipeline import run_pipeline
    summary = run_pipeline("recipes/image_cls/default.yaml")
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from .errors import CheckFailed, EdgeftError, GateFailed, RunError
from .recipe import load_recipe
from .utils.io import atomic_write_json, read_json, sha256_file
from .utils.log import info, result

TRAIN_KEYS = ("task", "model", "data", "input", "augment", "train", "features", "augment_audio")


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def stage_hash(recipe, keys) -> str:
    d = recipe.model_dump(mode="json")
    return _hash({k: d.get(k) for k in keys if k in d})


class Pipeline:
    def __init__(self, recipe, root: Path, profile: str | None = None, threads: int | None = None):
        self.r = recipe
        self.root = root
        self.state_path = root / "pipeline.json"
        self.state = read_json(self.state_path) if self.state_path.is_file() else {"stages": {}}
        self.profile = profile
        self.threads = threads
        self.rows: list[tuple[str, str, str, str]] = []
        from .tasks import device_task
        from .tasks.base import metric_name

        self.metric = device_task(recipe.task).metric
        self.mname = metric_name(self.metric)

    def save(self) -> None:
        atomic_write_json(self.state_path, self.state)

    def record(self, name: str, status: str, seconds: float, detail: str, **extra) -> None:
        self.state["stages"][name] = {"status": status, "seconds": round(seconds, 1), "detail": detail, **extra}
        self.save()
        self.rows.append((name, status, f"{seconds:.0f}s", detail))

    # -------------------------------------------------------------------------------------- stages
    def finetune(self) -> Path:
        from .rundir import RunDir
        from .stages.finetune import finetune

        d = self.root / "finetune"
        h = stage_hash(self.r, TRAIN_KEYS)
        prev = self.state["stages"].get("finetune", {})
        m = RunDir(d).read_metrics()
        if m.get("status") == "complete":
            if prev.get("hash") not in (None, h):
                raise RunError(f"{d} was trained from a different recipe (train/data/model sections changed)",
                               hint=f"use --out NEW_DIR for the new recipe (the finished run in {d} is kept)")
            self.rows.append(("finetune", "cached", "0s", _ft_detail(m, self.metric)))
            return d
        t = time.perf_counter()
        resume = (d / "last.pt").is_file()
        m = finetune(self.r, d, resume=resume)
        self.record("finetune", "done", time.perf_counter() - t, _ft_detail(m, self.metric), hash=h)
        return d

    def prune(self, parent: Path) -> Path:
        from .stages.prune import prune

        cfg = self.r.compress.prune
        return self._child_stage(
            "prune", parent, cfg,
            lambda d: prune(parent, out=d, **cfg.model_dump(), target_macs=None, target_latency_ms=None,
                            resume=(d / "last.pt").is_file(), threads=None),
            lambda m: f"{m['macs_ratio']:.2f}x MACs kept, val {self.mname} {m[f'val_{self.metric}']:.4f}")

    def qat(self, parent: Path) -> Path:
        from .stages.qat import qat

        cfg = self.r.compress.qat
        return self._child_stage(
            "qat", parent, cfg,
            lambda d: qat(parent, out=d, **cfg.model_dump(), resume=False, threads=None),
            lambda m: f"val {self.mname} {m[f'val_{self.metric}']:.4f} (PTQ init {m[f'ptq_val_{self.metric}']:.4f})")

    def _child_stage(self, name: str, parent: Path, cfg, run, detail) -> Path:
        """A stage derived from ``parent``'s model: cached while the parent's weights and ``cfg`` are unchanged."""
        d = self.root / name
        key = {"parent": sha256_file(parent / "model.safetensors"), "cfg": cfg.model_dump(mode="json")}
        if name == "qat":   # the INT8 weight range depends on the target, and "host" on this machine
            from .targets import resolve

            key["target"] = resolve(cfg.target if cfg.flavour == "cpu" else "tensorrt", "onnxruntime").name
        h = _hash(key)
        if self._cached(name, d, h):
            return d
        t = time.perf_counter()
        m = run(d)
        self.record(name, "done", time.perf_counter() - t, detail(m), hash=h)
        return d

    def _cached(self, name: str, d: Path, h: str) -> bool:
        prev = self.state["stages"].get(name, {})
        if prev.get("status") == "done" and prev.get("hash") == h and (d / "model.safetensors").is_file():
            self.rows.append((name, "cached", "0s", prev.get("detail", "")))
            return True
        if prev.get("hash") not in (None, h) and d.exists():
            raise RunError(f"{d} was made from other inputs (the recipe or its parent changed)",
                           hint="use --out NEW_DIR (finished stages there are kept)")
        return False

    def export(self, fp32_run: Path, qat_run: Path | None) -> list[Path]:
        from .bundle import read_manifest
        from .stages.export import export
        from .targets import resolve

        out = []
        for tgt in self.r.export.targets:
            src = qat_run if (tgt.precision == "int8" and qat_run is not None) else fp32_run
            tag = f"{tgt.format}-{tgt.precision}" + ("-qat" if src == qat_run else "") + \
                (f"-{tgt.target}" if tgt.target not in (None, "host") else "")
            want = resolve(tgt.target, tgt.format).name if src != qat_run else None
            b = self.root / "bundles" / tag
            wsha = sha256_file(src / "model.safetensors")
            if (b / "manifest.json").is_file():
                try:
                    m = read_manifest(b)
                    same_target = want is None or (m.get("target") or {}).get("name") == want
                    # a bundle that failed its gate is built again (the recipe's gate may have changed)
                    if (m["source"].get("model_sha256") == wsha and m["source"].get("recipe_hash") and same_target
                            and m["status"] == "ok"):
                        self.rows.append((f"export {tag}", "cached", "0s", _ex_detail(m)))
                        out.append(b)
                        continue
                except EdgeftError:
                    pass  # unreadable or tampered: rebuild it
            t = time.perf_counter()
            try:
                m = export(src, format=tgt.format, precision=tgt.precision, target=tgt.target, out=b, force=True)
                self.record(f"export {tag}", "done", time.perf_counter() - t, _ex_detail(m))
                out.append(b)
            except GateFailed as e:
                self.record(f"export {tag}", "failed_gate", time.perf_counter() - t, e.message)
        return out

    def optimize(self, fp32_run: Path) -> Path | None:
        """``edgeft optimize`` of the FP32 run (recipe ``optimize:``); returns the chosen bundle. The search is
        resumable: a finished one is reused while the run's weights are unchanged."""
        from .errors import CheckFailed
        from .optimize import optimize

        d = self.root / "optimize"
        t = time.perf_counter()
        st = read_json(d / "optimize.json") if (d / "optimize.json").is_file() else {}
        cached = st.get("wall_s") is not None and (st.get("choice") or {}).get("name") and \
            st.get("fingerprint", {}).get("weights") == sha256_file(fp32_run / "model.safetensors")
        if cached:
            self.rows.append(("optimize", "cached", "0s", _opt_detail(st)))
            return d / "chosen"
        try:
            st = optimize(fp32_run, out=d, settings=self.r.optimize.settings(threads=self.threads), resume=True)
        except CheckFailed as e:
            self.record("optimize", "failed_gate", time.perf_counter() - t, e.message)
            return None
        self.record("optimize", "done", time.perf_counter() - t, _opt_detail(st))
        return d / "chosen"

    def bench(self, artifacts: list[Path]) -> dict | None:
        from .bench.harness import BenchConfig, bench
        from .bench.report import plots, save_json, save_markdown
        from .bundle import read_manifest

        d = self.root / "bench"
        b = self.r.bench
        profile = self.profile or b.profile
        shas = []
        for a in artifacts:
            shas.append(read_manifest(a)["files"] if (a / "manifest.json").is_file()
                        else sha256_file(a / "model.safetensors"))
        h = _hash({"artifacts": [str(a) for a in artifacts], "shas": shas, "bench": b.model_dump(mode="json"),
                   "profile": profile, "threads": self.threads})
        prev = self.state["stages"].get("bench", {})
        if prev.get("hash") == h and (d / "result.json").is_file():
            doc = read_json(d / "result.json")
            self.rows.append(("bench", "cached", "0s", prev.get("detail", "")))
            return doc
        t = time.perf_counter()
        cfg = BenchConfig(data=_bench_data(self.r), scenario=b.scenario, profile=profile,
                          threads=self.threads or b.threads, data_limit=b.data_limit,
                          command=f"edgeft run {self.r.name}")
        doc = bench([str(a) for a in artifacts], cfg)
        save_json(doc, d / "result.json")
        save_markdown([doc], d / "result.md")
        try:
            plots(doc, d / "plots")
        except ImportError:
            pass
        self.record("bench", "done", time.perf_counter() - t, f"{len(artifacts)} artifacts, profile {profile}, "
                                                               f"valid {doc['validity']['valid']}", hash=h)
        doc.pop("_raw", None)
        doc.pop("_timeline", None)
        return doc

    def summary(self, doc: dict | None) -> str:
        from .bench.report import markdown

        lines = ["| stage | status | time | result |", "|---|---|---|---|"]
        lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in self.rows]
        text = "\n".join(lines) + "\n"
        if doc:
            text += "\n" + markdown([doc])
        return text


def _ft_detail(m: dict, metric: str = "top1") -> str:
    from .tasks.base import metric_name

    name = metric_name(metric)
    s = f"val {name} {m.get(f'val_{metric}', float('nan')):.4f}"
    if m.get(f"test_{metric}") is not None:
        s += f", test {name} {m[f'test_{metric}']:.4f}"
    return s + f", {m.get('epochs')} epochs, {m.get('train_time_s')}s"


def _opt_detail(st: dict) -> str:
    ch = st.get("choice") or {}
    c = (st.get("candidates") or {}).get(ch.get("name")) or {}
    rep = st.get("report") or {}
    s = f"chose {ch.get('name')}: val drop {c.get('val_drop', float('nan')):+.2f} points, p50 {c.get('p50_ms', 0):.3f} ms"
    if rep.get("speedup_vs_openvino_fp32"):
        s += f", {rep['speedup_vs_openvino_fp32']:.2f}x vs OpenVINO FP32 on test"
    return s + f" ({len(st.get('candidates') or {})} candidates, {st.get('wall_s', 0):.0f}s)"


def _ex_detail(m: dict) -> str:
    a = m["parity"]["accuracy"]
    from .tasks.base import metric_name

    k = a.get("metric", "top1")
    return (f"val {metric_name(k)} {a[k]:.4f} (PyTorch {a[f'{k}_pytorch_fp32']:.4f}), max-abs-diff "
            f"{m['parity']['max_abs_diff']:.1e}")


def _bench_data(r) -> str:
    from .data.images import BUILTIN

    if getattr(r.bench, "data", None):
        return r.bench.data
    src = r.data.source
    from .tasks import builtin_source_task

    if src in BUILTIN or builtin_source_task(src):
        return f"{src}:test"
    p = Path(src)
    for cand in ("test", "val", "validation"):
        if (p / cand).is_dir():
            return str(p / cand)
    raise RunError(f"no held-out data to benchmark on: {src} has no test/ or val/ folder",
                   hint="set bench.data in the recipe (a folder of class sub-folders not used for training)")


def run_pipeline(recipe, out: str | Path | None = None, overrides=(), profile: str | None = None,
                 threads: int | None = None, until: str | None = None) -> str:
    r = load_recipe(recipe, overrides) if not hasattr(recipe, "train") else recipe
    root = Path(out) if out else Path("runs") / (r.name or "run")
    root.mkdir(parents=True, exist_ok=True)
    p = Pipeline(r, root, profile=profile, threads=threads)
    p.state["recipe"] = r.name
    p.state["recipe_hash"] = r.hash()
    p.save()
    stages = ["finetune", "prune", "qat", "export", "optimize", "bench"]
    if until and until not in stages:
        raise RunError(f"--until {until!r}: valid stages are {', '.join(stages)}")
    stop = stages.index(until) if until else len(stages) - 1
    info(f"pipeline {r.name} -> {root}")
    run = p.finetune()
    reference_runs = [run]
    fp32 = run
    if r.compress.prune and stop >= 1:
        fp32 = p.prune(run)
        reference_runs.append(fp32)
    qrun = p.qat(fp32) if r.compress.qat and stop >= 2 else None
    bundles = p.export(fp32, qrun) if stop >= 3 else []
    if r.optimize is not None and stop >= 4:
        chosen = p.optimize(fp32)
        if chosen is not None:
            bundles.append(chosen)
    doc = p.bench(reference_runs + bundles) if stop >= 5 else None
    text = p.summary(doc)
    atomic_write_json(root / "pipeline.json", p.state)
    (root / "summary.md").write_text(text)
    result(text)
    failed = [f"{name} ({status}: {detail})" for name, status, _, detail in p.rows if status not in ("done", "cached")]
    if doc is not None and not doc["validity"]["valid"]:
        bad = [c["name"] for c in doc["validity"]["checks"] if not c["passed"] and not c.get("warn_only")]
        failed.append(f"bench (not valid: {', '.join(bad[:3])})")
    if failed:
        raise CheckFailed(f"pipeline {r.name} finished with {len(failed)} failed step(s): {'; '.join(failed)}; "
                          f"everything is kept in {root} (summary.md)",
                          hint="fix the failed step and re-run the same command (finished stages are kept)")
    return text
