"""Keyword-spotting benchmark data (torch-free): test-split clips, and the long labelled streams."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..data.audio import (SR, SILENCE, UNKNOWN, decode_with_sox, is_near_miss, make_stream, read_wav,
                          real_keyword_clips, split_real_speech, write_wav)
from ..errors import DataError
from ..tasks.kws.device import kws_files


STREAM_SIZES = {  # (positive keywords, negative minutes, realtime seconds)
    "smoke": (20, 2.0, 8.0),
    "quick": (60, 6.0, 20.0),
    "dev": (200, 20.0, 60.0),
    "report": (10_000, 180.0, None),
}


def build_streams(spec: str, labels: list[str], profile: str, out_dir: Path, seed: int = 0, *,
                  val_pct: float = 10.0, test_pct: float = 10.0, real_speech: bool = True,
                  sizes: tuple | None = None, near_misses: bool = True) -> dict:
    """Seeded long streams from held-out clips: a positive stream (every selected keyword once, with unknown
    words and real read speech in between, over background noise at 10 dB SNR) and a negative-only stream
    (no keywords) for false accepts per hour. Written as wav + MLPerf-Tiny-style truth JSON.

    ``real_speech``: add real human speech (pocketsphinx-testdata, codec2-examples, warzone2100-data; test
    streams only: never in training or calibration) -- only the recordings whose transcript shows they say no
    keyword (``split_real_speech``). Those that say a keyword, with the real keywords said alone
    (``real_keyword_clips``), make a fourth stream, ``positive_real``: one event per keyword a recording says.
    ``sizes``: (positives, negative minutes) instead of the profile's. ``near_misses=False``: the built-in set's
    near-miss words (``is_near_miss``) stay out of the streams (``near_miss_clips`` has them)."""
    files, split = kws_files(spec, labels, val_pct, test_pct)
    n_pos, neg_min = sizes if sizes is not None else STREAM_SIZES[profile][:2]
    kws = [it for it in files.splits[split] if it.label not in (UNKNOWN, SILENCE)]
    unk = [it for it in files.splits[split] if it.label == UNKNOWN and (near_misses or not is_near_miss(it.path))]
    rng = np.random.default_rng(seed)
    kws = [kws[i] for i in rng.permutation(len(kws))[:n_pos]]
    pos = [(read_wav(it.path), it.label) for it in kws]
    negs = [read_wav(it.path) for it in unk]
    n_real_unknown = sum(1 for it in unk if it.path.parent.name == "_real_unknown_")
    real, real_kw = [], []
    split_real = split_real_speech(labels) if real_speech else {"negative": [], "keyword": [], "unverified": []}
    for f in split_real["negative"]:          # real human speech that says no keyword, never trained on
        try:
            real.append(read_wav(f))
        except DataError:
            pass
    for f, said in split_real["keyword"]:
        try:
            real_kw.append((read_wav(f), said))
        except DataError:
            pass
    for _name, word, path in (real_keyword_clips(labels, val_pct, test_pct) if real_speech else []):
        x = decode_with_sox(path)
        if x is not None:
            real_kw.append((x, [word]))
    noise = [read_wav(p) for p in files.noise] or None
    pos_s = max(30.0, len(pos) * 4.4 + 10)
    a, ev = make_stream(pos, negs + real, noise or [], pos_s, seed=seed, snr_db=10.0, gap_s=(1.0, 2.5))
    b, ev_neg = make_stream([], negs + real, noise or [], neg_min * 60, seed=seed + 1, snr_db=10.0, gap_s=(0.3, 2.0))
    assert not ev_neg
    streams = [("positive", a, ev), ("negative", b, [])]
    if real:    # real human speech only: what a detector left running in a room would hear
        c, _ = make_stream([], real, noise or [], neg_min * 60, seed=seed + 2, snr_db=10.0, gap_s=(0.3, 2.0))
        streams.append(("negative_real", c, []))
    if real_kw:  # real human keywords (in sentences, and said alone): is each one detected?
        d, ev_r = make_stream(real_kw, [], noise or [], sum(len(x) for x, _ in real_kw) / SR + 2.5 * len(real_kw) + 10,
                              seed=seed + 3, snr_db=10.0, gap_s=(1.0, 2.5), once=True)
        d = d[:int((ev_r[-1]["end_s"] + 2.0) * SR)] if ev_r else d
        streams.append(("positive_real", d, ev_r))
    real_note = (f"{len(real)} real human speech recordings whose transcripts say no keyword (pocketsphinx-testdata, "
                 f"warzone2100-data); left out: {len(split_real['keyword'])} that say one, "
                 f"{len(split_real['unverified'])} without a transcript (codec2-examples, warzone briefings)")
    out_dir.mkdir(parents=True, exist_ok=True)
    res = {}
    for name, audio, events in streams:
        wav = out_dir / f"stream_{name}.wav"
        write_wav(wav, audio)
        truth = {"wav_file": wav.name, "sample_rate": SR, "length_sec": round(len(audio) / SR, 3), "events": events,
                 "source": f"{spec} ({split} split), seed {seed}, background noise at 10 dB SNR below the speech",
                 "negative_speech": f"{real_note}, nothing else" if name == "negative_real" else
                 f"{len(real_kw)} real recordings that say a keyword ({len(split_real['keyword'])} sentences, "
                 f"{len(real_kw) - len(split_real['keyword'])} said alone)" if name == "positive_real" else
                 f"{len(negs)} unknown-word clips ({n_real_unknown} of them real human speech"
                 f"{'' if near_misses else '; near-miss words left out'}) + {len(real)} real speech recordings"}
        (out_dir / f"stream_{name}.json").write_text(json.dumps(truth, indent=1))
        res[name] = {"audio": audio, "truth": truth, "path": str(wav)}
    return res


def other_language_stream(spec: str, labels: list[str], out_dir: Path, seed: int = 0, *, val_pct: float = 10.0,
                          test_pct: float = 10.0, files: list[Path] | None = None) -> dict | None:
    """A long negative stream of real speech in other languages (``other_language_speech_files``): every
    recording once, in a seeded order, 0.3-2 s apart, over ``spec``'s background noise at 10 dB SNR, as
    ``build_streams`` makes its streams. No events; ``segments`` in the truth JSON say which recording is where,
    so a false accept can be traced to what was said. None when no such recording is installed."""
    from ..data.audio import other_language_speech_files

    files = other_language_speech_files() if files is None else files
    if not files:
        return None
    kw_files, _split = kws_files(spec, labels, val_pct, test_pct)
    noise = [read_wav(p) for p in kw_files.noise]
    order = np.random.default_rng(seed + 4).permutation(len(files))
    items = [(read_wav(files[i]), files[i].name) for i in order]
    total = sum(len(x) for x, _ in items) / SR + 2.0 * len(items) + 10
    audio, ev = make_stream(items, [], noise, total, seed=seed + 4, snr_db=10.0, gap_s=(0.3, 2.0), once=True)
    audio = audio[:int((ev[-1]["end_s"] + 2.0) * SR)] if ev else audio
    voices = sorted({n.split("-")[1] for _, n in items})
    truth = {"wav_file": "stream_negative_other_languages.wav", "sample_rate": SR,
             "length_sec": round(len(audio) / SR, 3), "events": [],
             "segments": [{"file": e["label"], "start_s": e["start_s"], "end_s": e["end_s"]} for e in ev],
             "source": f"{len(ev)} recordings of {len(files)}, seed {seed}, background noise at 10 dB SNR below the "
                       f"speech", "negative_speech": f"real speech in other languages, untranscribed "
                       f"(Asterisk prompts: {', '.join(voices)}); a keyword-like word in them counts as a false accept"}
    out_dir.mkdir(parents=True, exist_ok=True)
    wav = out_dir / truth["wav_file"]
    write_wav(wav, audio)
    (out_dir / "stream_negative_other_languages.json").write_text(json.dumps(truth, indent=1))
    return {"audio": audio, "truth": truth, "path": str(wav)}


def data_fingerprint(spec: str) -> str:
    """What identifies the audio behind ``spec`` for stream caches: the built-in set's versioned folder, or a
    folder's and its word folders' modification times (adding or removing a wav changes them)."""
    from ..data.audio import TTS_NAME, tts_dir

    name = spec.partition(":")[0]
    root = tts_dir() if name == TTS_NAME else Path(name).expanduser()
    if not root.is_dir():
        return name
    parts = [str(root.resolve())] + [f"{d.name}:{d.stat().st_mtime_ns}" for d in sorted(root.iterdir()) if d.is_dir()]
    return "|".join(parts)


def validation_streams(source: str, labels: list[str], negative_minutes: float, val_pct: float, test_pct: float,
                       seed: int = 0, max_positives: int = 200, near_misses: bool = True) -> dict:
    """The calibration streams: the val split only (its keywords; its unknown words, real speakers included;
    near-miss words only with ``near_misses``), no test audio; cached by what defines them."""
    import hashlib

    from ..utils.io import cache_dir

    key = hashlib.sha1(f"{source}|{data_fingerprint(source)}|{labels}|{negative_minutes}|{val_pct}|{test_pct}|{seed}|"
                       f"{max_positives}|{near_misses}|val-v1".encode()).hexdigest()[:12]
    d = cache_dir("streams", key)
    if (d / "stream_negative.json").is_file():
        return {"positive": load_stream(str(d / "stream_positive.wav")),
                "negative": load_stream(str(d / "stream_negative.wav"))}
    return build_streams(f"{source}:val", labels, "dev", d, seed=seed + 7, val_pct=val_pct, test_pct=test_pct,
                         real_speech=False, sizes=(max_positives, negative_minutes), near_misses=near_misses)


def near_miss_clips(spec: str, labels: list[str], val_pct: float, test_pct: float) -> list[tuple[str, np.ndarray]]:
    """(file name, audio) of the built-in set's near-miss words in ``spec``'s split (none in other folders)."""
    files, split = kws_files(spec, labels, val_pct, test_pct)
    return [(it.path.name, read_wav(it.path)) for it in files.splits[split]
            if it.label == UNKNOWN and is_near_miss(it.path)]


def load_stream(wav: str) -> dict:
    p = Path(wav)
    truth_p = p.with_suffix(".json")
    if not p.is_file():
        raise DataError(f"--stream {wav!r} does not exist")
    if not truth_p.is_file():
        raise DataError(f"--stream {wav!r} has no truth file {truth_p.name} beside it",
                        hint="a JSON with events: [{label, start_s, end_s}] (MLPerf Tiny SWW style)")
    return {"audio": read_wav(p), "truth": read_truth(truth_p), "path": str(p)}


def _is_time(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


def read_truth(truth_p: Path, hint: str | None = None) -> dict:
    """A stream's truth file (MLPerf Tiny SWW style: events with label, start_s <= end_s in seconds), checked:
    anything else is one DataError, never a traceback."""
    hint = hint or 'it needs {"events": [{"label", "start_s", "end_s"}...]} (edgeft data make-stream writes one)'
    try:
        truth = json.loads(Path(truth_p).read_text(encoding="utf-8"))
        ev = truth["events"]
        ok = isinstance(ev, list) and all(
            isinstance(e, dict) and isinstance(e.get("label"), str) and _is_time(e.get("start_s"))
            and _is_time(e.get("end_s")) and e["start_s"] <= e["end_s"] for e in ev)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, IndexError) as e:
        raise DataError(f"{truth_p}: not a truth file ({type(e).__name__}: {str(e)[:80]})", hint=hint) from None
    if not ok:
        raise DataError(f"{truth_p}: not a truth file: 'events' must be a list of {{label: text, start_s <= end_s: "
                        "seconds >= 0}", hint=hint)
    return truth
