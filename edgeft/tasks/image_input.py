"""What tasks whose model input is one square RGB image share on the deployment side: the example input, the
input spec, the preprocessing written into bundles and calibration feeds from a folder of images. Each task says
how it preprocesses (``preprocess(recipe)``); the rest follows from that."""
from __future__ import annotations

import numpy as np

from ..data.images import Preprocess, normalize_batch


class SquareImageInput:
    def preprocess(self, recipe) -> Preprocess:
        raise NotImplementedError

    def example_input(self, recipe, batch: int = 1):
        import torch

        s = recipe.input.size
        return torch.randn(batch, 3, s, s, generator=torch.Generator().manual_seed(0))

    def input_spec(self, recipe) -> dict:
        s = recipe.input.size
        return {"name": "input", "shape": ["batch", 3, s, s], "dtype": "float32"}

    def preprocess_spec(self, recipe) -> dict:
        return {"kind": "image", **self.preprocess(recipe).to_dict()}

    def calib_from_dir(self, recipe, d: str, n: int, rng) -> dict[str, np.ndarray]:
        """Calibration feeds from a folder of representative images (unreadable ones skipped, counted)."""
        from ..data.images import read_calib_images

        p = self.preprocess(recipe)
        return {"input": normalize_batch(read_calib_images(d, n, rng, p), p)}
