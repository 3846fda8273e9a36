"""Per-keyword detection thresholds against one global threshold, on the sweep's real-speech streams (RESULTS.md
§15g). Misses are mostly short words ("up", "off", "on", "down") and false accepts mostly "no", so one threshold
per keyword looks like an easy gain. This measures it: each rule shapes the per-keyword thresholds, and one scalar
per rule is then fixed, as for the global threshold, by the positive stream alone (the highest setting whose FRR
is <= 10%); the false accepts on both real-speech streams are counted there.

    python benchmarks/kws_per_keyword_thresholds.py RUN [RUN...] [--data speech-commands-tts:test] [--seed 1234]

RUN is a finetune run folder (its recipe decides the validation split; its bundle RUN/bundles/onnxruntime-fp32 is
replayed). Rules:
- global: one threshold (what bundles ship);
- equal FRR (val): keyword k's threshold is the q-quantile of its peak scores on the validation positive stream
  (every val keyword), one q for all;
- cost (val): per keyword, the threshold minimising false accepts + lambda x misses on the validation streams;
- equal FRR (test peaks): as "equal FRR (val)", but from the test positive stream's own peaks: NOT blind (the
  shapes are chosen on the stream they are scored on), an optimistic bound on what shaping could give.
Needs the Asterisk prompts (``--other-languages`` of kws_threshold_sweep.py). ~10 min per run on one thread.
"""
from __future__ import annotations

import argparse
import os
from collections import Counter
from pathlib import Path

import numpy as np

from edgeft import runtime
from edgeft.bench.audio_data import validation_streams
from edgeft.bench.kws_scoring import DENSE_GRID, score
from edgeft.bench.kws_scoring import detections_from_posteriors as detections
from edgeft.recipe import load_recipe
from edgeft.runtime.kws import KwsDetector, replay
from edgeft.stats import poisson_upper
from edgeft.utils.env import cpu_model

from kws_threshold_sweep import LARGE, OTHER, streams

NEGS = ("negative_real", OTHER)


def peaks(post, truth, labels, hop_s) -> dict[str, np.ndarray]:
    """Per keyword, the peak of its smoothed posterior in each of its events' windows ([start, end + 1 s])."""
    out: dict[str, list] = {}
    for e in truth["events"]:       # hop j fires at (j + 1) x hop_s
        a, b = max(int(np.ceil(e["start_s"] / hop_s)) - 1, 0), int(np.floor((e["end_s"] + 1.0) / hop_s))
        out.setdefault(e["label"], []).append(float(post[a:b, labels.index(e["label"])].max()))
    return {k: np.asarray(v) for k, v in out.items()}


def main(runs: list[str], data: str, seed: int) -> None:
    print(f"machine: {cpu_model()}; streams: {data}, profile dev, seed {seed}")
    rows = []
    for run in runs:
        rec = load_recipe(Path(run) / "recipe.yaml")
        with runtime.load(Path(run) / "bundles" / "onnxruntime-fp32", threads=1) as m:
            s = streams(data, m.labels, seed, True, 548)
            v = validation_streams(rec.data.source, m.labels, rec.stream.calibration_minutes, rec.val_percent,
                                   rec.test_percent, seed=rec.data.split_seed, max_positives=5000,
                                   near_misses=rec.stream.calibration_near_misses)
            s["val_positive"], s["val_negative"] = v["positive"], v["negative"]
            det = KwsDetector(m, "window")
            post = {k: replay(det, x["audio"])["scores"] for k, x in s.items()}   # what the detector thresholds
            labels, kw, hop_s, ref = m.labels, det.kw_idx, det.hop / det.model.lm.sample_rate, det.refractory_s
        keys = [labels[i] for i in kw]
        truth = {k: x["truth"] for k, x in s.items()}
        hours = sum(truth[k]["length_sec"] for k in NEGS) / 3600

        def frr(th):
            return score(detections(post[LARGE], labels, kw, hop_s, th, ref), truth[LARGE]["events"],
                         truth[LARGE]["length_sec"])

        vp = peaks(post["val_positive"], truth["val_positive"], labels, hop_s)
        tp = peaks(post[LARGE], truth[LARGE], labels, hop_s)
        grid = np.asarray(DENSE_GRID)
        fa_k = {k: np.zeros(len(grid)) for k in keys}        # validation false accepts per keyword and threshold
        for i, t in enumerate(grid):
            for name in ("val_positive", "val_negative"):
                wins = [(e["start_s"], e["end_s"] + 1.0) for e in truth[name]["events"]]
                for d in detections(post[name], labels, kw, hop_s, t, ref):
                    if not any(a <= d["t_s"] <= b for a, b in wins):
                        fa_k[d["label"]][i] += 1
        miss_k = {k: np.array([(vp[k] < t).sum() for t in grid]) for k in keys}

        def cost_rule(lam):
            return [float(grid[int(np.argmin(fa_k[k] + lam * miss_k[k]))]) for k in keys]

        qs = np.arange(0.0, 0.6, 0.0025)
        lams = np.exp(np.linspace(np.log(0.01), np.log(100), 200))
        rules = {   # name: (thresholds of the scalar, scalars ordered from most to fewest detections)
            "global": (lambda t: t, grid),
            "equal FRR (val)": (lambda q: [float(np.quantile(vp[k], q)) for k in keys], qs),
            "cost (val)": (cost_rule, lams[::-1]),
            "equal FRR (test peaks; not blind)": (lambda q: [float(np.quantile(tp[k], q)) for k in keys], qs),
        }
        print(f"\n{run}: validation keywords " + ", ".join(f"{k} {len(vp[k])}" for k in keys))
        print("peak score, 10th percentile, val / test: " +
              ", ".join(f"{k} {np.quantile(vp[k], .1):.2f}/{np.quantile(tp[k], .1):.2f}" for k in keys))
        for name, (th_of, scalars) in rules.items():
            ok = [x for x in scalars if frr(th_of(x))["frr"] <= 0.10]
            if not ok:
                print(f"- {name}: no setting keeps the FRR at 10% or below")
                continue
            th = th_of(ok[-1])               # the fewest detections that still keep FRR <= 10%
            sp = frr(th)
            fa = [d for k in NEGS for d in detections(post[k], labels, kw, hop_s, th, ref)]
            which = ", ".join(f"{k} {n}" for k, n in Counter(d["label"] for d in fa).most_common(4))
            ths = " ".join(f"{k} {t:.2f}" for k, t in zip(keys, np.broadcast_to(th, (len(keys),))))
            print(f"- {name}: FRR {sp['frr']:.3f}, {len(fa)} false accepts = {len(fa) / hours:.1f}/h "
                  f"[95% ub {poisson_upper(len(fa)) / hours:.1f}] ({which}); thresholds {ths}")
            rows.append(f"| {run} | {name} | {sp['frr']:.3f} | {len(fa) / hours:.1f} [{poisson_upper(len(fa)) / hours:.1f}] "
                        f"| {which} |")
    print(f"\n| run | rule | positive FRR ({LARGE}) | FA/h, both real-speech streams [95% ub] | most false accepts |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--data", default="speech-commands-tts:test")
    ap.add_argument("--seed", type=int, default=1234, help="the bench's default seed")
    a = ap.parse_args()
    bad = [r for r in a.runs if not (Path(r) / "recipe.yaml").is_file()
           or not (Path(r) / "bundles" / "onnxruntime-fp32" / "manifest.json").is_file()]
    if bad:
        ap.error(f"{bad[0]!r} is not a finetune run with an exported onnxruntime-fp32 bundle (RUN/recipe.yaml, "
                 "RUN/bundles/onnxruntime-fp32/); run: edgeft export RUN --format onnxruntime")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main(a.runs, a.data, a.seed)
