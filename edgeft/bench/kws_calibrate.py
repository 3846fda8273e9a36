"""``edgeft calibrate``: a keyword bundle's detection threshold chosen again on streams recorded where it will run.

Export calibrates each bundle on validation streams built from its training data's val split; a device's own
microphone, room and talkers are not in them. This re-runs the same rule (``kws_scoring.choose_threshold``: false
accepts per hour of non-keyword audio within ``target_fa_per_hour``, substitutions within
``max_substitution_rate`` of the keywords said, the lowest threshold that keeps both) on the user's streams,
through the bundle's own runtime and detector settings (smoothing, confirmation, refractory time), torch-free, so
it runs on the device. The manifest is rewritten in place under the bundle's lock, atomically; the model files are
not touched, and the threshold it had is kept in ``stream.calibration.previous``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import runtime
from ..errors import BundleError, DataError
from .kws_scoring import choose_threshold


def check_budgets(target_fa_per_hour: float, max_substitution_rate: float) -> None:
    if not target_fa_per_hour > 0:
        raise DataError(f"--target-fa-per-hour {target_fa_per_hour:g}: it must be > 0",
                        hint="false accepts per hour of audio without keywords, e.g. 1 or 0.5")
    if not 0 <= max_substitution_rate <= 1:
        raise DataError(f"--max-substitution-rate {max_substitution_rate:g}: valid is 0 to 1",
                        hint="the share of keywords said that may fire as another keyword, e.g. 0.01")


def _streams(paths, keywords: list[str]) -> list[dict]:
    from .audio_data import load_stream

    if not paths:
        raise DataError("no --stream given", hint="pass a .wav with its truth .json beside it, once per stream")
    out = []
    for p in paths:
        s = load_stream(str(p))
        ev = s["truth"]["events"]
        if not isinstance(ev, list) or not all(isinstance(e, dict) and {"label", "start_s", "end_s"} <= set(e)
                                               for e in ev):
            raise DataError(f"{Path(p).with_suffix('.json')}: 'events' must be a list of {{label, start_s, end_s}}",
                            hint="[] for audio with no keyword in it")
        other = sorted({e["label"] for e in ev} - set(keywords))
        if other:
            raise DataError(f"{Path(p).with_suffix('.json')}: event label(s) {other} are not keywords of this "
                            f"bundle", hint=f"its keywords: {', '.join(keywords)}")
        out.append(s)
    if not any(s["truth"]["events"] for s in out):
        raise DataError("no keyword event in any --stream's truth file: the false-reject rate cannot be measured",
                        hint="add a stream of the keywords said (edgeft data make-stream writes one)")
    return out


def stream_scores(model, det, streams: list[dict]) -> tuple[np.ndarray, list[dict], float]:
    """The scores ``det`` thresholds (smoothed, confirmed posteriors, as ``replay`` gives them) of each stream, one
    after another with a silent gap that outlasts the refractory time between them; the truth events moved to
    that timeline; and the seconds of audio (the gaps are not audio)."""
    from ..runtime.kws import confirm_scores, window_logits, window_posteriors

    hop_s = det.hop / model.lm.sample_rate
    infer = window_logits(model.runner, model.manifest)
    gap = np.zeros((int(np.ceil(det.refractory_s / hop_s)) + 1, len(model.labels)), np.float32)
    parts, events, t0, audio_s = [], [], 0.0, 0.0
    for s in streams:
        sc = confirm_scores(window_posteriors(infer, model.lm, model.frames, s["audio"], det.hop, det.smooth),
                            det.kw_idx, det.confirm)
        length = len(sc) * hop_s
        events += [{**e, "start_s": e["start_s"] + t0, "end_s": e["end_s"] + t0} for e in s["truth"]["events"]
                   if e["end_s"] <= length]
        parts += [sc, gap]
        t0 += length + len(gap) * hop_s
        audio_s += length
    return np.concatenate(parts), events, audio_s


def calibrate(bundle, streams, *, target_fa_per_hour: float = 1.0, max_substitution_rate: float = 0.01,
              sign_key=None, threads: int | None = None) -> dict:
    """Choose ``bundle``'s threshold on ``streams`` (wav files, each with its truth .json) and write it into the
    manifest. A signed bundle is re-signed with ``sign_key`` (required: its old signature would no longer
    verify). Returns the new ``stream.calibration``."""
    from ..bundle import FolderLock, load_private_key, read_manifest, write_manifest
    from ..runtime.kws import KwsDetector

    check_budgets(target_fa_per_hour, max_substitution_rate)
    key = load_private_key(sign_key) if sign_key is not None else None
    bundle = Path(bundle)
    m0 = read_manifest(bundle, trust={})          # a clear error for a missing or broken bundle, before any work
    if m0.get("task") != "kws":
        raise DataError(f"`edgeft calibrate` sets a keyword detector's threshold; {bundle} is a {m0.get('task')!r} "
                        "bundle", hint="pass a bundle exported from a kws recipe")
    sig = (m0.get("integrity") or {}).get("signature")
    if sig and key is None:
        raise BundleError(f"{bundle} is signed (key {sig.get('key_id')}); a new threshold changes its manifest and "
                          "the signature would no longer verify", hint="pass --sign-key KEY to sign it again")
    with runtime.load(bundle, threads=threads) as model:
        det = KwsDetector(model, "window")
        keywords = [model.labels[i] for i in det.kw_idx]
        ss = _streams(streams, keywords)
        hop_s = det.hop / model.lm.sample_rate
        post, events, audio_s = stream_scores(model, det, ss)
        # length_sec: the audio alone, so the hours of non-keyword audio leave the gaps between streams out
        c = choose_threshold(post, post[:0], {"events": events, "length_sec": audio_s}, 0.0, model.labels,
                             det.kw_idx, hop_s, det.refractory_s, target_fa_per_hour=target_fa_per_hour,
                             max_substitution_rate=max_substitution_rate)
    lock = FolderLock(bundle)
    lock.acquire()
    try:
        m = read_manifest(bundle, trust={})      # what is written is what verified, under the lock
        old = m["stream"]
        cal = {**c, "by": "edgeft calibrate", "runner": m.get("format"),
               "streams": [str(Path(p).name) for p in streams], "audio_hours": round(audio_s / 3600, 4),
               "detector": {"smooth_hops": det.smooth, "confirm_hops": det.confirm, "refractory_s": det.refractory_s},
               "previous": {"threshold": old.get("threshold"),
                            "by": (old.get("calibration") or {}).get("by", "edgeft export")},
               "rule": "the lowest threshold whose false accepts in the streams' non-keyword audio are at most "
                       "target_fa_per_hour x its hours, and whose substitutions are at most max_substitution_rate x "
                       "the keywords said"}
        m["stream"] = {**old, "threshold": float(c["threshold"]), "calibration": cal}
        write_manifest(bundle, m, sign_key=key, files=m["files"])
    finally:
        lock.release()
    return cal
