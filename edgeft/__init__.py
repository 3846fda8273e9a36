"""edgeft: fine-tune -> prune -> QAT -> ONNX/OpenVINO/ONNX Runtime/TensorRT -> honest edge benchmarks.

The public API is one verb per stage (keyword-only options, defaults from the recipe sections)::

    import edgeft
    edgeft.finetune("image_cls/resnet18", out="runs/r18")
    edgeft.export("runs/r18", format="openvino", precision="int8")
    with edgeft.load("runs/r18/bundles/openvino-int8") as model: ...

Importing ``edgeft`` is light and torch-free; the training side (``edgeft.stages``, ``edgeft.models``)
imports torch when used, the device side (``edgeft.runtime``, ``edgeft.bench``) never does.
"""
__version__ = "0.1.0"

from .errors import EdgeftError  # noqa: E402,F401

_API = ("finetune", "prune", "qat", "export", "optimize", "bench", "run", "load")


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'edgeft' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_API])
