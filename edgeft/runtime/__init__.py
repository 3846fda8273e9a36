"""The device-side runtime: load a bundle and predict, with numpy + Pillow + ONNX Runtime / OpenVINO only.

Importing this module never imports torch.

Example::

    from edgeft import runtime
    with runtime.load("runs/r18/bundles/openvino-int8") as model:
        print(model.predict(["shoe.png"], top_k=3))
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..backends import backend_module
from ..bundle import STATUS_OK, read_manifest
from ..errors import BundleError


def load(bundle: str | os.PathLike, *, threads: int | None = None, device: str | None = None, batch: int | None = None,
         allow_failed: bool = False, trust=None) -> "Model":
    """Verify the bundle's checksums and open it on its backend (use as a context manager).

    Opening checks the bundle's target against this CPU (:mod:`edgeft.targets`): a bundle whose results would
    change here (full-range INT8 without VNNI, bf16 without AVX512_BF16/AMX) is refused with what to do; one
    that would only run slower opens with ``model.warnings``. ``trust``: public key files; when given (or set in
    EDGEFT_TRUSTED_KEYS / ~/.config/edgeft/trusted_keys), only bundles signed by one of them open."""
    keys = None
    if trust:
        from ..bundle import trusted_keys

        keys = trusted_keys(trust)
    m = read_manifest(bundle, trust=keys)
    check_preprocess(m, str(bundle))
    status = m.get("status", STATUS_OK)
    if status != STATUS_OK and not allow_failed:
        raise BundleError(f"bundle {str(bundle)!r} is marked {status!r}: {m.get('status_reason', '')}",
                          hint="re-export it (e.g. with QAT), or pass --allow-failed to use it anyway")
    if m.get("task") == "kws":
        from .kws import KwsModel

        return KwsModel(Path(bundle), m, threads=threads, device=device)
    return Model(Path(bundle), m, threads=threads, device=device, batch=batch)


def _int(d: dict, k: str, lo: int, hi: int) -> int:
    v = d.get(k)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ValueError(f"preprocess.{k} = {v!r} (an integer in {lo}..{hi} expected)")
    return v


def _num(d: dict, k: str, lo: float, hi: float) -> float:
    v = d.get(k)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
        raise ValueError(f"preprocess.{k} = {v!r} (a number in {lo}..{hi} expected)")
    return float(v)


def check_preprocess(m: dict, where: str) -> None:
    """The preprocessing spec is what the device computes before inference: every value in range, and what it
    produces has the model input's shape (a bad spec is one line, never an allocation of 2**40 pixels)."""
    pp = m.get("preprocess") or {}
    shape = list((m.get("inputs") or [{}])[0].get("shape") or [])
    try:
        if m.get("task") == "kws":
            if pp.get("kind") != "logmel":
                raise ValueError(f"preprocess.kind = {pp.get('kind')!r} ('logmel' expected for keyword spotting)")
            sr = _int(pp, "sample_rate", 1000, 192000)
            n_fft = _int(pp, "n_fft", 16, 1 << 16)
            _int(pp, "win", 16, n_fft)
            hop = _int(pp, "hop", 1, n_fft)
            n_mels = _int(pp, "n_mels", 1, 512)
            f_max = _num(pp, "f_max", 1, sr / 2)
            _num(pp, "f_min", 0, f_max - 1)
            clip = _int(pp, "clip_samples", n_fft, 60 * sr)
            frames = 1 + (clip - n_fft) // hop
            if pp.get("frames") != frames:
                raise ValueError(f"preprocess.frames = {pp.get('frames')!r}, the spec gives {frames}")
            want = [1, n_mels, frames]
        else:
            size = _int(pp, "size", 8, 4096)
            _int(pp, "resize", size, 8192)
            if pp.get("resize_mode", "square") not in ("square", "shorter"):
                raise ValueError(f"preprocess.resize_mode = {pp.get('resize_mode')!r} (square or shorter)")
            if pp.get("interpolation", "bilinear") not in ("bilinear", "bicubic", "nearest"):
                raise ValueError(f"preprocess.interpolation = {pp.get('interpolation')!r}")
            for k in ("mean", "std"):
                v = pp.get(k)
                if not (isinstance(v, list) and len(v) == 3 and all(
                        isinstance(x, (int, float)) and not isinstance(x, bool) and -1e3 < x < 1e3 for x in v)):
                    raise ValueError(f"preprocess.{k} = {v!r} (three numbers expected)")
            if min(pp["std"]) <= 0:
                raise ValueError(f"preprocess.std = {pp['std']!r} (must be > 0)")
            want = [3, size, size]
        if len(shape) != len(want) + 1 or shape[1:] != want:
            raise ValueError(f"preprocessing produces [batch, {', '.join(map(str, want))}] but inputs[0].shape is "
                             f"{shape}")
    except ValueError as e:
        raise BundleError(f"bundle {where!r}: {e}", hint="the manifest was edited or is from a broken export; "
                                                         "re-export the bundle") from None


def softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class Model:
    """A loaded image-classification bundle."""

    def __init__(self, path: Path, manifest: dict, threads=None, device=None, batch=None):
        from ..data.images import Preprocess

        self.path, self.manifest = path, manifest
        self.labels: list[str] = list(manifest["labels"])
        self.task = manifest.get("task", "image_cls")
        pp = manifest["preprocess"]
        self.preprocess = Preprocess.from_dict(pp) if pp.get("kind", "image") == "image" else None
        self.threads, self.device = threads, device
        self.mod = backend_module(manifest["format"])
        kw = {"batch": batch} if manifest["format"] == "openvino" else {}
        self.runner = self.mod.Runner(path, manifest, threads=threads, device=device, **kw)
        self._open = False

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def open(self) -> "Model":
        if not self._open:
            self.runner.__enter__()
            self._open = True
            from ..utils.log import warn

            for w in self.runner.warnings:   # a target mismatch that costs speed, not results
                warn(f"{self.path}: {w}")
        return self

    @property
    def warnings(self) -> list[str]:
        return list(self.runner.warnings)

    def close(self) -> None:
        if self._open:
            self.runner.__exit__(None, None, None)
            self._open = False

    def prepare(self, images) -> np.ndarray:
        """Images (paths, PIL images or HWC uint8 RGB arrays) -> the model's input batch."""
        from ..data.images import preprocess_images

        return preprocess_images(list(images), self.preprocess)

    def infer(self, x: np.ndarray) -> np.ndarray:
        self.open()
        return self.runner.infer(x)

    def predict(self, inputs, top_k: int = 5, batch_size: int = 32) -> list[list[tuple[str, float]]]:
        """Top-k (label, probability) per input; inputs are whatever ``prepare`` takes."""
        inputs = list(inputs)
        out = []
        k = min(top_k, len(self.labels))
        for s in range(0, len(inputs), batch_size):
            probs = softmax(self.infer(self.prepare(inputs[s:s + batch_size])))
            for p in probs:
                idx = np.argsort(-p)[:k]
                out.append([(self.labels[i], float(p[i])) for i in idx])
        return out
