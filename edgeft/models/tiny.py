"""Tiny models (a few thousand parameters) so the whole pipeline runs in seconds in tests and docs."""
from __future__ import annotations

from . import ModelSpec, register


def _conv_bn(cin, cout, k=3, s=1, groups=1):
    import torch.nn as nn

    return [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _test_cnn(num_classes: int, dropout: float | None = None, width: int = 16):
    import torch.nn as nn

    class TestCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(*_conv_bn(3, width, 3, 2), *_conv_bn(width, 2 * width, 3, 2),
                                          *_conv_bn(2 * width, 2 * width, 3, 1))
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.drop = nn.Dropout(dropout or 0.0)
            self.fc = nn.Linear(2 * width, num_classes)

        def forward(self, x):
            return self.fc(self.drop(self.pool(self.features(x)).flatten(1)))

    return TestCNN()


def _test_resnet(num_classes: int, dropout: float | None = None, width: int = 16):
    """Residual + depthwise blocks: exercises pruning dependency groups like real nets do."""
    import torch.nn as nn

    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.dw = nn.Sequential(*_conv_bn(c, c, 3, 1, groups=c))
            self.pw = nn.Sequential(nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c))
            self.act = nn.ReLU(inplace=True)

        def forward(self, x):
            return self.act(x + self.pw(self.dw(x)))

    class TestResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(*_conv_bn(3, width, 3, 2))
            self.layer1 = Block(width)
            self.down = nn.Sequential(*_conv_bn(width, 2 * width, 3, 2))
            self.layer2 = Block(2 * width)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.drop = nn.Dropout(dropout or 0.0)
            self.fc = nn.Linear(2 * width, num_classes)

        def forward(self, x):
            x = self.layer2(self.down(self.layer1(self.stem(x))))
            return self.fc(self.drop(self.pool(x).flatten(1)))

    return TestResNet()


register(ModelSpec(name="test_cnn", task="image_cls", build=_test_cnn, head="fc", family="test",
                   description="3-conv test CNN (~6k params) for fast tests"))
register(ModelSpec(name="test_resnet", task="image_cls", build=_test_resnet, head="fc", family="test",
                   description="tiny residual/depthwise test net (~5k params) for pruning tests"))
