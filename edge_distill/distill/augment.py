"""Augmentations applied to a batch before both teacher and student see it ("function matching",
Beyer et al. 2022): the teacher labels exactly the input the student learns from, so every
augmented sample is a new, correctly labeled point, even where no human label exists.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edge_distill.data.dataset import UNLABELED


def augmentation_kind(input_shape: tuple[int, ...]) -> str:
    """"image" for (C, H, W) samples, "signal" for (C, L)."""
    return "image" if len(input_shape) == 3 else "signal"


class Augment:
    """Random shifts (images: both axes; signals: time), plus amplitude scaling and noise for
    signals, then mixup of half the batch with a shuffled copy. Mixed samples carry no hard
    label (theirs would be a blend), so they are learned from the teacher alone."""

    def __init__(self, kind: str, seed: int, mixup_fraction: float = 0.5):
        if kind not in ("image", "signal"):
            raise ValueError(f"unknown augmentation kind {kind!r}")
        self.kind = kind
        self.mixup_fraction = mixup_fraction
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = shift(x, self.generator)
        if self.kind == "signal":
            scale = 0.8 + 0.4 * torch.rand(len(x), 1, 1, generator=self.generator)  # (B, 1, 1)
            x = x * scale + 0.05 * torch.randn(x.shape, generator=self.generator)
        return mixup(x, y, self.mixup_fraction, self.generator)


def shift(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Translate each sample by up to 1/8 of each spatial side (at least 1), edges replicated."""
    spatial = x.shape[2:]
    pads = [max(1, side // 8) for side in spatial]
    padded = F.pad(x, [p for pad in reversed(pads) for p in (pad, pad)], mode="replicate")
    out = torch.empty_like(x)
    offsets = [torch.randint(0, 2 * pad + 1, (len(x),), generator=generator) for pad in pads]
    for i in range(len(x)):
        window = tuple(slice(int(o[i]), int(o[i]) + side) for o, side in zip(offsets, spatial))
        out[i] = padded[(i, slice(None), *window)]
    return out


def mixup(x: torch.Tensor, y: torch.Tensor, fraction: float, generator: torch.Generator):
    """Blend a random `fraction` of the samples with random partners, lambda ~ U(0, 1)."""
    mixed = torch.rand(len(x), generator=generator) < fraction  # (B,)
    if not mixed.any():
        return x, y
    partner = torch.randperm(len(x), generator=generator)
    lam = torch.rand(len(x), generator=generator).view(-1, *([1] * (x.dim() - 1)))  # (B, 1, ...)
    blend = lam * x + (1 - lam) * x[partner]
    x = torch.where(mixed.view(-1, *([1] * (x.dim() - 1))), blend, x)
    return x, torch.where(mixed, torch.full_like(y, UNLABELED), y)
