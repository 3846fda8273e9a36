"""Backends: one module each, one :class:`~edgeft.backends.base.Backend` subclass per module, imported lazily.

``BACKENDS`` is the registry (name -> "module:Class"); each backend declares the bundle formats it builds and
runs, with the precisions it supports. Adding one is one file plus one line here (or, for code outside
edgeft, one :func:`register_backend` call). Importing a backend module never imports its runtime package.
"""
from __future__ import annotations

import importlib
from functools import lru_cache

from ..errors import BackendUnavailable, UnsupportedError, did_you_mean
from .base import PRECISIONS, Backend, BuildConfig, Precision, Runner, check_supported, support_table  # noqa: F401

BACKENDS: dict[str, str] = {
    "onnxruntime": "edgeft.backends.onnxruntime:OnnxRuntimeBackend",
    "openvino": "edgeft.backends.openvino:OpenVinoBackend",
    "tensorrt": "edgeft.backends.tensorrt:TensorRtBackend",
}


def register_backend(name: str, path: str) -> None:
    """Add a backend ("package.module:Class") to the registry."""
    if name in BACKENDS and BACKENDS[name] != path:
        raise ValueError(f"backend {name!r} registered twice ({BACKENDS[name]} and {path})")
    BACKENDS[name] = path
    _instances.cache_clear()


@lru_cache(maxsize=None)
def _instances() -> dict[str, Backend]:
    out = {}
    for name, path in BACKENDS.items():
        mod, _, cls = path.partition(":")
        out[name] = getattr(importlib.import_module(mod), cls)()
    return out


def backend_names() -> list[str]:
    return list(BACKENDS)


def get_backend(name: str) -> Backend:
    """A backend by name (not checked for availability)."""
    b = _instances().get(name)
    if b is None:
        raise UnsupportedError(f"unknown backend {name!r}.{did_you_mean(name, BACKENDS)} Valid: {', '.join(BACKENDS)}")
    return b


def formats() -> list[str]:
    """Every bundle format some backend builds, in registry order."""
    out: list[str] = []
    for b in _instances().values():
        out += [f for f in b.formats if f not in out]
    return out


def format_backend(fmt: str) -> Backend:
    for b in _instances().values():
        if fmt in b.formats:
            return b
    raise UnsupportedError(f"unknown format {fmt!r}.{did_you_mean(fmt, formats())} Valid: {', '.join(formats())}")


def backend_for(fmt: str) -> Backend:
    """The backend that runs a bundle format, checked usable here (BackendUnavailable with the install hint)."""
    b = format_backend(fmt)
    reason = b.unavailable_reason()
    if reason:
        raise BackendUnavailable(f"backend {b.name!r} unavailable: {reason}. Available: {', '.join(available()) or 'none'}",
                                 hint=b.install)
    return b


def available() -> list[str]:
    return [n for n, b in _instances().items() if not b.unavailable_reason()]


def report() -> dict[str, str | None]:
    """{backend: None if usable else the reason}; used by `edgeft doctor`."""
    return {n: b.unavailable_reason() for n, b in _instances().items()}
