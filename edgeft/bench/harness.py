"""``edgeft bench``: an accuracy run and a separate, interleaved performance run for several artifacts.

Example::

    from edgeft.bench.harness import BenchConfig, bench
    res = bench(["runs/r18", "runs/r18/bundles/openvino-int8"], BenchConfig(data="fashion-mnist:test"))

Order of work: load all artifacts; accuracy run on the whole ``--data`` (batched, every sample once);
performance run in rounds, each round one window per artifact in a seeded random order (machine drift
hits all variants alike); compliance spot-check of logged performance outputs against the accuracy
run (MLPerf TEST01-style); validity checks; results.
"""
from __future__ import annotations

import os
import sys
import time
import uuid
from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError, UnsupportedError
from ..stats import wilson_ci
from ..utils.env import fingerprint, git_sha, governors, versions
from ..utils.log import info, progress
from .artifacts import Artifact, open_artifact, peak_rss_bytes
from .data import load_samples, make_pre, postprocess, timed_pass
from .timing import PROFILES, Profile, pooled, run_window, warmup

SCHEMA_VERSION = "1.0"


@dataclass
class BenchConfig:
    data: str = "fashion-mnist:test"
    scenario: str = "single_stream"
    profile: str = "dev"
    threads: int | None = None
    data_limit: int | None = None
    perf_samples: int = 256
    batch: int = 32
    seed: int = 1234
    allow_failed: bool = False
    allow_dvfs: bool = False
    device: str | None = None
    # camera
    fps: float = 30.0
    duration: float | None = None
    handoff: str = "latest"
    source: str | None = None
    deadline_ms: float | None = None
    # audio_stream
    stream: str | None = None
    replay: str = "both"
    threshold: float | None = None
    command: str = ""
    extra: dict = field(default_factory=dict)

    def profile_obj(self) -> Profile:
        return PROFILES[self.profile]

    def validate(self) -> None:
        """Every setting is checked before any work, whatever the scenario: a bad value is never ignored."""
        from ..runtime.kws import check_threshold
        from .camera import parse_handoff

        if self.scenario not in SCENARIOS:
            from ..errors import did_you_mean

            raise UnsupportedError(f"unknown scenario {self.scenario!r}.{did_you_mean(self.scenario, SCENARIOS)} "
                                   f"Valid: {', '.join(SCENARIOS)}")
        if self.profile not in PROFILES:
            raise UnsupportedError(f"unknown profile {self.profile!r}. Valid: {', '.join(PROFILES)}")
        parse_handoff(self.handoff)
        for opt, v in (("--fps", self.fps), ("--duration", self.duration), ("--deadline-ms", self.deadline_ms)):
            if v is not None and not v > 0:
                raise UnsupportedError(f"{opt} {v:g}: must be > 0")
        if self.replay not in REPLAYS:
            raise UnsupportedError(f"--replay {self.replay!r}: valid are {', '.join(REPLAYS)}")
        check_threshold(self.threshold)


SCENARIOS = ("single_stream", "offline", "camera", "audio_stream")
REPLAYS = ("realtime", "asfast", "both")


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def bench(paths, cfg: BenchConfig) -> dict:
    """Benchmark artifacts (bundles and/or run dirs) in one run; returns the results document."""
    if not paths:
        raise DataError("no artifacts to benchmark", hint="pass bundle folders and/or a run folder")
    cfg.validate()
    threads = cfg.threads or default_threads()
    arts = [open_artifact(p, threads=threads, allow_failed=cfg.allow_failed, device=cfg.device) for p in paths]
    _dedupe_names(arts)
    tasks = {a.task for a in arts}
    if len(tasks) > 1:
        raise DataError(f"mixed tasks in one bench: {', '.join(f'{a.name}={a.task}' for a in arts)}",
                        hint="bench image and speech artifacts in separate runs")
    task = tasks.pop()
    labels = arts[0].labels
    for a in arts[1:]:
        if a.labels != labels:
            raise DataError(f"artifacts disagree on labels: {arts[0].name} has {labels[:5]}..., {a.name} has "
                            f"{a.labels[:5]}...", hint="compare variants of the same model (same labels.txt)")
    if cfg.scenario == "audio_stream" and task != "kws":
        raise UnsupportedError("--scenario audio_stream needs keyword-spotting (kws) artifacts")
    if cfg.scenario == "camera" and task != "image_cls":
        raise UnsupportedError("--scenario camera needs image classification artifacts")
    prof = cfg.profile_obj()
    checks: list[dict] = []
    warnings: list[str] = []
    gov = governors()
    if gov and gov != ["performance"]:
        msg = f"CPU governor is {','.join(gov)} (not 'performance'): frequency scaling adds noise"
        if cfg.profile == "report" and not cfg.allow_dvfs:
            raise UnsupportedError(msg, hint="set the performance governor, or pass --allow-dvfs")
        warnings.append(msg)
    checks.append({"name": "governor", "passed": (not gov) or gov == ["performance"] or cfg.allow_dvfs,
                   "detail": ",".join(gov) if gov else "not readable (VM/container)"})
    others = _others_cpu_percent()
    busy = others > 25.0
    if busy:
        warnings.append(f"machine busy: other processes used {others:.0f}% of all cores just before the run "
                        f"(they compete with the benchmark; spin-waiting thread pools such as PyTorch's suffer most)")
    checks.append({"name": "idle_machine", "passed": not busy, "warn_only": True,
                   "detail": f"other processes {others:.0f}% CPU at start"})
    if cfg.scenario == "audio_stream":
        from .audio import bench_audio_stream

        return bench_audio_stream(arts, cfg, prof, threads, checks, warnings)
    samples = load_samples(cfg.data, task, labels, cfg.data_limit)
    if len(samples) == 0:
        raise DataError(f"--data {cfg.data!r} has no samples")
    info(f"bench: {len(arts)} artifact(s), data {samples.name} (n={len(samples)}), scenario {cfg.scenario}, "
         f"profile {cfg.profile}, {threads} thread(s)")
    rng = np.random.default_rng(cfg.seed)
    perf_idx = np.sort(rng.permutation(len(samples))[: min(cfg.perf_samples, len(samples))])
    perf_raw = [samples.raw(int(i)) for i in perf_idx]
    log_n = min(len(perf_idx), max(32, len(perf_idx) // 100))
    log_pos = set(np.sort(rng.permutation(len(perf_idx))[:log_n]).tolist())

    results = []
    for a in arts:
        a.open()
        a.reopen_dynamic()
        acc = accuracy_run(a, samples, cfg.batch, perf_idx)
        results.append({"artifact": a, "accuracy": acc})
        info(f"  accuracy {a.name}: top-1 {acc['top1']:.4f} [{acc['top1_ci95'][0]:.4f}, {acc['top1_ci95'][1]:.4f}]")
    if cfg.scenario == "camera":
        from .camera import camera_for_artifacts

        perf = camera_for_artifacts(arts, cfg, prof)
    else:
        perf = performance_run(arts, cfg, prof, perf_raw, log_pos)
    doc = _assemble(arts, results, perf, samples, cfg, prof, threads, checks, warnings)
    for a in arts:
        a.close()
    return doc


def _others_cpu_percent(interval: float = 0.5) -> float:
    """CPU used by other processes (percent of the whole machine) over a short idle interval."""
    import psutil

    me = psutil.Process()
    me.cpu_percent(None)
    total = psutil.cpu_percent(interval=interval)
    mine = me.cpu_percent(None) / (os.cpu_count() or 1)
    return max(total - mine, 0.0)


def _dedupe_names(arts: list[Artifact]) -> None:
    seen: dict[str, int] = {}
    for a in arts:
        if a.name in seen:
            seen[a.name] += 1
            a.name = f"{a.name}#{seen[a.name]}"
        else:
            seen[a.name] = 1


# ------------------------------------------------------------------------------------- accuracy run
def accuracy_run(a: Artifact, samples, batch: int, keep_idx: np.ndarray) -> dict:
    """Every sample once, in order, batched through the same pre/infer/post code as the timed run."""
    pre = make_pre(a.task, a.preprocess)
    n = len(samples)
    c1 = c5 = 0
    keep = {int(i): None for i in keep_idx}
    preds = np.empty(n, np.int64)
    t0 = time.perf_counter()
    with progress() as prog:
        bar = prog.add_task(f"accuracy {a.name}", total=n, status="")
        for s in range(0, n, batch):
            idx = range(s, min(s + batch, n))
            logits = a.infer(pre([samples.raw(i) for i in idx]))
            top, _ = postprocess(logits, 5)
            y = samples.targets[s:s + len(idx)]
            c1 += int((top[:, 0] == y).sum())
            c5 += int((top == y[:, None]).any(1).sum())
            preds[s:s + len(idx)] = top[:, 0]
            for j, i in enumerate(idx):
                if i in keep:
                    keep[i] = logits[j].copy()
            prog.update(bar, advance=len(idx))
    return {"metric": "top1", "top1": c1 / n, "top5": c5 / n, "n": n, "top1_ci95": list(wilson_ci(c1, n)),
            "top5_ci95": list(wilson_ci(c5, n)), "seconds": round(time.perf_counter() - t0, 2),
            "_logits": keep, "_preds": preds}


# ---------------------------------------------------------------------------------- performance run
def performance_run(arts: list[Artifact], cfg: BenchConfig, prof: Profile, perf_raw: list, log_pos: set) -> dict:
    offline = cfg.scenario == "offline"
    steps, state = {}, {}
    for a in arts:
        if offline:
            a.reopen_dynamic()
        else:
            a.reopen_static()
        pre = make_pre(a.task, a.preprocess)
        logged: dict[int, np.ndarray] = {}
        steps[a.name] = _offline_step(a, pre, perf_raw, cfg.batch) if offline else \
            _single_step(a, pre, perf_raw, log_pos, logged)
        # first inference + warm-up, bounded by time and count
        state[a.name] = {"logged": logged, "first_inference_ms": None}
        t = time.perf_counter()
        steps[a.name](0)
        state[a.name]["first_inference_ms"] = a.first_inference_ms() or (time.perf_counter() - t) * 1e3
        state[a.name]["warmup"] = warmup(lambda i: steps[a.name](i), prof.warmup_s, prof.warmup_iters)
        state[a.name]["windows"] = []
        state[a.name]["next_i"] = 0
    rng = np.random.default_rng(cfg.seed + 1)
    order_log = []
    total = prof.windows * len(arts)
    with progress() as prog:
        bar = prog.add_task("performance", total=total, status="")
        for rnd in range(prof.windows):
            order = [arts[i] for i in rng.permutation(len(arts))]
            order_log.append([a.name for a in order])
            for a in order:
                st = state[a.name]
                for j in range(prof.rewarm_iters):  # re-warm after the other runners ran (discarded)
                    steps[a.name](st["next_i"] + j)
                w = run_window(steps[a.name], rnd, prof.window_s, prof.window_count,
                               start_at=st["next_i"] + prof.rewarm_iters)
                st["next_i"] += prof.rewarm_iters + w.count
                st["windows"].append(w)
                prog.update(bar, advance=1, status=f"round {rnd + 1}: {a.name} p50 {w.summary()['e2e']['p50']:.3f} ms")
    return {"state": state, "order": order_log, "offline": offline}


def _single_step(a: Artifact, pre, perf_raw, log_pos, logged):
    n = len(perf_raw)

    def step(i: int) -> dict:
        k = i % n
        y, _, _, st = timed_pass(pre, a.infer, [perf_raw[k]])
        if k in log_pos and k not in logged:
            logged[k] = y[0].copy()
        c = a.compute_ms()
        if c is not None:
            st["compute"] = c
        return st

    return step


def _offline_step(a: Artifact, pre, perf_raw, batch: int):
    n = len(perf_raw)

    def step(i: int) -> dict:
        return timed_pass(pre, a.infer, [perf_raw[(i * batch + j) % n] for j in range(batch)])[3]

    return step


# -------------------------------------------------------------------------------------- assembling
COMPLIANCE_TOL = {"fp32": 1e-3, "fp16": 2e-2, "int8": 5e-2}


def compliance(acc_logits: dict, perf_logged: dict, perf_idx_map, precision: str) -> dict:
    diffs, agree, n = [], 0, 0
    for pos, y in perf_logged.items():
        ref = acc_logits.get(int(perf_idx_map[pos]))
        if ref is None:
            continue
        n += 1
        scale = max(1.0, float(np.abs(ref).max()))
        diffs.append(float(np.abs(ref - y).max()) / scale)
        agree += int(ref.argmax() == y.argmax())
    tol = COMPLIANCE_TOL.get(precision, 5e-2)
    worst = max(diffs) if diffs else 0.0
    ok = n > 0 and worst <= tol and agree / max(n, 1) >= (0.97 if precision == "int8" else 1.0)
    return {"logged": n, "top1_mismatches": n - agree, "max_rel_diff": worst, "tolerance": tol, "passed": ok}


def _assemble(arts, results, perf, samples, cfg, prof, threads, checks, warnings) -> dict:
    from .roofline import peak_for, peak_gmacs

    ref_i = next((i for i, a in enumerate(arts) if a.kind == "pytorch"), 0)
    peak = peak_gmacs(threads)
    out_arts = []
    offline = perf.get("offline", False)
    for i, (a, r) in enumerate(zip(arts, results)):
        acc = r["accuracy"]
        entry = {**a.describe(), "runtime": a.runtime_info(), "target": a.target_info(), "load_ms": a.load_ms,
                 "rss_delta_on_load_bytes": a.rss_delta}
        st = perf["state"].get(a.name) if "state" in perf else None
        entry["accuracy"] = {k: v for k, v in acc.items() if not k.startswith("_")}
        entry["accuracy"]["dataset"] = {"name": samples.name, "sha256": samples.sha256}
        if st is not None and "windows" in st:
            lat = pooled(st["windows"])
            entry["latency"] = lat
            entry["windows"] = [w.summary() for w in st["windows"]]
            entry["startup"] = {"load_ms": a.load_ms, "first_inference_ms": st["first_inference_ms"],
                                "warmup": st["warmup"]}
            total_n = sum(w.count for w in st["windows"]) * (cfg.batch if offline else 1)
            total_s = sum(w.seconds for w in st["windows"])
            entry["throughput"] = {"throughput_sps": total_n / total_s if total_s else None,
                                   "inferred_from_mean_e2e_sps": (1000 / lat["e2e"]["mean"]) * (cfg.batch if offline else 1)}
            perf_idx = _perf_idx(samples, cfg)
            entry["compliance"] = compliance(acc["_logits"], st["logged"], perf_idx, a.precision) \
                if not offline else {"logged": 0, "passed": True, "detail": "offline: batched outputs not logged"}
            macs = a.macs()
            if macs and lat.get("infer"):
                per = (cfg.batch if offline else 1)
                g = macs * per / (lat["infer"]["p50"] / 1e3) / 1e9
                # against the peak of the precision the artifact computes in (an INT8 model vs the INT8 GEMM)
                cp = a.compute_precision()
                pk = peak_for(peak, cp)
                entry["roofline"] = {"macs": macs, "achieved_gmacs": round(g, 2), "peak_gmacs": pk,
                                     "peak_precision": cp, "pct_of_peak": round(100 * g / pk, 1) if pk else None}
        elif "camera" in perf:
            entry.update(perf["camera"][a.name])
        entry["validity"] = _validity(entry, a, threads, prof, cfg)
        out_arts.append(entry)
    ref = out_arts[ref_i]
    for i, e in enumerate(out_arts):
        e["reference"] = i == ref_i
        e["vs_reference"] = _ratios(arts[i], arts[ref_i], perf, e, ref)
    checks_all = checks + [{**c, "name": f"{e['name']}:{c['name']}"} for e in out_arts for c in e["validity"]["checks"]]
    valid = all(c["passed"] for c in checks_all if not c.get("warn_only"))
    doc = {
        "schema_version": SCHEMA_VERSION,
        "run_id": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:4],
        "edgeft": {"version": _ver(), "git_sha": git_sha(), "command": cfg.command},
        "profile": cfg.profile, "mode": "accuracy+performance",
        "scenario": {"name": cfg.scenario, **({"batch": cfg.batch} if offline else {}),
                     **({"fps": cfg.fps, "handoff": cfg.handoff, "deadline_ms": perf.get("deadline_ms"),
                         "source": perf.get("source")} if cfg.scenario == "camera" else {})},
        "settings": {"warmup": {"min_s": prof.warmup_s, "min_iters": prof.warmup_iters},
                     "window": {"min_s": prof.window_s, "min_count": prof.window_count}, "windows": prof.windows,
                     "interleaved": cfg.scenario != "camera", "round_order": perf.get("order"),
                     "sample_seed": cfg.seed, "perf_samples": cfg.perf_samples, "percentile_method": "nearest_rank",
                     "timed_region": "pipeline (pre + infer + post; decode untimed)", "threads": threads},
        "device": fingerprint(), "software": {**versions(), "torch_imported": "torch" in sys.modules},
        "roofline": peak,
        "data": {"name": samples.name, "n": len(samples), "sha256": samples.sha256,
                 "skipped_unreadable": len(samples.skipped), "skipped_examples": samples.skipped[:10]},
        "artifacts": out_arts, "reference": ref["name"],
        "memory": {"process_peak_rss_bytes": peak_rss_bytes()},
        "validity": {"valid": valid, "checks": checks_all}, "warnings": warnings,
    }
    raw = {}
    for a in arts:
        st = perf.get("state", {}).get(a.name)
        if st and "windows" in st:
            raw[a.name] = [v for w in st["windows"] for v in w.samples["e2e"]]
        elif a.name in perf.get("timeline", {}):
            raw[a.name] = perf["timeline"][a.name]["e2e"]
    doc["_raw"] = raw
    if "timeline" in perf:
        doc["_timeline"] = perf["timeline"]
    return doc


def _perf_idx(samples, cfg):
    rng = np.random.default_rng(cfg.seed)
    return np.sort(rng.permutation(len(samples))[: min(cfg.perf_samples, len(samples))])


def _ratios(a, ref, perf, e, ref_e) -> dict:
    out = {}
    ea, er = e.get("accuracy", {}), ref_e.get("accuracy", {})
    if "top1" in ea and "top1" in er:
        out["top1_delta_points"] = round((ea["top1"] - er["top1"]) * 100, 3)
        out["top1_ratio"] = ea["top1"] / er["top1"] if er["top1"] else None
    st = perf.get("state", {})
    if a.name in st and ref.name in st:
        wa, wr = st[a.name]["windows"], st[ref.name]["windows"]
        rs50 = [np.median(x.samples["e2e"]) / np.median(y.samples["e2e"]) for x, y in zip(wa, wr)]
        rs99 = [_p99(x.samples["e2e"]) / _p99(y.samples["e2e"]) for x, y in zip(wa, wr)]
        out["p50_ratio"] = {"median": float(np.median(rs50)), "min": float(min(rs50)), "max": float(max(rs50)),
                            "rounds": len(rs50)}
        out["p99_ratio"] = {"median": float(np.median(rs99)), "min": float(min(rs99)), "max": float(max(rs99))}
        out["speedup_p50"] = 1 / out["p50_ratio"]["median"]
        if len(rs50) > 1:
            out["verdict"] = ("faster" if max(rs50) < 0.98 else "slower" if min(rs50) > 1.02 else "no clear difference")
    return out


def _p99(v) -> float:
    from ..stats import nearest_rank

    return nearest_rank(np.sort(np.asarray(v)), 0.99)


def _validity(e: dict, a: Artifact, threads: int, prof: Profile, cfg: BenchConfig) -> dict:
    checks = []
    lat = e.get("latency", {}).get("e2e")
    if lat and "windows" not in e:  # camera: one continuous stream
        n = lat["count"]
        checks.append({"name": "early_stopping_p99", "passed": n >= 662, "warn_only": True, "detail": f"n={n} (>= 662)"})
    elif lat:
        n = lat["count"]
        checks.append({"name": "min_count_met", "passed": all(w["count"] >= prof.window_count for w in e["windows"]),
                       "detail": f"{[w['count'] for w in e['windows']]} >= {prof.window_count}"})
        checks.append({"name": "min_duration_met", "passed": all(w["seconds"] >= prof.window_s for w in e["windows"]),
                       "detail": f"{[w['seconds'] for w in e['windows']]} >= {prof.window_s}s"})
        checks.append({"name": "early_stopping_p90", "passed": n >= 64, "warn_only": True, "detail": f"n={n} (>= 64)"})
        checks.append({"name": "early_stopping_p99", "passed": n >= 662, "warn_only": True, "detail": f"n={n} (>= 662)"})
        inf = e["latency"].get("infer", {})
        cov = inf.get("cov") or 0
        checks.append({"name": "stable_compute", "passed": cov <= 0.05, "warn_only": True,
                       "detail": f"infer CoV {100 * cov:.1f}% (warn above 5%)"})
    if "compliance" in e:
        c = e["compliance"]
        checks.append({"name": "compliance_outputs_match", "passed": c["passed"],
                       "detail": f"{c.get('logged', 0)} logged, {c.get('top1_mismatches', 0)} top-1 mismatches, "
                                 f"max rel diff {c.get('max_rel_diff', 0):.2e} (tol {c.get('tolerance')})"})
    info_ = e.get("runtime", {})
    got = info_.get("inference_num_threads") or info_.get("intra_op_threads")
    ok = got is None or str(got).startswith("default") or int(got) == int(threads)
    checks.append({"name": "threads_as_requested", "passed": bool(ok), "detail": f"requested {threads}, runtime {got}"})
    if info_.get("fallback"):
        checks.append({"name": "no_silent_fallback", "passed": False, "detail": info_["fallback"]})
    if "camera" in e:
        cam = e["camera"]
        checks.append({"name": "producer_on_time", "passed": cam["producer_on_time"],
                       "detail": f"producer lateness p99 {cam['producer_lateness']['p99']:.3f} ms"})
    return {"valid": all(c["passed"] for c in checks if not c.get("warn_only")), "checks": checks}


def _ver() -> str:
    from .. import __version__

    return __version__

