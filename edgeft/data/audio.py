"""Audio data, torch-free: wav I/O, Speech-Commands layouts and splits, the offline TTS keyword dataset.

Speech Commands layout: ``DIR/<label>/*.wav`` (16 kHz mono), ``DIR/_background_noise_/*.wav``; the 12-class
task is 10 keywords + ``_unknown_`` (every other word folder) + ``_silence_``. Splits use Speech Commands'
``validation_list.txt`` / ``testing_list.txt`` when present, else a hash of the speaker id (the file-name part
before ``_nohash_`` or ``__``), so no speaker is in two splits.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import re
import shutil
import subprocess
import struct
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..utils.log import info

SR = 16000
KEYWORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
UNKNOWN_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "bed", "bird", "cat",
                 "dog", "happy", "house", "marvin", "sheila", "tree", "wow", "backward", "forward", "follow", "learn",
                 "visual"]
UNKNOWN, SILENCE, NOISE_DIR = "_unknown_", "_silence_", "_background_noise_"
TTS_NAME = "speech-commands-tts"
TTS_VERSION = 8   # 2: festival, 32 espeak variants, speed perturbation, real _unknown_ speech; 3: real ambience;
#                   4: real _unknown_ capped per speaker, real "no"/"go" (klettres, not English) as keywords;
#                   5: near-miss words and phrases of common words as _unknown_ (Festival's CMU/WSJ lexicons),
#                      (keywords between common words: off by default, see RESULTS §15)
#                   6: a real English keyword ("no") and lines from hedgewars-data's voice actors
#                   7: up to 50 real _unknown_ clips per real speaker (25 before)
#                   8: other-language speech as _unknown_ (espeak-ng voices of 12 languages, none evaluated)


# ------------------------------------------------------------------------------------------- wav I/O
def read_wav(path: str | os.PathLike, target_sr: int = SR) -> np.ndarray:
    """Mono float32 in [-1, 1] at target_sr. Stereo is down-mixed, other rates resampled; corrupt or
    empty files raise DataError."""
    p = str(path)
    try:
        _check_riff(p)
        x, sr = _read_any(p)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - every decoder failure is a bad file for the user
        raise DataError(f"unreadable wav {p!r}: {type(e).__name__}: {str(e)[:120]}") from None
    if x.size == 0:
        raise DataError(f"empty wav {p!r} (no samples)")
    if x.ndim == 2:
        x = x.mean(axis=1)
    if sr != target_sr:
        x = resample(x, sr, target_sr)
    return np.clip(x.astype(np.float32), -1.0, 1.0)


def _check_riff(p: str) -> None:
    """Refuse a WAV whose header promises more audio than the file holds (a cut copy or download): decoders pad
    or warn and carry on, which would score a truncated clip as if it were whole."""
    size = os.path.getsize(p)
    with open(p, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise DataError(f"unreadable wav {p!r}: not a WAV file (no RIFF/WAVE header)",
                            hint="pass 16-bit PCM .wav files")
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            cid, n = f.read(4), struct.unpack("<I", f.read(4))[0]
            if cid == b"data":
                if n not in (0, 0xFFFFFFFF) and pos + 8 + n > size:   # 0 / -1: length unknown (a live recording)
                    raise DataError(f"truncated wav {p!r}: its header says {n} bytes of audio, the file holds "
                                    f"{size - pos - 8}", hint="copy or record the file again")
                return
            pos += 8 + n + (n & 1)
    raise DataError(f"unreadable wav {p!r}: no audio data chunk", hint="pass 16-bit PCM .wav files")


def _read_any(p: str) -> tuple[np.ndarray, int]:
    try:
        import warnings

        from scipy.io import wavfile

        # chunk quirks only (a short data chunk was refused by _check_riff); a global filter, set once, because
        # catch_warnings is not thread-safe and clips are decoded in a thread pool
        warnings.filterwarnings("ignore", category=wavfile.WavFileWarning)
        sr, x = wavfile.read(p)
    except ImportError:
        with wave.open(p, "rb") as w:
            sr, ch, sw = w.getframerate(), w.getnchannels(), w.getsampwidth()
            raw = w.readframes(w.getnframes())
        dt = {1: np.uint8, 2: np.int16, 4: np.int32}.get(sw)
        if dt is None:
            raise DataError(f"unsupported wav sample width {sw} in {p!r}")
        x = np.frombuffer(raw, dt).reshape(-1, ch) if ch > 1 else np.frombuffer(raw, dt)
    if x.dtype == np.int16:
        x = x.astype(np.float32) / 32768.0
    elif x.dtype == np.int32:
        x = x.astype(np.float32) / 2147483648.0
    elif x.dtype == np.uint8:
        x = (x.astype(np.float32) - 128.0) / 128.0
    else:
        x = x.astype(np.float32)
    return x, int(sr)


def write_wav(path: str | os.PathLike, x: np.ndarray, sr: int = SR) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pcm = (np.clip(x, -1, 1) * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())


def resample(x: np.ndarray, sr: int, target: int) -> np.ndarray:
    from math import gcd

    g = gcd(int(sr), int(target))
    up, down = target // g, sr // g
    try:
        from scipy.signal import resample_poly

        return resample_poly(x, up, down, axis=0).astype(np.float32)
    except ImportError:  # device without scipy: FFT resampling
        n = int(round(len(x) * target / sr))
        spec = np.fft.rfft(x, axis=0)
        keep = min(len(spec), n // 2 + 1)
        out = np.zeros((n // 2 + 1,) + spec.shape[1:], complex)
        out[:keep] = spec[:keep]
        return (np.fft.irfft(out, n=n, axis=0) * (n / len(x))).astype(np.float32)


# --------------------------------------------------------------------------------- Speech Commands
@dataclass
class AudioItem:
    path: Path
    label: str
    speaker: str


@dataclass
class KwsFiles:
    root: Path
    classes: list[str]
    splits: dict[str, list[AudioItem]]
    noise: list[Path] = field(default_factory=list)
    info: dict = field(default_factory=dict)


def speaker_of(name: str) -> str:
    stem = Path(name).stem
    for sep in ("_nohash_", "__"):
        if sep in stem:
            return stem.split(sep)[0]
    return stem


def which_split(speaker: str, val_pct: float, test_pct: float) -> str:
    """Speech Commands' rule: a stable hash of the speaker decides the split."""
    h = int(hashlib.sha1(speaker.encode()).hexdigest(), 16) % 10000 / 100.0
    if h < val_pct:
        return "val"
    if h < val_pct + test_pct:
        return "test"
    return "train"


def kws_classes(keywords: list[str]) -> list[str]:
    return list(keywords) + [UNKNOWN, SILENCE]


def scan_speech_commands(root: str | os.PathLike, keywords: list[str], val_pct: float = 10.0,
                         test_pct: float = 10.0) -> KwsFiles:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"speech data folder {str(root)!r} does not exist",
                        hint="use the Speech Commands layout DIR/<word>/*.wav, or the built-in speech-commands-tts")
    dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    words = {d.name: d for d in dirs if d.name != NOISE_DIR}
    missing = [k for k in keywords if k not in words]
    if missing:
        raise DataError(f"keyword folder(s) {missing} missing in {str(root)!r} (found: {sorted(words)[:12]})",
                        hint="every keyword in the recipe needs a folder of wavs, or change the recipe's keywords")
    empty = [w for w, d in words.items() if not any(d.glob("*.wav"))]
    if empty:
        raise DataError(f"empty word folder(s) in {str(root)!r}: {empty[:5]}", hint="add wavs or remove the folder")
    lists = {}
    for split, fname in (("val", "validation_list.txt"), ("test", "testing_list.txt")):
        f = root / fname
        if f.is_file():
            lists[split] = {line.strip() for line in f.read_text().splitlines() if line.strip()}
    splits: dict[str, list[AudioItem]] = {"train": [], "val": [], "test": []}
    for w, d in words.items():
        label = w if w in keywords else (SILENCE if w == SILENCE else UNKNOWN)
        for f in sorted(d.glob("*.wav")):
            rel = f"{w}/{f.name}"
            if lists:
                s = "val" if rel in lists.get("val", ()) else "test" if rel in lists.get("test", ()) else "train"
            else:
                s = which_split(speaker_of(f.name), val_pct, test_pct)
            splits[s].append(AudioItem(f, label, speaker_of(f.name)))
    noise = sorted((root / NOISE_DIR).glob("*.wav")) if (root / NOISE_DIR).is_dir() else []
    for s, items in splits.items():
        if not items:
            raise DataError(f"the {s} split of {str(root)!r} is empty (too few speakers for a speaker-disjoint split)",
                            hint="add speakers, or provide validation_list.txt / testing_list.txt")
    return KwsFiles(root, kws_classes(keywords), splits, noise,
                    {"split": "lists" if lists else f"speaker hash val {val_pct}% test {test_pct}%"})


def load_clips(items: list[AudioItem], classes: list[str], clip_samples: int, strict: bool = False,
               workers: int = 0) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Decode, pad/trim to clip_samples -> (int16 clips, targets, speakers, skipped files)."""
    def load(it):
        try:
            return read_wav(it.path)
        except DataError as e:
            return e

    with ThreadPoolExecutor(workers or min(8, (os.cpu_count() or 2) * 2)) as ex:
        arrays = list(ex.map(load, items))
    clips, tg, spk, skipped = [], [], [], []
    for it, a in zip(items, arrays):
        if isinstance(a, DataError):
            if strict:
                raise DataError(a.message, hint="remove or replace the file, or drop --strict to skip bad wavs")
            skipped.append(str(it.path))
            continue
        a = a[:clip_samples] if len(a) >= clip_samples else np.pad(a, (0, clip_samples - len(a)))
        clips.append((a * 32767).astype(np.int16))
        tg.append(classes.index(it.label))
        spk.append(it.speaker)
    arr = np.stack(clips) if clips else np.zeros((0, clip_samples), np.int16)
    return arr, np.asarray(tg, np.int64), spk, skipped


# ------------------------------------------------------------------------- offline TTS keyword data
ESPEAK_DIALECTS = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029",
                   "en-us-nyc"]
ESPEAK_VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2",
                   "klatt3", "Andy", "Annie", "Alicia", "Denis", "Michael", "m8", "klatt4", "klatt6", "whisper",
                   "croak", "grandpa", "grandma", "Lee", "Steph", "norbert", "victor", "Linda"]
FLITE_VOICES = ["awb", "rms", "slt", "kal16"]
FESTIVAL_VOICES = ["kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts"]   # Debian festvox-* packages
# Languages whose speech joins _unknown_ (pseudo-words read by espeak-ng's voice for the language): Latin-script
# languages only (the voices read the letters by the language's rules), and none of the languages of the
# other-language test stream (French, Italian, Russian: OTHER_LANGUAGE_VOICES), so that stream stays a blind test.
UNKNOWN_LANGUAGES = ["es", "es-419", "pt", "pt-br", "de", "nl", "pl", "cs", "sv", "hu", "ro", "hr"]
_PSEUDO_ONSETS, _PSEUDO_VOWELS, _PSEUDO_CODAS = "bcdfglmnprstvz", "aeiou", "slr"


def pseudo_word(g: np.random.Generator, syllables: tuple[int, int] = (2, 4)) -> str:
    """A pronounceable non-word of 2-4 open syllables ("novela", "tarimos"), for a foreign voice to read by its
    language's rules. Never one syllable, and never ends in "no"/"go" (a keyword said after other sounds): a
    keyword alone must not be taught as _unknown_; words that begin like one ("nove", "gola") are what it
    should learn to reject."""
    n = int(g.integers(syllables[0], syllables[1] + 1))
    while True:
        syl = [_PSEUDO_ONSETS[int(g.integers(len(_PSEUDO_ONSETS)))] + _PSEUDO_VOWELS[int(g.integers(5))]
               for _ in range(n)]
        if syl[-1] not in ("no", "go"):
            break
    return "".join(syl) + (_PSEUDO_CODAS[int(g.integers(3))] if g.random() < 0.3 else "")


# How a Latin-script voice spells the start of each keyword (what its reader says first), for prefixed pseudo-words.
KEYWORD_ONSETS = {"yes": "ies", "no": "no", "up": "ap", "down": "dau", "left": "lef", "right": "rai", "on": "on",
                  "off": "of", "stop": "sto", "go": "go"}


def prefixed_pseudo_word(g: np.random.Generator, keywords=KEYWORDS) -> str:
    """A pseudo-word that begins like a keyword and goes on for 1-2 more syllables ("nomeda", "stovi"), for a
    foreign voice: the other-language words a "no" detector fires on (*nove*, *numero*, *novembre*) begin this
    way. Keywords without an onset in ``KEYWORD_ONSETS`` are skipped."""
    onsets = [KEYWORD_ONSETS[k] for k in keywords if k in KEYWORD_ONSETS]
    return onsets[int(g.integers(len(onsets)))] + pseudo_word(g, (1, 2))


def tts_dir() -> Path:
    from ..utils.io import cache_dir

    return cache_dir(f"{TTS_NAME}-v{TTS_VERSION}")


def tts_available() -> str | None:
    """None if espeak-ng, flite and sox are installed, else what is missing."""
    miss = [t for t in ("espeak-ng", "flite") if shutil.which(t) is None]
    return None if not miss else ", ".join(miss)


def _espeak(word: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    b = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", word],
                       capture_output=True, check=True).stdout
    with wave.open(io.BytesIO(b)) as w:
        sr = w.getframerate()
        x = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768
    return resample(x, sr, SR)


def _flite(word: str, voice: str, stretch: float, f0: int) -> np.ndarray:
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".wav") as t:
        subprocess.run(["flite", "-voice", voice, "--setf", f"duration_stretch={stretch}", "--setf",
                        f"int_f0_target_mean={f0}", "-t", word, "-o", t.name], capture_output=True, check=True)
        return read_wav(t.name)


def festival_voices() -> list[str]:
    """The FESTIVAL_VOICES installed here (festival + festvox-kallpc16k / -kdlpc16k / -us-slt-hts)."""
    root = Path("/usr/share/festival/voices")
    if shutil.which("text2wave") is None or not root.is_dir():
        return []
    have = {d.name for d in root.glob("*/*") if d.is_dir()}
    return [v for v in FESTIVAL_VOICES if v in have]


def _festival(word: str, voice: str, stretch: float) -> np.ndarray:
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".wav") as t:
        subprocess.run(["text2wave", "-eval", f"(voice_{voice})", "-eval",
                        f"(Parameter.set 'Duration_Stretch {stretch})", "-o", t.name],
                       input=word.encode(), capture_output=True, check=True)
        return read_wav(t.name)


def _in_context(synth, parts: list[str], rng: np.random.Generator) -> np.ndarray:
    """words before | keyword | words after, each synthesized (so the keyword's place is known) and joined with
    0-80 ms pauses; the 1 s that ends 0.15-0.45 s after the keyword (zeros before, when it is short)."""
    before, kw, after = parts
    pieces, end = [], 0
    for i, text in enumerate((before, kw, after)):
        if not text:
            continue
        x = trim(synth(text))
        if pieces:
            pieces.append(np.zeros(int(rng.uniform(0.0, 0.08) * SR), np.float32))
        pieces.append(x / (np.abs(x).max() + 1e-9))
        if i == 1:
            end = sum(len(p) for p in pieces)
    x = np.concatenate(pieces)
    stop = min(len(x), end + int(rng.uniform(0.15, 0.45) * SR))
    cut = x[max(0, stop - SR):stop]
    return np.concatenate([np.zeros(SR - len(cut), np.float32), cut]) if len(cut) < SR else cut


def speed_perturb(x: np.ndarray, factor: float) -> np.ndarray:
    """Tempo and pitch together (Kaldi-style speed perturbation): resample by 1/factor, play at 16 kHz."""
    if abs(factor - 1.0) < 1e-3:
        return x
    return resample(x, int(round(SR * factor)), SR)


def trim(x: np.ndarray, rel: float = 0.02) -> np.ndarray:
    idx = np.nonzero(np.abs(x) > rel * (np.abs(x).max() + 1e-9))[0]
    return x[idx[0]: idx[-1] + 1] if len(idx) else x


def noise_like(n: int, rng: np.random.Generator, kind: str | None = None) -> np.ndarray:
    kind = kind or rng.choice(["white", "pink", "brown"])
    w = rng.standard_normal(n).astype(np.float32)
    if kind == "brown":
        w = np.cumsum(w)
        w -= np.convolve(w, np.ones(400) / 400, "same")
    elif kind == "pink":
        spec = np.fft.rfft(w)
        spec /= np.sqrt(np.arange(1, len(spec) + 1))
        w = np.fft.irfft(spec, n=n)
    return (w / (np.std(w) + 1e-9)).astype(np.float32)


def place_in_clip(x: np.ndarray, rng: np.random.Generator, snr_db: float, n: int = SR) -> np.ndarray:
    """Trimmed speech at a random offset in an n-sample clip, random gain, noise at snr_db."""
    x = trim(x)[:n]
    out = np.zeros(n, np.float32)
    off = int(rng.integers(0, n - len(x) + 1)) if len(x) < n else 0
    out[off: off + len(x)] = x
    out *= 10 ** (rng.uniform(-12, 0) / 20) / (np.abs(out).max() + 1e-9) * 0.9
    sp = np.mean(out[off: off + len(x)] ** 2) + 1e-12
    nz = noise_like(n, rng)
    out += nz * np.sqrt(sp / (10 ** (snr_db / 10)))
    return np.clip(out, -1, 1)


def make_kws_tts(out: Path | None = None, seed: int = 0, renditions: int = 2, unknown_per_speaker: int = 5,
                 silence: int = 300, workers: int = 0, dialects=ESPEAK_DIALECTS, variants=ESPEAK_VARIANTS,
                 flite_voices=FLITE_VOICES, keywords=KEYWORDS, real_unknown: bool = True,
                 festival: list[str] | None = None, near_per_speaker: int = 3, phrases_per_speaker: int = 2,
                 context_per_speaker: int = 0, languages=UNKNOWN_LANGUAGES, language_speakers: int = 12,
                 language_words: int = 2, language_phrases: int = 3, prefixed_per_speaker: int = 0,
                 language_prefixed: int = 0) -> Path:
    """Generate the built-in Speech-Commands-style set with espeak-ng + flite (deterministic, cached).

    Speakers are (engine, accent, voice variant); speed, pitch, placement, gain and noise (5-40 dB SNR) vary per
    clip from a seed derived from (seed, speaker, word, rendition), so the set is reproducible.

    ``_unknown_`` also gets, per speaker, ``near_per_speaker`` near-miss words (one phoneme from a keyword:
    "light", "town", "stock") and ``phrases_per_speaker`` 1 s cuts of phrases of common words with a near-miss
    word in them (continuous speech), from Festival's lexicons (``edgeft.data.lexicon``; none when those are not
    installed). Homophones of keywords and words that begin with a keyword ("stops", "going") are never used there.
    Since phrases alone would teach "more than one word = _unknown_", each speaker also says
    ``context_per_speaker`` keywords between common words ("the market **left** in"), cut to the 1 s that ends
    0.15-0.45 s after the keyword, labelled as the keyword.

    Other-language speech: for each of ``languages`` (espeak-ng voices), ``language_speakers`` voice variants
    each say ``language_words`` pseudo-words alone and ``language_phrases`` 1 s cuts of pseudo-word phrases, read
    by the language's rules (``pseudo_word``), all ``_unknown_``: a detector hears other languages, and their
    words that begin like a keyword (Italian *nove*, *numero* for "no") were most of its false accepts.

    Keyword-prefixed words (off by default): each English speaker says ``prefixed_per_speaker`` words that begin
    with a keyword's whole pronunciation and go on for another syllable ("nobody", "going", "upper":
    ``lexicon.keyword_prefixed``), each other-language speaker ``language_prefixed`` pseudo-words that begin with
    a keyword-like syllable ("nove", "gomira": ``prefixed_pseudo_word``), all ``_unknown_`` and named like the
    near-miss words (kept out of the streams, reported alone). They teach the rejection that the detector's
    confirmation delay (``stream.confirm_ms``) looks for: the keyword's posterior should fall once the word goes
    on."""
    from . import lexicon
    out = Path(out or tts_dir())
    if (out / "COMPLETE").is_file():
        return out
    if out.is_dir() and any(out.iterdir()) and not _is_tts_set(out):
        raise DataError(f"--out {str(out)!r} is a folder with other files in it; the keyword dataset replaces its "
                        f"folder", hint="pass a new or empty folder")
    miss = tts_available()
    if miss:
        raise DataError(f"the built-in keyword dataset needs {miss}",
                        hint="sudo apt-get install espeak-ng flite (scripts/setup.sh does it as root), or pass "
                             "--data DIR with Speech Commands (DIR/<word>/*.wav)")
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    near = sorted({w for ws in lexicon.confusables(keywords).values() for w in ws})
    prefixed = {k: ws for k, ws in lexicon.keyword_prefixed(keywords).items() if ws} if prefixed_per_speaker else {}
    prefixed_words = {w for ws in prefixed.values() for w in ws}
    common = lexicon.common_words(keywords) if near else []

    def extra_unknown(engine, voice, spk, n_near, n_phrases, n_context, n_prefixed):
        """(engine, voice, speaker, text, label, rendition, file stem "<word>_<n>" like every clip's): near-miss
        words and phrases as _unknown_,
        and keywords said between other words (so that "more than one word" is no cue for _unknown_)"""
        r = random.Random(f"{seed}:{spk}:near")
        out = [(engine, voice, spk, w, UNKNOWN, 0, f"{NEAR_MISS_STEM}{w}_0")
               for w in r.sample(near, min(n_near, len(near)))]
        out_words = {j[3] for j in out}
        rp, pick = random.Random(f"{seed}:{spk}:prefixed"), []
        n_prefixed = min(n_prefixed, len(prefixed_words - out_words))
        while len(pick) < n_prefixed:     # keywords equally often, then one of the words that begin with it
            w = rp.choice(prefixed[rp.choice(sorted(prefixed))])
            if w not in pick and w not in out_words:
                pick.append(w)
        out += [(engine, voice, spk, w, UNKNOWN, 0, f"{NEAR_MISS_STEM}{w}_0") for w in pick]
        g = np.random.default_rng(int(hashlib.sha1(f"{seed}|{spk}|phrases".encode()).hexdigest()[:12], 16))
        out += [(engine, voice, spk, lexicon.phrase(g, common, near), UNKNOWN, i, f"phrase_{i}")
                for i in range(n_phrases if common else 0)]
        for i in range(n_context if common else 0):
            kw = keywords[int(g.integers(len(keywords)))]
            before = lexicon.phrase(g, common, [], (1, 3))
            after = lexicon.phrase(g, common, [], (0, 2)) if g.random() < 0.7 else ""
            out.append((engine, voice, spk, f"{before}|{kw}|{after}", kw, i, f"ctx-{kw}_{i}"))
        return out

    jobs = []
    for dia in dialects:
        for var in variants:
            spk = f"es-{dia}-{var}"
            for w in keywords:
                for r in range(renditions):
                    jobs.append(("espeak", f"{dia}+{var}", spk, w, w, r, f"{w}_{r}"))
            words = random.Random(f"{seed}:{spk}").sample(UNKNOWN_WORDS, unknown_per_speaker)
            for w in words:
                jobs.append(("espeak", f"{dia}+{var}", spk, w, UNKNOWN, 0, f"{w}_0"))
            jobs += extra_unknown("espeak", f"{dia}+{var}", spk, near_per_speaker, phrases_per_speaker,
                                  context_per_speaker, prefixed_per_speaker)
    for lang in languages:        # other-language speech as _unknown_ (speakers "xl-<language>-<variant>")
        for var in random.Random(f"{seed}:{lang}:xl").sample(list(variants), min(language_speakers, len(variants))):
            spk = f"xl-{lang}-{var}"
            g = np.random.default_rng(int(hashlib.sha1(f"{seed}|{spk}|xl".encode()).hexdigest()[:12], 16))
            jobs += [("espeak", f"{lang}+{var}", spk, pseudo_word(g), UNKNOWN, i, f"xl-word_{i}")
                     for i in range(language_words)]
            jobs += [("espeak", f"{lang}+{var}", spk, " ".join(pseudo_word(g) for _ in range(int(g.integers(3, 7)))),
                      UNKNOWN, i, f"phrase-xl_{i}") for i in range(language_phrases)]
            gp = np.random.default_rng(int(hashlib.sha1(f"{seed}|{spk}|xl-prefixed".encode()).hexdigest()[:12], 16))
            jobs += [("espeak", f"{lang}+{var}", spk, w, UNKNOWN, 0, f"{NEAR_MISS_STEM}{w}_0")
                     for w in dict.fromkeys(prefixed_pseudo_word(gp, keywords) for _ in range(language_prefixed))]
    fest = festival_voices() if festival is None else festival
    voices = [("festival", v, f"fv-{v.split('_')[0] if v.endswith('diphone') else 'slt-hts'}") for v in fest] + \
        [("flite", v, f"fl-{v}") for v in flite_voices]
    for engine, v, spk in voices:      # few voices each: more renditions, every unknown word
        for w in keywords:
            for r in range(renditions * 6):
                jobs.append((engine, v, spk, w, w, r, f"{w}_{r}"))
        for w in UNKNOWN_WORDS:
            jobs.append((engine, v, spk, w, UNKNOWN, 0, f"{w}_0"))
        jobs += extra_unknown(engine, v, spk, near_per_speaker * 8, phrases_per_speaker * 4, context_per_speaker * 4,
                              prefixed_per_speaker * 8)

    def run(job):
        engine, voice, spk, word, label, r, stem = job
        rng = np.random.default_rng(int(hashlib.sha1(f"{seed}|{spk}|{word}|{r}".encode()).hexdigest()[:12], 16))
        if engine == "espeak":
            speed, pitch = int(rng.choice([110, 130, 150, 175, 200])), int(rng.choice([25, 40, 50, 65, 80]))
            synth = lambda text: _espeak(text, voice, speed, pitch)          # noqa: E731
        elif engine == "festival":
            stretch, factor = float(rng.choice([0.8, 1.0, 1.25])), float(rng.choice([0.85, 0.92, 1.0, 1.08, 1.15]))
            synth = lambda text: speed_perturb(_festival(text, voice, stretch), factor)     # noqa: E731
        else:
            stretch, f0 = float(rng.choice([0.8, 1.0, 1.25])), int(rng.choice([90, 120, 160, 210]))
            synth = lambda text: _flite(text, voice, stretch, f0)             # noqa: E731
        if stem.startswith("ctx-"):         # the keyword between other words: the 1 s that ends just after it
            x = _in_context(synth, word.split("|"), rng)
        else:
            x = synth(word)
        if stem.startswith("phrase") and len(trim(x)) > SR:      # a 1 s cut of continuous speech
            x = trim(x)
            o = int(rng.integers(0, len(x) - SR + 1))
            x = x[o:o + SR]
        clip = place_in_clip(x, rng, float(rng.uniform(5, 40)))
        write_wav(tmp / label / f"{spk}__{stem}.wav", clip)
        return 1

    info(f"generating the built-in keyword dataset ({len(jobs)} TTS clips + {silence} silence) into {out} ...")
    with ThreadPoolExecutor(workers or max(2, os.cpu_count() or 2)) as ex:
        n = sum(ex.map(run, jobs))
    rng = np.random.default_rng(seed)
    for i in range(silence):
        lvl = 10 ** (rng.uniform(-70, -25) / 20)
        write_wav(tmp / SILENCE / f"noise{i % 20}__silence_{i}.wav", noise_like(SR, rng) * lvl * 0.3)
    for i, kind in enumerate(["white", "pink", "brown", "pink", "brown", "white"]):
        write_wav(tmp / NOISE_DIR / f"{kind}_{i}.wav", np.clip(noise_like(60 * SR, rng, kind) * 0.1, -1, 1))
    real = import_real_unknown(tmp / "_real_unknown_") if real_unknown else {}
    hw = import_hedgewars(tmp / "_real_unknown_", keyword_dst=tmp) if real_unknown else {"unknown": 0, "keywords": 0}
    if hw["unknown"]:
        real["hedgewars"] = hw["unknown"]
    real_noise = import_real_noise(tmp / NOISE_DIR) if real_unknown else 0
    (tmp / "manifest.json").write_text(json.dumps({
        "name": TTS_NAME, "version": TTS_VERSION, "seed": seed, "tts_clips": n, "silence": silence,
        "keywords": list(keywords), "unknown_words": UNKNOWN_WORDS, "espeak_speakers": len(dialects) * len(variants),
        "flite_voices": list(flite_voices), "festival_voices": list(fest), "snr_db": [5, 40],
        "near_miss_words": len(near), "near_miss_clips": sum(j[6].startswith(NEAR_MISS_STEM) for j in jobs),
        "phrase_clips": sum(j[6].startswith("phrase_") for j in jobs),
        "other_language_unknown": {"languages": list(languages), "speakers_per_language": language_speakers,
                                   "clips": sum(j[2].startswith("xl-") for j in jobs),
                                   "note": "pseudo-words read by espeak-ng's voice for each language"},
        "keyword_in_context_clips": sum(j[6].startswith("ctx-") for j in jobs),
        "keyword_prefixed": {"per_english_speaker": prefixed_per_speaker, "per_other_language_speaker":
                             language_prefixed, "words": sorted(prefixed_words)},
        "lexicons": [str(lexicon.CMU), str(lexicon.WSJ)] if near else None, "real_unknown_clips": sum(real.values()) if real else 0,
        "real_unknown_sources": real, "real_noise_files": real_noise,
        "real_keyword_clips": {"klettres (not English)": sum(1 for w in keywords for _ in (tmp / w).glob("kl-*.wav")),
                               "hedgewars (English actors)": hw["keywords"]},
        "tools": {t: shutil.which(t) for t in ("espeak-ng", "flite", "sox")}}, indent=1))
    (tmp / "COMPLETE").write_text("ok\n")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def _is_tts_set(d: Path) -> bool:
    """An (unfinished) earlier copy of this dataset: its manifest names it."""
    try:
        return json.loads((d / "manifest.json").read_text()).get("name") == TTS_NAME
    except (OSError, ValueError):
        return False


KLETTRES = Path("/usr/share/klettres")


def _seeded_subset(items: list, n: int | None, seed) -> list:
    """At most ``n`` of ``items`` (all when ``n`` is None), a seeded choice that keeps their order."""
    if n is None or len(items) <= n:
        return items
    keep = set(np.random.default_rng(seed).choice(len(items), n, replace=False).tolist())
    return [x for i, x in enumerate(items) if i in keep]


def klettres_locales() -> list[str]:
    return sorted(d.name for d in KLETTRES.iterdir() if d.is_dir() and any(d.rglob("*.ogg"))) \
        if KLETTRES.is_dir() else []


def import_klettres(dst: Path, langs=None, per_speaker: int | None = None, keyword_dst: Path | None = None,
                    renditions: int = 8) -> int:
    """Real human letters/syllables (Debian klettres-data, roughly one speaker per locale, 20 locales) as 16 kHz
    wavs named ``kl-<locale>__...``: the speaker hash puts whole locales (speakers) in train, val or test.
    ``per_speaker``: at most that many clips per locale (seeded choice). ``keyword_dst``: a syllable that *is* a
    keyword ("no", "go" in es/it/ml/pt_BR/ru) goes to ``keyword_dst/<word>/`` as ``renditions`` placements (real
    human keywords are rare offline); English "no" (en, en_GB) is never imported: it is the real-voice check."""
    if shutil.which("sox") is None or not KLETTRES.is_dir():
        return 0
    n = 0
    rng = np.random.default_rng(7)
    for lang in (langs or klettres_locales()):
        files = sorted((KLETTRES / lang).rglob("*.ogg"))
        words = _seeded_subset([f for f in files if f.stem.lower() not in KEYWORDS], per_speaker, [7, len(lang)])
        for f in words:
            x = decode_with_sox(f)
            if x is None:
                continue
            write_wav(dst / f"kl-{lang}__{f.stem}_{f.parent.name}.wav", place_in_clip(x, rng, 40.0))
            n += 1
        if keyword_dst is not None and lang not in ("en", "en_GB"):
            for f in files:
                w = f.stem.lower()
                x = decode_with_sox(f) if w in KEYWORDS else None
                if x is not None:
                    _write_keyword_placements(keyword_dst / w / f"kl-{lang}__{w}", x, rng, renditions)
    return n


def _write_keyword_placements(stem: Path, x: np.ndarray, rng: np.random.Generator, renditions: int) -> int:
    """A real keyword recording as ``renditions`` clips ``<stem>_<r>.wav``, each placed at a random offset with
    noise at 5-40 dB SNR (real keywords are rare offline)."""
    for r in range(renditions):
        write_wav(stem.with_name(f"{stem.name}_{r}.wav"), place_in_clip(x, rng, float(rng.uniform(5, 40))))
    return renditions


def decode_with_sox(path: Path) -> np.ndarray | None:
    """Any format sox reads (ogg, flac, ...) -> 16 kHz mono float32, or None. Without dither (``-D``): sox dithers
    by default when it cuts to 16 bits, with a new random sequence each run, so the built-in set was not repeatable."""
    if shutil.which("sox") is None:
        return None
    r = subprocess.run(["sox", "-D", str(path), "-t", "raw", "-r", str(SR), "-c", "1", "-b", "16", "-e", "signed-integer",
                        "-"], capture_output=True)
    if r.returncode != 0 or not r.stdout:
        return None
    return np.frombuffer(r.stdout, np.int16).astype(np.float32) / 32768


def klettres_keywords(langs=("en", "en_GB")) -> list[tuple[np.ndarray, str, str]]:
    """Real human recordings of keywords found in klettres-data (e.g. 'no'): (audio, label, source)."""
    out = []
    if not KLETTRES.is_dir():
        return out
    for lang in langs:
        for f in sorted((KLETTRES / lang).rglob("*.ogg")):
            if f.stem.lower() in KEYWORDS:
                x = decode_with_sox(f)
                if x is not None:
                    out.append((x, f.stem.lower(), str(f)))
    return out


ASTERISK_SOUNDS = Path("/usr/share/asterisk/sounds")
ASTERISK_EN = ASTERISK_SOUNDS / "en_US_f_Allison"   # Debian asterisk-core-sounds-en-wav
KTUBERLING = Path("/usr/share/ktuberling/sounds")                   # Debian ktuberling-data
REAL_PER_SPEAKER = 50   # real _unknown_ clips per real speaker: with thousands and no real keyword, "a real voice"
#                         itself became the cue for _unknown_ (real keywords scored <= 0.35; version 3), a shortcut;
#                         25 from version 4, 50 from version 7, once real English "no" clips exist (RESULTS §15d)
_NOT_SPEECH = {"beep", "beeperr", "tone", "2tone", "ascending", "descending", "silence", "music", "dtmf"}


def _words_of(path: Path) -> set[str]:
    import re

    return {w for w in re.split(r"[-_ .]+", path.stem.lower()) if w} | {path.parent.name.lower()}


def import_real_unknown(dst: Path) -> dict:
    """Real human speech for ``_unknown_``, from Debian packages (training material; the split is by speaker):
    klettres-data (letters and syllables, ~20 speakers), asterisk-core-sounds-en-wav (one speaker's words and
    phone prompts, 8 kHz: band-limited like a cheap microphone) and ktuberling-data (single words, ~25
    speakers). A recording whose name holds a keyword ("call-fwd-on-busy") is left out; recordings longer than
    a clip give up to three consecutive 1 s clips. Never used: the test streams' real speech
    (``real_speech_files``)."""
    out = {"klettres": import_klettres(dst, per_speaker=REAL_PER_SPEAKER, keyword_dst=dst.parent)}
    if shutil.which("sox") is None:
        return out
    rng = np.random.default_rng(11)
    srcs = [("ast-en", f) for f in sorted(ASTERISK_EN.rglob("*.wav"))] if ASTERISK_EN.is_dir() else []
    if KTUBERLING.is_dir():
        srcs += [(f"kt-{d.name}", f) for d in sorted(KTUBERLING.iterdir()) if d.is_dir()
                 for f in sorted(d.iterdir()) if f.suffix in (".ogg", ".wav")]
    n = {"asterisk-en": 0, "ktuberling": 0}
    per: dict[str, int] = {}
    order = np.random.default_rng(13).permutation(len(srcs))
    srcs = [srcs[i] for i in order]
    for spk, f in srcs:
        if per.get(spk, 0) >= REAL_PER_SPEAKER:
            continue
        w = _words_of(f)
        if w & set(KEYWORDS) or w & _NOT_SPEECH:
            continue
        x = decode_with_sox(f)
        if x is None or len(x) < SR // 10:
            continue
        x = trim(x)
        for k in range(min(3, max(1, int(np.ceil(len(x) / SR))))):
            seg = x[k * SR:(k + 1) * SR]
            if len(seg) < SR // 4:
                break
            write_wav(dst / f"{spk}__{f.parent.name}-{f.stem}_{k}.wav", place_in_clip(seg, rng, 40.0))
            n["asterisk-en" if spk == "ast-en" else "ktuberling"] += 1
            per[spk] = per.get(spk, 0) + 1
            if per[spk] >= REAL_PER_SPEAKER:
                break
    return out | n


HEDGEWARS = Path("/usr/share/games/hedgewars/Data/Sounds/voices")   # Debian hedgewars-data
# The English voice packs (each one actor; "Robot" is a processed human voice); Default_es/_pl/_ru/_uk and
# Russian_pl say the same lines in other languages.
HEDGEWARS_ENGLISH = ("British", "Classic", "Default", "HillBilly", "Mobster", "Pirate", "Robot", "Russian", "Singer",
                     "Surfer")
# Lines that say a keyword: "Nooo" (a drawn-out "no", 1.2-3.5 s), "Yessir" ("yes sir"), "Enemydown" ("enemy down").
HEDGEWARS_KEYWORDS = {"Nooo": "no", "Yessir": "yes", "Enemydown": "down"}
# The ones trained on as keyword clips: the keyword said alone. Cut to 1 s, "yes sir" and "enemy down" (the keyword
# joined to other speech) made "yes" and "down" fire on real speech: 24 of 29 false accepts at 0.5, where v5 had 13
# in all (RESULTS §15d). They stay out of training (and of _unknown_) and are test clips for the held-out actor.
HEDGEWARS_TRAIN_KEYWORDS = ("Nooo",)
# Never _unknown_: the keyword lines, "come on then" (a keyword inside) and "gonna get you" (begins like "go").
_HEDGEWARS_NOT_UNKNOWN = set(HEDGEWARS_KEYWORDS) | {"Comeonthen", "Gonnagetyou"}


def import_hedgewars(dst: Path, keyword_dst: Path | None = None, per_speaker: int = REAL_PER_SPEAKER,
                     renditions: int = 8) -> dict:
    """Real human voices from Debian hedgewars-data's voice packs (15 packs, one actor each, acted game lines;
    GPL): up to ``per_speaker`` lines per pack as ``_unknown_`` (seeded choice; grunts and laughs included, as a
    room's microphone hears them), named ``hw-<pack>__<line>.wav`` so the speaker hash keeps each actor in one
    split. ``keyword_dst``: the English packs' keyword said alone (``HEDGEWARS_TRAIN_KEYWORDS``: "Nooo", its first
    second) goes to ``keyword_dst/<word>/`` as ``renditions`` placements -- a real English keyword from ten actors,
    the only one offline besides the held-out checks (``real_keyword_clips``)."""
    out = {"unknown": 0, "keywords": 0}
    if shutil.which("sox") is None or not HEDGEWARS.is_dir():
        return out
    rng = np.random.default_rng(17)
    for d in sorted(p for p in HEDGEWARS.iterdir() if p.is_dir()):
        spk = f"hw-{d.name.lower()}"
        files = sorted(d.glob("*.ogg"))
        lines = _seeded_subset([f for f in files if f.stem not in _HEDGEWARS_NOT_UNKNOWN], per_speaker, [17, len(d.name)])
        for f in lines:
            x = decode_with_sox(f)
            if x is None or len(x) < SR // 10:
                continue
            write_wav(dst / f"{spk}__{f.stem.lower()}.wav", place_in_clip(x, rng, 40.0))
            out["unknown"] += 1
        if keyword_dst is None or d.name not in HEDGEWARS_ENGLISH:
            continue
        for stem in HEDGEWARS_TRAIN_KEYWORDS:
            word, x = HEDGEWARS_KEYWORDS[stem], decode_with_sox(d / f"{stem}.ogg")
            if x is not None:
                out["keywords"] += _write_keyword_placements(keyword_dst / word / f"{spk}__{word}", trim(x)[:SR], rng,
                                                             renditions)
    return out


MEGAGLEST = Path("/usr/share/games/megaglest/tilesets")             # Debian megaglest-data


def import_real_noise(dst: Path, min_s: float = 7.5) -> int:
    """Real recorded ambience for ``_background_noise_`` (Debian megaglest-data, CC-BY-SA-3.0): the tilesets'
    looping field recordings (forest day and night, insects, rain, wind, desert, Mediterranean), de-duplicated
    (tilesets share files), at least ``min_s`` long, 16 kHz mono. Designed sounds and short effects are left out."""
    if shutil.which("sox") is None or not MEGAGLEST.is_dir():
        return 0
    seen, n = set(), 0
    for f in sorted(MEGAGLEST.glob("*/sounds/*")):
        real = f.resolve()
        if real.suffix not in (".ogg", ".wav") or f.parent.parent.name == "hell" or not real.is_file():
            continue
        digest = hashlib.sha1(real.read_bytes()).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        x = decode_with_sox(real)
        if x is None or len(x) < min_s * SR:
            continue
        x = x / (np.abs(x).max() + 1e-9) * 0.5
        write_wav(dst / f"real-megaglest-{f.parent.parent.name}-{f.stem}.wav", x)
        n += 1
    return n


POCKETSPHINX = Path("/usr/share/pocketsphinx/test/data")
CODEC2 = Path("/usr/share/codec2/wav")                              # Debian codec2-examples
WARZONE = Path("/usr/share/games/warzone2100/base.wz")              # Debian warzone2100-data (a zip)
REAL_TEST_VERSION = 1


def real_speech_files() -> list[Path]:
    """Real human speech kept for the test streams only (never trained or calibrated on): pocketsphinx-testdata
    (LibriVox read speech, card names), codec2-examples (several English speakers, some over HF radio) and
    warzone2100-data's voice lines (several actors: tutorial, unit responses, mission briefings) -- whatever of
    them is installed. Warzone's ogg files are decoded once into edgeft's cache."""
    out = []
    if POCKETSPHINX.is_dir():
        out += sorted((POCKETSPHINX / "librivox").glob("*.wav")) + sorted((POCKETSPHINX / "cards").glob("*.wav"))
    if (CODEC2.is_dir() or WARZONE.is_file()) and shutil.which("sox") is not None:
        out += _decoded_test_speech()
    return out


def _decoded_test_speech() -> list[Path]:
    """codec2's wavs (some mu-law) and warzone's oggs as 16 kHz PCM wavs in edgeft's cache (built once)."""
    import tempfile
    import zipfile

    from ..utils.io import cache_dir

    def build(tmp: Path) -> str:
        if CODEC2.is_dir():   # f2400/m2400 and all.wav repeat forig/morig and the rest
            for f in sorted(CODEC2.glob("*.wav")):
                x = decode_with_sox(f) if f.stem not in ("all", "f2400", "m2400") else None
                if x is not None and len(x) > SR // 4:
                    write_wav(tmp / f"codec2-{f.stem}.wav", x)
        with (zipfile.ZipFile(WARZONE) if WARZONE.is_file() else contextlib.nullcontext()) as z, \
                tempfile.TemporaryDirectory() as td:
            for name in sorted(z.namelist()) if z is not None else []:
                if not name.endswith(".ogg") or not name.startswith(("audio/tutorial/", "audio/memressp/",
                                                                     "sequenceaudio/")):
                    continue
                src = Path(td) / "x.ogg"
                src.write_bytes(z.read(name))
                x = decode_with_sox(src)
                if x is not None and len(x) > SR // 4:
                    write_wav(tmp / ("warzone-" + name.replace("/", "-")[:-4] + ".wav"), x)
        return "ok"

    return _cached_wavs(cache_dir(f"real-speech-test-v{REAL_TEST_VERSION}"), build)


def _cached_wavs(d: Path, build) -> list[Path]:
    """The wavs of cache folder ``d``, built once: ``build(tmp)`` writes them into a sibling folder, which takes
    ``d``'s place whole when it is done (an interrupted build leaves no half folder behind)."""
    if (d / "COMPLETE").is_file():
        return sorted(d.glob("*.wav"))
    tmp = d.with_name(d.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "COMPLETE").write_text(f"{build(tmp)}\n")
    shutil.rmtree(d, ignore_errors=True)
    os.replace(tmp, d)
    return sorted(d.glob("*.wav"))


# Debian asterisk-core-sounds-{fr,it,ru}-wav and asterisk-prompt-it-menardi-wav: one professional voice each, in a
# language the built-in set never has. es_MX_f_Allison (asterisk-core-sounds-es-wav) is left out on purpose: its
# speaker is the English Allison, whose prompts are real _unknown_ clips of the built-in set.
OTHER_LANGUAGE_VOICES = ("fr_CA_f_June", "it_IT_m_Carlo", "it_IT_f_Menardi", "ru_RU_f_IvrvoiceRU")
OTHER_LANGUAGE_VERSION = 1


def other_language_speech_files(root: Path | None = None) -> list[Path]:
    """Real human speech in other languages, for a long negative test stream only (never trained or calibrated
    on): the Asterisk voice prompts of ``OTHER_LANGUAGE_VOICES`` that are installed (about 25 min of speech each,
    telephone band), decoded once from 8 kHz to 16 kHz wavs in edgeft's cache; their ``silence/`` files are left
    out. Nothing transcribes them, so words that sound like a keyword (Italian "no", Russian "он") can be in them:
    a detection there counts as a false accept, an upper bound."""
    from ..utils.io import cache_dir

    root = ASTERISK_SOUNDS if root is None else root
    src = [(v, f) for v in OTHER_LANGUAGE_VOICES if (root / v).is_dir()
           for f in sorted((root / v).rglob("*.wav")) if "silence" not in f.relative_to(root / v).parts]
    if not src or shutil.which("sox") is None:
        return []
    key = hashlib.sha1("|".join(f"{f}:{f.stat().st_size}" for _, f in src).encode()).hexdigest()[:10]

    def build(tmp: Path) -> str:
        def one(item):
            voice, f = item
            x = decode_with_sox(f)
            if x is not None and len(x) > SR // 4:
                name = "-".join(f.relative_to(root / voice).with_suffix("").parts)
                write_wav(tmp / f"asterisk-{voice}-{name}.wav", x)

        with ThreadPoolExecutor(max(2, os.cpu_count() or 2)) as ex:
            list(ex.map(one, src))
        return f"{len(src)} prompts from {', '.join(sorted({v for v, _ in src}))}"

    return _cached_wavs(cache_dir(f"real-speech-other-languages-v{OTHER_LANGUAGE_VERSION}-{key}"), build)


def real_speech_transcripts(files: list[Path] | None = None) -> dict[str, str | None]:
    """What each ``real_speech_files()`` recording says, by file name, where the package ships it: LibriVox and
    the card names (pocketsphinx-testdata's transcription files), warzone2100's tutorial lines (the subtitles in
    script/tutorial.js) and unit/console voice lines (their labels in audio/audio.cfg); None where nothing says
    (codec2's recordings, warzone's briefings and the tutorial lines without a subtitle)."""
    import zipfile

    out: dict[str, str | None] = {f.name: None for f in (real_speech_files() if files is None else files)}
    rx = re.compile(r"<s>(.*?)</s>\s*\((\S+)\)")
    for tr in (POCKETSPHINX / "librivox" / "transcription", POCKETSPHINX / "cards" / "cards.transcription"):
        if tr.is_file():
            for m in rx.finditer(tr.read_text(errors="replace")):
                if f"{m.group(2)}.wav" in out:
                    out[f"{m.group(2)}.wav"] = " ".join(m.group(1).split())
    if WARZONE.is_file():
        with zipfile.ZipFile(WARZONE) as z:
            names = set(z.namelist())
            js = z.read("script/tutorial.js").decode("latin-1") if "script/tutorial.js" in names else ""
            for m in re.finditer(r'"audio":\s*"(tut\d+)\.ogg"[^}]*?"message":\s*_\("((?:[^"\\]|\\.)*)"\)', js):
                if f"warzone-audio-tutorial-{m.group(1)}.wav" in out:
                    out[f"warzone-audio-tutorial-{m.group(1)}.wav"] = m.group(2)
            cfg = z.read("audio/audio.cfg").decode("latin-1") if "audio/audio.cfg" in names else ""
            labels = {m.group(1): m.group(2).strip() for m in re.finditer(r'audio\s+"([\w-]+)\.ogg"[^\n]*?/\*(.*?)\*/', cfg)}
            for n in names:
                if n.startswith("audio/memressp/") and n.endswith(".ogg"):
                    key = "warzone-" + n.replace("/", "-")[:-4] + ".wav"
                    if key in out and labels.get(n.rsplit("/", 1)[1][:-4]):
                        out[key] = labels[n.rsplit("/", 1)[1][:-4]]
    return out


def words_of_text(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def split_real_speech(keywords) -> dict:
    """The real test recordings by what they say: ``negative`` (a transcript with no keyword and no word that
    sounds like one: a homophone, or a word that begins with a keyword, e.g. "going"), ``keyword``
    ((path, the keywords said)) and ``unverified`` (no transcript: kept out of every stream, since nothing shows
    they are free of keywords)."""
    from . import lexicon

    files = real_speech_files()
    tr = real_speech_transcripts(files)
    kws = {k.lower() for k in keywords}
    lex = lexicon.available()
    neg, kw, unv = [], [], []
    for f in files:
        t = tr.get(f.name)
        if t is None:
            unv.append(f)
            continue
        ws = words_of_text(t)
        said = sorted({w for w in ws if w in kws})
        if said:
            kw.append((f, said))
        elif not (lex and any(lexicon.sounds_like_keyword(w, keywords) for w in ws)):
            neg.append(f)
        else:
            unv.append(f)
    return {"negative": neg, "keyword": kw, "unverified": unv}


def real_keyword_clips(keywords, val_pct: float = 10.0, test_pct: float = 10.0) -> list[tuple[str, str, Path]]:
    """Real human keywords said alone, offline (never trained on): the klettres-data en/en_GB "no", asterisk's
    vm-no, the ALSA channel-test phrases ending in a keyword ("Front Left"; Debian alsa-utils) and the keyword
    lines of the hedgewars voice actors that the speaker hash puts in the test split (``val_pct``/``test_pct``:
    the training run's)."""
    out = [(f"klettres-{lang}-no", "no", KLETTRES / lang / "syllab" / "no.ogg") for lang in ("en", "en_GB")]
    out.append(("asterisk-vm-no", "no", ASTERISK_EN / "vm-no.wav"))
    for f in sorted(Path("/usr/share/sounds/alsa").glob("*.wav")):
        w = f.stem.split("_")[-1].lower()
        if w in ("left", "right"):
            out.append((f"alsa-{f.stem}", w, f))
    for pack in HEDGEWARS_ENGLISH:
        if which_split(f"hw-{pack.lower()}", val_pct, test_pct) == "test":
            out += [(f"hedgewars-{pack}-{stem}", w, HEDGEWARS / pack / f"{stem}.ogg")
                    for stem, w in HEDGEWARS_KEYWORDS.items()]
    return [c for c in out if c[2].is_file() and c[1] in {k.lower() for k in keywords}]


# ------------------------------------------------------------------------------ long test streams
NEAR_MISS_STEM = "nm-"     # the built-in set's near-miss clips: _unknown_/<speaker>__nm-<word>_0.wav


def near_miss_word(path) -> str | None:
    """The word of a near-miss clip of the built-in set (one phoneme from a keyword: "stock", "let"; said alone),
    None for any other clip."""
    name = Path(path).stem
    tag = f"__{NEAR_MISS_STEM}"
    return name.split(tag, 1)[1].rsplit("_", 1)[0] if tag in name else None


def is_near_miss(path) -> bool:
    return near_miss_word(path) is not None


def make_stream(positives: list[tuple[np.ndarray, str]], negatives: list[np.ndarray], noise: list[np.ndarray],
                seconds: float, seed: int = 0, snr_db: float = 10.0, gap_s=(2.0, 5.0),
                once: bool = False) -> tuple[np.ndarray, list]:
    """A long stream: background noise at ``snr_db`` below the speech, keywords (and negative speech) placed
    with random gaps; returns (audio, events) with keyword start/end from energy trimming. A positive's label may
    be a list (a recording that says several keywords: one event each, spanning the recording). ``once``: each
    positive at most once (the stream ends after the last)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    audio = np.zeros(n, np.float32)
    events = []
    t = int(rng.uniform(*gap_s) * SR)
    pi = 0
    while t < n - 2 * SR and (positives or negatives) and not (once and pi >= len(positives)):
        use_pos = positives and (not negatives or rng.random() < 0.6)
        if use_pos:
            x, label = positives[pi % len(positives)]
            pi += 1
        else:
            x, label = negatives[int(rng.integers(len(negatives)))], None
        x = trim(x)
        x = x / (np.abs(x).max() + 1e-9) * 0.5 * 10 ** (rng.uniform(-6, 0) / 20)
        if t + len(x) >= n:
            break
        audio[t:t + len(x)] += x
        for lab in ([label] if isinstance(label, str) else label or []):   # a recording may say several
            events.append({"label": lab, "start_s": round(t / SR, 4), "end_s": round((t + len(x)) / SR, 4)})
        t += len(x) + int(rng.uniform(*gap_s) * SR)
    speech_rms = np.sqrt(np.mean(audio[np.abs(audio) > 1e-4] ** 2)) if np.any(np.abs(audio) > 1e-4) else 0.05
    bg = np.zeros(n, np.float32)
    if noise:
        pos = 0
        while pos < n:
            nz = noise[int(rng.integers(len(noise)))]
            seg = nz[: n - pos]
            bg[pos:pos + len(seg)] = seg
            pos += len(seg)
    else:
        bg = noise_like(n, rng)
    bg = bg / (np.std(bg) + 1e-9) * speech_rms * 10 ** (-snr_db / 20)
    return np.clip(audio + bg, -1, 1).astype(np.float32), events
