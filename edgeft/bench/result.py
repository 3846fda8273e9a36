"""The one result document (schema 1.0) every scenario's rows become: header, machine, software, roofline,
data, per-artifact entries with their validity checks and ratios to the reference row, raw samples."""
from __future__ import annotations

import sys
import time
import uuid

import numpy as np

from ..utils.env import fingerprint, git_sha, versions
from .artifacts import peak_rss_bytes


def assemble(ctx, scenario, rows: list[dict]) -> dict:
    from .. import __version__
    from .harness import SCHEMA_VERSION
    from .roofline import peak_for, peak_gmacs

    cfg, prof, threads = ctx.cfg, ctx.prof, ctx.threads
    peak = peak_gmacs(threads) if scenario.roofline else {}
    entries = []
    for r in rows:
        a = r["artifact"]
        e = {**a.describe(), "runtime": a.runtime_info(), "target": a.target_info(), "load_ms": a.load_ms,
             "rss_delta_on_load_bytes": a.rss_delta}
        if "name" in r:
            e["name"] = r["name"]
        acc = r["accuracy"]
        e["accuracy"] = {k: v for k, v in acc.items() if not k.startswith("_")}
        if ctx.samples is not None:
            e["accuracy"]["dataset"] = {"name": ctx.samples.name, "sha256": ctx.samples.sha256}
        for k in ("latency", "windows", "startup", "throughput", "compliance", "camera", "audio"):
            if k in r:
                e[k] = r[k]
        if scenario.roofline and a.macs() and e.get("latency", {}).get("infer"):
            per = cfg.batch if getattr(scenario, "offline", False) else 1
            g = a.macs() * per / (e["latency"]["infer"]["p50"] / 1e3) / 1e9
            # against the peak of the precision the artifact computes in (an INT8 model vs the INT8 GEMM)
            cp = a.compute_precision()
            pk = peak_for(peak, cp)
            e["roofline"] = {"macs": a.macs(), "achieved_gmacs": round(g, 2), "peak_gmacs": pk,
                             "peak_precision": cp, "pct_of_peak": round(100 * g / pk, 1) if pk else None}
        e["validity"] = validity(e, threads, prof, r.get("extra_checks", []))
        entries.append(e)
    ref_i = next((i for i, r in enumerate(rows) if r["artifact"].kind == "pytorch"), 0)
    ref = entries[ref_i]
    for i, e in enumerate(entries):
        e["reference"] = i == ref_i
        e["vs_reference"] = ratios(rows[i], rows[ref_i], e, ref)
    checks_all = ctx.checks + [{**c, "name": f"{e['name']}:{c['name']}"} for e in entries
                               for c in e["validity"]["checks"]]
    valid = all(c["passed"] for c in checks_all if not c.get("warn_only"))
    settings = {"warmup": {"min_s": prof.warmup_s, "min_iters": prof.warmup_iters},
                "window": {"min_s": prof.window_s, "min_count": prof.window_count}, "windows": prof.windows,
                "interleaved": scenario.interleaved, "round_order": None, "sample_seed": cfg.seed,
                "perf_samples": cfg.perf_samples, "percentile_method": "nearest_rank",
                "timed_region": "pipeline (pre + infer + post; decode untimed)", "threads": threads,
                **(scenario.settings(ctx) if hasattr(scenario, "settings") else {})}
    s = ctx.samples
    doc = {
        "schema_version": SCHEMA_VERSION,
        "run_id": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:4],
        "edgeft": {"version": __version__, "git_sha": git_sha(), "command": cfg.command},
        "profile": cfg.profile, "mode": getattr(scenario, "mode", "accuracy+performance"),
        "scenario": scenario.header(ctx), "settings": settings,
        "device": fingerprint(), "software": {**versions(), "torch_imported": "torch" in sys.modules},
        "roofline": peak,
        "data": {"name": s.name, "n": len(s), "limited_by": getattr(s, "limited_by", None) or (
                     f"--data-limit {cfg.data_limit}" if cfg.data_limit else None),
                 "sha256": s.sha256, "skipped_unreadable": len(s.skipped),
                 "skipped_examples": s.skipped[:10]} if s is not None else None,
        "artifacts": entries, "reference": ref["name"],
        "memory": {"process_peak_rss_bytes": peak_rss_bytes()},
        "validity": {"valid": valid, "checks": checks_all}, "warnings": ctx.warnings,
        "_raw": {e["name"]: r["_raw"] for e, r in zip(entries, rows) if "_raw" in r},
    }
    timeline = {e["name"]: r["_timeline"] for e, r in zip(entries, rows) if "_timeline" in r}
    if timeline:
        doc["_timeline"] = timeline
    return doc


def ratios(r: dict, ref_r: dict, e: dict, ref_e: dict) -> dict:
    """vs the reference row: the metric's difference in points, and the p50/p99 ratios per interleaved round
    (with their range) where the rows have timed windows; a scenario may add its own (``ratios`` in a row)."""
    out = {}
    ea, er = e.get("accuracy", {}), ref_e.get("accuracy", {})
    m = ea.get("metric", "top1")
    if m in ea and m in er:
        out[f"{m}_delta_points"] = round((ea[m] - er[m]) * 100, 3)
        out[f"{m}_ratio"] = ea[m] / er[m] if er[m] else None
    if "_windows" in r and "_windows" in ref_r:
        wa, wr = r["_windows"], ref_r["_windows"]
        rs50 = [np.median(x.samples["e2e"]) / np.median(y.samples["e2e"]) for x, y in zip(wa, wr)]
        rs99 = [_p99(x.samples["e2e"]) / _p99(y.samples["e2e"]) for x, y in zip(wa, wr)]
        out["p50_ratio"] = {"median": float(np.median(rs50)), "min": float(min(rs50)), "max": float(max(rs50)),
                            "rounds": len(rs50)}
        out["p99_ratio"] = {"median": float(np.median(rs99)), "min": float(min(rs99)), "max": float(max(rs99))}
        out["speedup_p50"] = 1 / out["p50_ratio"]["median"]
        if len(rs50) > 1:
            out["verdict"] = ("faster" if max(rs50) < 0.98 else "slower" if min(rs50) > 1.02 else "no clear difference")
    if "ratios" in r:
        out.update(r["ratios"](ref_r))
    return out


def _p99(v) -> float:
    from ..stats import nearest_rank

    return nearest_rank(np.sort(np.asarray(v)), 0.99)


def validity(e: dict, threads: int, prof, extra: list[dict]) -> dict:
    checks = []
    lat = e.get("latency", {}).get("e2e")
    if lat and "windows" not in e:  # camera, audio streams: one continuous stream
        n = lat["count"]
        checks.append({"name": "early_stopping_p99", "passed": n >= 662, "warn_only": True, "detail": f"n={n} (>= 662)"})
    elif lat and "windows" in e:
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
    checks += extra
    return {"valid": all(c["passed"] for c in checks if not c.get("warn_only")), "checks": checks}
