"""Quantization-aware distillation: fake quantization matches ORT's int8 grid and can be removed."""

import pytest
import torch
from torch import nn

from edge_distill.distill.qat import ActivationFakeQuant, QuantAware, fake_quantize_weight, prepare_qat, strip_qat
from edge_distill.models.families import ConvNet


def test_weight_fake_quant_is_symmetric_int8_per_channel():
    weight = torch.tensor([[1.0, -0.5, 0.25], [10.0, 3.0, -7.0]])
    quantized = fake_quantize_weight(weight, per_channel=True)
    for row, q in zip(weight, quantized):
        scale = row.abs().max() / 127
        assert torch.allclose(q, torch.round(row / scale) * scale)  # each channel on its own grid
    # Per tensor, the small channel shares the large one's coarse grid.
    coarse = fake_quantize_weight(weight, per_channel=False)
    assert (coarse[0] - weight[0]).abs().max() > (quantized[0] - weight[0]).abs().max()


def test_per_channel_grid_survives_batchnorm_folding():
    """Why QAT trains on unfolded weights: folding multiplies each channel by a constant."""
    weight = torch.randn(4, 3, 3, 3)
    gamma_over_sigma = torch.tensor([0.5, 2.0, 3.0, 0.1])[:, None, None, None]
    folded_then_quantized = fake_quantize_weight(weight * gamma_over_sigma, per_channel=True)
    assert torch.allclose(folded_then_quantized, fake_quantize_weight(weight, per_channel=True) * gamma_over_sigma,
                          atol=1e-6)


def test_activation_fake_quant_tracks_range_and_freezes_in_eval():
    quant = ActivationFakeQuant(signed=False)
    quant.train()
    x = torch.linspace(0, 2.55, 256)
    out = quant(x)
    assert torch.allclose(out, torch.round(x / 0.01) * 0.01, atol=1e-5)  # 256 levels over [0, 2.55]
    quant.eval()
    quant(x * 100)
    assert quant.high.item() == pytest.approx(2.55)  # eval never moves the range
    assert quant(torch.tensor([100.0])).item() == pytest.approx(2.55)  # clipped like int8


def test_prepare_and_strip_round_trip():
    torch.manual_seed(0)
    model = ConvNet((1, 8, 8), 10, 4, 2).eval()
    x = torch.randn(8, 1, 8, 8)
    before = model(x)
    prepare_qat(model, per_channel=True, signed_activations=False)
    wrapped = [m for m in model.modules() if isinstance(m, QuantAware)]
    assert len(wrapped) == 5 and not any(isinstance(m.layer, QuantAware) for m in wrapped)  # 4 convs + head
    model.train()
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.eval()  # keep running statistics: only the observers should learn here
    model(x)  # observers see data
    model.eval()
    assert not torch.allclose(model(x), before)  # int8 rounding is felt
    strip_qat(model)
    assert not any(isinstance(m, QuantAware) for m in model.modules())
    assert torch.allclose(model(x), before)  # same float weights back
    assert set(model.state_dict()) == set(ConvNet((1, 8, 8), 10, 4, 2).state_dict())
