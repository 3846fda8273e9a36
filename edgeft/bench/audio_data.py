"""Keyword-spotting benchmark data (torch-free): test-split clips, and the long labelled streams."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..data.audio import SR, SILENCE, UNKNOWN, make_stream, read_wav, real_speech_files, write_wav
from ..errors import DataError
from ..tasks.kws.device import kws_files


STREAM_SIZES = {  # (positive keywords, negative minutes, realtime seconds)
    "smoke": (20, 2.0, 8.0),
    "quick": (60, 6.0, 20.0),
    "dev": (200, 20.0, 60.0),
    "report": (10_000, 180.0, None),
}


def build_streams(spec: str, labels: list[str], profile: str, out_dir: Path, seed: int = 0) -> dict:
    """Seeded long streams from held-out clips: a positive stream (every selected keyword once, with unknown
    words and real read speech in between, over background noise at 10 dB SNR) and a negative-only stream
    (no keywords) for false accepts per hour. Written as wav + MLPerf-Tiny-style truth JSON."""
    files, split = kws_files(spec, labels)
    n_pos, neg_min, _ = STREAM_SIZES[profile]
    kws = [it for it in files.splits[split] if it.label not in (UNKNOWN, SILENCE)]
    unk = [it for it in files.splits[split] if it.label == UNKNOWN]
    rng = np.random.default_rng(seed)
    kws = [kws[i] for i in rng.permutation(len(kws))[:n_pos]]
    pos = [(read_wav(it.path), it.label) for it in kws]
    negs = [read_wav(it.path) for it in unk]
    real = []
    for f in real_speech_files():      # real human read speech (LibriVox), never used for training
        try:
            real.append(read_wav(f))
        except DataError:
            pass
    noise = [read_wav(p) for p in files.noise] or None
    pos_s = max(30.0, len(pos) * 4.4 + 10)
    a, ev = make_stream(pos, negs + real, noise or [], pos_s, seed=seed, snr_db=10.0, gap_s=(1.0, 2.5))
    b, ev_neg = make_stream([], negs + real, noise or [], neg_min * 60, seed=seed + 1, snr_db=10.0, gap_s=(0.3, 2.0))
    assert not ev_neg
    out_dir.mkdir(parents=True, exist_ok=True)
    res = {}
    for name, audio, events in (("positive", a, ev), ("negative", b, [])):
        wav = out_dir / f"stream_{name}.wav"
        write_wav(wav, audio)
        truth = {"wav_file": wav.name, "sample_rate": SR, "length_sec": round(len(audio) / SR, 3), "events": events,
                 "source": f"{spec} ({split} split), seed {seed}, background noise at 10 dB SNR below the speech",
                 "negative_speech": f"{len(negs)} unknown-word clips + {len(real)} real read-speech recordings"}
        (out_dir / f"stream_{name}.json").write_text(json.dumps(truth, indent=1))
        res[name] = {"audio": audio, "truth": truth, "path": str(wav)}
    return res


def load_stream(wav: str) -> dict:
    p = Path(wav)
    truth_p = p.with_suffix(".json")
    if not p.is_file():
        raise DataError(f"--stream {wav!r} does not exist")
    if not truth_p.is_file():
        raise DataError(f"--stream {wav!r} has no truth file {truth_p.name} beside it",
                        hint="a JSON with events: [{label, start_s, end_s}] (MLPerf Tiny SWW style)")
    truth = json.loads(truth_p.read_text())
    if "events" not in truth:
        raise DataError(f"{truth_p}: no 'events' list")
    return {"audio": read_wav(p), "truth": truth, "path": str(p)}
