"""The image-classification recipe: the deployment preprocessing and the training augmentation (torch-free)."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator

from ...sections import RecipeBase, Section, register_recipe_class


class ImageInputCfg(Section):
    """Deployment preprocessing: identical in training eval, export parity and the torch-free runtime."""

    size: int = Field(32, ge=8, le=1024, description="model input height = width")
    resize: Optional[int] = Field(None, ge=8, le=2048, description="resize target before the center crop")
    resize_mode: Literal["square", "shorter"] = "square"
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    @model_validator(mode="after")
    def _check(self):
        if self.resize is not None and self.resize < self.size:
            raise ValueError(f"input.resize ({self.resize}) must be >= input.size ({self.size})")
        if any(s <= 0 for s in self.std):
            raise ValueError("input.std values must be > 0")
        return self

    @property
    def resize_to(self) -> int:
        return self.resize or self.size


class AugmentCfg(Section):
    hflip: bool = True
    pad_crop: int = Field(0, ge=0, description="random crop after zero padding by N pixels")
    random_resized_crop: Optional[tuple[float, float]] = Field(None, description="area scale range, e.g. [0.5, 1]")

    @field_validator("random_resized_crop")
    @classmethod
    def _rrc(cls, v):
        if v is not None and not (0 < v[0] <= v[1] <= 1):
            raise ValueError("needs 0 < low <= high <= 1")
        return v


class ImageClsRecipe(RecipeBase):
    task: Literal["image_cls"] = "image_cls"
    input: ImageInputCfg = Field(default_factory=ImageInputCfg)
    augment: AugmentCfg = Field(default_factory=AugmentCfg)


register_recipe_class("image_cls", ImageClsRecipe)
