"""Twin-uniform quantizer math: better than one uniform grid on softmax-like values, both ranges usable."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vitq.quant.quantizer import UniformQuantizer
from vitq.quant.twin import TwinUniformQuantizer


def calibrated(q, x):
    q.start_observing()
    q(x)
    q.stop_observing()
    return q


@pytest.mark.parametrize("bits", [4, 6, 8])
def test_beats_single_uniform_grid_on_softmax(bits):
    probs = torch.softmax(torch.randn(64, 197) * 2.0, dim=-1)
    twin = calibrated(TwinUniformQuantizer(bits, signed=False), probs)
    uniform = calibrated(UniformQuantizer(bits, symmetric=False), probs)
    assert F.mse_loss(twin(probs), probs) < F.mse_loss(uniform(probs), probs)


def test_unsigned_ranges_are_both_representable():
    q = calibrated(TwinUniformQuantizer(4, signed=False), torch.tensor([0.0, 0.7]))
    fine, coarse = float(q.scale), float(q.coarse_scale)
    assert coarse == fine * 2 ** int(q.shift)
    fine_levels = torch.arange(0, q.levels + 1) * fine  # [0, 7 * fine] exactly on the fine grid
    coarse_levels = torch.arange(2, q.levels + 1) * coarse  # above the fine range: coarse grid
    torch.testing.assert_close(q(fine_levels), fine_levels)
    torch.testing.assert_close(q(coarse_levels), coarse_levels)
    assert abs(float(q(torch.tensor([0.7]))) - 0.7) <= coarse / 2 + 1e-7  # the maximum is not clipped
    assert q.value_range() == (0.0, pytest.approx(0.7))


def test_signed_ranges_cover_negative_tail_and_positive_maximum():
    x = torch.tensor([-0.17, 0.0, 5.0])
    q = calibrated(TwinUniformQuantizer(8, signed=True), x)
    fine, coarse = float(q.scale), float(q.coarse_scale)
    assert fine == pytest.approx(0.17 / 127) and coarse >= 5.0 / 127 and coarse == fine * 2 ** int(q.shift)
    out = q(torch.tensor([-0.17, -0.05, 0.03, 5.0]))
    assert (out[:2] - torch.tensor([-0.17, -0.05])).abs().max() <= fine / 2 + 1e-7  # fine grid below zero
    assert (out[2:] - torch.tensor([0.03, 5.0])).abs().max() <= coarse / 2 + 1e-6  # coarse grid above
    lo, hi = q.value_range()
    assert lo == pytest.approx(-0.17) and hi >= 5.0
