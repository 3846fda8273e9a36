"""Log-mel features in numpy: the same maths in training (torch port in tasks/kws.py), export parity and on
the device, tested against torchaudio. Torch-free.

Definition (``center=False``, so a frame only needs samples that already exist — streaming-friendly):
frame t covers samples [t*hop, t*hop + n_fft); a periodic Hann window of ``win`` samples is centred in
the n_fft frame (torch.stft's convention); power spectrum; HTK mel filterbank (torchaudio's
``melscale_fbanks(norm=None, mel_scale='htk')``); ``log(mel + 1e-6)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LOG_EPS = 1e-6


def hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int, f_min: float, f_max: float) -> np.ndarray:
    """(n_fft // 2 + 1, n_mels) triangular filters, as torchaudio.functional.melscale_fbanks(htk, norm=None)."""
    n_freqs = n_fft // 2 + 1
    all_freqs = np.linspace(0, sample_rate // 2, n_freqs)
    m_pts = np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2)
    f_pts = mel_to_hz(m_pts)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts[None, :] - all_freqs[:, None]
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return np.maximum(0.0, np.minimum(down, up)).astype(np.float32)


def dct_matrix(n_mfcc: int, n_mels: int) -> np.ndarray:
    """(n_mels, n_mfcc) orthonormal DCT-II, as torchaudio.functional.create_dct(n_mfcc, n_mels, norm="ortho")."""
    m = np.arange(n_mels)[:, None]
    k = np.arange(n_mfcc)[None, :]
    d = np.cos(np.pi / n_mels * (m + 0.5) * k) * np.sqrt(2.0 / n_mels)
    d[:, 0] *= 1 / np.sqrt(2.0)
    return d.astype(np.float32)


def hann_periodic(n: int) -> np.ndarray:
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)


@dataclass(frozen=True)
class LogMel:
    sample_rate: int = 16000
    n_fft: int = 512
    win: int = 400
    hop: int = 160
    n_mels: int = 40
    f_min: float = 20.0
    f_max: float = 7600.0
    clip_samples: int = 16000
    n_mfcc: int = 0            # > 0: MFCCs, the first n_mfcc DCT-II (ortho) coefficients of the log-mel frame

    @property
    def n_feat(self) -> int:
        """Rows of a feature frame: n_mfcc for MFCCs, else n_mels."""
        return self.n_mfcc or self.n_mels

    def silence_column(self) -> np.ndarray:
        """(n_feat, 1): the feature of digital silence (what the stream's window holds before audio arrives)."""
        col = np.full((1, self.n_mels), np.log(LOG_EPS), np.float32)
        if self.n_mfcc:
            col = col @ dct_matrix(self.n_mfcc, self.n_mels)
        return col.T.astype(np.float32)

    @classmethod
    def from_spec(cls, d: dict) -> "LogMel":
        return cls(sample_rate=int(d["sample_rate"]), n_fft=int(d["n_fft"]), win=int(d["win"]), hop=int(d["hop"]),
                   n_mels=int(d["n_mels"]), f_min=float(d["f_min"]), f_max=float(d["f_max"]),
                   clip_samples=int(d["clip_samples"]), n_mfcc=int(d.get("n_mfcc", 0)))

    def spec(self) -> dict:
        mfcc = {"n_mfcc": self.n_mfcc, "dct": "DCT-II, orthonormal, of the log-mel frame"} if self.n_mfcc else {}
        return {"kind": "mfcc" if self.n_mfcc else "logmel", **mfcc, "sample_rate": self.sample_rate, "n_fft": self.n_fft, "win": self.win,
                "hop": self.hop, "n_mels": self.n_mels, "f_min": self.f_min, "f_max": self.f_max,
                "clip_samples": self.clip_samples, "frames": self.frames(self.clip_samples), "center": False,
                "window": "hann (periodic), centred in n_fft", "log": f"log(mel_power + {LOG_EPS})",
                "mel": "htk, no norm", "layout": f"N,1,{'n_mfcc' if self.n_mfcc else 'n_mels'},frames", "dtype": "float32", "audio": "mono float32 [-1, 1]"}

    def frames(self, n_samples: int) -> int:
        return 0 if n_samples < self.n_fft else 1 + (n_samples - self.n_fft) // self.hop

    # precomputed constants, cached per instance
    def _consts(self):
        c = _CACHE.get(self)
        if c is None:
            w = np.zeros(self.n_fft, np.float32)
            off = (self.n_fft - self.win) // 2
            w[off:off + self.win] = hann_periodic(self.win)
            c = (w, mel_filterbank(self.n_fft, self.n_mels, self.sample_rate, self.f_min, self.f_max),
                 dct_matrix(self.n_mfcc, self.n_mels) if self.n_mfcc else None)
            _CACHE[self] = c
        return c

    def frames_from(self, audio: np.ndarray, n_frames: int | None = None) -> np.ndarray:
        """(n_feat, T) log-mel (or MFCC) for the frames fully contained in ``audio`` (or its first n_frames)."""
        w, fb, dct = self._consts()
        t = self.frames(len(audio)) if n_frames is None else n_frames
        if t <= 0:
            return np.zeros((self.n_feat, 0), np.float32)
        if t > _CHUNK:   # long audio: in chunks (the index array below is t x n_fft int64)
            h = self.hop
            return np.concatenate([self.frames_from(audio[a * h:(min(a + _CHUNK, t) - 1) * h + self.n_fft])
                                   for a in range(0, t, _CHUNK)], 1)
        if t <= 8 and len(audio) >= (t - 1) * self.hop + self.n_fft:   # a streaming hop: a strided view
            fr = np.lib.stride_tricks.as_strided(np.ascontiguousarray(audio, np.float32), (t, self.n_fft),
                                                 (4 * self.hop, 4), writeable=False) * w
        else:
            idx = np.arange(self.n_fft)[None, :] + self.hop * np.arange(t)[:, None]
            fr = audio[idx].astype(np.float32) * w
        spec = np.fft.rfft(fr, n=self.n_fft, axis=1)
        power = (spec.real ** 2 + spec.imag ** 2).astype(np.float32)
        if t <= 8:   # a hop's frames: t x n_freqs x n_mels is below OpenBLAS's threading threshold, `@` stays here
            lmel = np.log(power @ fb + LOG_EPS)
            return (lmel if dct is None else lmel @ dct).T
        # einsum, not `@`: numpy's OpenBLAS wakes its thread pool for a product this size; next to torch's/
        # OpenVINO's spinning OpenMP threads on a 2-core machine that stalled a parity run for minutes (seen in
        # the test suite). Without BLAS the cost is fixed and predictable, as a real-time path needs.
        lmel = np.log(np.einsum("tf,fm->tm", power, fb) + LOG_EPS)
        if dct is not None:
            lmel = np.einsum("tm,mk->tk", lmel, dct)
        return lmel.T.astype(np.float32)

    def clip_features(self, clip: np.ndarray) -> np.ndarray:
        """(n_feat, frames) of a clip padded/trimmed to clip_samples."""
        return self.frames_from(fit_length(clip, self.clip_samples))


_CACHE: dict = {}
_CHUNK = 6000      # frames per chunk of a long input (60 s at a 10 ms hop)


def fit_length(x: np.ndarray, n: int) -> np.ndarray:
    x = np.asarray(x, np.float32)
    if len(x) >= n:
        return x[:n]
    return np.pad(x, (0, n - len(x)))


class StreamingLogMel:
    """Incremental features: each accept() computes only the frames completed by the new samples."""

    def __init__(self, lm: LogMel, pad: int = 0):
        """``pad``: zeros before the first sample (the detector uses n_fft - hop: every hop of audio then completes
        whole frames, the newest ending at the newest sample)."""
        self.lm = lm
        self.buf = np.zeros(pad, np.float32)   # samples not yet consumed by a full hop (< n_fft + hop)
        self.total_frames = 0

    def accept(self, samples: np.ndarray) -> np.ndarray:
        """Append samples; return the (n_feat, k) newly completed frames."""
        self.buf = np.concatenate([self.buf, np.asarray(samples, np.float32)])
        k = self.lm.frames(len(self.buf))
        if k == 0:
            return np.zeros((self.lm.n_feat, 0), np.float32)
        out = self.lm.frames_from(self.buf, k)
        self.buf = self.buf[k * self.lm.hop:]
        self.total_frames += k
        return out
