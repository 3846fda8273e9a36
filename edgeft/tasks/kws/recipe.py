"""The keyword-spotting recipe (torch-free: the device side reads the same feature/stream settings)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

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

    def logmel(self):
        from ...runtime.features import LogMel

        sr = self.sample_rate
        win = int(round(self.win_ms * sr / 1000))
        if win > self.n_fft:
            raise ValueError(f"features.win_ms ({self.win_ms}) is longer than n_fft ({self.n_fft} samples)")
        return LogMel(sample_rate=sr, n_fft=self.n_fft, win=win, hop=int(round(self.hop_ms * sr / 1000)),
                      n_mels=self.n_mels, f_min=self.f_min, f_max=self.f_max, clip_samples=int(self.clip_ms * sr / 1000))


class AudioAugmentCfg(Section):
    time_shift_ms: float = Field(100.0, ge=0)
    noise_prob: float = Field(0.8, ge=0, le=1)
    snr_db: tuple[float, float] = (0.0, 25.0)
    gain_db: tuple[float, float] = (-6.0, 0.0)
    freq_masks: int = Field(2, ge=0)
    freq_mask_width: int = Field(5, ge=0)
    time_masks: int = Field(2, ge=0)
    time_mask_width: int = Field(10, ge=0)


class StreamCfg(Section):
    hop_ms: float = Field(20.0, gt=0, description="inference every hop")
    smooth_ms: float = Field(100.0, ge=0, description="moving average of posteriors")
    threshold: float = Field(0.7, gt=0, lt=1)
    refractory_s: float = Field(1.0, ge=0)


class KwsRecipe(RecipeBase):
    task: Literal["kws"] = "kws"
    keywords: list[str] = Field(default_factory=lambda: list(KEYWORDS))
    features: FeaturesCfg = Field(default_factory=FeaturesCfg)
    augment_audio: AudioAugmentCfg = Field(default_factory=AudioAugmentCfg)
    stream: StreamCfg = Field(default_factory=StreamCfg)
    val_percent: float = Field(10.0, ge=0, lt=50)
    test_percent: float = Field(10.0, ge=0, lt=50)

    @field_validator("keywords")
    @classmethod
    def _kw(cls, v):
        if len(v) < 1 or len(set(v)) != len(v):
            raise ValueError("keywords must be a non-empty list without duplicates")
        if any(k.startswith("_") for k in v):
            raise ValueError("keywords may not start with '_' (reserved for _unknown_ / _silence_)")
        return v


register_recipe_class("kws", KwsRecipe)
