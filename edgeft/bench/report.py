"""Bench results: versioned JSON, Markdown and terminal tables, PNG plots, and merging across machines."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import DataError
from ..utils.io import atomic_write_json, atomic_write_text, atomic_write_with

SCHEMA_MAJOR = "1"
REQUIRED = ("schema_version", "run_id", "scenario", "device", "artifacts", "reference", "validity")


def _schema():
    """The fields the tables and plots read, with their types: a result file that does not match is refused in
    one line instead of failing half-way through formatting."""
    from typing import Any, Optional

    from pydantic import BaseModel, ConfigDict, Field

    class M(BaseModel):
        model_config = ConfigDict(extra="allow")

    Num = Optional[float]

    class Stats(M):
        p50: Num = None
        p90: Num = None
        p99: Num = None
        p99_ub99: Num = None
        count: Optional[int] = None

    class Acc(M):
        top1: Num = None
        top1_ci95: Optional[list[float]] = Field(None, min_length=2, max_length=2)

    class Ratio(M):
        median: Num = None
        min: Num = None
        max: Num = None
        rounds: Optional[int] = None

    class Vs(M):
        top1_delta_points: Num = None
        speedup_p50: Num = None
        p50_ratio: Optional[Ratio] = None

    class Roof(M):
        achieved_gmacs: Num = None
        pct_of_peak: Num = None

    class Valid(M):
        valid: bool

    class Art(M):
        name: str
        format: str
        precision: str
        accuracy: Optional[Acc] = None
        latency: Optional[dict[str, Stats]] = None
        vs_reference: Optional[Vs] = None
        roofline: Optional[Roof] = None
        validity: Optional[Valid] = None
        bytes: Optional[int] = None
        throughput: Optional[dict[str, Num]] = None
        camera: Optional[dict[str, Any]] = None
        audio: Optional[dict[str, Any]] = None
        target: Optional[dict[str, Any]] = None
        reference: Optional[bool] = None

    class Check(M):
        name: str
        passed: bool

    class Validity(M):
        valid: bool
        checks: list[Check]

    class Scenario(M):
        name: str

    class Data(M):
        name: str
        n: int

    class Doc(M):
        schema_version: str
        run_id: str
        profile: Optional[str] = None
        scenario: Scenario
        device: dict[str, Any]
        settings: Optional[dict[str, Any]] = None
        data: Optional[Data] = None
        artifacts: list[Art] = Field(min_length=1)
        reference: str
        validity: Validity
        warnings: list[str] = []
        roofline: Optional[dict[str, Any]] = None

    return Doc


def save_json(doc: dict, path: str | Path) -> Path | None:
    """Write the result JSON; raw per-sample latencies (keys starting with '_') go to a side .npz file."""
    import numpy as np

    path = Path(path)
    public = {k: v for k, v in doc.items() if not k.startswith("_")}
    side = None
    if doc.get("_raw"):
        side = path.with_suffix(".samples.npz")
        arrays = {f"e2e::{k}": np.asarray(v, np.float64) for k, v in doc["_raw"].items()}
        atomic_write_with(side, lambda tmp: np.savez_compressed(open(tmp, "wb"), **arrays))
        public["raw_samples"] = side.name
    atomic_write_json(path, public)
    return side


def load_json(path: str | Path) -> dict:
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"result file {str(p)!r} does not exist") from None
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{str(p)!r} is not a JSON file ({e})", hint="pass files written by `edgeft bench --json`") \
            from None
    if not isinstance(doc, dict) or any(k not in doc for k in REQUIRED):
        missing = [k for k in REQUIRED if not isinstance(doc, dict) or k not in doc]
        raise DataError(f"{str(p)!r} is not an edgeft bench result (missing {', '.join(missing)})",
                        hint="pass files written by `edgeft bench --json`")
    if str(doc["schema_version"]).split(".")[0] != SCHEMA_MAJOR:
        raise DataError(f"{str(p)!r}: result schema {doc['schema_version']} is not readable by this edgeft "
                        f"(schema {SCHEMA_MAJOR}.x)", hint="re-run the benchmark or upgrade edgeft")
    from pydantic import ValidationError

    try:
        _schema().model_validate(doc)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        raise DataError(f"{str(p)!r}: field {loc!r}: {err['msg'].lower()} (got {str(err.get('input'))[:40]!r}); "
                        f"{len(e.errors())} problem(s) in all", hint="pass files written by `edgeft bench`") from None
    return doc


def _f(v, nd=3, suffix="") -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}{suffix}"
    return f"{v}{suffix}"


def rows(doc: dict) -> list[dict]:
    out = []
    dev = doc["device"].get("cpu_model", "?")
    for a in doc["artifacts"]:
        acc = a.get("accuracy", {})
        lat = a.get("latency", {})
        e2e, inf = lat.get("e2e", {}), lat.get("infer", {})
        vs = a.get("vs_reference", {})
        cam = a.get("camera") or {}
        aud = a.get("audio") or {}
        runs = (a.get("target") or {}).get("runs")
        m = acc.get("metric", "top1")
        r = {
            "device": dev, "artifact": a["name"], "metric": m,
            "format": f"{a['format']}/{a['precision']}" + (f" (runs {runs})" if runs else ""),
            "top1": acc.get(m), "top1_ci": acc.get(f"{m}_ci95"), "d_top1": vs.get(f"{m}_delta_points"),
            "e2e_p50": e2e.get("p50"), "e2e_p90": e2e.get("p90"), "e2e_p99": e2e.get("p99"),
            "p99_ub99": e2e.get("p99_ub99"), "infer_p50": inf.get("p50"),
            "compute_p50": (lat.get("compute") or {}).get("p50"),
            "sps": (a.get("throughput") or {}).get("throughput_sps"),
            "speedup": vs.get("speedup_p50") or vs.get("throughput_ratio"), "speedup_rng": vs.get("p50_ratio"),
            "mb": a.get("bytes", 0) / 1e6 if a.get("bytes") else None,
            "gmacs": (a.get("roofline") or {}).get("achieved_gmacs"),
            "pct_peak": (a.get("roofline") or {}).get("pct_of_peak"),
            "valid": a.get("validity", {}).get("valid"),
            "reference": a.get("reference"),
        }
        if cam:
            r.update({"drop_rate": cam.get("drop_rate"), "miss_rate": cam.get("deadline_miss_rate"),
                      "fps": cam.get("sustained_fps")})
        if aud:
            r.update({k: aud.get(k) for k in ("threshold", "frr", "fa_per_hour", "rtf_wall", "rtf_cpu")})
            r["frr_1fa"] = (aud.get("frr_at_1fa_h") or {}).get("frr")
            r["fa_frr10"] = (aud.get("fa_at_frr10") or {}).get("fa_per_hour")
            rs = aud.get("real_speech") or {}
            r["real_fa"] = rs.get("fa_per_hour")
            r["real_fa_frr10"] = (rs.get("fa_at_frr10") or {}).get("fa_per_hour")
            rk = aud.get("real_keywords") or {}
            r["real_kw"] = "/".join(str((rk.get(k) or {}).get("detected", "–")) for k in ("at_threshold", "at_frr10")) \
                + f" of {(rk.get('at_threshold') or {}).get('events')}" if rk else None
            nm = aud.get("near_miss_words")
            r["near_miss"] = (f"{nm['fire_at_threshold']}/{nm.get('fire_at_frr10', '–')} of {nm['clips']}"
                              if nm else None)
            r["hop_p50"] = (aud.get("chunk_compute") or {}).get("p50")
            r["hop_p99"] = (aud.get("chunk_compute") or {}).get("p99")
            r["delay_p90"] = (aud.get("detection_delay_audio_ms") or {}).get("p90")
        out.append(r)
    return out


def _speed(r) -> str:
    if r["reference"]:
        return "1.00 (ref)"
    if r["speedup"] is None:
        return "–"
    rng = r.get("speedup_rng") or {}
    if rng.get("rounds", 0) > 1:
        return f"{r['speedup']:.2f} [{1 / rng['max']:.2f}, {1 / rng['min']:.2f}]"
    return f"{r['speedup']:.2f}"


def markdown(docs: list[dict], title: str | None = None) -> str:
    lines = []
    multi = len({d["device"].get("cpu_model") for d in docs}) > 1 or len(docs) > 1
    if len(docs) > 1:   # several files: each keeps its own reference row, profile and machine, said per file
        lines.append(f"### {title or 'edgeft report'}: {len(docs)} results, scenario {docs[0]['scenario']['name']}; "
                     f"speedups are within each file, against that file's reference (#N)")
        lines += [_doc_line(i + 1, d) for i, d in enumerate(docs)]
        diff = data_differs(docs)
        if diff:
            lines.append(f"- **warning**: {diff}")
        lines.append("")
    for d in docs if len(docs) == 1 else []:
        scen = d["scenario"]["name"]
        lines.append(f"### {title or 'edgeft bench'}: {scen}, profile {d['profile']} — {d['device'].get('cpu_model')} "
                     f"({d['device'].get('cores_logical')} cores), {d['settings'].get('threads')} thread(s)")
        lim = (d.get("data") or {}).get("limited_by")
        lines.append(f"data {d['data']['name']} (n={d['data']['n']}{f', accuracy bounded by {lim}' if lim else ''}); valid: {'YES' if d['validity']['valid'] else 'NO'};"
                     f" run {d['run_id']}; percentiles nearest-rank; latency in ms")
        lines.append("")
        break
    cols = (["#"] if len(docs) > 1 else []) + (["device"] if multi else [])
    cam = any(a.get("camera") for d in docs for a in d["artifacts"])
    aud = any(a.get("audio") for d in docs for a in d["artifacts"])
    from ..tasks.base import metric_name

    mname = metric_name(next((r["metric"] for d in docs for r in rows(d)), "top1"))
    head = cols + ["artifact", "format", f"{mname} [95% CI]", f"Δ {mname} (pts)"]
    if aud:
        head += ["thr", "FRR", "FA/h", "FRR @1 FA/h", "FA/h @FRR 10%", "real-speech FA/h", "real FA/h @FRR 10%",
                 "real keywords (thr / FRR 10%)", "near-miss words firing (thr / FRR 10%)", "RTF wall", "RTF cpu",
                 "hop p50", "hop p99", "delay p90"]
    gpu = any(r["compute_p50"] is not None for d in docs for r in rows(d))
    head += ["e2e p50", "p90", "p99", "p99 ub99", "infer p50"] + (["GPU compute p50"] if gpu else [])
    head += ["drop %", "miss %", "fps"] if cam else ["samples/s"]
    head += ["speedup vs ref [range]", "MB", "GMAC/s (% peak)", "valid"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for di, d in enumerate(docs):
        for r in rows(d):
            ci = r["top1_ci"]
            cells = ([f"#{di + 1}"] if len(docs) > 1 else []) + ([r["device"]] if multi else []) + [
                r["artifact"], r["format"],
                f"{r['top1']:.4f} [{ci[0]:.4f}, {ci[1]:.4f}]" if r["top1"] is not None and ci else _f(r["top1"], 4),
                "–" if r["reference"] else _f(r["d_top1"], 2)]
            if aud:
                cells += [_f(r.get("threshold"), 3), _f(r.get("frr"), 4), _f(r.get("fa_per_hour"), 2),
                          _f(r.get("frr_1fa"), 4), _f(r.get("fa_frr10"), 2), _f(r.get("real_fa"), 2),
                          _f(r.get("real_fa_frr10"), 2), r.get("real_kw") or "–", r.get("near_miss") or "–",
                          _f(r.get("rtf_wall"), 4),
                          _f(r.get("rtf_cpu"), 4), _f(r.get("hop_p50")), _f(r.get("hop_p99")),
                          _f(r.get("delay_p90"), 0)]
            cells += [_f(r["e2e_p50"]), _f(r["e2e_p90"]), _f(r["e2e_p99"]), _f(r["p99_ub99"]), _f(r["infer_p50"])]
            if gpu:
                cells += [_f(r["compute_p50"])]
            if cam:
                cells += [_f(100 * r["drop_rate"], 2) if r.get("drop_rate") is not None else "–",
                          _f(100 * r["miss_rate"], 2) if r.get("miss_rate") is not None else "–", _f(r.get("fps"), 1)]
            else:
                cells += [_f(r["sps"], 1)]
            cells += [_speed(r).replace("(ref)", f"(ref #{di + 1})") if len(docs) > 1 else _speed(r), _f(r["mb"], 2),
                      (f"{r['gmacs']:.1f} ({r['pct_peak']:.0f}%)" if r["pct_peak"] is not None else f"{r['gmacs']:.1f}")
                      if r["gmacs"] is not None else "–", "yes" if r["valid"] else "NO"]
            lines.append("| " + " | ".join(cells) + " |")
    warns = [w for d in docs for w in d.get("warnings", [])]
    warns += [f"{a['name']}: {w}" for d in docs for a in d["artifacts"] for w in (a.get("target") or {}).get("warnings", [])]
    failed = [c for d in docs for c in d["validity"]["checks"] if not c["passed"]]
    if warns or failed:
        lines.append("")
        for w in warns:
            lines.append(f"- warning: {w}")
        for c in failed:
            lines.append(f"- check {c['name']}: {'warning' if c.get('warn_only') else 'FAILED'} ({c.get('detail', '')})")
    peak = docs[0].get("roofline") or {}
    if peak.get("peaks"):
        got = [f"{p} {v['gmacs']}" for p, v in peak["peaks"].items() if v.get("gmacs")]
        lines.append("")
        lines.append(f"Peak GMAC/s per compute precision ({peak.get('gemm')} GEMM, {peak.get('threads')} threads): "
                     f"{', '.join(got)}; each artifact's % of peak is against the peak of the precision it computes in.")
    elif peak.get("gmacs"):
        lines.append("")
        lines.append(f"Peak: {peak['gmacs']} GMAC/s ({peak.get('gemm')} via {peak.get('runtime')}, {peak.get('threads')} threads); "
                     "% of peak is shown for FP32 artifacts only.")
    return "\n".join(lines) + "\n"


def save_markdown(docs: list[dict], path: str | Path) -> None:
    atomic_write_text(path, markdown(docs))


def merge(paths) -> list[dict]:
    docs = [load_json(p) for p in paths]
    if not docs:
        raise DataError("no result files to merge", hint="pass RESULT.json files from `edgeft bench --json`")
    metrics = {d["artifacts"][0].get("accuracy", {}).get("metric", "top1") for d in docs if d["artifacts"]}
    scen = {d["scenario"]["name"] for d in docs}
    if len(scen) > 1:
        raise DataError(f"cannot merge different scenarios ({', '.join(sorted(scen))})",
                        hint="merge results of one scenario at a time")
    if len(metrics) > 1:
        raise DataError(f"cannot merge results of different tasks (metrics {', '.join(sorted(metrics))})",
                        hint="merge results of one task at a time")
    return docs


def data_differs(docs: list[dict]) -> str | None:
    """A warning when the merged files measured accuracy on different samples (other data, --data-limit or
    profile bound; a device reads the same set re-encoded as files, so only name and count are compared)."""
    seen = {((d.get("data") or {}).get("n"), Path(str((d.get("data") or {}).get("name", ""))).name.split(":")[0])
            for d in docs}
    if len(seen) <= 1:
        return None
    shown = ", ".join(f"#{i + 1} {(d.get('data') or {}).get('name')} (n={(d.get('data') or {}).get('n')})"
                      for i, d in enumerate(docs))
    return f"the files measured accuracy on different samples ({shown}): compare accuracy within a file only"


def _doc_line(i: int, d: dict) -> str:
    """One merged file's context: what its "(ref)" row is, on which machine, under which profile."""
    dv = d["device"]
    return (f"- #{i}: profile {d.get('profile')}, {dv.get('cpu_model')} ({dv.get('cores_logical')} cores), "
            f"{(d.get('settings') or {}).get('threads')} thread(s); reference {d.get('reference')}; data "
            f"{(d.get('data') or {}).get('name')} (n={(d.get('data') or {}).get('n')}); run {d['run_id']}; valid: "
            f"{'YES' if d['validity']['valid'] else 'NO'}")


# ------------------------------------------------------------------------------------------- plots
def plots(doc: dict, out_dir: str | Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    made = []
    arts = doc["artifacts"]
    dev = doc["device"].get("cpu_model", "")
    # 1) accuracy vs p50 latency (Pareto), with each point's uncertainty: the metric's 95% CI (vertical) and the
    # range of the interleaved rounds' p50 (horizontal). A point is on the front only if no other point is better
    # on both axes; front points whose boxes overlap another front point's are not distinguishable (hollow, "≈").
    pts = [_pareto_point(a) for a in arts]
    pts = [p for p in pts if p is not None]
    if pts:
        fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
        front = pareto_front(pts)
        tied = indistinguishable(front, pts)
        for i, p in enumerate(pts):
            on, same = p["name"] in front, p["name"] in tied
            ax.errorbar(p["x"], p["y"], xerr=[[p["x"] - p["x_lo"]], [p["x_hi"] - p["x"]]],
                        yerr=[[p["y"] - p["y_lo"]], [p["y_hi"] - p["y"]]], fmt="o", ms=6, capsize=3, lw=1,
                        color="tab:red" if on else "tab:blue", mfc="white" if same else None, zorder=3)
            ax.annotate(p["name"] + (" ≈" if same else ""), (p["x"], p["y"]), textcoords="offset points",
                        xytext=(6, 6 if i % 2 == 0 else -11), fontsize=7)
        fx = sorted((p["x"], p["y"]) for p in pts if p["name"] in front)
        ax.step([x for x, _ in fx], [y for _, y in fx], where="post", color="tab:red", alpha=0.5, ls="--", lw=1)
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], color="tab:red", marker="o", ls="--", label="Pareto front"),
                   Line2D([], [], color="tab:blue", marker="o", ls="", label="dominated"),
                   Line2D([], [], color="grey", marker="o", mfc="white", ls="",
                          label="≈ not distinguishable from a neighbour (bars overlap)")]
        ax.legend(handles=handles, fontsize=7, loc="lower right")
        _log_axis(ax.xaxis, [v for p in pts for v in (p["x_lo"], p["x_hi"])])
        ax.set_xlabel("end-to-end p50 latency (ms, log); bars: range of the interleaved rounds' p50")
        from ..tasks.base import metric_name

        ax.set_ylabel(metric_name(arts[0].get("accuracy", {}).get("metric", "top1")) + " (bars: 95% CI)")
        ax.set_title(f"accuracy vs latency — {dev}", fontsize=9)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        made.append(_save(fig, out_dir / "pareto.png"))
        plt.close(fig)
    # 2) latency CDF per artifact (pooled windows' e2e via window stats is lossy: use stored raw samples)
    raw = doc.get("_raw", {})
    if raw:
        fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
        for name, v in raw.items():
            v = np.sort(np.asarray(v))
            ax.plot(v, np.arange(1, len(v) + 1) / len(v), label=name, lw=1.2)
        _log_axis(ax.xaxis, [x for v in raw.values() for x in (min(v), max(v))] if raw else [1])
        ax.set_xlabel("end-to-end latency (ms, log)")
        ax.set_ylabel("fraction of samples ≤ x")
        ax.axhline(0.99, color="grey", lw=0.6, ls="--")
        ax.axhline(0.5, color="grey", lw=0.6, ls=":")
        ax.set_title(f"latency CDF — {doc['scenario']['name']}, {dev}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        made.append(_save(fig, out_dir / "latency_cdf.png"))
        plt.close(fig)
    # 3) camera timeline
    for a in arts:
        tl = (doc.get("_timeline") or {}).get(a["name"])
        if not tl:
            continue
        fig, ax = plt.subplots(figsize=(9, 3.5), dpi=110)
        t, lat, dropped = np.asarray(tl["t"]), np.asarray(tl["e2e"]), np.asarray(tl["dropped_t"])
        ax.plot(t, lat, lw=0.6, label="e2e latency of processed frames")
        ax.axhline(a["camera"]["deadline_ms"], color="grey", ls="--", lw=0.8, label="deadline")
        if len(dropped):   # drops as a rate per time bin (single markers merge into a solid bar at high rates)
            span = max(float(t.max()) if len(t) else 0.0, float(dropped.max()), 1e-3)
            nb = int(min(60, max(5, span)))
            h, edges = np.histogram(dropped, bins=nb, range=(0, span))
            ax2 = ax.twinx()
            ax2.step(edges[:-1], h / (span / nb), where="post", color="tab:red", lw=1,
                     label=f"dropped frames per s ({len(dropped)} in all)")
            ax2.set_ylabel("dropped frames / s", color="tab:red")
            ax2.set_ylim(bottom=0)
            ax2.legend(fontsize=7, loc="upper left")
        ax.set_xlabel("scheduled capture time (s)")
        ax.set_ylabel("ms")
        ax.set_title(f"camera timeline — {a['name']} @ {doc['scenario'].get('fps')} fps, {dev}", fontsize=9)
        ax.legend(fontsize=7, loc="upper right")
        fig.tight_layout()
        made.append(_save(fig, out_dir / f"camera_{_safe(a['name'])}.png"))
        plt.close(fig)
    # 4) keyword-spotting operating curve
    for a in arts:
        roc = (a.get("audio") or {}).get("roc")
        if not roc:
            continue
        fig, ax = plt.subplots(figsize=(6, 4.5), dpi=110)
        ax.plot([r["fa_per_hour"] for r in roc], [r["frr"] for r in roc], marker=".")
        ax.set_xlabel("false accepts per hour")
        ax.set_ylabel("false reject rate")
        ax.set_xscale("symlog", linthresh=0.1)
        ax.set_xlim(left=0)     # FA/h is never negative (symlog would show an empty negative side)
        ax.set_ylim(bottom=0)
        ax.set_title(f"DET sweep — {a['name']}", fontsize=9)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        made.append(_save(fig, out_dir / f"det_{_safe(a['name'])}.png"))
        plt.close(fig)
    return made


def _pareto_point(a: dict) -> dict | None:
    acc = a.get("accuracy", {})
    m = acc.get("metric", "top1")
    e2e = (a.get("latency") or {}).get("e2e") or {}
    if acc.get(m) is None or e2e.get("p50") is None:
        return None
    ci = acc.get(f"{m}_ci95") or [acc[m], acc[m]]
    rounds = [w["e2e"]["p50"] for w in a.get("windows") or [] if (w.get("e2e") or {}).get("p50") is not None]
    x = float(e2e["p50"])
    return {"name": a["name"], "x": x, "y": float(acc[m]), "y_lo": float(min(ci[0], acc[m])),
            "y_hi": float(max(ci[1], acc[m])), "x_lo": min([x] + rounds), "x_hi": max([x] + rounds)}


def pareto_front(pts: list[dict]) -> set[str]:
    """Names of the points no other point beats on both axes (lower latency, higher metric; ties allowed)."""
    out = set()
    for p in pts:
        if not any(q is not p and q["x"] <= p["x"] and q["y"] >= p["y"] and (q["x"] < p["x"] or q["y"] > p["y"])
                   for q in pts):
            out.add(p["name"])
    return out


def indistinguishable(front: set[str], pts: list[dict]) -> set[str]:
    """Points the data cannot tell apart from a neighbour, so the front's order between them is noise:

    - any point whose error box (p50 range x metric CI) overlaps a front point's box (the same on both axes);
    - neighbouring front points whose trade-off is not shown: the faster one is not distinguishably faster (the
      round ranges overlap) or the more accurate one not distinguishably more accurate (the CIs overlap)."""
    def x_ov(p, q):
        return p["x_lo"] <= q["x_hi"] and q["x_lo"] <= p["x_hi"]

    def y_ov(p, q):
        return p["y_lo"] <= q["y_hi"] and q["y_lo"] <= p["y_hi"]

    out = set()
    on = sorted((p for p in pts if p["name"] in front), key=lambda p: p["x"])
    for p in pts:
        for q in on:
            if q is not p and x_ov(p, q) and y_ov(p, q):
                out |= {p["name"], q["name"]}
    for p, q in zip(on, on[1:]):
        if x_ov(p, q) or y_ov(p, q):
            out |= {p["name"], q["name"]}
    return out


def _log_axis(axis, values) -> None:
    """A log axis with a few plain-number ticks (1, 2, 5 x 10^k) and no minor labels: matplotlib's default labels
    every minor tick when the range is under a decade, and they overlap."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.axes.set_xscale("log") if axis.axis_name == "x" else axis.axes.set_yscale("log")
    v = [x for x in values if x and x > 0]
    lo, hi = (min(v), max(v)) if v else (1.0, 10.0)
    span = hi / lo if lo > 0 else 10
    subs = (1.0, 2.0, 5.0) if span < 30 else (1.0,)
    axis.set_major_locator(LogLocator(base=10, subs=subs, numticks=8))
    axis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    axis.set_minor_formatter(NullFormatter())
    if span < 2:   # a narrow range: pad it so at least two ticks show
        if axis.axis_name == "x":
            axis.axes.set_xlim(lo / 1.5, hi * 1.5)
        else:
            axis.axes.set_ylim(lo / 1.5, hi * 1.5)


def _safe(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in s)


def _save(fig, path: Path) -> Path:
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png"))
    return path
