"""edgeft: fine-tune -> prune -> QAT -> ONNX/OpenVINO/ONNX Runtime/TensorRT -> honest edge benchmarks.

Importing ``edgeft`` is light and torch-free; the training side (``edgeft.stages``, ``edgeft.models``)
imports torch when used, the device side (``edgeft.runtime``, ``edgeft.bench``) never does.
"""
__version__ = "0.1.0"

from .errors import EdgeftError  # noqa: E402,F401
