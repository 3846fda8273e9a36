"""Model surgery without pickling: rebuild pruned layers from state_dict shapes, fold BatchNorm."""
from __future__ import annotations

import torch
import torch.nn as nn


def shape_signature(model: nn.Module) -> dict[str, list[int]]:
    """Weight shapes of every conv/linear layer: enough to tell (and rebuild) a pruned architecture."""
    return {n: list(m.weight.shape) for n, m in model.named_modules()
            if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) and getattr(m, "weight", None) is not None}


def _set(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, leaf = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if isinstance(parent, (nn.Sequential, nn.ModuleList)) and leaf.isdigit():
        parent[int(leaf)] = new
    else:
        setattr(parent, leaf, new)


def reshape_to_state_dict(model: nn.Module, sd: dict) -> int:
    """Replace conv / linear / norm layers whose shapes differ from ``sd`` by layers of the stored shape.

    Works for channel-pruned networks whose forward() does not hard-code channel counts (torchvision
    classifiers, EfficientNet-Lite, edgeft's KWS nets). Returns the number of replaced layers."""
    changed = 0
    for name, m in list(model.named_modules()):
        w = sd.get(f"{name}.weight")
        if isinstance(m, nn.modules.conv._ConvNd) and w is not None and tuple(w.shape) != tuple(m.weight.shape):
            out_c, in_per_group = int(w.shape[0]), int(w.shape[1])
            if m.groups == 1:
                groups, in_c = 1, in_per_group
            elif m.groups == m.in_channels:  # depthwise (channel multiplier = out / in)
                mult = max(m.out_channels // m.in_channels, 1)
                groups = out_c // mult
                in_c = groups * in_per_group
            else:
                groups, in_c = m.groups, in_per_group * m.groups
            new = type(m)(in_c, out_c, m.kernel_size, stride=m.stride, padding=m.padding, dilation=m.dilation,
                          groups=groups, bias=m.bias is not None, padding_mode=m.padding_mode)
            _set(model, name, new)
            changed += 1
        elif isinstance(m, nn.Linear) and w is not None and tuple(w.shape) != tuple(m.weight.shape):
            _set(model, name, nn.Linear(int(w.shape[1]), int(w.shape[0]), bias=m.bias is not None))
            changed += 1
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            rm = sd.get(f"{name}.running_mean", w)
            if rm is not None and int(rm.shape[0]) != m.num_features:
                _set(model, name, type(m)(int(rm.shape[0]), eps=m.eps, momentum=m.momentum, affine=m.affine,
                                          track_running_stats=m.track_running_stats))
                changed += 1
        elif isinstance(m, nn.PReLU) and w is not None and tuple(w.shape) != tuple(m.weight.shape):
            _set(model, name, nn.PReLU(int(w.shape[0])))
            changed += 1
    return changed


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm that directly follows a conv (in module order) into the conv; BN -> Identity.

    Done before QAT so the exported Q/DQ graph is Conv-only and runtimes can fuse it into int8 kernels."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model.eval()
    folded = 0
    for parent in model.modules():
        children = list(parent.named_children())
        for (n1, c1), (n2, c2) in zip(children, children[1:]):
            if isinstance(c1, (nn.Conv1d, nn.Conv2d)) and isinstance(c2, (nn.BatchNorm1d, nn.BatchNorm2d)) \
                    and c2.track_running_stats:
                setattr(parent, n1, fuse_conv_bn_eval(c1, c2))  # deep-copies c1: subclasses are kept
                setattr(parent, n2, nn.Identity())
                folded += 1
    # explicit attribute pairs such as EfficientNet-Lite's _expand_conv/_bn0 are not siblings in order
    for parent in model.modules():
        for conv_name, bn_name in (("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2")):
            c, b = getattr(parent, conv_name, None), getattr(parent, bn_name, None)
            if isinstance(c, nn.Conv2d) and isinstance(b, nn.BatchNorm2d):
                fused = fuse_conv_bn_eval(c, b)
                c.weight, c.bias = fused.weight, fused.bias
                setattr(parent, bn_name, nn.Identity())
                folded += 1
    model.edgeft_folded_bn = folded
    return model


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass (conv + linear), via forward hooks."""
    total = 0

    def conv_hook(m, inp, out):
        nonlocal total
        k = int(torch.tensor(m.weight.shape[2:]).prod())
        total += int(out.numel() // out.shape[0]) * (m.in_channels // m.groups) * k

    def lin_hook(m, inp, out):
        nonlocal total
        total += int(out.numel() // out.shape[0]) * m.in_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(lin_hook))
    was = model.training
    model.eval()
    try:
        model(example[:1])
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    return total
