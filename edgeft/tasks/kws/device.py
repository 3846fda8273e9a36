"""Keyword spotting, device side (numpy only): the log-mel front end from the manifest, clips as samples.

The streaming detector (posterior smoothing, threshold, refractory period, the stateful model) is
:mod:`edgeft.runtime.kws`; the long test streams are :mod:`edgeft.bench.audio_data`."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...data.audio import SILENCE, SR, TTS_NAME, UNKNOWN, load_clips, make_kws_tts, read_wav, scan_speech_commands
from ...errors import DataError
from ...runtime.features import LogMel
from ...utils.io import sha256_bytes
from ..base import Samples
from ..classify import ClassificationMixin
from ..image_cls.device import _check_shape


def _int(d: dict, k: str, lo: int, hi: int) -> int:
    v = d.get(k)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ValueError(f"preprocess.{k} = {v!r} (an integer in {lo}..{hi} expected)")
    return v


def _num(d: dict, k: str, lo: float, hi: float) -> float:
    v = d.get(k)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
        raise ValueError(f"preprocess.{k} = {v!r} (a number in {lo}..{hi} expected)")
    return float(v)


class KwsDevice(ClassificationMixin):
    name = "kws"
    builtin_sources = ("speech-commands-tts",)
    title = "keyword-spotting (kws)"
    input_word = "wav files"
    input_exts = frozenset({".wav"})
    runtime_model = "edgeft.runtime.kws:KwsModel"    # clips and the streaming detector

    def check_preprocess(self, manifest: dict) -> None:
        pp = manifest.get("preprocess") or {}
        if pp.get("kind") not in ("logmel", "mfcc"):
            raise ValueError(f"preprocess.kind = {pp.get('kind')!r} ('logmel' or 'mfcc' expected for keyword spotting)")
        sr = _int(pp, "sample_rate", 1000, 192000)
        n_fft = _int(pp, "n_fft", 16, 1 << 16)
        _int(pp, "win", 16, n_fft)
        hop = _int(pp, "hop", 1, n_fft)
        n_mels = _int(pp, "n_mels", 1, 512)
        f_max = _num(pp, "f_max", 1, sr / 2)
        _num(pp, "f_min", 0, f_max - 1)
        clip = _int(pp, "clip_samples", n_fft, 60 * sr)
        frames = 1 + (clip - n_fft) // hop
        if pp.get("frames") != frames:
            raise ValueError(f"preprocess.frames = {pp.get('frames')!r}, the spec gives {frames}")
        n_feat = _int(pp, "n_mfcc", 1, n_mels) if pp["kind"] == "mfcc" else n_mels
        _check_shape(manifest, [1, n_feat, frames])

    def preprocessor(self, manifest: dict):
        lm = LogMel.from_spec(manifest["preprocess"])
        name = manifest["inputs"][0]["name"] if manifest.get("inputs") else "input"
        return lambda raws: {name: np.stack([lm.clip_features(np.asarray(r, np.float32))[None]
                                             for r in raws]).astype(np.float32)}

    def read(self, path) -> np.ndarray:
        return read_wav(path, SR)

    def samples(self, spec: str, labels: list[str], limit: int | None) -> Samples:
        files, split = kws_files(spec, labels)
        items = files.splits[split]
        if limit and limit < len(items):
            items = [items[i] for i in np.sort(np.random.default_rng(0).permutation(len(items))[:limit])]
        clips, tg, _, _ = load_clips(items, files.classes, SR)
        digest = sha256_bytes(clips.tobytes()[:1 << 20] + tg.tobytes())[:16]
        return Samples(f"{spec.split(':')[0]}:{split}", "kws", list(labels), tg,
                       lambda i: clips[i].astype(np.float32) / 32767.0, digest)


def keywords_of(labels: list[str]) -> list[str]:
    return [label for label in labels if label not in (UNKNOWN, SILENCE)]


def kws_files(spec: str, labels: list[str], val_pct: float = 10.0, test_pct: float = 10.0):
    """(the Speech Commands layout of ``spec``, the split asked for), checked against the model's labels."""
    name, _, split = spec.partition(":")
    root = make_kws_tts() if name == TTS_NAME else Path(name).expanduser()
    if not root.is_dir():
        raise DataError(f"--data {spec!r} is neither the built-in {TTS_NAME}[:split] nor a folder",
                        hint="pass a Speech Commands folder (DIR/<word>/*.wav)")
    files = scan_speech_commands(root, keywords_of(labels), val_pct, test_pct)
    if files.classes != list(labels):
        raise DataError(f"the classes of --data {spec!r} ({files.classes}) do not match the model's labels ({labels})",
                        hint="benchmark with the keywords the model was trained on")
    split = split or "test"
    if split not in files.splits:
        raise DataError(f"--data {spec!r}: unknown split {split!r}; valid are {', '.join(files.splits)}",
                        hint=f"e.g. --data {name}:test (speaker-disjoint test split)")
    return files, split


DEVICE = KwsDevice()
