"""``edgeft optimize``: from a trained run to the fastest bundle that stays within an accuracy budget on the target.

Example::

    from edgeft.optimize import optimize
    doc = optimize("runs/r18", max_drop=1.0, time_budget_s=1800)
    doc["choice"]["name"], doc["choice"]["why"]

CLI: ``edgeft optimize runs/r18 --max-drop 1.0 [--backend openvino] [--time-budget 30m] [--device jetson]``

The search, cheapest first (each step is skipped, with the reason recorded, when the time budget cannot fit it):

1. every float precision the target computes natively (FP32; BF16 with AVX512_BF16/AMX; FP16 where the CPU has
   FP16 arithmetic) and INT8 PTQ, per backend; plus plain NNCF PTQ with its defaults, the peer a user would
   otherwise pick (measured and shown, never chosen);
2. per-layer INT8 sensitivity (leave-one-out, :mod:`edgeft.optimize.sensitivity`);
3. INT8 mixed precision where plain PTQ misses the budget: OpenVINO through NNCF's accuracy control
   (``quantize_with_accuracy_control``), ONNX Runtime by keeping the top-k sensitive layers in float
   (``nodes_to_exclude``, k = 1, 2, 4, ... until the budget holds);
4. the pruning ratio, bisected against the budget that INT8 leaves (recovery fine-tuning, optional distillation);
5. QAT of the best FP32 base when no PTQ candidate meets the budget.

Every candidate is a verified bundle (``edgeft export``: parity against PyTorch, top-1 on the whole val split);
its latency comes from one interleaved ``edgeft bench`` run of all candidates on the target (here, or on
``--device``). The val split chooses: the fastest p50 whose val drop is within the budget. The test split only
reports: a final bench run of the chosen bundle, OpenVINO FP32, plain NNCF PTQ and PyTorch on the test split.
Everything is kept in OUT (default RUN/optimize): ``optimize.json`` (state, resumable), ``pareto.md``,
``pareto.png``, ``sensitivity.png``, ``chosen/`` (a copy of the chosen bundle) and ``report/``.
"""
from __future__ import annotations

import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import CheckFailed, EdgeftError, RunError, UnsupportedError
from ..utils.io import atomic_write_json, atomic_write_text, read_json, sha256_file
from ..utils.log import info, result, warn

BACKENDS = ("openvino", "onnxruntime")
STATE = "optimize.json"


@dataclass
class OptimizeSettings:
    """What the search may do (the recipe's ``optimize:`` section and the CLI options map onto these)."""

    max_drop: float = 1.0                       # points of val top-1 vs the run's PyTorch FP32 model
    backends: tuple[str, ...] = BACKENDS
    target: str | None = None                   # device class (edgeft.targets); None = this machine's
    device: str | None = None                   # a device from `edgeft devices` to time candidates on
    time_budget_s: float | None = None
    prune: bool = True
    prune_epochs: int = 1
    max_ratio: float = 0.7
    max_probes: int = 3
    distill: float = 0.0
    qat: bool = True
    qat_epochs: int = 1
    mixed: bool = True
    sensitivity_samples: int = 256
    ac_val_samples: int = 1000                  # val samples NNCF's accuracy control evaluates on
    bench_samples: int = 200                    # val images the search's latency bench reads
    profile: str = "quick"                      # bench profile of the search's latency run
    report_profile: str = "quick"               # bench profile of the final (test split) report run
    report_data: str | None = None              # test data for the report (default: the recipe's bench data)
    select: str = "upper"                       # within budget: "upper" = the paired one-sided 95% upper bound of
    #                                             the val drop, "point" = the point estimate
    threads: int | None = None
    extra: dict = field(default_factory=dict)

    def check(self) -> None:
        from ..bench.timing import PROFILES

        if not (isinstance(self.max_drop, (int, float)) and math.isfinite(self.max_drop) and self.max_drop >= 0):
            raise UnsupportedError(f"--max-drop {self.max_drop}: must be a number of points >= 0 (e.g. 1.0)")
        bad = [b for b in self.backends if b not in BACKENDS + ("tensorrt",)]
        if bad or not self.backends:
            from ..errors import did_you_mean

            hint = did_you_mean(bad[0], BACKENDS) if bad else ""
            raise UnsupportedError(f"--backend {', '.join(bad) or '(none)'}: unknown.{hint} Valid: "
                                   f"{', '.join(BACKENDS)}, tensorrt")
        if not 0 < self.max_ratio < 1:
            raise UnsupportedError(f"--max-ratio {self.max_ratio}: must be between 0 and 1 (exclusive)")
        if self.prune_epochs < 0 or self.qat_epochs < 0 or self.max_probes < 1:
            raise UnsupportedError("--prune-epochs/--qat-epochs must be >= 0 and --max-probes >= 1")
        if not 0 <= self.distill <= 1:
            raise UnsupportedError(f"--distill {self.distill}: must be between 0 and 1")
        for opt, p in (("--profile", self.profile), ("--report-profile", self.report_profile)):
            if p not in PROFILES:
                raise UnsupportedError(f"{opt} {p!r}: unknown. Valid: {', '.join(PROFILES)}")
        if self.select not in ("upper", "point"):
            raise UnsupportedError(f"--select {self.select!r}: valid are upper (the paired 95% upper bound of the val "
                                   f"drop must be within the budget) and point (the point estimate)")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise UnsupportedError(f"--time-budget {self.time_budget_s}: must be > 0")


def parse_duration(text: str | float | int | None) -> float | None:
    """'30m', '1h30m', '90s', '900' (seconds) -> seconds; a clear error otherwise."""
    import re

    if text is None or isinstance(text, (int, float)):
        return None if text is None else float(text)
    t = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", t):
        if float(t) <= 0:
            raise UnsupportedError(f"--time-budget {text!r}: must be > 0", hint="use e.g. 30m")
        return float(t)
    m = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?", t)
    if not t or not m or not any(m.groups()):
        raise UnsupportedError(f"--time-budget {text!r}: not a duration", hint="use e.g. 30m, 1h30m, 900s or 900")
    h, mi, s = (float(g) if g else 0.0 for g in m.groups())
    v = h * 3600 + mi * 60 + s
    if v <= 0:
        raise UnsupportedError(f"--time-budget {text!r}: must be > 0", hint="use e.g. 30m")
    return v


class Search:
    """One optimize run: its settings, state file and the steps. Every finished step is in ``optimize.json``, so
    an interrupted search resumes where it stopped (finished exports, prune probes and QAT are reused)."""

    def __init__(self, run: Path, out: Path, s: OptimizeSettings, resume: bool):
        from ..recipe import load_recipe
        from ..rundir import open_run
        from ..tasks import get_task

        self.run = Path(run)
        self.rd = open_run(run)
        self.desc = read_json(self.rd.model_json)
        if self.desc.get("qat"):
            raise UnsupportedError(f"{str(run)!r} is a QAT run: optimize starts from an FP32 run (it tries QAT itself)",
                                   hint="pass its FP32 (or pruned) parent run")
        self.recipe = load_recipe(self.rd.recipe)
        self.task = get_task(self.recipe.task)
        if getattr(self.task, "metric", getattr(self.task, "primary", "")) != "top1" or \
                not hasattr(self.recipe, "input"):
            raise UnsupportedError(f"optimize supports image classification runs for now; this run's task is "
                                   f"{self.recipe.task!r}",
                                   hint="export and bench this task's variants by hand (`edgeft export`, "
                                        "`edgeft bench`)")
        self.s = s
        self.out = Path(out)
        self.state_path = self.out / STATE
        self.fingerprint = {"run": str(self.run.resolve()), "weights": sha256_file(self.rd.weights),
                            "target": s.target, "backends": list(s.backends)}
        if self.state_path.is_file():
            if not resume:
                raise RunError(f"{str(self.out)!r} already holds an optimize search",
                               hint="pass --resume to continue it (finished steps are kept) or --out NEW_DIR")
            self.state = read_json(self.state_path)
            if self.state.get("fingerprint") != self.fingerprint:
                raise RunError(f"{str(self.out)!r} holds a search of another run, weights, target or backend set",
                               hint="use --out NEW_DIR for this one (the old search is kept)")
        else:
            if self.out.exists() and any(self.out.iterdir()) and not resume:
                raise RunError(f"{str(self.out)!r} already exists and is not an optimize folder",
                               hint="pass --out NEW_DIR")
            self.state = {"version": 1, "fingerprint": self.fingerprint, "elapsed_s": 0.0, "candidates": {},
                          "steps": {}}
        self.state["settings"] = {k: v for k, v in asdict(s).items() if k != "extra"}
        self.t0 = time.perf_counter()
        self.elapsed0 = float(self.state.get("elapsed_s", 0.0))
        self.base_val: float | None = self.state.get("base_val")

    # ------------------------------------------------------------------------------------------ state
    def elapsed(self) -> float:
        return self.elapsed0 + time.perf_counter() - self.t0

    def save(self) -> None:
        self.state["elapsed_s"] = round(self.elapsed(), 1)
        atomic_write_json(self.state_path, self.state)

    def done(self, step: str) -> bool:
        """Finished, or skipped for a reason that a resume does not change (a step skipped for the time budget is
        tried again when the search is resumed, e.g. with a longer --time-budget)."""
        st = self.state["steps"].get(step, {})
        return st.get("status") == "done" or (st.get("status") == "skipped"
                                              and not str(st.get("reason", "")).startswith("time budget"))

    def mark(self, step: str, status: str, t: float, **detail) -> None:
        self.state["steps"][step] = {"status": status, "seconds": round(time.perf_counter() - t, 1), **detail}
        self.save()

    def fits(self, step: str, estimate_s: float) -> bool:
        """Whether ``step`` (about ``estimate_s``) fits the time budget with the latency and report runs still to
        come; if not, the step is recorded as skipped with the numbers."""
        if self.s.time_budget_s is None:
            return True
        reserve = self.reserve_s()
        if self.elapsed() + estimate_s + reserve <= self.s.time_budget_s:
            return True
        why = (f"time budget: {self.elapsed():.0f}s used of {self.s.time_budget_s:.0f}s; this step needs ~"
               f"{estimate_s:.0f}s and the latency + report runs ~{reserve:.0f}s")
        self.state["steps"][step] = {"status": "skipped", "reason": why, "seconds": 0}
        self.save()
        warn(f"skipping {step}: {why}")
        return False

    def reserve_s(self) -> float:
        from ..bench.timing import PROFILES

        def run_s(profile: str, n: int) -> float:
            p = PROFILES[profile]
            return n * (p.warmup_s + p.windows * p.window_s + 8.0)
        n = max(len([c for c in self.state["candidates"].values() if c.get("status") == "ok"]), 4)
        return run_s(self.s.profile, n) + run_s(self.s.report_profile, 4) + 30.0

    def epoch_s(self) -> float:
        """Seconds of one training epoch of this run (its finetune metrics), for the budget's estimates."""
        m = self.rd.read_metrics()
        ep = m.get("epochs") or 1
        return float(m.get("train_time_s") or 60.0) / max(int(ep), 1)

    # ------------------------------------------------------------------------------------- candidates
    def candidate(self, name: str, run: Path, fmt: str, precision: str, kind: str, options: dict | None = None,
                  note: str = "") -> dict:
        """Export (or reuse) one candidate bundle; record its val accuracy and drop vs the run's PyTorch FP32."""
        from ..bundle import read_manifest
        from ..stages.export import export

        rec = self.state["candidates"].get(name)
        bdir = self.out / "candidates" / name
        wsha = sha256_file(Path(run) / "model.safetensors")
        if rec and rec.get("status") in ("ok", "skipped", "failed") and rec.get("weights") == wsha and \
                (rec["status"] != "ok" or (bdir / "manifest.json").is_file()):
            return rec
        t = time.perf_counter()
        rec = {"name": name, "kind": kind, "run": str(run), "format": fmt, "precision": precision,
               "options": {k: v for k, v in (options or {}).items() if k != "val"}, "note": note, "weights": wsha}
        try:
            m = export(run, format=fmt, precision=precision, target=self.s.target, out=bdir, force=True,
                       max_drop=100.0, quant_options=options)
        except UnsupportedError as e:   # e.g. BF16 on a CPU without it: recorded, not fatal
            rec.update(status="skipped", reason=e.message)
            self.state["candidates"][name] = rec
            self.save()
            info(f"candidate {name}: skipped ({e.message})")
            return rec
        except CheckFailed as e:          # parity failed: the bundle is not what PyTorch computes
            rec.update(status="failed", reason=e.message)
            self.state["candidates"][name] = rec
            self.save()
            warn(f"candidate {name}: {e.message}")
            return rec
        m = read_manifest(bdir)
        a = m["parity"]["accuracy"]
        if Path(run) == self.run:     # every drop is measured against the run's PyTorch FP32 val top-1
            self.base_val = self.state["base_val"] = float(a["top1_pytorch_fp32"])
        elif self.base_val is None:
            raise RunError("internal: a derived candidate before the run's own")
        q = m.get("quantization") or {}
        rec.update(status="ok", bundle=str(bdir), val_top1=float(a["top1"]), val_n=int(a["n"]),
                   seconds=round(time.perf_counter() - t, 1), params=m["source"].get("params"),
                   macs=m["source"].get("macs"), bytes=sum(f["bytes"] for f in m["files"].values()),
                   float_layers=len(q.get("float_layers") or []), compute_layers=q.get("compute_layers"),
                   max_abs_diff=m["parity"].get("max_abs_diff"))
        self._drop(rec)
        self.state["candidates"][name] = rec
        self.save()
        info(f"candidate {name}: val top-1 {rec['val_top1']:.4f} (drop {rec['val_drop']:+.2f} points, 95% CI "
             f"[{rec['val_drop_lo']:+.2f}, {rec['val_drop_hi']:+.2f}]) in {rec['seconds']:.0f}s")
        return rec

    def _drop(self, rec: dict) -> None:
        from ..stats import wilson_ci

        n = rec["val_n"]
        lo, hi = wilson_ci(round(rec["val_top1"] * n), n)
        rec["val_drop"] = round((self.base_val - rec["val_top1"]) * 100, 3)
        rec["val_drop_lo"] = round((self.base_val - hi) * 100, 3)
        rec["val_drop_hi"] = round((self.base_val - lo) * 100, 3)

    def ok(self, kinds=None, run: Path | None = None) -> list[dict]:
        return [c for c in self.state["candidates"].values() if c.get("status") == "ok"
                and (kinds is None or c["kind"] in kinds) and (run is None or c["run"] == str(run))]

    def within(self, c: dict) -> bool:
        """Inside the budget: the paired upper bound of the val drop (``--select upper``, the default), else the
        point estimate (also used while searching, before the paired statistics exist)."""
        if self.s.select == "upper" and c.get("val_drop_ub95") is not None:
            return c["val_drop_ub95"] <= self.s.max_drop
        return c["val_drop"] <= self.s.max_drop

    def step_paired(self) -> None:
        """Per-sample val predictions of every candidate, paired with the run's FP32 model (its ONNX Runtime FP32
        bundle: equal to PyTorch within 1e-5) on the same images: the drop's one-sided 95% upper bound from the
        per-image differences (far tighter than two independent CIs, and what a budget needs: a drop just under the
        budget by its point estimate is over it on test about half the time)."""
        import numpy as np

        ref = self.state["candidates"].get("onnxruntime-fp32") or self.state["candidates"].get(
            "_sensitivity-onnxruntime-fp32") or {}
        if ref.get("status") != "ok":
            return
        t = time.perf_counter()
        y = np.asarray(self.data().val.targets)
        ref_ok = self.val_predictions(ref) == y
        for c in self.ok():
            if c.get("hidden") or c.get("val_drop_ub95") is not None:
                continue
            try:
                ok = self.val_predictions(c) == y
            except EdgeftError as e:   # e.g. a bundle for another CPU class that this one cannot run faithfully
                c["paired_error"] = e.message
                warn(f"candidate {c['name']}: no paired statistics here ({e.message}); its point estimate is used")
                continue
            d = ref_ok.astype(np.float64) - ok.astype(np.float64)
            n = len(d)
            se = float(d.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0
            c["val_drop_paired"] = round(float(d.mean()) * 100, 3)
            c["val_drop_ub95"] = round((float(d.mean()) + 1.6449 * se) * 100, 3)
            c["val_flips"] = int(np.sum(d != 0))
        self.mark("paired", "done", t)

    def val_predictions(self, c: dict):
        """Top-1 predictions of a candidate bundle on the whole val split (cached as .npy beside the state)."""
        import numpy as np

        from .. import runtime

        p = self.out / "preds" / f"{c['name']}.npy"
        if p.is_file():
            return np.load(p)
        val = self.data().val
        preds = []
        with runtime.load(c["bundle"], threads=self.s.threads) as m:
            for s0 in range(0, len(val), 64):
                idx = np.arange(s0, min(s0 + 64, len(val)))
                out = m.infer(self.task.eval_inputs(val, self.recipe, idx))
                preds.append(np.argmax(next(iter(out.values())).reshape(len(idx), -1), axis=1))
        arr = np.concatenate(preds)
        p.parent.mkdir(parents=True, exist_ok=True)
        from ..utils.io import atomic_path

        with atomic_path(p) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, arr)
        return arr

    # ------------------------------------------------------------------------------------------ steps
    def step_baseline(self) -> None:
        from ..backends import backend_for, format_backend
        from ..errors import BackendUnavailable

        t = time.perf_counter()
        # onnxruntime fp32 first: every later drop is measured against the run's PyTorch FP32 val top-1
        order = sorted(self.s.backends, key=lambda b: b != "onnxruntime")
        for b in order:
            try:
                backend_for(b)
            except BackendUnavailable as e:
                self.state["candidates"][f"{b}-*"] = {"name": f"{b}-*", "kind": "float", "status": "skipped",
                                                       "reason": e.message}
                continue
            for prec in ("fp32", "bf16", "fp16", "int8"):
                if format_backend(b).formats.get(b, {}).get(prec, "not supported"):
                    continue    # the format has no such precision at all (the support table says why)
                why = self._float_skip(b, prec)
                if why:
                    self.state["candidates"][f"{b}-{prec}"] = {"name": f"{b}-{prec}", "kind": "float",
                                                                "status": "skipped", "reason": why}
                    continue
                self.candidate(f"{b}-{prec}", self.run, b, prec, "ptq" if prec == "int8" else "float")
        if "openvino" in self.s.backends and self.ok(run=self.run):
            self.candidate("openvino-int8-nncf-default", self.run, "openvino", "int8", "peer",
                           {"nncf_defaults": True}, note="plain nncf.quantize(model, dataset): what a user would "
                                                          "pick instead (shown, never chosen)")
        self.mark("baseline", "done", t)

    def _float_skip(self, backend: str, prec: str) -> str | None:
        from ..targets import resolve

        tgt = resolve(self.s.target, backend)
        if prec in ("bf16", "fp16") and prec not in tgt.precisions:
            return f"target {tgt.name} has no {prec} arithmetic"
        if prec == "fp16" and tgt.compute_precision("fp16") != "f16":
            return f"target {tgt.name} computes FP16 bundles in f32 (FP16 weights only): no faster than FP32"
        return None

    def step_sensitivity(self) -> dict | None:
        if self.done("sensitivity"):
            p = self.out / "sensitivity.json"
            return read_json(p) if p.is_file() else None
        t = time.perf_counter()
        import numpy as np

        from .sensitivity import layer_sensitivity

        fp32 = self._fp32_onnx()
        ort8 = self.state["candidates"].get("onnxruntime-int8") or {}
        if ort8.get("status") == "ok":
            q = Path(ort8["bundle"]) / "model.onnx"
        else:   # the backends asked for do not include ONNX Runtime: rank on its INT8 graph anyway (no bundle kept)
            rec = self.candidate("_sensitivity-onnxruntime-int8", self.run, "onnxruntime", "int8", "ptq")
            if rec.get("status") != "ok":
                self.mark("sensitivity", "skipped", t, reason=rec.get("reason", "no INT8 graph"))
                return None
            rec["hidden"] = True
            q = Path(rec["bundle"]) / "model.onnx"
        if fp32 is None:
            self.mark("sensitivity", "skipped", t, reason="no FP32 ONNX graph")
            return None
        data = self.data()
        n = min(self.s.sensitivity_samples, len(data.val))
        idx = np.sort(np.random.default_rng(99).permutation(len(data.val))[:n])
        feeds = self.task.eval_inputs(data.val, self.recipe, idx)
        info(f"per-layer INT8 sensitivity on {n} val samples (each quantized layer alone in float) ...")
        sens = layer_sensitivity(fp32, q, feeds, threads=self.s.threads)
        atomic_write_json(self.out / "sensitivity.json", sens)
        self.mark("sensitivity", "done", t, layers=len(sens["layers"]), samples=n)
        top = ", ".join(f"{r['node']} ({100 * r['gain'] / (sens['int8']['nmse'] or 1):.0f}%)"
                        for r in sens["layers"][:3])
        info(f"most sensitive layers: {top}")
        return sens

    def _fp32_onnx(self) -> Path | None:
        for name in ("onnxruntime-fp32",):
            c = self.state["candidates"].get(name) or {}
            if c.get("status") == "ok":
                return Path(c["bundle"]) / "model.onnx"
        rec = self.candidate("_sensitivity-onnxruntime-fp32", self.run, "onnxruntime", "fp32", "float")
        rec["hidden"] = True
        return Path(rec["bundle"]) / "model.onnx" if rec.get("status") == "ok" else None

    def step_mixed(self, sens: dict | None, run: Path, tag: str = "") -> None:
        """Mixed precision for each backend whose plain INT8 of ``run`` misses the budget."""
        step = f"mixed{tag}"
        if self.done(step) or not self.s.mixed:
            return
        self.state["steps"].pop(step, None)     # an earlier time-budget skip is tried again
        t = time.perf_counter()
        for b in self.s.backends:
            plain = self.state["candidates"].get(f"{b}-int8{tag}") or {}
            if plain.get("status") != "ok" or self.within(plain):
                continue
            if b == "openvino" and self.fits(step, 120):
                self.candidate(f"openvino-int8-ac{tag}", run, "openvino", "int8", "mixed",
                               {"accuracy_control": {"max_drop": max(self.s.max_drop - self._fp_drop(run), 0.0),
                                                     "val_samples": self.s.ac_val_samples}},
                               note="NNCF quantize_with_accuracy_control (reverts the most sensitive layers)")
            if b == "onnxruntime" and sens and run == self.run:
                ranked = [r["node"] for r in sens["layers"] if r["gain"] > 0]
                k = 1
                while k <= max(1, len(ranked) // 2) and self.fits(step, 30):
                    c = self.candidate(f"onnxruntime-int8-float{k}", run, "onnxruntime", "int8", "mixed",
                                       {"exclude": ranked[:k]}, note=f"the {k} most sensitive layer(s) in float")
                    if c.get("status") == "ok" and self.within(c):
                        break
                    k *= 2
        if self.state["steps"].get(step, {}).get("status") != "skipped":
            self.mark(step, "done", t)

    def _fp_drop(self, run: Path) -> float:
        """The FP32 drop of ``run`` (a pruned run has one) that an INT8 budget for it must leave room for."""
        if run == self.run:
            return 0.0
        m = read_json(Path(run) / "metrics.json")
        return max((self.base_val - float(m["val_top1"])) * 100, 0.0)

    def int8_margin(self) -> float | None:
        """The smallest drop INT8 costs on the unpruned model (plain PTQ or mixed), within the budget; None if no
        INT8 candidate of the unpruned model meets the budget."""
        fits = [c["val_drop"] for c in self.ok(("ptq", "mixed"), self.run) if self.within(c)]
        return max(min(fits), 0.0) if fits else None

    def step_prune(self) -> Path | None:
        """Bisect the largest pruning ratio whose recovered FP32 val drop leaves room for INT8 within the budget."""
        from ..stages.prune import prune

        st = self.state.setdefault("prune", {"probes": []})
        if self.done("prune"):
            best = st.get("best_run")
            return Path(best) if best else None
        if not self.s.prune:
            return None
        self.state["steps"].pop("prune", None)
        t = time.perf_counter()
        margin = self.int8_margin()
        if margin is None:
            margin = 0.0   # INT8 will need QAT or stays float: prune against the whole budget
        fp_budget = self.s.max_drop - margin
        st["fp32_budget"] = round(fp_budget, 3)
        if fp_budget <= 0:
            self.mark("prune", "skipped", t, reason=f"INT8 alone uses the budget ({margin:.2f} of "
                                                    f"{self.s.max_drop:g} points)")
            return None
        lo, hi = 0.0, self.s.max_ratio
        for p in st["probes"]:      # resume: replay finished probes
            lo, hi = (p["ratio"], hi) if p["ok"] else (lo, p["ratio"])
        est = self.epoch_s() * max(self.s.prune_epochs, 0.3) * 1.2 + 45
        while len(st["probes"]) < self.s.max_probes and hi - lo > 0.05:
            r = round((lo + hi) / 2 / 0.05) * 0.05 if st["probes"] else round(min(0.5, hi) / 0.05) * 0.05
            r = min(max(r, 0.05), 0.95)
            if any(abs(p["ratio"] - r) < 1e-9 for p in st["probes"]) or not lo < r < hi:
                break
            if not self.fits("prune", est):
                break
            d = self.out / "prune" / f"r{int(round(r * 100)):02d}"
            info(f"pruning probe {len(st['probes']) + 1}/{self.s.max_probes}: ratio {r:.2f} with "
                 f"{self.s.prune_epochs} recovery epoch(s) (FP32 budget {fp_budget:.2f} points)")
            t1 = time.perf_counter()
            try:
                m = _complete_metrics(d)
                if m is None:
                    cfg = self.recipe.compress.prune
                    m = prune(self.run, out=d, ratio=r, method=cfg.method if cfg else "magnitude",
                              round_to=cfg.round_to if cfg else 8, epochs=self.s.prune_epochs, iterative=1, lr=None,
                              distill=self.s.distill, global_pruning=False, max_drop=None, target_macs=None,
                              target_latency_ms=None, resume=d.exists(), threads=self.s.threads)
                drop = (self.base_val - float(m["val_top1"])) * 100
                probe = {"ratio": r, "ok": drop <= fp_budget, "val_top1": float(m["val_top1"]),
                         "val_drop": round(drop, 3), "macs_ratio": m.get("macs_ratio"),
                         "ort_speedup": m.get("latency_speedup_ort"), "run": str(d),
                         "seconds": round(time.perf_counter() - t1, 1)}
            except UnsupportedError as e:      # the ratio empties a layer: too much
                probe = {"ratio": r, "ok": False, "error": e.message, "seconds": round(time.perf_counter() - t1, 1)}
            st["probes"].append(probe)
            self.save()
            info(f"  ratio {r:.2f}: " + (f"val drop {probe['val_drop']:+.2f} points, MACs x{probe['macs_ratio']:.2f}"
                                         if "val_drop" in probe else probe["error"]) +
                 (" -> within" if probe["ok"] else " -> over") + " the FP32 budget")
            lo, hi = (r, hi) if probe["ok"] else (lo, r)
        good = [p for p in st["probes"] if p["ok"]]
        best = max(good, key=lambda p: p["ratio"]) if good else None
        st["best_run"] = best["run"] if best else None
        st["best_ratio"] = best["ratio"] if best else None
        if self.state["steps"].get("prune", {}).get("status") != "skipped":
            self.mark("prune", "done", t, best_ratio=st["best_ratio"], probes=len(st["probes"]))
        return Path(best["run"]) if best else None

    def step_pruned_candidates(self, pruned: Path) -> None:
        tag = f"-pruned{int(round(self.state['prune']['best_ratio'] * 100))}"
        for b in self.s.backends:
            if b == "tensorrt":
                continue
            self.candidate(f"{b}-int8{tag}", pruned, b, "int8", "pruned", note="pruned + INT8 PTQ")
        if "openvino" in self.s.backends:
            self.candidate(f"openvino-fp32{tag}", pruned, "openvino", "fp32", "pruned", note="pruned, FP32")
        self.step_mixed(None, pruned, tag)

    def step_qat(self, base: Path) -> None:
        """QAT when no INT8 candidate meets the budget."""
        from ..stages.qat import qat

        if self.done("qat") or not self.s.qat:
            return
        if any(self.within(c) for c in self.ok(("ptq", "mixed", "pruned")) if c["precision"] == "int8"):
            return
        self.state["steps"].pop("qat", None)
        t = time.perf_counter()
        if not self.fits("qat", self.epoch_s() * max(self.s.qat_epochs, 0.3) * 2.5 + 60):
            return
        d = self.out / "qat"
        info(f"no post-training INT8 candidate meets {self.s.max_drop:g} points: QAT of {base} "
             f"({self.s.qat_epochs} epoch(s))")
        if _complete_metrics(d) is None:
            cfg = self.recipe.compress.qat
            qat(base, out=d, epochs=self.s.qat_epochs, lr=None, flavour="cpu", target=self.s.target,
                calib_size=cfg.calib_size if cfg else 300, max_drop=None, resume=d.exists(), threads=self.s.threads)
        for b in self.s.backends:
            if b != "tensorrt":
                self.candidate(f"{b}-int8-qat", d, b, "int8", "qat", note=f"QAT of {Path(base).name}")
        self.mark("qat", "done", t)

    # --------------------------------------------------------------------------------------- latency
    def data(self):
        if not hasattr(self, "_data"):
            self._data = self.task.load_data(self.recipe)
        return self._data

    def val_images(self) -> Path:
        """A seeded sample of the val split as PNGs in class folders: what the search's latency bench reads (the
        test split is for the report only)."""
        return self._split_images("val", self.s.bench_samples)

    def test_data(self) -> str:
        """The report's data: --report-data, else the recipe's bench data (a built-in test split, DATA/test...),
        else the run's own held-out test split (a single folder with data.test_fraction) written as PNGs."""
        from ..pipeline import _bench_data

        if self.s.report_data:
            return self.s.report_data
        try:
            return _bench_data(self.recipe)
        except RunError:
            if self.data().test is None or len(self.data().test) == 0:
                raise
            return str(self._split_images("test", None))

    def _split_images(self, split: str, limit: int | None) -> Path:
        import numpy as np
        from PIL import Image

        d = self.out / f"{split}_images"
        if (d / ".complete").is_file():
            return d
        data = self.data()
        part = getattr(data, split)
        n = min(limit or len(part), len(part))
        idx = np.sort(np.random.default_rng(7).permutation(len(part))[:n])
        tmp = self.out / f".{split}_images.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        for c in data.classes:
            (tmp / c).mkdir(parents=True, exist_ok=True)
        for i in idx:
            img = part.images[i]
            im = Image.fromarray(img[:, :, 0], "L") if img.shape[-1] == 1 else Image.fromarray(img, "RGB")
            im.save(tmp / data.classes[int(part.targets[i])] / f"{split}_{i:06d}.png")
        (tmp / ".complete").write_text("")
        shutil.rmtree(d, ignore_errors=True)
        tmp.rename(d)
        return d

    def bench(self, paths: list[str], data: str, profile: str, where: Path, command: str) -> dict:
        from ..bench.harness import BenchConfig, bench
        from ..bench.report import save_json, save_markdown

        cfg = BenchConfig(data=data, profile=profile, threads=self.s.threads, command=command)
        if self.s.device:
            from ..remote import bench_remote

            cfg.validate()
            doc = bench_remote([p for p in paths if (Path(p) / "manifest.json").is_file()], cfg, [self.s.device],
                               where)[0]
        else:
            doc = bench(paths, cfg)
        doc.pop("_raw", None)
        doc.pop("_timeline", None)
        save_json(doc, where / "result.json")
        save_markdown([doc], where / "result.md")
        return doc

    def step_latency(self) -> None:
        t = time.perf_counter()
        cands = [c for c in self.ok() if not c.get("hidden")]
        key = sorted(c["name"] for c in cands)
        if self.done("latency") and self.state["steps"]["latency"].get("candidates") == key:
            return
        info(f"timing {len(cands)} candidates in one interleaved run (profile {self.s.profile}"
             + (f", on {self.s.device}" if self.s.device else ", on this machine") + ") ...")
        doc = self.bench([c["bundle"] for c in cands], str(self.val_images()), self.s.profile, self.out / "latency",
                         f"edgeft optimize {self.run} (latency of the candidates)")
        # rows are named after the bundle folder (here and on a device, where the paths differ)
        by_name = {a["name"]: a for a in doc["artifacts"]}
        by_path = {str(Path(a["path"]).resolve()): a for a in doc["artifacts"]}
        for c in cands:
            a = by_name.get(c["name"]) or by_path.get(str(Path(c["bundle"]).resolve()))
            if a is None:
                continue
            e2e = a["latency"]["e2e"]
            w = e2e.get("p50_windows") or {}
            p50 = float(e2e["p50"])
            c.update(p50_ms=p50, p99_ms=float(e2e["p99"]), p50_lo=min(float(w.get("min", p50)), p50),
                     p50_hi=max(float(w.get("max", p50)), p50), infer_p50_ms=float(a["latency"]["infer"]["p50"]),
                     runs=(a.get("runtime") or {}).get("runs"))
        self.state["machine"] = _machine(doc)
        self.mark("latency", "done", t, candidates=key, valid=doc["validity"]["valid"])

    # ---------------------------------------------------------------------------------------- choice
    def step_choose(self) -> dict:
        from ..bench.report import indistinguishable, pareto_front

        cands = [c for c in self.ok() if not c.get("hidden") and c.get("p50_ms") is not None]
        pts = [{"name": c["name"], "x": c["p50_ms"], "y": -c["val_drop"], "x_lo": c["p50_lo"], "x_hi": c["p50_hi"],
                "y_lo": -c["val_drop_hi"], "y_hi": -c["val_drop_lo"]} for c in cands]
        front = pareto_front(pts)
        ties = indistinguishable(front, pts)
        for c in cands:
            c["pareto"] = c["name"] in front
        ok = sorted((c for c in cands if c["kind"] != "peer" and self.within(c)), key=lambda c: c["p50_ms"])
        rule = ("the paired 95% upper bound of its val drop" if self.s.select == "upper" else "its val drop")
        if not ok:
            choice = {"name": None, "why": f"no candidate is within {self.s.max_drop:g} points on val "
                                           f"({'paired upper bound' if self.s.select == 'upper' else 'point estimate'}"
                                           f"); the most "
                                           f"accurate is {min(cands, key=lambda c: c['val_drop'])['name']}"
                      if cands else "no candidate was built"}
        else:
            best = ok[0]
            ub = f", paired upper bound {best['val_drop_ub95']:+.2f}" if best.get("val_drop_ub95") is not None else ""
            why = (f"fastest p50 on the target ({best['p50_ms']:.3f} ms) among the {len(ok)} candidate(s) with "
                   f"{rule} within {self.s.max_drop:g} points (its drop: {best['val_drop']:+.2f}{ub})")
            faster_out = [c for c in cands if c["kind"] != "peer" and c["p50_ms"] < best["p50_ms"]
                          and not self.within(c) and c["val_drop"] <= self.s.max_drop]
            if faster_out:
                f0 = min(faster_out, key=lambda c: c["p50_ms"])
                why += (f"; {f0['name']} is faster ({f0['p50_ms']:.3f} ms) with a drop of {f0['val_drop']:+.2f} but "
                        f"an upper bound of {f0['val_drop_ub95']:+.2f}: not shown to be within the budget")
            if len(ok) > 1:
                nxt = ok[1]
                overlap = best["p50_hi"] >= nxt["p50_lo"]
                why += (f"; next: {nxt['name']} at {nxt['p50_ms']:.3f} ms (" +
                        ("per-window p50 ranges overlap: the two are not distinguishable in this run"
                         if overlap else f"{nxt['p50_ms'] / best['p50_ms']:.2f}x slower") + ")")
            f32 = self.state["candidates"].get("openvino-fp32") or {}
            if f32.get("p50_ms"):
                why += f"; {f32['p50_ms'] / best['p50_ms']:.2f}x faster than OpenVINO FP32 on val's latency run"
            choice = {"name": best["name"], "bundle": best["bundle"], "why": why,
                      "indistinguishable_from": sorted(n for n in ties if n != best["name"]) if best["name"] in ties
                      else []}
        self.state["choice"] = choice
        self.state["pareto_front"] = sorted(front)
        self.save()
        return choice

    def write_outputs(self, sens: dict | None) -> None:
        from .plots import pareto_plot, sensitivity_plot

        cands = [c for c in self.state["candidates"].values() if not c.get("hidden")]
        choice = self.state.get("choice") or {}
        atomic_write_text(self.out / "pareto.md", self.table(cands))
        try:
            pareto_plot(cands, self.s.max_drop, choice.get("name"), set(self.state.get("pareto_front") or []),
                        self.out / "pareto.png", title=f"edgeft optimize {self.run.name}: budget "
                                                        f"{self.s.max_drop:g} points of val top-1",
                        subtitle=self.state.get("machine", ""))
            if sens:
                mixed = [c for c in cands if c["name"].startswith("onnxruntime-int8-float") and c.get("status") == "ok"]
                kept = max(mixed, key=lambda c: c["float_layers"])["options"].get("exclude") if mixed else None
                sensitivity_plot(sens, self.out / "sensitivity.png", kept)
        except ImportError as e:   # matplotlib is in the runtime extra
            warn(f"plots skipped: {e}")
        if choice.get("bundle"):
            dst = self.out / "chosen"
            tmp = self.out / ".chosen.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(choice["bundle"], tmp)
            shutil.rmtree(dst, ignore_errors=True)
            tmp.rename(dst)

    def table(self, cands: list[dict]) -> str:
        choice = (self.state.get("choice") or {}).get("name")
        lines = [f"# edgeft optimize {self.run} (budget {self.s.max_drop:g} points of val top-1)", "",
                 f"Machine: {self.state.get('machine', 'unknown')}. Val: {self.base_val and f'{self.base_val:.4f}'} "
                 f"PyTorch FP32 top-1. Latency: one interleaved `edgeft bench` run (profile {self.s.profile}), e2e p50 "
                 f"with the per-window p50 range. Paired drop upper bound: one-sided 95%, from the per-image "
                 f"differences against the FP32 model on the same val images (flips: images where the two differ); "
                 f"selection: {'the upper bound' if self.s.select == 'upper' else 'the point estimate'} within the "
                 f"budget.", "",
                 "| candidate | kind | val top-1 | drop (95% CI) | paired drop upper bound | p50 ms [range] | p99 ms | "
                 "MACs | size MB | float layers | front | note |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        order = sorted(cands, key=lambda c: (c.get("status") != "ok", c.get("p50_ms") or 1e9))
        for c in order:
            if c.get("status") != "ok":
                lines.append(f"| {c['name']} | {c['kind']} | – | – | – | – | – | – | – | – | – | {c['status']}: "
                             f"{c.get('reason', '')} |")
                continue
            mark = " **(chosen)**" if c["name"] == choice else ""
            p50 = (f"{c['p50_ms']:.3f} [{c['p50_lo']:.3f}–{c['p50_hi']:.3f}]" if c.get("p50_ms") is not None
                   else "–")
            fl = f"{c['float_layers']}" + (f"/{c['compute_layers']}" if c.get("compute_layers") else "") \
                if c["precision"] == "int8" else "all"
            lines.append(f"| {c['name']}{mark} | {c['kind']} | {c['val_top1']:.4f} | {c['val_drop']:+.2f} "
                         f"[{c['val_drop_lo']:+.2f}, {c['val_drop_hi']:+.2f}] | "
                         f"{_f(c.get('val_drop_ub95'), 2)} ({c.get('val_flips', '–')} flips) | {p50} | "
                         f"{_f(c.get('p99_ms'))} | {(c.get('macs') or 0) / 1e6:.1f}M | {c['bytes'] / 1e6:.2f} | {fl} | "
                         f"{'yes' if c.get('pareto') else ''} | {c.get('note', '')} |")
        ch = self.state.get("choice") or {}
        lines += ["", f"**Chosen:** {ch.get('name')}: {ch.get('why', '')}"]
        if ch.get("indistinguishable_from"):
            lines.append(f"(not distinguishable in this run from: {', '.join(ch['indistinguishable_from'])})")
        steps = self.state["steps"]
        lines += ["", "Steps: " + "; ".join(f"{k} {v['status']} ({v.get('seconds', 0):.0f}s"
                                            + (f": {v['reason']}" if v.get("reason") else "") + ")"
                                            for k, v in steps.items())]
        pr = self.state.get("prune") or {}
        if pr.get("probes"):
            lines.append("Pruning probes (FP32 budget " + f"{pr.get('fp32_budget')} points): " + "; ".join(
                f"ratio {p['ratio']:.2f} " + (f"drop {p['val_drop']:+.2f}" if "val_drop" in p else p.get("error", ""))
                + (" ok" if p["ok"] else " over") for p in pr["probes"]))
        rep = self.state.get("report")
        if rep:
            lines += ["", "## Test split (report only; nothing was selected on it)", "", rep["text"]]
        return "\n".join(lines) + "\n"

    # ---------------------------------------------------------------------------------------- report
    def step_report(self) -> dict | None:
        ch = self.state.get("choice") or {}
        if not ch.get("bundle"):
            return None
        prev = self.state.get("report") or {}
        if self.done("report") and prev.get("chosen") == ch["name"] and prev.get("profile") == self.s.report_profile:
            return prev     # resumed: the same bundle was already reported
        t = time.perf_counter()
        peers = [self.state["candidates"].get(n) or {} for n in ("openvino-fp32", "openvino-int8-nncf-default")]
        paths = ([] if self.s.device else [str(self.run)]) + [p["bundle"] for p in peers if p.get("status") == "ok"
                                                              and p["name"] != ch["name"]] + [str(self.out / "chosen")]
        data = self.test_data()
        info(f"report: the chosen bundle vs OpenVINO FP32 and plain NNCF PTQ on {data} (profile "
             f"{self.s.report_profile}), one interleaved run ...")
        doc = self.bench(paths, data, self.s.report_profile, self.out / "report",
                         f"edgeft optimize {self.run} (test report)")
        rows = {}
        for a in doc["artifacts"]:
            acc = a.get("accuracy") or {}
            rows[a["name"]] = {"top1": acc.get("top1"), "ci": acc.get("top1_ci95"),
                               "p50": a["latency"]["e2e"]["p50"], "p99": a["latency"]["e2e"]["p99"],
                               "windows": [w["e2e"]["p50"] for w in a.get("windows") or []]}
        chosen = next((r for n, r in rows.items() if n.endswith("chosen")), None)
        ref = next((a for a in doc["artifacts"] if a.get("kind") == "pytorch"), None)
        rep = {"data": data, "profile": self.s.report_profile, "rows": rows, "valid": doc["validity"]["valid"],
               "chosen": ch["name"], "machine": _machine(doc)}
        lines = ["| artifact | test top-1 [95% CI] | e2e p50 ms | p99 ms | chosen's speedup (per-window range) |",
                 "|---|---|---|---|---|"]
        for n, r in rows.items():
            sp = ""
            if chosen and r is not chosen and r["p50"]:
                sp = f"{r['p50'] / chosen['p50']:.2f}x"
                if r["windows"] and chosen["windows"] and len(r["windows"]) == len(chosen["windows"]):
                    ratios = [a / b for a, b in zip(r["windows"], chosen["windows"])]
                    sp += f" [{min(ratios):.2f}, {max(ratios):.2f}]"
            ci = f" [{r['ci'][0]:.4f}, {r['ci'][1]:.4f}]" if r.get("ci") else ""
            lines.append(f"| {n} | {_f(r['top1'], 4)}{ci} | {r['p50']:.3f} | {r['p99']:.3f} | {sp} |")
        if ref and chosen and chosen["top1"] is not None:
            rep["test_drop_points"] = round((ref["accuracy"]["top1"] - chosen["top1"]) * 100, 3)
            lines.append(f"\nChosen bundle's test drop vs PyTorch FP32: {rep['test_drop_points']:+.2f} points "
                         f"(budget {self.s.max_drop:g}, chosen on val).")
        for n, r in rows.items():
            if chosen and r is not chosen and "nncf-default" in n:
                rep["speedup_vs_nncf_default"] = round(r["p50"] / chosen["p50"], 3)
            if chosen and r is not chosen and n.endswith("openvino-fp32"):
                rep["speedup_vs_openvino_fp32"] = round(r["p50"] / chosen["p50"], 3)
        rep["text"] = "\n".join(lines)
        self.state["report"] = rep
        self.mark("report", "done", t)
        return rep


def _check_report_data(spec: str) -> None:
    from ..data.images import BUILTIN

    name, _, split = spec.partition(":")
    if name in BUILTIN:
        if split not in ("", "test", "train"):
            raise UnsupportedError(f"--report-data {spec!r}: split {split!r} of {name}; valid are test, train")
        return
    if not Path(spec).expanduser().is_dir():
        raise UnsupportedError(f"--report-data {spec!r} is neither a built-in dataset ({', '.join(BUILTIN)}[:test]) "
                               f"nor a folder", hint="pass a folder of class sub-folders held out of training")


def _complete_metrics(d: Path) -> dict | None:
    p = Path(d) / "metrics.json"
    if p.is_file():
        m = read_json(p)
        if m.get("status") == "complete":
            return m
    return None


def _machine(doc: dict) -> str:
    dev = doc.get("device") or {}
    feats = ",".join(dev.get("isa") or [])
    thr = (doc.get("settings") or {}).get("threads")
    return ", ".join(str(x) for x in (dev.get("cpu_model"), f"{dev.get('cores_logical')} logical cores",
                                       f"class {dev.get('cpu_class')}", feats, f"{thr} threads" if thr else "")
                     if x) or "unknown"


def _f(v, nd=3) -> str:
    return "–" if v is None else f"{v:.{nd}f}"


def optimize(run, *, out=None, settings: OptimizeSettings | None = None, resume: bool = False) -> dict:
    """Run (or resume) the search; returns the state document (``choice``, ``candidates``, ``report``...).
    Raises CheckFailed (CLI exit 3) after writing everything when no candidate meets the budget."""
    s = settings or OptimizeSettings()
    s.check()
    from ..targets import resolve

    tgt = resolve(s.target)   # a bad --target, --device or --report-data before any work
    if s.device is not None:
        from ..remote import resolve_device

        resolve_device(s.device)
    if s.report_data is not None:
        _check_report_data(s.report_data)
    if s.device is None and tgt.name != resolve(None).name:
        warn(f"--target {tgt.name} is not this machine's class ({resolve(None).name}) and no --device is given: "
             f"accuracy is the target's, but latency is measured here and may rank the candidates differently "
             f"on the target (time them there with --device)")
    out = Path(out) if out else Path(run) / "optimize"
    srch = Search(Path(run), out, s, resume)
    out.mkdir(parents=True, exist_ok=True)
    srch.save()
    info(f"optimize {run} -> {out}: budget {s.max_drop:g} points of val top-1"
         + (f", time budget {s.time_budget_s:.0f}s" if s.time_budget_s else ""))
    srch.step_baseline()
    sens = srch.step_sensitivity()
    srch.step_mixed(sens, srch.run)
    pruned = srch.step_prune()
    if pruned is not None and not srch.done("pruned_candidates"):
        t = time.perf_counter()
        srch.step_pruned_candidates(pruned)
        srch.mark("pruned_candidates", "done", t)
    srch.step_qat(pruned or srch.run)
    srch.step_paired()
    srch.step_latency()
    choice = srch.step_choose()
    srch.write_outputs(sens)
    if choice.get("name"):
        try:
            srch.step_report()
        except EdgeftError as e:
            warn(f"report run failed: {e.message}")
    srch.state["wall_s"] = round(srch.elapsed(), 1)
    srch.save()
    srch.write_outputs(sens)
    result(srch.table([c for c in srch.state["candidates"].values() if not c.get("hidden")]))
    result(f"search wall time {srch.state['wall_s']:.0f}s; folder {out} (pareto.md, pareto.png, sensitivity.png, "
           f"chosen/, report/)")
    if not choice.get("name"):
        raise CheckFailed(f"optimize: {choice['why']}; everything is kept in {out}",
                          hint="raise --max-drop, allow QAT/pruning (--qat, --prune) or a longer --time-budget")
    return srch.state
