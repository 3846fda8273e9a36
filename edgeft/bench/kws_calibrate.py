"""``edgeft calibrate``: a keyword bundle's detection threshold chosen again on streams recorded where it will run.

Export calibrates each bundle on validation streams built from its training data's val split; a device's own
microphone, room and talkers are not in them. This re-runs the same rule (``kws_scoring.choose_threshold``: false
accepts per hour of non-keyword audio within ``target_fa_per_hour``, substitutions within
``max_substitution_rate`` of the keywords said, the lowest threshold that keeps both) on the user's streams,
through the bundle's own runtime and detector settings (smoothing, confirmation, refractory time), torch-free, so
it runs on the device. The bundle is locked from start to end; its manifest is rewritten atomically, only when a
threshold within both budgets detects keywords; the model files are not touched, and the threshold it had is kept
in ``stream.calibration.previous``.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .. import runtime
from ..errors import BundleError, DataError
from .kws_scoring import choose_threshold

MIN_NEGATIVE_S = 60.0       # below a minute of audio without keywords, the false-accept budget measures nothing
WINDOW_AFTER_S = DEBOUNCE_S = 1.0       # kws_scoring.score's defaults: a keyword's window runs 1 s past its end


def check_budgets(target_fa_per_hour: float, max_substitution_rate: float) -> None:
    if not (math.isfinite(target_fa_per_hour) and target_fa_per_hour > 0):
        raise DataError(f"--target-fa-per-hour {target_fa_per_hour:g}: it must be a number > 0",
                        hint="false accepts per hour of audio without keywords, e.g. 1 or 0.5")
    if not 0 <= max_substitution_rate <= 1:
        raise DataError(f"--max-substitution-rate {max_substitution_rate:g}: valid is 0 to 1",
                        hint="the share of keywords said that may fire as another keyword, e.g. 0.01")


def read_stream(path, keywords: list[str]) -> dict:
    """A wav and its checked truth .json (``audio_data.load_stream``), whose events must be the bundle's keywords."""
    from .audio_data import load_stream

    s = load_stream(str(path))
    truth_p = Path(path).with_suffix(".json")
    other = sorted({e["label"] for e in s["truth"]["events"]} - set(keywords))
    if other:
        raise DataError(f"{truth_p}: event label(s) {other} are not keywords of this bundle",
                        hint=f"its keywords: {', '.join(keywords)}")
    return s


def stream_scores(model, det, streams: list[dict]) -> tuple[np.ndarray, list[dict], float]:
    """The scores ``det`` thresholds (smoothed, confirmed posteriors, as ``replay`` gives them) of each stream, one
    after another with a silent gap between them that outlasts the refractory time, a keyword's scoring window and
    the false-accept debounce; the truth events moved to that timeline (an event cut off by the end of its audio
    ends there; one that starts after it is dropped); and the seconds of audio (the gaps are not audio)."""
    from ..runtime.kws import confirm_scores, window_logits, window_posteriors

    hop_s = det.hop / model.lm.sample_rate
    infer = window_logits(model.runner, model.manifest)
    gap_s = max(det.refractory_s, WINDOW_AFTER_S, DEBOUNCE_S)
    gap = np.zeros((int(np.ceil(gap_s / hop_s)) + 1, len(model.labels)), np.float32)
    parts, events, t0, audio_s = [], [], 0.0, 0.0
    for s in streams:
        sc = confirm_scores(window_posteriors(infer, model.lm, model.frames, s["audio"], det.hop, det.smooth),
                            det.kw_idx, det.confirm)
        length = len(sc) * hop_s
        events += [{**e, "start_s": e["start_s"] + t0, "end_s": min(e["end_s"], length) + t0}
                   for e in s["truth"]["events"] if e["start_s"] < length]
        parts += [sc, gap]
        t0 += length + len(gap) * hop_s
        audio_s += length
    return np.concatenate(parts), events, audio_s


def calibrate(bundle, streams, *, target_fa_per_hour: float = 1.0, max_substitution_rate: float = 0.01,
              sign_key=None, threads: int | None = None) -> dict:
    """Choose ``bundle``'s threshold on ``streams`` (wav files, each with its truth .json) and write it into the
    manifest. A signed bundle must be signed again with the same key (``sign_key``: its old signature would no
    longer verify); an unsigned one is signed with ``sign_key`` when given. Nothing is written when the streams
    cannot place a threshold (too little audio without keywords, no threshold within both budgets, or none that
    detects a keyword). Returns the new ``stream.calibration``."""
    from ..bundle import FolderLock, key_id, load_private_key, read_manifest, write_manifest, _raw_public
    from ..runtime.kws import KwsDetector

    check_budgets(target_fa_per_hour, max_substitution_rate)
    key = load_private_key(sign_key) if sign_key is not None else None
    if not streams:
        raise DataError("no --stream given", hint="pass a .wav with its truth .json beside it, once per stream")
    bundle = Path(bundle)
    m0 = read_manifest(bundle, verify=False)      # a clear error for a missing bundle, before the lock (the files
    #                                               are verified once, under it)
    if m0.get("task") != "kws":
        raise DataError(f"`edgeft calibrate` sets a keyword detector's threshold; {bundle} is a {m0.get('task')!r} "
                        "bundle", hint="pass a bundle exported from a kws recipe")
    lock = FolderLock(bundle.resolve())           # held from the first read that counts to the write
    lock.acquire()
    try:
        m = read_manifest(bundle, trust={})
        sig = (m.get("integrity") or {}).get("signature")
        if sig and key is None:
            raise BundleError(f"{bundle} is signed (key {sig.get('key_id')}); a new threshold changes its manifest and "
                              "the signature would no longer verify", hint="pass --sign-key KEY to sign it again")
        if sig and key is not None and key_id(_raw_public(key.public_key())) != sig.get("key_id"):
            raise BundleError(f"{bundle} is signed by key {sig.get('key_id')}; --sign-key {sign_key} is another key "
                              "and devices that trust the first would refuse the bundle",
                              hint="sign with the key that signed it (or re-export and sign anew)")
        with runtime.load(bundle, threads=threads) as model:
            det = KwsDetector(model, "window")
            keywords = [model.labels[i] for i in det.kw_idx]
            ss = [read_stream(p, keywords) for p in streams]
            if not any(x["truth"]["events"] for x in ss):
                raise DataError("no keyword event in any --stream's truth file: the false-reject rate cannot be "
                                "measured", hint="add a stream of the keywords said (edgeft data make-stream "
                                                 "writes one)")
            hop_s = det.hop / model.lm.sample_rate
            post, events, audio_s = stream_scores(model, det, ss)
        if not events:
            raise DataError("every keyword event of the truth files starts after its stream's audio ends",
                            hint="check the truth files' times (seconds from the start of their wav)")
        # length_sec: the audio alone, so the hours of non-keyword audio leave the gaps between streams out
        c = choose_threshold(post, post[:0], {"events": events, "length_sec": audio_s}, 0.0, model.labels,
                             det.kw_idx, hop_s, det.refractory_s, target_fa_per_hour=target_fa_per_hour,
                             max_substitution_rate=max_substitution_rate)
        neg_s = c["negative_hours"] * 3600
        if neg_s < MIN_NEGATIVE_S:
            raise DataError(f"the streams hold {neg_s:.0f} s of audio without keywords; calibration needs at least "
                            f"{MIN_NEGATIVE_S:.0f} s to count false accepts in",
                            hint=f"add a recording of the place without keywords ({1 / target_fa_per_hour:g} h "
                                 "resolves the target); the bundle is left as it was")
        if not c["met"] or c["frr"] >= 1.0:
            why = c["note"] if not c["met"] else (f"at {c['threshold']}, the lowest threshold within the budgets, "
                                                  f"none of the {c['keywords']} keywords is detected")
            raise DataError(f"no threshold to store: {why}", hint="check the truth files' labels and times, or "
                            "raise --target-fa-per-hour / --max-substitution-rate; the bundle is left as it was")
        old = m["stream"]
        cal = {**c, "by": "edgeft calibrate", "runner": m.get("format"),
               "streams": [Path(p).name for p in streams], "audio_hours": round(audio_s / 3600, 4),
               "detector": {"smooth_hops": det.smooth, "confirm_hops": det.confirm, "refractory_s": det.refractory_s},
               "previous": {"threshold": old.get("threshold"),
                            "by": (old.get("calibration") or {}).get("by", "edgeft export"),
                            "signed_by": sig.get("key_id") if sig else None},
               "rule": "the lowest threshold whose false accepts in the streams' non-keyword audio are at most "
                       "target_fa_per_hour x its hours, and whose substitutions (a wrong keyword within a "
                       "keyword's scoring window) are at most max_substitution_rate x the keywords said"}
        m["stream"] = {**old, "threshold": float(c["threshold"]), "calibration": cal}
        write_manifest(bundle, m, sign_key=key, files=m["files"])
    finally:
        lock.release()
    return cal
