"""Device side: image preprocessing and samples as image_cls; two outputs, both compared for parity."""
from __future__ import annotations

import numpy as np

from edgeft.tasks.image_cls.device import ImageClsDevice


class ToyDevice(ImageClsDevice):
    name = "toy_two_heads"
    title = "toy two-head classification"

    def parity(self, ref: dict, got: dict) -> dict:
        out = super().parity(ref, got)                       # logits: max-abs, cosine, top-1 agreement
        out["embedding_max_abs_diff"] = float(np.abs(np.asarray(ref["embedding"]) - got["embedding"]).max())
        return out

    def parity_failure(self, par: dict, precision: str) -> str | None:
        why = super().parity_failure(par, precision)
        if why is None and precision == "fp32" and par["embedding_max_abs_diff"] > 1e-3:
            return f"embedding max-abs-diff {par['embedding_max_abs_diff']:.2e}"
        return why


DEVICE = ToyDevice()
