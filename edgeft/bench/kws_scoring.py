"""Scoring keyword detections against a truth file (MLPerf Tiny streaming-wake-word rules, one window).

- A keyword occurrence's admissible window is [start, end + window_after_s] (1.0 s by default; the MLPerf
  Tiny reference code effectively allows 2 s, edgeft states its 1 s explicitly).
- The first detection of the right label in the window is a true positive (later ones in the same window
  are ignored); a window with no right-label detection is a miss.
- A detection of a wrong label inside a window is a false accept (wrong label); a detection outside every
  window is a false accept; false accepts are debounced over ``debounce_s``.
"""
from __future__ import annotations

import numpy as np

from ..stats import clopper_pearson, poisson_upper, summarize


def score(detections: list[dict], events: list[dict], length_s: float, window_after_s: float = 1.0,
          debounce_s: float = 1.0) -> dict:
    wins = [(e["start_s"], e["end_s"] + window_after_s, e["label"], e["end_s"]) for e in events]
    hit = [False] * len(wins)
    delays, fa_times, fa_wrong = [], [], 0
    last_fa = -1e9
    for d in sorted(detections, key=lambda d: d["t_s"]):
        t, lab = d["t_s"], d["label"]
        inside = [i for i, (a, b, _, _) in enumerate(wins) if a <= t <= b]
        right = [i for i in inside if wins[i][2] == lab]
        if right:
            i = right[0]
            if not hit[i]:
                hit[i] = True
                delays.append((t - wins[i][3]) * 1e3)
            continue
        if t - last_fa >= debounce_s:
            fa_times.append(t)
            fa_wrong += bool(inside)
            last_fa = t
    pos = len(wins)
    tp = sum(hit)
    neg_s = max(length_s - sum(b - a for a, b, _, _ in wins), 0.0)
    missed: dict[str, int] = {}
    for (_, _, lab, _), h in zip(wins, hit):
        if not h:
            missed[lab] = missed.get(lab, 0) + 1
    return {"positives": pos, "tp": tp, "fn": pos - tp, "frr": (pos - tp) / pos if pos else None,
            "frr_ci95": list(clopper_pearson(pos - tp, pos)) if pos else None,
            "missed": dict(sorted(missed.items(), key=lambda kv: (-kv[1], kv[0]))), "fa": len(fa_times),
            "fa_wrong_label": fa_wrong, "negative_hours": neg_s / 3600, "delays_ms": delays,
            "scoring": {"window": f"[start, end + {window_after_s} s]", "debounce_s": debounce_s}}


def combine(pos: dict, neg: dict) -> dict:
    """FRR from the positive stream; false accepts from both streams (their negative time added up)."""
    fa = pos["fa"] + neg["fa"]
    hours = pos["negative_hours"] + neg["negative_hours"]
    return {"positives": pos["positives"], "tp": pos["tp"], "fn": pos["fn"], "frr": pos["frr"],
            "frr_ci95": pos["frr_ci95"], "missed": pos.get("missed", {}), "fa": fa,
            "fa_wrong_label": pos["fa_wrong_label"],
            "negative_hours": hours, "fa_per_hour": fa / hours if hours else None,
            "fa_per_hour_ub95": poisson_upper(fa) / hours if hours else None,
            "detection_delay_audio_ms": summarize(pos["delays_ms"]) if pos["delays_ms"] else {"count": 0},
            "scoring": pos["scoring"]}


def detections_from_posteriors(post: np.ndarray, labels: list[str], kw_idx: list[int], hop_s: float,
                               threshold, refractory_s: float) -> list[dict]:
    """Re-run the detector's threshold + refractory logic on stored (smoothed) posteriors. ``threshold``: one, or
    one per keyword of ``kw_idx`` (the most probable keyword fires when it reaches its own)."""
    out, last = [], -1e9
    kw = np.asarray(kw_idx)
    a = np.argmax(post[:, kw], axis=1)
    best = kw[a]
    val = post[np.arange(len(post)), best]
    for j in np.flatnonzero(val >= np.broadcast_to(np.asarray(threshold, float), (len(kw),))[a]):
        t = (j + 1) * hop_s
        if t - last >= refractory_s:
            out.append({"label": labels[best[j]], "t_s": round(float(t), 4), "score": float(val[j])})
            last = t
    return out


def roc(post_pos, post_neg, truth_pos, len_neg_s, labels, kw_idx, hop_s, refractory_s,
        thresholds=None, negative_only: bool = False) -> list[dict]:
    """FRR (positive stream) and false accepts per threshold; false accepts count both streams' non-keyword time,
    or the negative stream's alone (``negative_only``); ``substitutions``: those of them that are a wrong keyword
    inside a keyword's window."""
    thresholds = thresholds if thresholds is not None else [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98]
    rows = []
    for th in thresholds:
        p = score(detections_from_posteriors(post_pos, labels, kw_idx, hop_s, th, refractory_s), truth_pos["events"],
                  truth_pos["length_sec"])
        n = score(detections_from_posteriors(post_neg, labels, kw_idx, hop_s, th, refractory_s), [], len_neg_s)
        if negative_only:
            p = {**p, "fa": 0, "negative_hours": 0.0, "fa_wrong_label": 0}
        c = combine(p, n)
        rows.append({"threshold": th, "frr": c["frr"], "fa_per_hour": c["fa_per_hour"], "fa": c["fa"],
                     "substitutions": c["fa_wrong_label"]})
    return rows


def frr_at_fa(post_pos, post_neg, truth_pos, len_neg_s, labels, kw_idx, hop_s, refractory_s,
              target_fa_per_hour: float = 1.0, thresholds=None) -> dict:
    """The operating point for a false-accept budget, from a dense threshold sweep of the DET curve: the lowest
    false-reject rate among thresholds whose false accepts per hour (both streams' negative time) are at most
    ``target_fa_per_hour``. ``resolvable`` says whether the negative audio is long enough to tell that rate from
    zero (at least 1 / target hours); when it is not, the point is "FRR at zero false accepts in H hours"."""
    grid = thresholds if thresholds is not None else [round(float(t), 4) for t in np.linspace(0.05, 0.995, 64)] + \
        [0.998, 0.999]
    rows = roc(post_pos, post_neg, truth_pos, len_neg_s, labels, kw_idx, hop_s, refractory_s, thresholds=grid)
    ok = [r for r in rows if r["fa_per_hour"] is not None and r["fa_per_hour"] <= target_fa_per_hour]
    p = score([], truth_pos["events"], truth_pos["length_sec"])
    hours = p["negative_hours"] + len_neg_s / 3600
    out = {"target_fa_per_hour": target_fa_per_hour, "negative_hours": round(hours, 4),
           "resolvable": hours * target_fa_per_hour >= 1.0, "thresholds_swept": len(grid)}
    if not ok:
        return {**out, "threshold": None, "frr": None, "fa_per_hour": None,
                "note": f"no swept threshold up to {grid[-1]} keeps false accepts at {target_fa_per_hour:g}/h or below"}
    best = min(ok, key=lambda r: (r["frr"], r["threshold"]))
    note = "" if out["resolvable"] else (f"only {hours:.3f} h of negative audio: the smallest non-zero rate is "
                                         f"{1 / hours:.1f} FA/h, so this is the FRR at zero false accepts")
    return {**out, "threshold": best["threshold"], "frr": best["frr"], "fa_per_hour": best["fa_per_hour"],
            "fa": best["fa"], "note": note}


DENSE_GRID = [round(float(t), 4) for t in np.linspace(0.05, 0.995, 64)] + [0.998, 0.999]


def fa_at_frr(post_pos, post_neg, truth_pos, len_neg_s, labels, kw_idx, hop_s, refractory_s,
              max_frr: float = 0.10, thresholds=None, negative_only: bool = False) -> dict:
    """The other operating point: the fewest false accepts per hour among thresholds whose false-reject rate on
    the positive stream is at most ``max_frr`` (the highest such threshold, on the dense sweep), with the exact
    Poisson 95% upper bound of that rate."""
    from ..stats import poisson_upper

    grid = thresholds if thresholds is not None else DENSE_GRID
    rows = roc(post_pos, post_neg, truth_pos, len_neg_s, labels, kw_idx, hop_s, refractory_s, thresholds=grid,
               negative_only=negative_only)
    p = score([], truth_pos["events"], truth_pos["length_sec"])
    hours = (0.0 if negative_only else p["negative_hours"]) + len_neg_s / 3600
    ok = [r for r in rows if r["frr"] is not None and r["frr"] <= max_frr]
    out = {"max_frr": max_frr, "negative_hours": round(hours, 4), "thresholds_swept": len(grid)}
    if not ok:
        return {**out, "threshold": None, "frr": None, "fa_per_hour": None, "fa": None,
                "note": f"no swept threshold down to {grid[0]} keeps the false-reject rate at {max_frr:.0%} or below"}
    best = min(ok, key=lambda r: (r["fa_per_hour"], -r["threshold"]))
    return {**out, "threshold": best["threshold"], "frr": best["frr"], "fa": best["fa"],
            "fa_per_hour": best["fa_per_hour"], "fa_per_hour_ub95": poisson_upper(best["fa"]) / hours if hours else None}


def clip_peaks(post_of, clips: list[np.ndarray], kw_idx: list[int], hop: int, gap: int = 19_200) -> list[tuple]:
    """Clips said alone, through the detector as one stream with ``gap`` samples of silence around each (longer
    than a window plus the smoothing, so no window holds two clips): per clip, (its highest smoothed keyword
    posterior, that keyword's index). The detector fires on a clip at threshold t when its peak is >= t.
    ``post_of(audio)`` gives the smoothed posteriors per hop (``runtime.kws.window_posteriors``)."""
    sil = np.zeros(gap, np.float32)
    parts, spans, t = [sil], [], gap
    for x in clips:
        parts += [np.asarray(x, np.float32), sil]
        spans.append((t, t + len(x) + gap))
        t += len(x) + gap
    post = np.asarray(post_of(np.concatenate(parts)))
    out = []
    for a, b in spans:          # hop j holds the audio up to sample (j + 1) * hop
        seg = post[a // hop: -(-b // hop)][:, kw_idx]
        i, k = np.unravel_index(int(seg.argmax()), seg.shape)
        out.append((float(seg[i, k]), kw_idx[int(k)]))
    return out


def near_miss_report(names: list[str], peaks: list[tuple], labels: list[str], threshold: float,
                     also: float | None = None) -> dict:
    """How many near-miss words (said alone; ``names`` their files, ``peaks`` from ``clip_peaks``) the detector
    fires on at ``threshold`` (and at ``also``, e.g. the FRR-10% threshold), with the worst ("stock -> stop 0.990")."""
    from ..data.audio import near_miss_word

    fired = sorted(((p, n, labels[k]) for n, (p, k) in zip(names, peaks) if p >= threshold), reverse=True)
    out = {"clips": len(names), "fire_at_threshold": len(fired), "share": round(len(fired) / max(len(names), 1), 4),
           "worst": [f"{near_miss_word(n)} -> {k} {p:.3f}" for p, n, k in fired[:8]]}
    if also is not None:
        out["fire_at_frr10"] = sum(1 for p, _ in peaks if p >= also)
    return out


def choose_threshold(post_pos, post_neg, truth_pos, len_neg_s, labels, kw_idx, hop_s, refractory_s,
                     target_fa_per_hour: float = 1.0, thresholds=None, max_substitution_rate: float = 0.01) -> dict:
    """Calibration on the validation streams: the lowest threshold (so the lowest false-reject rate) within two
    budgets. False accepts in non-keyword audio (the negative stream and the positive stream's gaps): at most
    ``target_fa_per_hour x negative hours`` (at least zero: with less than 1/target hours of audio the rule is "no
    false accept on the validation audio"). Substitutions (a wrong keyword inside a keyword's scoring window, [start,
    end + 1 s]: a confusion, which scales with keywords said, not with hours of other audio): at most
    ``max_substitution_rate`` of the keywords."""
    grid = sorted(thresholds if thresholds is not None else DENSE_GRID)
    rows = roc(post_pos, post_neg, truth_pos, len_neg_s, labels, kw_idx, hop_s, refractory_s, thresholds=grid)
    rows = [{**r, "fa": r["fa"] - r["substitutions"]} for r in rows]      # false accepts in non-keyword audio alone
    p = score([], truth_pos["events"], truth_pos["length_sec"])
    hours = p["negative_hours"] + len_neg_s / 3600
    allowed = int(np.floor(target_fa_per_hour * hours + 1e-9))
    sub_allowed = int(np.floor(max_substitution_rate * p["positives"] + 1e-9))
    base = {"target_fa_per_hour": target_fa_per_hour, "negative_hours": round(hours, 4), "fa_allowed": allowed,
            "max_substitution_rate": max_substitution_rate, "substitutions_allowed": sub_allowed,
            "keywords": p["positives"], "thresholds_swept": len(grid)}

    def point(r, **kw):
        return {**base, "threshold": r["threshold"], "frr": r["frr"], "fa": r["fa"],
                "fa_per_hour": r["fa"] / hours if hours else None, "substitutions": r["substitutions"], **kw}

    ok = [r for r in rows if r["fa"] <= allowed and r["substitutions"] <= sub_allowed]
    if not ok:
        r = rows[-1]
        return point(r, met=False, note=f"even the highest swept threshold ({r['threshold']}) gives {r['fa']} false "
                                        f"accepts in {hours:.2f} h and {r['substitutions']} substitutions; it is used")
    return point(ok[0], met=True)
