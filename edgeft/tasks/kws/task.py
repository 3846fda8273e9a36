"""Keyword spotting (Speech Commands style, 12 classes): data, waveform + SpecAugment augmentation, log-mel
features identical to the numpy front end the device runs, and the streaming parts of the manifest."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ...data.audio import TTS_NAME, UNKNOWN, load_clips, make_kws_tts, read_wav, scan_speech_commands, tts_dir
from ...errors import DataError
from ...runtime.features import LOG_EPS, LogMel
from ...utils.log import info, warn
from ..base import TaskData, epoch_batches
from ..classify_torch import TorchClassification
from .device import DEVICE
from .recipe import KwsRecipe  # noqa: F401  (registers the recipe class)


def _hop_and_smooth(recipe) -> tuple[int, int]:
    """The detector's hop (samples) and trailing-average length (hops), as KwsDetector derives them from the
    manifest: the streaming graph and threshold calibration must use the same ones."""
    sc = recipe.stream
    hop = int(round(sc.hop_ms * recipe.features.logmel().sample_rate / 1000))
    return hop, max(1, int(round(sc.smooth_ms / sc.hop_ms)))


class KwsSplit:
    def __init__(self, clips: np.ndarray, targets: np.ndarray, speakers: list[str]):
        self.clips, self.targets, self.speakers = clips, targets, speakers

    def __len__(self) -> int:
        return int(len(self.targets))


def torch_logmel(wave: torch.Tensor, lm: LogMel, warp: torch.Tensor | None = None) -> torch.Tensor:
    """(B, S) float32 -> (B, n_feat, T): the numpy LogMel (and MFCC) maths in torch (tested equal). ``warp``: one
    vocal-tract-length factor per clip (``vtlp_warp``), applied to the power spectrum before the mel filters."""
    from ...runtime.features import dct_matrix, hann_periodic, mel_filterbank

    w = torch.zeros(lm.n_fft)
    off = (lm.n_fft - lm.win) // 2
    w[off:off + lm.win] = torch.from_numpy(hann_periodic(lm.win))
    fb = torch.from_numpy(mel_filterbank(lm.n_fft, lm.n_mels, lm.sample_rate, lm.f_min, lm.f_max))
    frames = wave.unfold(-1, lm.n_fft, lm.hop) * w.to(wave.device)
    spec = torch.fft.rfft(frames, n=lm.n_fft)
    power = spec.real ** 2 + spec.imag ** 2
    if warp is not None:
        power = vtlp_warp(power, warp.to(wave.device), lm.sample_rate)
    out = torch.log(power @ fb.to(wave.device) + LOG_EPS)
    if lm.n_mfcc:
        out = out @ torch.from_numpy(dct_matrix(lm.n_mfcc, lm.n_mels)).to(wave.device)
    return out.transpose(1, 2).contiguous()


def vtlp_warp(power: torch.Tensor, alpha: torch.Tensor, sample_rate: int, f_hi: float = 4800.0) -> torch.Tensor:
    """Vocal tract length perturbation (Jaitly & Hinton 2013) of a (B, T, bins) power spectrum: frequency f moves
    to alpha * f up to a boundary, then linearly to Nyquist (which stays put), one alpha per clip; each output bin
    reads the input at the inverse warp, linearly interpolated. A different speaker's formants, same words."""
    b, _, nb = power.shape
    nyq = sample_rate / 2
    f_out = torch.linspace(0, nyq, nb, device=power.device)[None]                 # (1, bins)
    a = alpha.reshape(b, 1).to(power.dtype)
    b0 = f_hi * torch.clamp(a, max=1.0) / a                                       # input boundary
    src = torch.where(f_out <= b0 * a, f_out / a, nyq - (nyq - f_out) * (nyq - b0) / (nyq - b0 * a))
    pos = (src / nyq * (nb - 1)).clamp(0, nb - 1)
    lo = pos.floor().long().clamp(max=nb - 2)
    t = (pos - lo).unsqueeze(1)
    idx = lo.unsqueeze(1).expand(-1, power.shape[1], -1)
    return torch.gather(power, 2, idx) * (1 - t) + torch.gather(power, 2, idx + 1) * t


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
        noise = [read_wav(p) for p in files.noise]
        limits = {"train": recipe.data.train_limit, "val": recipe.data.val_limit, "test": recipe.data.test_limit}
        for name, items in files.splits.items():
            n = limits.get(name)
            if n and n < len(items):
                items = [items[i] for i in np.sort(rng.permutation(len(items))[:n])]
            clips, tg, spk, sk = load_clips(items, files.classes, lm.clip_samples, recipe.data.strict,
                                            recipe.data.workers)
            skipped += sk
            clips, tg, spk = _balance(clips, tg, spk, files.classes, recipe, noise, name, recipe.data.split_seed)
            out[name] = KwsSplit(clips, tg, spk)
        if skipped:
            warn(f"skipped {len(skipped)} unreadable or empty wav file(s), e.g. {', '.join(skipped[:3])} "
                 f"(use --set data.strict=true to fail instead)")
        for name in ("train", "val"):
            if len(out[name]) == 0:
                raise DataError(f"no readable clips in the {name} split of {files.root}")
        self._noise = noise
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
            lo, hi = a.vtlp
            warp = torch.empty(len(idx)).uniform_(lo, hi, generator=g) if hi > lo else None
            f = spec_augment(torch_logmel(x, lm, warp), a, g)
            yield f.unsqueeze(1).to(device), torch.from_numpy(split.targets[idx]).to(device)

    def before_epoch(self, model, data: TaskData, recipe, epoch: int, epochs: int, device, rd) -> TaskData | None:
        """Hard-negative mining rounds (recipe ``mining``) due at this epoch: mined with the model as it is now,
        or read back from RUN/hard_negatives_<round>.npz (a resumed run gets the same clips)."""
        mc = recipe.mining
        if not mc.rounds or rd is None:
            return None
        done = getattr(self, "_mined", set())
        at = [max(1, int(epochs * (i + 1) / (mc.rounds + 1))) for i in range(mc.rounds)]
        due = [i for i, e in enumerate(at) if e <= epoch and i not in done]
        if not due:
            return None
        tr = data.train
        clips, targets, spk = [tr.clips], [tr.targets], list(tr.speakers)
        unk = data.classes.index(UNKNOWN)
        for i in due:
            f = Path(rd.path) / f"hard_negatives_{i}.npz"
            if f.is_file():
                c = np.load(f)["clips"]
            else:
                c, meta = mine_hard_negatives(model, tr, data.classes, recipe, getattr(self, "_noise", []), device,
                                              seed=recipe.train.seed + 1000 + i)
                from ...utils.io import atomic_write_with

                def write(p, c=c):
                    with open(p, "wb") as fh:
                        np.savez(fh, clips=c)

                atomic_write_with(f, write)
                info(f"hard-negative mining round {i + 1}/{mc.rounds} (epoch {epoch + 1}): {len(c)} windows of "
                     f"{meta['minutes']:.0f} min of training-split negative audio scored >= {mc.min_score} on a "
                     f"keyword (max {meta['max_score']:.2f}); added to {UNKNOWN}")
            clips.append(c)
            targets.append(np.full(len(c), unk, np.int64))
            spk += [f"mined-{i}"] * len(c)
            done.add(i)
        self._mined = done
        import dataclasses

        return dataclasses.replace(data, train=KwsSplit(np.concatenate(clips), np.concatenate(targets), spk))

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
        return torch.randn(batch, 1, lm.n_feat, lm.frames(lm.clip_samples), generator=g) * 3 - 6

    def input_spec(self, recipe) -> dict:
        lm = recipe.features.logmel()
        return {"name": "input", "shape": ["batch", 1, lm.n_feat, lm.frames(lm.clip_samples)], "dtype": "float32"}

    def model_kwargs(self, recipe) -> dict:
        """Feature rows per frame (n_mels, or n_mfcc for MFCCs): the temporal models' input channels."""
        return {"n_mels": recipe.features.logmel().n_feat}

    def preprocess_spec(self, recipe) -> dict:
        return recipe.features.logmel().spec()

    def streaming_model(self, model, recipe, n_labels: int):
        """(stateful wrapper, facts for the manifest) for causal temporal models (ds_tcn), None otherwise: one
        graph call per hop, from the hop's audio samples to the smoothed posteriors."""
        if not hasattr(model, "receptive_field"):
            return None
        from ...models.audio import audio_streaming_wrapper, streaming_wrapper

        lm = recipe.features.logmel()
        hop, smooth = _hop_and_smooth(recipe)
        if hop % lm.hop:
            return None
        frames = lm.frames(lm.clip_samples)
        w = audio_streaming_wrapper(streaming_wrapper(model, frames, hop // lm.hop), lm, hop, smooth, n_labels)
        return w, {"input": "audio", "hop_samples": hop, "pad_samples": lm.n_fft - lm.hop,
                   "new_frames": hop // lm.hop, "smooth_hops": smooth, "window_frames": frames}

    def calibrate_bundle(self, bundle_dir: Path, manifest: dict, recipe, source: str) -> dict:
        """The bundle's own detection threshold, chosen on the validation streams (val split: its keywords between
        unknown words and real speakers, and ``calibration_minutes`` of negative audio) for
        ``stream.target_fa_per_hour``: scored through the same runtime and posterior smoothing as the detector,
        so an INT8 bundle gets the threshold its own scores need. Returns the manifest's ``stream`` section."""
        from ...bench.audio_data import near_miss_clips, validation_streams
        from ...bench.kws_scoring import choose_threshold, clip_peaks, near_miss_report
        from ...runtime.kws import confirm_scores, window_logits, window_posteriors
        from ...stages.parity import parity_runner

        sc = recipe.stream
        stream = self.extra_manifest(recipe)["stream"]
        labels = manifest["labels"]
        st = validation_streams(source, labels, sc.calibration_minutes, recipe.val_percent, recipe.test_percent,
                                seed=recipe.data.split_seed, near_misses=sc.calibration_near_misses)
        near = [] if sc.calibration_near_misses else near_miss_clips(
            f"{source}:val", labels, recipe.val_percent, recipe.test_percent)
        lm = recipe.features.logmel()
        hop, smooth = _hop_and_smooth(recipe)
        confirm = int(round(sc.confirm_ms / sc.hop_ms))        # as KwsDetector rounds it
        frames = lm.frames(lm.clip_samples)
        runner_cls, how = parity_runner(manifest)
        kw_idx = [labels.index(k) for k in recipe.keywords if k in labels]
        with runner_cls(bundle_dir, manifest) as runner:
            infer = window_logits(runner, manifest)

            def scores(a):      # what the detector thresholds: smoothed posteriors, confirmed if stream.confirm_ms
                return confirm_scores(window_posteriors(infer, lm, frames, a, hop, smooth), kw_idx, confirm)
            pp, pn = scores(st["positive"]["audio"]), scores(st["negative"]["audio"])
            peaks = clip_peaks(scores, [x for _, x in near], kw_idx, hop) if near else []
        c = choose_threshold(pp, pn, st["positive"]["truth"], st["negative"]["truth"]["length_sec"], labels, kw_idx,
                             hop / lm.sample_rate, sc.refractory_s, target_fa_per_hour=sc.target_fa_per_hour,
                             max_substitution_rate=sc.max_substitution_rate)
        stream["threshold"] = float(c["threshold"])
        stream["calibration"] = {
            **c, "recipe_threshold": sc.threshold, "runner": how,
            "positive_keywords": len(st["positive"]["truth"]["events"]),
            "stream": {k: st[k]["truth"]["source"] for k in ("positive", "negative")},
            "negative_speech": st["negative"]["truth"]["negative_speech"],
            **({"near_miss_words": {**near_miss_report([n for n, _ in near], peaks, labels, c["threshold"]),
                                    "note": "not in the false-accept budget (stream.calibration_near_misses: false)"}}
               if near else {}),
            "rule": "the lowest threshold whose false accepts in the validation streams' non-keyword audio are at "
                    "most target_fa_per_hour x its hours, and whose substitutions (a wrong keyword fired within a "
                    "keyword's scoring window) are at most max_substitution_rate x the keywords said"}
        return stream

    def extra_manifest(self, recipe) -> dict:
        s = recipe.stream
        return {"stream": {"hop_ms": s.hop_ms, "smooth_ms": s.smooth_ms, "threshold": s.threshold,
                           "refractory_s": s.refractory_s, "confirm_ms": s.confirm_ms,
                           "keywords": list(recipe.keywords)}}


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
    x = room_and_mic(x, a, lm, g)
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


def room_and_mic(x: torch.Tensor, a, lm: LogMel, g: torch.Generator) -> torch.Tensor:
    """Reverberation (a simulated room impulse response, direct path kept in place) and a random microphone
    response (high-pass 50-400 Hz, low-pass 3.4-8 kHz, two resonances of +-6 dB), in one FFT per batch; each
    clip's level (RMS) is kept, so gain and noise augmentation after it behave as before."""
    b, n = x.shape
    rev = (torch.rand(b, generator=g) < a.reverb_prob) if a.reverb_prob > 0 else torch.zeros(b, dtype=torch.bool)
    eq = (torch.rand(b, generator=g) < a.eq_prob) if a.eq_prob > 0 else torch.zeros(b, dtype=torch.bool)
    m = rev | eq
    if not bool(m.any()):
        return x
    nfft, bank_f = _rir_spectra(a, lm, n) if a.reverb_prob > 0 else ((1 << int(np.ceil(np.log2(n)))) * 2, None)
    freqs = torch.fft.rfftfreq(nfft, 1 / lm.sample_rate).clamp_min(1.0)
    k = int(m.sum())
    H = torch.ones(k, len(freqs), dtype=torch.complex64)
    r, e = rev[m], eq[m]
    if bool(r.any()):
        pick = torch.randint(len(bank_f), (int(r.sum()),), generator=g)
        H[r] = bank_f[pick]
    if bool(e.any()):
        u = torch.rand(int(e.sum()), 6, generator=g)
        hp = (50 * 8 ** u[:, :1])                                      # 50-400 Hz
        lp = 3400 * (8000 / 3400) ** u[:, 1:2]                         # 3.4-8 kHz
        gain = 1 / torch.sqrt(1 + (hp / freqs) ** 4) / torch.sqrt(1 + (freqs / lp) ** 8)
        lf = torch.log2(freqs)
        lo, hi = float(np.log2(200)), float(np.log2(6000))
        for c, d in ((2, 3), (4, 5)):
            centre = lo + u[:, c:c + 1] * (hi - lo)
            gain = gain * 10 ** ((u[:, d:d + 1] * 12 - 6) * torch.exp(-0.5 * ((lf - centre) / 0.5) ** 2) / 20)
        H[e] = H[e] * gain
    y = torch.fft.irfft(torch.fft.rfft(x[m], n=nfft) * H, n=nfft)[:, :n]
    rms_in = x[m].pow(2).mean(1, keepdim=True).sqrt()
    rms_out = y.pow(2).mean(1, keepdim=True).sqrt().clamp_min(1e-8)
    out = x.clone()
    out[m] = y * (rms_in / rms_out)
    return out


_RIR_F: dict = {}


def _rir_spectra(a, lm: LogMel, n: int):
    """(nfft, spectra of the impulse-response bank), computed once per process."""
    key = (tuple(a.rt60_s), a.rooms, lm.sample_rate, n)
    if key not in _RIR_F:
        from ...data.rir import rir_bank

        bank = rir_bank(n=a.rooms, rt60=tuple(a.rt60_s), sr=lm.sample_rate)
        nfft = 1 << int(np.ceil(np.log2(n + max(len(h) for h in bank))))
        _RIR_F[key] = (nfft, torch.stack([torch.fft.rfft(torch.from_numpy(h), n=nfft) for h in bank]))
    return _RIR_F[key]


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


def _balance(clips, tg, spk, classes, recipe, noise: list[np.ndarray], split: str, seed: int):
    """Speech Commands' 12-class recipe (Warden 2018; MLPerf Tiny): ``_unknown_`` cut to ``unknown_percent`` of
    the split, and ``_silence_`` clips cut from the background-noise files to ``silence_percent`` of it when
    the folder has none. Seeded per split."""
    from ...data.audio import SILENCE

    unk, sil = classes.index(UNKNOWN), classes.index(SILENCE)
    rng = np.random.default_rng([seed, ["train", "val", "test"].index(split)])
    keep = np.ones(len(tg), bool)
    if recipe.unknown_percent is not None:
        u = np.flatnonzero(tg == unk)
        known = int((tg != unk).sum())
        want = int(round(known * recipe.unknown_percent / (100 - recipe.unknown_percent)))
        if len(u) > want:
            keep[rng.choice(u, len(u) - want, replace=False)] = False
    clips, tg, spk = clips[keep], tg[keep], [s for s, k in zip(spk, keep) if k]
    if recipe.silence_percent is not None and not (tg == sil).any() and noise:
        n = int(round(len(tg) * recipe.silence_percent / (100 - recipe.silence_percent)))
        noise = [x for x in noise if len(x) > clips.shape[1]]
        if noise and n:
            add = np.zeros((n, clips.shape[1]), np.int16)
            for i in range(n):
                x = noise[int(rng.integers(len(noise)))]
                o = int(rng.integers(len(x) - clips.shape[1]))
                add[i] = (np.clip(x[o:o + clips.shape[1]] * rng.uniform(0, 1), -1, 1) * 32767).astype(np.int16)
            clips = np.concatenate([clips, add])
            tg = np.concatenate([tg, np.full(n, sil, np.int64)])
            spk = spk + [f"noise-{split}"] * n
    return clips, tg, spk


@torch.no_grad()
def mine_hard_negatives(model, train: KwsSplit, classes: list[str], recipe, noise: list[np.ndarray], device,
                        seed: int) -> tuple[np.ndarray, dict]:
    """Windows of a long training-split negative stream (unknown words and real speech between pauses, over
    background noise at 10 dB SNR) on which the model fires: the highest keyword posteriors, 1 s apart."""
    from ...data.audio import make_stream

    mc = recipe.mining
    lm = recipe.features.logmel()
    unk = classes.index(UNKNOWN)
    kw = [i for i, c in enumerate(classes) if not c.startswith("_")]
    negs = [train.clips[j].astype(np.float32) / 32767 for j in np.flatnonzero(train.targets == unk)]
    if not negs:
        return np.zeros((0, lm.clip_samples), np.int16), {"minutes": 0.0, "max_score": 0.0}
    audio, _ = make_stream([], negs, list(noise), mc.minutes * 60, seed=seed, snr_db=10.0, gap_s=(0.2, 1.5))
    feats = lm.frames_from(audio)
    frames = lm.frames(lm.clip_samples)
    step = max(1, int(round(0.1 * lm.sample_rate / lm.hop)))            # a window every 100 ms
    starts = np.arange(0, feats.shape[1] - frames + 1, step)
    was = model.training
    model.eval()
    scores = []
    for s in range(0, len(starts), 256):
        x = torch.from_numpy(np.stack([feats[:, a:a + frames] for a in starts[s:s + 256]])[:, None]).to(device)
        p = torch.softmax(model(x).float(), 1)[:, kw].max(1).values
        scores.append(p.cpu().numpy())
    model.train(was)
    scores = np.concatenate(scores) if scores else np.zeros(0)
    order = np.argsort(-scores)
    taken: list[int] = []
    gap = int(round(lm.sample_rate / lm.hop))                               # 1 s apart
    for j in order:
        if scores[j] < mc.min_score or len(taken) >= mc.max_clips:
            break
        if all(abs(int(starts[j]) - int(starts[t])) >= gap for t in taken):
            taken.append(int(j))
    out = np.stack([audio[starts[j] * lm.hop: starts[j] * lm.hop + lm.clip_samples] for j in taken]) \
        if taken else np.zeros((0, lm.clip_samples), np.float32)
    return (np.clip(out, -1, 1) * 32767).astype(np.int16), \
        {"minutes": len(audio) / lm.sample_rate / 60, "max_score": float(scores.max()) if len(scores) else 0.0}


def tts_path() -> Path:
    return tts_dir()

