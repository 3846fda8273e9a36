from __future__ import annotations

from typing import Literal

from pydantic import Field

from edgeft.sections import RecipeBase, register_recipe_class
from edgeft.tasks.image_cls.recipe import AugmentCfg, ImageInputCfg


class ToyRecipe(RecipeBase):
    task: Literal["toy_two_heads"] = "toy_two_heads"
    input: ImageInputCfg = Field(default_factory=ImageInputCfg)
    augment: AugmentCfg = Field(default_factory=AugmentCfg)
    embedding_weight: float = Field(0.01, ge=0, description="weight of the embedding's L2 penalty in the loss")


register_recipe_class("toy_two_heads", ToyRecipe)
