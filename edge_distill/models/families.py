"""The built-in model families: ConvNet (VGG-style) and MobileNet (depthwise-separable), each in
2-D for (C, H, W) images or 1-D for (C, L) signals, sized by width and depth."""

from __future__ import annotations

import torch
from torch import nn


class _Layers:
    """The 2-D layers for (C, H, W) images, the 1-D ones for (C, L) signals."""

    def __init__(self, input_shape: tuple[int, ...]):
        two_d = len(input_shape) == 3
        self.conv = nn.Conv2d if two_d else nn.Conv1d
        self.norm = nn.BatchNorm2d if two_d else nn.BatchNorm1d
        self.max_pool = nn.MaxPool2d if two_d else nn.MaxPool1d
        self.global_pool = nn.AdaptiveAvgPool2d if two_d else nn.AdaptiveAvgPool1d
        self.min_size = min(input_shape[1:])  # the smallest spatial side

    def conv_bn_relu(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
        return [self.conv(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
                self.norm(c_out), nn.ReLU(inplace=True)]

    def head(self, channels: int, num_classes: int) -> nn.Sequential:
        return nn.Sequential(self.global_pool(1), nn.Flatten(), nn.Linear(channels, num_classes))


class ConvNet(nn.Module):
    """VGG-style blocks (conv-bn-relu x2, max-pool) and a global-pool linear head, in 2-D for
    images or 1-D for signals.

    `width` sets the first block's channels; each further block doubles them. One family serves
    both roles: the default teacher is width 64 / depth 3, the default student width 16 / depth 2.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int, depth: int):
        super().__init__()
        kind = _Layers(input_shape)
        size = kind.min_size
        layers: list[nn.Module] = []
        channels = input_shape[0]
        for i in range(depth):
            out = width * 2**i
            layers += kind.conv_bn_relu(channels, out, 3) + kind.conv_bn_relu(out, out, 3)
            if size >= 2:  # pool while there is something left to pool
                layers.append(kind.max_pool(2))
                size //= 2
            channels = out
        self.features = nn.Sequential(*layers)
        self.head = kind.head(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) or (B, C, L) -> (B, num_classes)
        return self.head(self.features(x))


class MobileNet(nn.Module):
    """MobileNet-v1 style: a stride-2 stem, then `depth` stages of depthwise-separable blocks
    (3x3 depthwise + 1x1 pointwise), each stage halving the resolution and doubling the channels.
    Cheap in MACs, heavy in memory traffic: the kind of student int8 helps most on small CPUs."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int, depth: int):
        super().__init__()
        kind = _Layers(input_shape)
        stem_stride = 2 if kind.min_size >= 16 else 1
        layers = kind.conv_bn_relu(input_shape[0], width, 3, stem_stride)
        size = kind.min_size // stem_stride
        channels = width
        for i in range(depth):
            out = width * 2 ** (i + 1)
            stride = 2 if size >= 2 else 1
            size //= stride
            layers += kind.conv_bn_relu(channels, channels, 3, stride, groups=channels) + kind.conv_bn_relu(channels, out, 1)
            layers += kind.conv_bn_relu(out, out, 3, 1, groups=out) + kind.conv_bn_relu(out, out, 1)
            channels = out
        self.features = nn.Sequential(*layers)
        self.head = kind.head(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) or (B, C, L) -> (B, num_classes)
        return self.head(self.features(x))


FAMILIES = {"convnet": ConvNet, "mobilenet": MobileNet}
