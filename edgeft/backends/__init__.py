"""Backends: one module each (``onnxruntime``, ``openvino``, ``tensorrt``), imported lazily.

Each module provides ``build(onnx_path, out_dir, precision, calib, options) -> dict`` (writes model files,
returns manifest details) and a context-manager ``Runner(bundle_dir, manifest, threads=...)`` with
``infer(x) -> np.ndarray``. The format x precision table (what is supported, and why not otherwise) is
:data:`edgeft.backends.base.SUPPORT`; it is checked before any work starts.
"""
from __future__ import annotations

import importlib

from ..errors import BackendUnavailable
from .base import FORMATS, Precision, SUPPORT, check_supported  # noqa: F401

# format -> backend module that runs it
RUNTIME_MODULE = {"onnx": "onnxruntime", "onnxruntime": "onnxruntime", "openvino": "openvino",
                   "tensorrt": "tensorrt"}
_INSTALL = {"onnxruntime": "pip install 'edgeft[runtime]'", "openvino": "pip install 'edgeft[openvino]'",
            "tensorrt": "pip install 'edgeft[tensorrt]' on an NVIDIA machine, or use docker/Dockerfile.gpu "
                        "(x86 + GPU) / docker/Dockerfile.jetson"}


def backend_module(fmt: str):
    """The backend module for a bundle format (imports only that backend's package)."""
    name = RUNTIME_MODULE[fmt]
    mod = importlib.import_module(f"edgeft.backends.{name}")
    reason = mod.unavailable_reason()
    if reason:
        raise BackendUnavailable(f"backend {name!r} unavailable: {reason}. Available: {', '.join(available()) or 'none'}",
                                 hint=f"install with {_INSTALL[name]}")
    return mod


def available() -> list[str]:
    out = []
    for name in ("onnxruntime", "openvino", "tensorrt"):
        try:
            mod = importlib.import_module(f"edgeft.backends.{name}")
            if not mod.unavailable_reason():
                out.append(name)
        except ImportError:
            pass
    return out


def report() -> dict[str, str | None]:
    """{backend: None if usable else the reason}; used by `edgeft doctor`."""
    out = {}
    for name in ("onnxruntime", "openvino", "tensorrt"):
        mod = importlib.import_module(f"edgeft.backends.{name}")
        out[name] = mod.unavailable_reason()
    return out
