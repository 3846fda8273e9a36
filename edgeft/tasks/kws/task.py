"""Keyword spotting (Speech Commands style, 12 classes): data, waveform + SpecAugment augmentation, log-mel
features identical to the numpy front end the device runs, and the streaming parts of the manifest."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ...data.audio import TTS_NAME, load_clips, make_kws_tts, read_wav, scan_speech_commands, tts_dir
from ...errors import DataError
from ...runtime.features import LOG_EPS, LogMel
from ...utils.log import warn
from ..base import TaskData, epoch_batches
from ..classify_torch import TorchClassification
from .device import DEVICE
from .recipe import KwsRecipe  # noqa: F401  (registers the recipe class)


class KwsSplit:
    def __init__(self, clips: np.ndarray, targets: np.ndarray, speakers: list[str]):
        self.clips, self.targets, self.speakers = clips, targets, speakers

    def __len__(self) -> int:
        return int(len(self.targets))


def torch_logmel(wave: torch.Tensor, lm: LogMel) -> torch.Tensor:
    """(B, S) float32 -> (B, n_mels, T): the numpy LogMel maths in torch (tested equal)."""
    from ...runtime.features import hann_periodic, mel_filterbank

    w = torch.zeros(lm.n_fft)
    off = (lm.n_fft - lm.win) // 2
    w[off:off + lm.win] = torch.from_numpy(hann_periodic(lm.win))
    fb = torch.from_numpy(mel_filterbank(lm.n_fft, lm.n_mels, lm.sample_rate, lm.f_min, lm.f_max))
    frames = wave.unfold(-1, lm.n_fft, lm.hop) * w.to(wave.device)
    spec = torch.fft.rfft(frames, n=lm.n_fft)
    power = spec.real ** 2 + spec.imag ** 2
    return torch.log(power @ fb.to(wave.device) + LOG_EPS).transpose(1, 2).contiguous()


class Task(TorchClassification):
    name = "kws"
    device = DEVICE

    # ------------------------------------------------------------------------------------ data
    def source_dir(self, source: str) -> Path:
        if source in (TTS_NAME, f"{TTS_NAME}:test", f"{TTS_NAME}:val"):
            return make_kws_tts()
        return Path(source).expanduser()

    def load_data(self, recipe, source: str | None = None) -> TaskData:
        src = source or recipe.data.source
        files = scan_speech_commands(self.source_dir(src), recipe.keywords, recipe.val_percent, recipe.test_percent)
        lm = recipe.features.logmel()
        out, skipped = {}, []
        rng = np.random.default_rng(recipe.data.split_seed + 1)
        limits = {"train": recipe.data.train_limit, "val": recipe.data.val_limit, "test": recipe.data.test_limit}
        for name, items in files.splits.items():
            n = limits.get(name)
            if n and n < len(items):
                items = [items[i] for i in np.sort(rng.permutation(len(items))[:n])]
            clips, tg, spk, sk = load_clips(items, files.classes, lm.clip_samples, recipe.data.strict,
                                            recipe.data.workers)
            skipped += sk
            out[name] = KwsSplit(clips, tg, spk)
        if skipped:
            warn(f"skipped {len(skipped)} unreadable or empty wav file(s), e.g. {', '.join(skipped[:3])} "
                 f"(use --set data.strict=true to fail instead)")
        for name in ("train", "val"):
            if len(out[name]) == 0:
                raise DataError(f"no readable clips in the {name} split of {files.root}")
        self._noise = [read_wav(p) for p in files.noise][:16]
        spk = {s: set(out[s].speakers) for s in out}
        info = {**files.info, "skipped": len(skipped), "speakers": {s: len(v) for s, v in spk.items()},
                "speaker_overlap": {"train&test": len(spk["train"] & spk["test"]), "train&val": len(spk["train"] & spk["val"])},
                "noise_files": len(files.noise)}
        return TaskData(str(files.root), files.classes, out["train"], out["val"], out["test"], info)

    def train_batches(self, data: TaskData, recipe, epoch: int, rank: int = 0, world: int = 1,
                      device: str = "cpu") -> Iterator[tuple]:
        split = data.train
        g, batches = epoch_batches(len(split), recipe, epoch, rank, world)
        lm = recipe.features.logmel()
        a = recipe.augment_audio
        noise = getattr(self, "_noise", [])
        for idx in batches:
            x = torch.from_numpy(split.clips[idx].astype(np.float32) / 32767.0)
            x = augment_wave(x, a, lm, noise, g)
            f = spec_augment(torch_logmel(x, lm), a, g)
            yield f.unsqueeze(1).to(device), torch.from_numpy(split.targets[idx]).to(device)

    def eval_batches(self, split, recipe, batch_size: int, device: str = "cpu") -> Iterator[tuple]:
        lm = recipe.features.logmel()
        for s in range(0, len(split), batch_size):
            x = torch.from_numpy(split.clips[s:s + batch_size].astype(np.float32) / 32767.0)
            yield torch_logmel(x, lm).unsqueeze(1).to(device), torch.from_numpy(split.targets[s:s + batch_size]).to(device)

    def eval_inputs(self, split, recipe, idx: np.ndarray) -> dict[str, np.ndarray]:
        lm = recipe.features.logmel()
        return {"input": np.stack([lm.clip_features(split.clips[i].astype(np.float32) / 32767.0)[None]
                                   for i in np.asarray(idx)]).astype(np.float32)}

    def calib_from_dir(self, recipe, d: str, n: int, rng=None) -> dict[str, np.ndarray]:
        lm = recipe.features.logmel()
        files = sorted(Path(d).rglob("*.wav"))[:n]
        feats = []
        for f in files:
            try:
                feats.append(lm.clip_features(read_wav(f))[None])
            except DataError:
                pass
        if not feats:
            raise DataError(f"--calib-data {d!r}: no readable wav files")
        return {"input": np.stack(feats).astype(np.float32)}

    # ------------------------------------------------------------------------------ deployment
    def example_input(self, recipe, batch: int = 1) -> torch.Tensor:
        lm = recipe.features.logmel()
        g = torch.Generator().manual_seed(0)
        return torch.randn(batch, 1, lm.n_mels, lm.frames(lm.clip_samples), generator=g) * 3 - 6

    def input_spec(self, recipe) -> dict:
        lm = recipe.features.logmel()
        return {"name": "input", "shape": ["batch", 1, lm.n_mels, lm.frames(lm.clip_samples)], "dtype": "float32"}

    def preprocess_spec(self, recipe) -> dict:
        return recipe.features.logmel().spec()

    def streaming_model(self, model, recipe):
        """(stateful wrapper, new frames per hop) for causal temporal models (ds_tcn); None otherwise."""
        if not hasattr(model, "receptive_field"):
            return None
        from ...models.audio import streaming_wrapper

        lm = recipe.features.logmel()
        hop = int(round(recipe.stream.hop_ms * lm.sample_rate / 1000))
        if hop % lm.hop:
            return None
        frames = lm.frames(lm.clip_samples)
        return streaming_wrapper(model, frames, hop // lm.hop), hop // lm.hop

    def extra_manifest(self, recipe) -> dict:
        s = recipe.stream
        return {"stream": {"hop_ms": s.hop_ms, "smooth_ms": s.smooth_ms, "threshold": s.threshold,
                           "refractory_s": s.refractory_s, "keywords": list(recipe.keywords)}}


# --------------------------------------------------------------------------------- augmentation
def augment_wave(x: torch.Tensor, a, lm: LogMel, noise: list[np.ndarray], g: torch.Generator) -> torch.Tensor:
    b, n = x.shape
    shift_max = int(a.time_shift_ms * lm.sample_rate / 1000)
    if shift_max:
        shifts = torch.randint(-shift_max, shift_max + 1, (b,), generator=g).tolist()
        out = torch.zeros_like(x)
        for i, s in enumerate(shifts):
            if s >= 0:
                out[i, s:] = x[i, :n - s]
            else:
                out[i, :n + s] = x[i, -s:]
        x = out
    lo, hi = a.gain_db
    x = x * (10 ** (torch.empty(b, 1).uniform_(lo, hi, generator=g) / 20))
    if noise and a.noise_prob > 0:
        use = torch.rand(b, generator=g) < a.noise_prob
        snr = torch.empty(b).uniform_(a.snr_db[0], a.snr_db[1], generator=g)
        for i in torch.nonzero(use).flatten().tolist():
            src = noise[int(torch.randint(len(noise), (1,), generator=g))]
            if len(src) <= n:
                continue
            o = int(torch.randint(len(src) - n, (1,), generator=g))
            nz = torch.from_numpy(src[o:o + n])
            p_sig = x[i].pow(2).mean().clamp_min(1e-8)
            p_nz = nz.pow(2).mean().clamp_min(1e-8)
            x[i] = x[i] + nz * torch.sqrt(p_sig / p_nz / (10 ** (snr[i] / 10)))
    return x.clamp(-1, 1)


def spec_augment(f: torch.Tensor, a, g: torch.Generator) -> torch.Tensor:
    """Frequency and time masks (SpecAugment), filled with each sample's mean."""
    b, nm, t = f.shape
    f = f.clone()
    mean = f.mean(dim=(1, 2))
    for i in range(b):
        for _ in range(a.freq_masks):
            w = int(torch.randint(0, a.freq_mask_width + 1, (1,), generator=g))
            s = int(torch.randint(0, max(nm - w, 1), (1,), generator=g))
            f[i, s:s + w, :] = mean[i]
        for _ in range(a.time_masks):
            w = int(torch.randint(0, a.time_mask_width + 1, (1,), generator=g))
            s = int(torch.randint(0, max(t - w, 1), (1,), generator=g))
            f[i, :, s:s + w] = mean[i]
    return f


def tts_path() -> Path:
    return tts_dir()

