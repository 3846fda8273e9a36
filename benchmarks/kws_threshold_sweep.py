"""Keyword bundles compared at the same thresholds on the bench's test streams: the positive stream's false-reject
rate and the false accepts on the real-speech stream (never trained on), and which keywords those false accepts
are. The bench reports one operating point per bundle (its threshold, FRR 10%); this shows the whole curve on the
stream that matters, so two models can be compared where their operating points differ. RESULTS.md §15d.

    python benchmarks/kws_threshold_sweep.py BUNDLE [BUNDLE...] [--data speech-commands-tts:test] [--seed 1234]

The streams are those of `edgeft bench --scenario audio_stream --profile dev` (same data, profile and seed: the
bench's default seed is 1234), rebuilt into edgeft's cache; each bundle replays them with its own detector
(window mode, its smoothing and refractory period).
"""
from __future__ import annotations

import argparse
import hashlib
from collections import Counter

from edgeft import runtime
from edgeft.bench.audio_data import build_streams, data_fingerprint, load_stream
from edgeft.bench.kws_scoring import detections_from_posteriors, score
from edgeft.runtime.kws import KwsDetector, replay
from edgeft.utils.env import cpu_model
from edgeft.utils.io import cache_dir

THRESHOLDS = (0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.8, 0.85, 0.9)


def streams(data: str, labels: list[str], seed: int) -> dict:
    key = hashlib.sha1(f"sweep|{data}|{data_fingerprint(data)}|{labels}|dev|{seed}".encode()).hexdigest()[:12]
    d = cache_dir("streams", key)
    if not (d / "stream_negative_real.json").is_file():
        build_streams(data, labels, "dev", d, seed=seed)
    return {k: load_stream(str(d / f"stream_{k}.wav")) for k in ("positive", "negative_real")}


def main(bundles: list[str], data: str, seed: int) -> None:
    print(f"machine: {cpu_model()}; streams: {data}, profile dev, seed {seed}")
    s = None
    for b in bundles:
        with runtime.load(b, threads=1) as m:
            s = s or streams(data, m.labels, seed)
            det = KwsDetector(m, "window")
            post = {k: replay(det, v["audio"])["posteriors"] for k, v in s.items()}
            hop_s, ref, kw = det.hop / det.model.lm.sample_rate, det.refractory_s, det.kw_idx
        pos, real = s["positive"]["truth"], s["negative_real"]["truth"]
        hours = real["length_sec"] / 3600
        print(f"\n{b} (its threshold {det.threshold:.3f}); real speech {hours:.2f} h")
        print("| threshold | positive FRR | real-speech false accepts | per hour | which keywords |")
        print("|---|---|---|---|---|")
        for th in THRESHOLDS:
            p = score(detections_from_posteriors(post["positive"], m.labels, kw, hop_s, th, ref), pos["events"],
                      pos["length_sec"])
            fa = detections_from_posteriors(post["negative_real"], m.labels, kw, hop_s, th, ref)
            which = ", ".join(f"{k} {n}" for k, n in Counter(d["label"] for d in fa).most_common())
            print(f"| {th} | {p['frr']:.3f} | {len(fa)} | {len(fa) / hours:.0f} | {which or '-'} |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundles", nargs="+")
    ap.add_argument("--data", default="speech-commands-tts:test")
    ap.add_argument("--seed", type=int, default=1234, help="the bench's default seed")
    a = ap.parse_args()
    main(a.bundles, a.data, a.seed)
