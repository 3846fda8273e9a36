"""The keyword-spotting recipe (torch-free: the device side reads the same feature/stream settings)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ...data.audio import KEYWORDS
from ...sections import RecipeBase, Section, register_recipe_class


class FeaturesCfg(Section):
    sample_rate: int = Field(16000, gt=0)
    clip_ms: int = Field(1000, gt=0, description="clip length the model sees (window)")
    n_mels: int = Field(40, gt=0)
    win_ms: float = Field(25.0, gt=0)
    hop_ms: float = Field(10.0, gt=0)
    n_fft: int = Field(512, gt=0)
    f_min: float = Field(20.0, ge=0)
    f_max: float = Field(7600.0, gt=0)
    n_mfcc: int = Field(0, ge=0, description="0: log-mel features; N > 0: the first N MFCCs (MLPerf Tiny: 10)")

    @model_validator(mode="after")
    def _consistent(self):
        if self.n_mfcc > self.n_mels:
            raise ValueError(f"n_mfcc ({self.n_mfcc}) exceeds n_mels ({self.n_mels}): MFCCs are taken from the mel bands")
        if int(round(self.win_ms * self.sample_rate / 1000)) > self.n_fft:
            raise ValueError(f"win_ms ({self.win_ms}) is longer than n_fft ({self.n_fft} samples)")
        return self

    def logmel(self):
        from ...runtime.features import LogMel

        sr = self.sample_rate
        win = int(round(self.win_ms * sr / 1000))
        return LogMel(sample_rate=sr, n_fft=self.n_fft, win=win, hop=int(round(self.hop_ms * sr / 1000)),
                      n_mels=self.n_mels, f_min=self.f_min, f_max=self.f_max, clip_samples=int(self.clip_ms * sr / 1000),
                      n_mfcc=self.n_mfcc)


class AudioAugmentCfg(Section):
    time_shift_ms: float = Field(100.0, ge=0)
    noise_prob: float = Field(0.8, ge=0, le=1)
    snr_db: tuple[float, float] = (0.0, 25.0)
    gain_db: tuple[float, float] = (-6.0, 0.0)
    freq_masks: int = Field(2, ge=0)
    freq_mask_width: int = Field(5, ge=0)
    time_masks: int = Field(2, ge=0)
    time_mask_width: int = Field(10, ge=0)
    reverb_prob: float = Field(0.0, ge=0, le=1, description="share of clips convolved with a simulated room "
                               "impulse response (pyroomacoustics, hybrid image-source + ray tracing)")
    rt60_s: tuple[float, float] = (0.15, 0.9)
    rooms: int = Field(160, gt=0, description="simulated impulse responses in the bank (seeded, cached)")
    eq_prob: float = Field(0.0, ge=0, le=1, description="share of clips through a random microphone response: "
                           "high-pass, low-pass (band-limiting, down to telephone band) and +-6 dB resonances")
    vtlp: tuple[float, float] = Field((1.0, 1.0), description="vocal tract length perturbation: each clip's "
                                      "spectrum warped by a factor drawn from this range ((1, 1): off)")

    @field_validator("vtlp")
    @classmethod
    def _vtlp(cls, v):
        if not 0.5 <= v[0] <= v[1] <= 2.0:
            raise ValueError(f"vtlp {list(v)}: give [low, high] with 0.5 <= low <= high <= 2 (e.g. [0.9, 1.1])")
        return v


class MiningCfg(Section):
    """Hard-negative mining: at evenly spaced epochs the model in training scans a long negative stream made of
    training-split audio only (unknown words, real speech, background noise); its windows that score highest
    on a keyword join ``_unknown_`` for the remaining epochs (kept in RUN/hard_negatives.npz)."""
    rounds: int = Field(0, ge=0, le=10)
    minutes: float = Field(20.0, gt=0, description="negative stream length per round")
    min_score: float = Field(0.2, gt=0, lt=1, description="a window is mined when a keyword's posterior is above")
    max_clips: int = Field(600, gt=0, description="per round, highest-scoring first, 1 s apart")


class StreamCfg(Section):
    hop_ms: float = Field(20.0, gt=0, description="inference every hop")
    smooth_ms: float = Field(100.0, ge=0, description="moving average of posteriors")
    threshold: float = Field(0.7, gt=0, lt=1)
    refractory_s: float = Field(1.0, ge=0)
    confirm_ms: float = Field(0.0, ge=0, le=2000, description="a keyword fires only if its smoothed posterior is "
                              "still at the threshold this long after reaching it (0: off); words that only begin "
                              "like a keyword fall back first; adds this much detection latency")
    calibrate: bool = Field(True, description="at export, choose the threshold on a validation stream (val split) "
                            "for target_fa_per_hour and max_substitution_rate and store it in the bundle")
    target_fa_per_hour: float = Field(1.0, gt=0, allow_inf_nan=False, description="false accepts per hour of "
                                      "non-keyword audio allowed at the calibrated threshold")
    max_substitution_rate: float = Field(0.01, ge=0, le=1, allow_inf_nan=False, description="substitutions (a wrong "
                                         "keyword fired within a keyword's scoring window) allowed at the calibrated "
                                         "threshold, per keyword said")
    calibration_minutes: float = Field(20.0, gt=0, description="negative audio in the validation stream")
    calibration_near_misses: bool = Field(
        False, description="count the built-in set's near-miss words (one phoneme from a keyword: 'stock', 'let') "
        "in the calibration budget; off: they are a quarter of its unknown clips, far denser than in speech, and "
        "alone would set the threshold; the share of them that trigger at it is reported instead")


class KwsRecipe(RecipeBase):
    task: Literal["kws"] = "kws"
    keywords: list[str] = Field(default_factory=lambda: list(KEYWORDS))
    features: FeaturesCfg = Field(default_factory=FeaturesCfg)
    augment_audio: AudioAugmentCfg = Field(default_factory=AudioAugmentCfg)
    stream: StreamCfg = Field(default_factory=StreamCfg)
    mining: MiningCfg = Field(default_factory=MiningCfg)
    val_percent: float = Field(10.0, ge=0, lt=50)
    test_percent: float = Field(10.0, ge=0, lt=50)
    unknown_percent: float | None = Field(None, ge=0, lt=100, description="cut _unknown_ to this share of each "
                                          "split (Speech Commands / MLPerf Tiny: 10); null keeps every clip")
    silence_percent: float | None = Field(None, ge=0, lt=100, description="without a _silence_ folder, cut this share "
                                          "of silence clips from _background_noise_ (MLPerf Tiny: 10)")

    @field_validator("keywords")
    @classmethod
    def _kw(cls, v):
        if len(v) < 1 or len(set(v)) != len(v):
            raise ValueError("keywords must be a non-empty list without duplicates")
        if any(k.startswith("_") for k in v):
            raise ValueError("keywords may not start with '_' (reserved for _unknown_ / _silence_)")
        return v


register_recipe_class("kws", KwsRecipe)
