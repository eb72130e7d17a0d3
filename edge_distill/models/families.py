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
        self.max_pool = nn.MaxPool2d if two_d else nn.MaxPool1d  # (kernel, stride, padding)
        self.global_pool = nn.AdaptiveAvgPool2d if two_d else nn.AdaptiveAvgPool1d
        self.min_size = min(input_shape[1:])  # the smallest spatial side

    def conv_bn_relu(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
        return [self.conv(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
                self.norm(c_out), nn.ReLU(inplace=True)]

    def head(self, channels: int, num_classes: int) -> nn.Sequential:
        return nn.Sequential(self.global_pool(1), nn.Flatten(), nn.Linear(channels, num_classes))

    def stem_stride(self) -> int:
        return 2 if self.min_size >= 16 else 1

    def halving_stages(self, width: int, depth: int, stem_stride: int) -> list[tuple[int, int, int]]:
        """(channels in, channels out, stride) of `depth` stages after a stem of `width` channels:
        each doubles the channels and halves the resolution while there is any left to halve."""
        size, channels, stages = self.min_size // stem_stride, width, []
        for i in range(depth):
            out, stride = width * 2 ** (i + 1), 2 if size >= 2 else 1
            size //= stride
            stages.append((channels, out, stride))
            channels = out
        return stages


class _FeaturesHead(nn.Module):
    """A family whose model is `features` then a global-pool classifier `head`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) or (B, C, L) -> (B, num_classes)
        return self.head(self.features(x))


class ConvNet(_FeaturesHead):
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


class MobileNet(_FeaturesHead):
    """MobileNet-v1 style: a stride-2 stem, then `depth` stages of depthwise-separable blocks
    (3x3 depthwise + 1x1 pointwise), each stage halving the resolution and doubling the channels.
    Cheap in MACs, heavy in memory traffic: the kind of student int8 helps most on small CPUs."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int, depth: int):
        super().__init__()
        kind = _Layers(input_shape)
        stem_stride = kind.stem_stride()
        layers = kind.conv_bn_relu(input_shape[0], width, 3, stem_stride)
        channels = width
        for channels, out, stride in kind.halving_stages(width, depth, stem_stride):
            layers += kind.conv_bn_relu(channels, channels, 3, stride, groups=channels) + kind.conv_bn_relu(channels, out, 1)
            layers += kind.conv_bn_relu(out, out, 3, 1, groups=out) + kind.conv_bn_relu(out, out, 1)
            channels = out
        self.features = nn.Sequential(*layers)
        self.head = kind.head(channels, num_classes)


class SqueezeExcite(nn.Module):
    """Channel attention: global pool, squeeze to a quarter, excite back, hard-sigmoid gate (MobileNetV3)."""

    def __init__(self, kind: _Layers, channels: int):
        super().__init__()
        squeezed = max(8, channels // 4)
        self.pool = kind.global_pool(1)
        self.fc1 = kind.conv(channels, squeezed, 1)
        self.fc2 = kind.conv(squeezed, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * nn.functional.hardsigmoid(self.fc2(nn.functional.relu(self.fc1(self.pool(x)))))


class InvertedResidual(nn.Module):
    """MobileNetV2/V3 block: 1x1 expansion, depthwise 3x3 (stride), squeeze-excite, hard-swish, and a
    linear 1x1 projection; a residual connection when the shape is kept."""

    def __init__(self, kind: _Layers, c_in: int, c_out: int, stride: int, expand: int = 4):
        super().__init__()
        hidden = c_in * expand
        self.block = nn.Sequential(
            kind.conv(c_in, hidden, 1, bias=False), kind.norm(hidden), nn.Hardswish(),
            kind.conv(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), kind.norm(hidden), nn.Hardswish(),
            SqueezeExcite(kind, hidden),
            kind.conv(hidden, c_out, 1, bias=False), kind.norm(c_out),
        )
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.residual else out


class MobileNetV3(_FeaturesHead):
    """Inverted residuals (expansion, depthwise, squeeze-excite, hard-swish): a stem, then `depth`
    stages of two blocks, each stage halving the resolution while it can and doubling the channels.
    The student family for camera-sized inputs (96x96 and up)."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int, depth: int):
        super().__init__()
        kind = _Layers(input_shape)
        stem_stride = kind.stem_stride()
        layers: list[nn.Module] = [kind.conv(input_shape[0], width, 3, stem_stride, 1, bias=False), kind.norm(width),
                                   nn.Hardswish()]
        channels = width
        for channels, out, stride in kind.halving_stages(width, depth, stem_stride):
            layers += [InvertedResidual(kind, channels, out, stride), InvertedResidual(kind, out, out, 1)]
            channels = out
        self.features = nn.Sequential(*layers)
        self.head = kind.head(channels, num_classes)


class BasicBlock(nn.Module):
    """ResNet's basic block, with torchvision's module names (conv1, bn1, conv2, bn2, downsample)."""

    def __init__(self, kind: _Layers, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = kind.conv(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = kind.norm(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = kind.conv(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = kind.norm(c_out)
        self.downsample = (nn.Sequential(kind.conv(c_in, c_out, 1, stride, bias=False), kind.norm(c_out))
                           if stride != 1 or c_in != c_out else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNet(nn.Module):
    """ResNet of basic blocks, torchvision's module names (conv1, bn1, layer1..layer4, fc): `depth`
    stages of two blocks from `width` channels, doubling per stage. Width 64 and depth 4 on inputs of
    64 px and more is ResNet-18, stem included (7x7 stride 2 and max-pool): its state_dict has the keys
    and shapes of torchvision's resnet18 but for fc, which has the data's classes. Smaller inputs get a
    3x3 stride-1 stem instead, which keeps their few pixels."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int, depth: int):
        super().__init__()
        kind = _Layers(input_shape)
        imagenet_stem = kind.min_size >= 64
        self.conv1 = (kind.conv(input_shape[0], width, 7, 2, 3, bias=False) if imagenet_stem
                      else kind.conv(input_shape[0], width, 3, 1, 1, bias=False))
        self.bn1 = kind.norm(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = kind.max_pool(3, 2, 1) if imagenet_stem else nn.Identity()
        size, channels = kind.min_size // (4 if imagenet_stem else 1), width
        for i in range(depth):
            out = width * 2**i
            stride = 2 if i > 0 and size >= 2 else 1
            size //= stride
            setattr(self, f"layer{i + 1}", nn.Sequential(BasicBlock(kind, channels, out, stride),
                                                         BasicBlock(kind, out, out, 1)))
            channels = out
        self.depth = depth
        self.avgpool = kind.global_pool(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) or (B, C, L) -> (B, num_classes)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.depth):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


FAMILIES = {"convnet": ConvNet, "mobilenet": MobileNet, "mobilenetv3": MobileNetV3, "resnet": ResNet}
