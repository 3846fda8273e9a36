"""``audio_stream``: keyword spotting on long labelled streams, full-window vs streaming.

For each artifact (and each mode it supports: ``window`` re-runs the 1 s window every hop, ``streaming`` feeds
only the new frames to the stateful model) the same detector runs over a positive stream (held-out keywords
between unknown words and real read speech, over noise) and a negative-only stream, as fast as possible;
then the first part of the positive stream is replayed on a real-time schedule and must produce the same
detections. Reported: clip accuracy, FRR (Clopper-Pearson CI), false accepts per hour (exact Poisson bound,
with the hours of negative audio), detection delay, RTF (wall and CPU), per-hop latency, a threshold sweep; with
the built-in set, how many of the test split's near-miss words, said alone, fire (at the threshold and at FRR 10%).
"""
from __future__ import annotations

import hashlib

import numpy as np

from ...errors import DataError
from ...stats import poisson_upper, summarize
from ...utils.log import info
from ..audio_data import STREAM_SIZES, build_streams, load_stream, near_miss_clips
from ..harness import accuracy_run, load_ctx_samples
from ..kws_scoring import (clip_peaks, combine, detections_from_posteriors, fa_at_frr, frr_at_fa, near_miss_report,
                           roc, score)
from . import Scenario


class AudioStream(Scenario):
    name = "audio_stream"
    tasks = ("kws",)
    interleaved = False
    mode = "accuracy+stream"

    def run(self, ctx) -> list[dict]:
        cfg, prof, threads = ctx.cfg, ctx.prof, ctx.threads
        labels = ctx.labels
        streams = _streams(cfg, labels, cfg.profile)
        pos, neg = streams["positive"], streams["negative"]
        if not pos["truth"]["events"]:
            raise DataError(f"stream {pos['path']} has no keyword events to score")
        self._streams = (pos, neg)
        real = streams.get("negative_real")
        real_kw = streams.get("positive_real")
        near = [] if cfg.stream else near_miss_clips(cfg.data, labels, 10.0, 10.0)   # build_streams' splits
        realtime_s = STREAM_SIZES[cfg.profile][2]
        samples = load_ctx_samples(ctx)
        rows = []
        for a in ctx.arts:
            a.open()
            a.set_batch(None)
            acc = accuracy_run(a, samples, cfg.batch, np.arange(0))
            model = a.stream_model(threads)
            modes = ["window"] + (["streaming"] if getattr(model, "streaming", None) else [])
            for mode in modes:
                rows.append(_run_mode(a, model, mode, acc, pos, neg, cfg, realtime_s, threads, prof, real,
                                      real_kw, near))
            a.close()
        return rows

    def header(self, ctx) -> dict:
        pos, neg = self._streams
        return {"name": "audio_stream", "replay": ctx.cfg.replay, "realtime_seconds": STREAM_SIZES[ctx.cfg.profile][2],
                "positive_stream": {k: pos["truth"][k] for k in ("wav_file", "length_sec", "source")}
                | {"path": pos["path"], "keywords": len(pos["truth"]["events"])},
                "negative_stream": ({k: neg["truth"][k] for k in ("wav_file", "length_sec", "source")}
                                    | {"path": neg["path"]}) if neg else None}

    def settings(self, ctx) -> dict:
        return {"threads": ctx.threads, "percentile_method": "nearest_rank", "interleaved": False,
                "timed_region": "per hop: new feature frames + inference + smoothing/detection",
                "warmup": {"min_s": 2.0}, "window": {"min_s": None, "min_count": None}, "windows": 1,
                "sample_seed": ctx.cfg.seed, "round_order": None, "perf_samples": None}


def _streams(cfg, labels, prof_name: str) -> dict:
    if cfg.stream:
        pos = load_stream(cfg.stream)
        return {"positive": pos, "negative": None, "negative_real": None, "positive_real": None}
    from ..audio_data import data_fingerprint

    key = hashlib.sha1(f"{cfg.data}|{data_fingerprint(cfg.data)}|{labels}|{prof_name}|{cfg.seed}|v3".encode()).hexdigest()[:12]
    from ...utils.io import cache_dir

    d = cache_dir("streams", key)
    if (d / "stream_negative.json").is_file():
        return {"positive": load_stream(str(d / "stream_positive.wav")),
                "negative": load_stream(str(d / "stream_negative.wav")),
                **{k: load_stream(str(d / f"stream_{k}.wav")) if (d / f"stream_{k}.json").is_file() else None
                   for k in ("negative_real", "positive_real")}}
    info(f"building the {prof_name} test streams from {cfg.data} (held-out clips) ...")
    return build_streams(cfg.data, labels, prof_name, d, seed=cfg.seed)


def _run_mode(a, model, mode, acc, pos, neg, cfg, realtime_s, threads, prof, real=None, real_kw=None,
              near=()) -> dict:
    from ...runtime.kws import KwsDetector, replay

    det = KwsDetector(model, mode, threshold=cfg.threshold)
    replay(det, pos["audio"], max_seconds=2.0)             # warm-up (discarded)
    neg_txt = f" + {neg['truth']['length_sec']:.0f} s negative" if neg else ""
    info(f"  {a.name}/{mode}: stream as fast as possible ({pos['truth']['length_sec']:.0f} s positive{neg_txt}) ...")
    ra = replay(det, pos["audio"])
    rn = replay(det, neg["audio"]) if neg else None
    sp = score(ra["detections"], pos["truth"]["events"], pos["truth"]["length_sec"])
    sn = score(rn["detections"], [], neg["truth"]["length_sec"]) if rn else \
        {"fa": 0, "negative_hours": 0.0, "fa_wrong_label": 0}
    comb = combine(sp, sn)
    rt, match, detail, wall_lat = None, True, "not replayed in real time (--replay asfast)", []
    if cfg.replay in ("realtime", "both"):
        span = min(realtime_s or pos["truth"]["length_sec"], pos["truth"]["length_sec"])
        info(f"  {a.name}/{mode}: real-time replay of {span:.0f} s ...")
        rt = replay(det, pos["audio"], realtime=True, max_seconds=span)
        ref = [d for d in ra["detections"] if d["t_s"] <= rt["audio_s"] + 1e-9]
        match = [(d["label"], d["t_s"]) for d in rt["detections"]] == [(d["label"], d["t_s"]) for d in ref]
        detail = f"{len(rt['detections'])} detections in {rt['audio_s']:.0f} s real time vs {len(ref)} as fast as possible"
        hop_s = det.hop / det.model.lm.sample_rate
        for d in rt["detections"]:
            ev = next((e for e in pos["truth"]["events"] if e["label"] == d["label"]
                       and e["start_s"] <= d["t_s"] <= e["end_s"] + 1.0), None)
            if ev is not None:
                j = int(round(d["t_s"] / hop_s)) - 1
                wall_lat.append((d["t_s"] - ev["end_s"]) * 1e3 + float(rt["latency_ms"][j]))
    audio_s = ra["audio_s"] + (rn["audio_s"] if rn else 0)
    comp = np.concatenate([ra["compute_ms"], rn["compute_ms"]]) if rn else ra["compute_ms"]
    inf = np.concatenate([ra["infer_ms"], rn["infer_ms"]]) if rn else ra["infer_ms"]
    cpu = ra["cpu_s"] + (rn["cpu_s"] if rn else 0)
    hop_ms = det.hop_ms
    rows = roc(ra["scores"], rn["scores"] if rn else np.zeros((0, len(model.labels))), pos["truth"],
               neg["truth"]["length_sec"] if neg else 0.0, model.labels, det.kw_idx, hop_ms / 1000, det.refractory_s)
    at_1fa = frr_at_fa(ra["scores"], rn["scores"] if rn else np.zeros((0, len(model.labels))), pos["truth"],
                       neg["truth"]["length_sec"] if neg else 0.0, model.labels, det.kw_idx, hop_ms / 1000,
                       det.refractory_s, target_fa_per_hour=1.0)
    at_frr10 = fa_at_frr(ra["scores"], rn["scores"] if rn else np.zeros((0, len(model.labels))), pos["truth"],
                         neg["truth"]["length_sec"] if neg else 0.0, model.labels, det.kw_idx, hop_ms / 1000,
                         det.refractory_s, max_frr=0.10)
    real_part = None
    if real is not None:    # the real-human-speech-only negative stream: FA/h at this threshold and at FRR <= 10%
        info(f"  {a.name}/{mode}: real-speech negative stream ({real['truth']['length_sec']:.0f} s) ...")
        rr = replay(det, real["audio"])
        sr_ = score(rr["detections"], [], real["truth"]["length_sec"])
        at10 = fa_at_frr(ra["scores"], rr["scores"], pos["truth"], real["truth"]["length_sec"], model.labels,
                         det.kw_idx, hop_ms / 1000, det.refractory_s, max_frr=0.10, negative_only=True)
        h = sr_["negative_hours"]
        real_part = {"hours": round(h, 4), "fa": sr_["fa"], "fa_per_hour": sr_["fa"] / h if h else None,
                     "fa_per_hour_ub95": poisson_upper(sr_["fa"]) / h if h else None, "fa_at_frr10": at10,
                     "source": real["truth"].get("negative_speech")}
    real_kw_part = None
    if real_kw is not None:  # real human keywords, in sentences and alone: detected at this threshold / at FRR <= 10%
        info(f"  {a.name}/{mode}: real keywords ({len(real_kw['truth']['events'])}, "
             f"{real_kw['truth']['length_sec']:.0f} s) ...")
        rk = replay(det, real_kw["audio"])
        real_kw_part = {"at_threshold": _real_kw_score(rk["detections"], real_kw["truth"], det.threshold)}
        if at_frr10.get("threshold") is not None:
            d10 = detections_from_posteriors(rk["scores"], model.labels, det.kw_idx, hop_ms / 1000,
                                             at_frr10["threshold"], det.refractory_s)
            real_kw_part["at_frr10"] = _real_kw_score(d10, real_kw["truth"], at_frr10["threshold"])
        real_kw_part["source"] = real_kw["truth"].get("negative_speech")
    near_part = None
    if near:                 # the test split's near-miss words ("stock", "let"), each said alone
        info(f"  {a.name}/{mode}: {len(near)} near-miss words said alone ...")
        peaks = clip_peaks(lambda x: replay(det, x)["scores"], [x for _, x in near], det.kw_idx, det.hop)
        near_part = near_miss_report([n for n, _ in near], peaks, model.labels, det.threshold,
                                     also=at_frr10.get("threshold"))
    fa_claim = _fa_claim(comb)
    audio = {
        "mode": mode, "hop_ms": hop_ms, "window_ms": 1000 * model.frames * model.lm.hop / model.lm.sample_rate,
        "audio_seconds": round(audio_s, 1), "threshold": det.threshold, "smooth_hops": det.smooth,
        "refractory_s": det.refractory_s, "confirm_ms": det.confirm * hop_ms,
        "rtf_wall": float(comp.sum() / 1e3 / audio_s), "rtfx": float(audio_s / (comp.sum() / 1e3)),
        "rtf_cpu": float(cpu / audio_s), "cpu_cores_equiv": float(cpu / audio_s),
        "compute_per_audio_second_ms": float(comp.mean() * 1000 / hop_ms),
        "chunk_compute": summarize(comp), "infer_per_hop": summarize(inf),
        "chunk_latency": summarize(rt["latency_ms"]) if rt else None,
        "deadline_miss_rate": float((rt["latency_ms"] > hop_ms).mean()) if rt else None,
        "max_backlog_ms": rt["max_backlog_ms"] if rt else None,
        "algorithmic_latency_ms": det.algorithmic_latency_ms(),
        "detection_latency_wall_ms": summarize(wall_lat) if wall_lat else None,
        **comb, "roc": rows, "frr_at_1fa_h": at_1fa, "fa_at_frr10": at_frr10, "real_speech": real_part,
        "real_keywords": real_kw_part, "near_miss_words": near_part,
        "threshold_source": "calibrated (bundle)" if (model.stream_cfg.get("calibration") and cfg.threshold is None)
        else ("--threshold" if cfg.threshold is not None else "recipe default (bundle)"), "realtime_asfast_match": match, "realtime_asfast_detail": detail, "fa_claim": fa_claim,
    }
    row = {"artifact": a, "name": f"{a.name}/{mode}", "accuracy": acc, "audio": audio,
            "latency": {"e2e": summarize(comp), "infer": summarize(inf)}, "_raw": comp.tolist(),
            "extra_checks": [{"name": "realtime_asfast_match", "passed": match, "detail": detail},
                             {"name": "fa_claim_supported", "passed": True, "warn_only": True, "detail": fa_claim}]}
    row["ratios"] = _compute_ratios(row)
    return row


def _real_kw_score(dets: list[dict], truth: dict, threshold: float) -> dict:
    """How many real keyword events are detected (``score``'s rule, label by label), and the detections of a
    keyword the recording does not say or outside every recording."""
    by = {lab: score([d for d in dets if d["label"] == lab], [e for e in truth["events"] if e["label"] == lab],
                     truth["length_sec"]) for lab in sorted({e["label"] for e in truth["events"]})}
    hit, n = sum(v["tp"] for v in by.values()), len(truth["events"])
    return {"threshold": threshold, "events": n, "detected": hit, "recall": hit / n if n else None,
            "by_label": {k: f"{v['tp']}/{v['positives']}" for k, v in by.items()},
            "wrong_or_outside": score(dets, truth["events"], truth["length_sec"])["fa"]}


def _fa_claim(c: dict) -> str:
    h = c["negative_hours"]
    ub = c.get("fa_per_hour_ub95")
    if not h:
        return "no negative audio: no false-accept rate can be claimed"
    s = f"{c['fa']} false accepts in {h:.2f} h of negative audio: {c['fa_per_hour']:.2f}/h (95% upper bound {ub:.2f}/h)"
    if ub is not None and ub > 0.5:
        s += f"; a claim of <= 0.5/h needs >= {3.0 / 0.5:.0f} h with no false accept"
    return s


def _compute_ratios(row: dict):
    def ratios(ref_row: dict) -> dict:
        r = ref_row["audio"]["compute_per_audio_second_ms"]
        c = row["audio"]["compute_per_audio_second_ms"]
        return {"compute_ratio": c / r if r else None, "speedup_p50": r / c if c else None}
    return ratios
