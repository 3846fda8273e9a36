"""Keyword bundles compared at the same thresholds on the bench's test streams: the positive stream's false-reject
rate and the false accepts on the real-speech stream (never trained on), and which keywords those false accepts
are. The bench reports one operating point per bundle (its threshold, FRR 10%); this shows the whole curve on the
stream that matters, so two models can be compared where their operating points differ. RESULTS.md §15d, §15e.

    python benchmarks/kws_threshold_sweep.py BUNDLE [BUNDLE...] [--data speech-commands-tts:test] [--seed 1234]
        [--other-languages [--positives N]] [--smooth-ms MS [MS...]] [--confirm-ms MS [MS...]] [--ensemble]

The streams are those of `edgeft bench --scenario audio_stream --profile dev` (same data, profile and seed: the
bench's default seed is 1234), rebuilt into edgeft's cache; each bundle replays them with its own detector
(window mode, its smoothing and refractory period).

``--other-languages`` adds a long negative stream (2.25 h, 1.5 h of it speech: 2,232 recordings) of real speech in French, Italian and Russian (Debian's
Asterisk voice prompts, four speakers, none in any training data; ``other_language_speech_files``), every recording
once, and the operating point that the positive stream alone fixes: the highest threshold whose positive FRR is at
most 10% (on the bench's dense threshold grid). There the false accepts of both real-speech streams are counted,
with the exact Poisson 95% upper bound; the highest-scoring ones are traced to the recording each fell in. Nothing is chosen on
the negative streams, so that figure is a blind one. Replaying it takes ~2 min per bundle (window mode).

``--smooth-ms MS [MS...]`` compares smoothing windows of the detector (its trailing average of the posteriors; the
bundle's own is 100 ms) and ``--confirm-ms MS [MS...]`` confirmation delays (``stream.confirm_ms``: a keyword fires
only if its smoothed posterior is still at the threshold this long after reaching it; 0: off): each bundle's raw
posteriors are replayed once, then averaged over each window as the detector does (the ring starts full of the
posterior of silence) and confirmed (``runtime.kws.confirm_scores``); each combination is one row of the last table.

``--ensemble`` (two or more bundles with the same labels and hop) adds one more detector: the mean of the bundles'
raw posteriors, smoothed and confirmed as the first bundle's detector does (its smoothing, confirmation and
refractory period; the ring starts from the mean posterior of silence), so that averaging seeds or models is
measured on the same streams and operating points as each bundle alone (RESULTS.md §15i-j).

With ``--other-languages`` each operating point also gives the **FRR at 1 FA/h** on both real-speech streams: the
lowest threshold of the dense grid whose false accepts there are at most one per hour of that audio (2 in 2.59 h),
and the positive stream's FRR at it: the DET curve's point that the issue's target names.

``--positives N`` fixes a second operating point on a longer positive stream: N test keywords (the dev profile's
200 make FRR 10% a 20-miss point, 95% CI about 6-15%; the built-in set's test split has 548). With several bundles
a last table gives one line per bundle and positive stream.
"""
from __future__ import annotations

import argparse
import hashlib
import math
import sys
from collections import Counter

import numpy as np

from edgeft import runtime
from edgeft.bench.audio_data import (STREAM_SIZES, build_streams, data_fingerprint, load_stream,
                                     other_language_stream)
from edgeft.bench.kws_scoring import DENSE_GRID, detections_from_posteriors, score
from edgeft.data.audio import OTHER_LANGUAGE_VOICES, other_language_speech_files
from edgeft.runtime.kws import KwsDetector, confirm_scores, replay, smooth_posteriors
from edgeft.stats import poisson_upper
from edgeft.utils.env import cpu_model
from edgeft.utils.io import cache_dir

THRESHOLDS = (0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.8, 0.85, 0.9)
OTHER = "negative_other_languages"
LARGE = "positive_large"


def streams(data: str, labels: list[str], seed: int, other_languages: bool, positives: int | None = None) -> dict:
    files = other_language_speech_files() if other_languages else []
    if other_languages and not files:       # before minutes of stream building
        print("error: --other-languages: none of the Asterisk voice prompts " + ", ".join(OTHER_LANGUAGE_VOICES) +
              " is installed (or sox is missing); install them: apt-get install asterisk-core-sounds-fr-wav "
              "asterisk-core-sounds-it-wav asterisk-core-sounds-ru-wav asterisk-prompt-it-menardi-wav sox",
              file=sys.stderr)
        sys.exit(2)
    key = hashlib.sha1(f"sweep|{data}|{data_fingerprint(data)}|{labels}|dev|{seed}".encode()).hexdigest()[:12]
    d = cache_dir("streams", key)
    if not (d / "stream_negative_real.json").is_file():
        build_streams(data, labels, "dev", d, seed=seed)
    out = {k: load_stream(str(d / f"stream_{k}.wav")) for k in ("positive", "negative_real")}
    if positives:           # a longer positive stream: the same seed's permutation of the test keywords, more of them
        key = hashlib.sha1(f"sweep|{data}|{data_fingerprint(data)}|{labels}|dev|{seed}|{positives}"
                           .encode()).hexdigest()[:12]
        d = cache_dir("streams", key)
        if not (d / "stream_positive.json").is_file():
            build_streams(data, labels, "dev", d, seed=seed, sizes=(positives, STREAM_SIZES["dev"][1]))
        out[LARGE] = load_stream(str(d / "stream_positive.wav"))
    if other_languages:
        key = hashlib.sha1(f"other|{data}|{data_fingerprint(data)}|{labels}|{seed}|{files[0].parent}|{len(files)}"
                           .encode()).hexdigest()[:12]
        d = cache_dir("streams", key)
        if not (d / f"stream_{OTHER}.json").is_file():
            other_language_stream(data, labels, d, seed=seed, files=files)
        out[OTHER] = load_stream(str(d / f"stream_{OTHER}.wav"))
    return out


def traced(dets: list[dict], segments: list[dict], top: int = 10) -> list[str]:
    """The false accepts per voice, and the ``top`` highest-scoring ones with the recording each fell in (or the
    1 s after one: the detector fires after the word)."""
    where = []
    for d in dets:
        seg = next((s for s in segments if s["start_s"] <= d["t_s"] <= s["end_s"] + 1.0), None)
        where.append(seg["file"] if seg else "(noise only)")
    voices = Counter(w.split("-")[1] if w.startswith("asterisk-") else w for w in where)
    out = ["per voice: " + ", ".join(f"{v} {n}" for v, n in voices.most_common())] if dets else []
    for i in sorted(range(len(dets)), key=lambda i: -dets[i]["score"])[:top]:
        out.append(f"{dets[i]['label']} {dets[i]['score']:.2f} at {dets[i]['t_s']:.1f} s in {where[i]}")
    return out


def variants(raw: dict, det: KwsDetector, p_silence: np.ndarray, smooth_ms: list[float] | None,
             confirm_ms: list[float] | None) -> dict:
    """Each detector variant (smoothing window x confirmation delay; the bundle's own when both are None) applied
    to raw per-hop posteriors: {row suffix: {stream: scores}}."""
    posts = {}
    for ms in smooth_ms or [det.smooth * det.hop_ms]:
        hops = max(1, int(round(ms / det.hop_ms)))
        for cms in [det.confirm * det.hop_ms] if confirm_ms is None else confirm_ms:
            ch = int(round(cms / det.hop_ms))
            suffix = "" if smooth_ms is None and confirm_ms is None else \
                f" @ smoothing {hops * det.hop_ms:g} ms, confirm {ch * det.hop_ms:g} ms"
            posts[suffix] = {k: confirm_scores(smooth_posteriors(v, p_silence, hops), det.kw_idx, ch)
                             for k, v in raw.items()}
    return posts


def mean_posteriors(raws: list[dict], p_silences: list[np.ndarray]) -> tuple[dict, np.ndarray]:
    """The ensemble of ``--ensemble``: per stream, the mean of the bundles' raw posteriors (same streams, same
    hop, so the same number of hops), and the mean posterior of silence that starts the smoothing ring."""
    for k in raws[0]:
        shapes = {r[k].shape for r in raws}
        if len(shapes) != 1:
            raise ValueError(f"--ensemble: the bundles' posteriors on stream {k} differ in shape {sorted(shapes)}")
    return ({k: np.mean([r[k] for r in raws], axis=0) for k in raws[0]},
            np.mean(np.stack(p_silences), axis=0))


def main(bundles: list[str], data: str, seed: int, other_languages: bool, positives: int | None = None,
         smooth_ms: list[float] | None = None, confirm_ms: list[float] | None = None,
         ensemble: bool = False) -> None:
    print(f"machine: {cpu_model()}; streams: {data}, profile dev, seed {seed}")
    s, rows, ens = None, [], []
    if ensemble:            # before minutes of replays: every bundle must give posteriors of the same shape
        seen = []
        for bundle in bundles:
            with runtime.load(bundle, threads=1) as m:
                seen.append((m.labels, KwsDetector(m, "window").hop_ms))
                if seen[-1] != seen[0]:
                    print(f"error: --ensemble: {bundle} has other labels or another hop than {bundles[0]}; average "
                          "bundles of the same keywords and front end (e.g. seeds of one recipe)", file=sys.stderr)
                    sys.exit(2)
    for bundle in bundles:
        with runtime.load(bundle, threads=1) as m:
            s = s or streams(data, m.labels, seed, other_languages, positives)
            det = KwsDetector(m, "window")
            if not smooth_ms and confirm_ms is None and not ensemble:        # the bundle's own detector
                posts = {"": {k: replay(det, v["audio"])["scores"] for k, v in s.items()}}
            else:                           # raw posteriors once, then each detector variant on them
                raw_det = KwsDetector(m, "window", smooth_ms=det.hop_ms)
                raw = {k: replay(raw_det, v["audio"])["posteriors"] for k, v in s.items()}
                posts = variants(raw, det, det.p_silence, smooth_ms, confirm_ms)
                if ensemble:
                    ens.append({"labels": m.labels, "det": det, "raw": raw, "p_silence": det.p_silence})
            hop_s, ref, kw = det.hop / det.model.lm.sample_rate, det.refractory_s, det.kw_idx
        for suffix, post in posts.items():
            rows += _report(bundle + suffix, det, m.labels, s, post, hop_s, ref, kw, own=not suffix)
    if ensemble:
        raw, p_sil = mean_posteriors([e["raw"] for e in ens], [e["p_silence"] for e in ens])
        det = ens[0]["det"]
        for suffix, post in variants(raw, det, p_sil, smooth_ms, confirm_ms).items():
            rows += _report(f"mean of {len(ens)} bundles" + suffix, det, ens[0]["labels"], s, post,
                            det.hop / det.model.lm.sample_rate, det.refractory_s, det.kw_idx, own=False)
    if len(rows) > 1:    # one line per bundle and positive stream, for comparing seeds or variants side by side
        negs = [k for k in s if not k.startswith("positive")]
        print("\n| bundle | positive keywords | threshold for FRR <= 10% (FRR) | "
              + " | ".join(f"{k} false accepts" for k in negs) + " | FA/h, both [95% ub] | other languages: false "
              "accepts at 0.5 / 0.7 / 0.85 | positive FRR at 0.5 / 0.7 | FRR at 1 FA/h (threshold) |")
        print("|---|---|---|" + "---|" * len(negs) + "---|---|---|---|")
        print("\n".join(rows))


def _report(b: str, det: KwsDetector, labels: list[str], s: dict, post: dict, hop_s: float, ref: float,
            kw: list[int], own: bool = True) -> list[str]:
    """One bundle (and smoothing window): the fixed-threshold table and, with the other-language stream, the
    operating points (and, with ``own``, the point at the bundle's own calibrated threshold); returns its rows of
    the last table."""
    rows = []
    negs = [k for k in s if not k.startswith("positive")]
    hours = {k: s[k]["truth"]["length_sec"] / 3600 for k in negs}

    def fas(k, th):
        return detections_from_posteriors(post[k], labels, kw, hop_s, th, ref)

    def pscore(th, k="positive"):
        return score(fas(k, th), s[k]["truth"]["events"], s[k]["truth"]["length_sec"])

    print(f"\n{b} (its threshold {det.threshold:.3f}); real speech {hours['negative_real']:.2f} h"
          + (f", other languages {hours[OTHER]:.2f} h" if OTHER in hours else ""))
    print("| threshold | positive FRR | real-speech false accepts | per hour | which keywords |"
          + (" other languages: false accepts | per hour |" if OTHER in hours else ""))
    print("|---|---|---|---|---|" + ("---|---|" if OTHER in hours else ""))
    for th in THRESHOLDS:
        fa = fas("negative_real", th)
        which = ", ".join(f"{k} {n}" for k, n in Counter(d["label"] for d in fa).most_common())
        row = f"| {th} | {pscore(th)['frr']:.3f} | {len(fa)} | {len(fa) / hours['negative_real']:.0f} | {which or '-'} |"
        if OTHER in hours:
            fo = fas(OTHER, th)
            row += f" {len(fo)} | {len(fo) / hours[OTHER]:.1f} |"
        print(row)
    if OTHER not in hours:
        return rows
    for pk in [k for k in ("positive", LARGE) if k in s]:
        ok = [th for th in DENSE_GRID if pscore(th, pk)["frr"] <= 0.10]
        if not ok:
            print(f"no threshold on the dense grid keeps the FRR of {pk} at 10% or below (FRR "
                  f"{pscore(DENSE_GRID[0], pk)['frr']:.3f} at {DENSE_GRID[0]})")
            continue
        th = max(ok)
        sp = pscore(th, pk)
        print(f"\noperating point fixed by {pk} alone ({sp['positives']} keywords): threshold {th} (the highest "
              f"with FRR <= 10%), FRR {sp['frr']:.3f} (95% CI {sp['frr_ci95'][0]:.3f}-{sp['frr_ci95'][1]:.3f}); "
              "missed: " + (", ".join(f"{k} {n}" for k, n in sp["missed"].items()) or "none"))
        n_all, h_all = 0, 0.0
        for k in negs:
            d = fas(k, th)
            n_all, h_all = n_all + len(d), h_all + hours[k]
            print(f"- {k}: {len(d)} false accepts in {hours[k]:.2f} h = {len(d) / hours[k]:.2f}/h "
                  f"(95% upper bound {poisson_upper(len(d)) / hours[k]:.2f}/h)")
            for line in traced(d, s[k]["truth"].get("segments", [])) if k == OTHER else []:
                print(f"    {line}")
        print(f"- both real-speech streams: {n_all} in {h_all:.2f} h = {n_all / h_all:.2f}/h "
              f"(95% upper bound {poisson_upper(n_all) / h_all:.2f}/h)")
        t1, frr1, allowed = frr_at_one_fa_per_hour(lambda t: pscore(t, pk)["frr"],
                                                   lambda t: sum(len(fas(k, t)) for k in negs), h_all)
        print(f"- FRR at 1 FA/h on both real-speech streams (at most {allowed} false accepts in {h_all:.2f} h): "
              + (f"{frr1:.3f} at threshold {t1}" if t1 is not None else "not reached on the dense grid"))
        if own:                 # what the bundle ships: its threshold, calibrated blind on its validation streams
            n_own = sum(len(fas(k, det.threshold)) for k in negs)
            print(f"- at the bundle's own (calibrated) threshold {det.threshold:.3f}: FRR "
                  f"{pscore(det.threshold, pk)['frr']:.3f}, {n_own} false accepts in {h_all:.2f} h = "
                  f"{n_own / h_all:.2f}/h")
        rows.append(f"| {b} | {sp['positives']} | {th} ({sp['frr']:.3f}) | "
                    + " | ".join(str(len(fas(k, th))) for k in negs)
                    + f" | {n_all / h_all:.1f} [{poisson_upper(n_all) / h_all:.1f}] | "
                    + " / ".join(str(len(fas(OTHER, t))) for t in (0.5, 0.7, 0.85)) + " | "
                    + " / ".join(f"{pscore(t, pk)['frr']:.3f}" for t in (0.5, 0.7)) + " | "
                    + (f"{frr1:.3f} ({t1})" if t1 is not None else "-") + " |")
    return rows


def frr_at_one_fa_per_hour(frr_at, fa_count_at, hours: float, grid=DENSE_GRID) -> tuple:
    """The DET curve's point at 1 false accept per hour: the lowest threshold of ``grid`` whose false accepts
    (``fa_count_at(t)``) are at most floor(``hours``), and the positive FRR there (``frr_at(t)``). Returns
    (threshold, frr, false accepts allowed); (None, None, allowed) when no threshold of the grid gets there.
    Not ``kws_scoring.frr_at_fa``: that one also counts the positive stream's time between keywords as negative
    audio (the bench's rule); here only the real-speech streams count, as RESULTS §15h-j report."""
    allowed = math.floor(hours + 1e-9)
    ok = [t for t in sorted(grid) if fa_count_at(t) <= allowed]
    return (ok[0], frr_at(ok[0]), allowed) if ok else (None, None, allowed)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundles", nargs="+")
    ap.add_argument("--data", default="speech-commands-tts:test")
    ap.add_argument("--seed", type=int, default=1234, help="the bench's default seed")
    ap.add_argument("--other-languages", action="store_true",
                    help="add 2.25 h of real French/Italian/Russian speech and the FRR-10%% operating point")
    ap.add_argument("--positives", type=int, default=None, metavar="N",
                    help="also fix the operating point on a longer positive stream of N test keywords (the bench's "
                         "dev profile has 200; more of them narrow the FRR's confidence interval)")
    ap.add_argument("--smooth-ms", type=float, nargs="+", default=None, metavar="MS",
                    help="compare these smoothing windows of the detector (ms; the bundles' own is 100)")
    ap.add_argument("--confirm-ms", type=float, nargs="+", default=None, metavar="MS",
                    help="compare these confirmation delays (ms; 0: none): a keyword fires only if still at the "
                         "threshold this long after reaching it (stream.confirm_ms)")
    ap.add_argument("--ensemble", action="store_true",
                    help="also measure the mean of the bundles' raw posteriors as one detector (two or more "
                         "bundles of the same labels, e.g. seeds of one recipe)")
    a = ap.parse_args()
    if a.ensemble and len(a.bundles) < 2:
        ap.error(f"--ensemble averages bundles, and {len(a.bundles)} was given: pass two or more bundles of the "
                 "same keywords (e.g. seeds of one recipe)")
    if a.positives is not None and a.positives <= STREAM_SIZES["dev"][0]:
        ap.error(f"--positives {a.positives}: give more than the dev profile's {STREAM_SIZES['dev'][0]} keywords "
                 "(e.g. --positives 548, every keyword of the built-in set's test split)")
    if a.smooth_ms is not None and any(not 0 < v <= 2000 for v in a.smooth_ms):
        ap.error(f"--smooth-ms {' '.join(f'{v:g}' for v in a.smooth_ms)}: each window is a duration in ms, "
                 "valid is 0 < MS <= 2000 (e.g. --smooth-ms 60 100 200; the bundles' own is 100)")
    if a.confirm_ms is not None and any(not 0 <= v <= 2000 for v in a.confirm_ms):
        ap.error(f"--confirm-ms {' '.join(f'{v:g}' for v in a.confirm_ms)}: each is a delay in ms, valid is "
                 "0 <= MS <= 2000 (0: no confirmation; e.g. --confirm-ms 0 300)")
    main(a.bundles, a.data, a.seed, a.other_languages, a.positives, a.smooth_ms, a.confirm_ms, a.ensemble)
