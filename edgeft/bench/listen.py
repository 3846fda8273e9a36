"""``edgeft listen``: live keyword detections from a wav file (real time or as fast as possible) or a mic."""
from __future__ import annotations

import time

import numpy as np

from .. import runtime
from ..data.audio import read_wav
from ..errors import BackendUnavailable, DataError
from ..utils.log import result


def listen(bundle, source: str, mode: str = "auto", realtime: bool = True, threshold: float | None = None,
           seconds: float | None = None, threads: int | None = None):
    from ..runtime.kws import KwsDetector, replay

    model = runtime.load(bundle, threads=threads)
    if model.task_name != "kws":
        raise DataError(f"`edgeft listen` needs a keyword-spotting bundle; {bundle} is "
                        f"{model.manifest.get('task')}", hint="use `edgeft camera` / `edgeft predict` for images")
    if mode == "auto":
        mode = "streaming" if model.streaming else "window"
    with model:
        det = KwsDetector(model, mode, threshold=threshold)

        def show(out):
            if out["detection"]:
                d = out["detection"]
                result(f"{d['t_s']:8.2f} s  {d['label']:>8s}  {d['score']:.3f}")

        if source == "mic":
            dets, audio_s = _mic(det, seconds or 30.0, show)
            return dets, f"{len(dets)} detection(s) in {audio_s:.1f} s from the microphone ({mode} mode)"
        audio = read_wav(source, model.lm.sample_rate)
        r = replay(det, audio, realtime=realtime, on_step=show, max_seconds=seconds)
        p99 = float(np.percentile(r["compute_ms"], 99, method="inverted_cdf")) if r["hops"] else float("nan")
        summary = (f"{len(r['detections'])} detection(s) in {r['audio_s']:.1f} s of audio ({mode} mode, "
                   f"{'real time' if realtime else 'as fast as possible'}): RTF "
                   f"{r['compute_ms'].sum() / 1e3 / max(r['audio_s'], 1e-9):.4f}, per-hop p99 {p99:.3f} ms")
        scored = score_against_truth(source, r["detections"], r["audio_s"])
        return r["detections"], summary + (f"\n{scored}" if scored else "")


def score_against_truth(wav: str, detections: list[dict], audio_s: float) -> str | None:
    """With a truth file beside the wav (``stream_x.json``, as `edgeft data make-stream` writes; MLPerf Tiny's
    format: events with label, start_s, end_s), score the detections: hits, misses (FRR) and false accepts."""
    from pathlib import Path

    from .audio_data import read_truth
    from .kws_scoring import score

    truth_p = Path(wav).with_suffix(".json")
    if not truth_p.is_file():
        return None
    truth = read_truth(truth_p, hint='it needs {"events": [{"label", "start_s", "end_s"}...]} (edgeft data '
                                     "make-stream writes one); move it away to listen without scoring")
    events = [e for e in truth["events"] if e["end_s"] <= audio_s]     # --seconds may cut the stream short
    s = score(detections, events, audio_s)
    fa_h = s["fa"] / s["negative_hours"] if s["negative_hours"] > 0 else float("nan")
    frr = f"FRR {s['frr']:.3f} [95% CI {s['frr_ci95'][0]:.3f}, {s['frr_ci95'][1]:.3f}]" if s["positives"] else "FRR –"
    return (f"scored against {truth_p.name}: {s['tp']}/{s['positives']} keywords detected, {frr}; {s['fa']} false "
            f"accept(s) ({s['fa_wrong_label']} wrong label inside a keyword window) in {s['negative_hours'] * 60:.1f} "
            f"min without keywords = {fa_h:.1f} FA/h (window {s['scoring']['window']}, MLPerf Tiny rules)")


def _mic(det, seconds: float, show):
    try:
        import sounddevice as sd
    except (ImportError, OSError) as e:
        raise BackendUnavailable(f"microphone input needs sounddevice ({type(e).__name__}: {e})",
                                 hint="pip install 'edgeft[audio]' (and PortAudio: apt-get install libportaudio2)") from None
    sr = det.model.lm.sample_rate
    s = det.create_stream()
    t0 = time.perf_counter()
    with sd.InputStream(samplerate=sr, channels=1, dtype="float32", blocksize=det.hop) as mic:
        while time.perf_counter() - t0 < seconds:
            block, _ = mic.read(det.hop)
            s.accept(block[:, 0])
            while s.ready():
                show(s.step())
    return s.detections, time.perf_counter() - t0


