import pytest
import torch

from vitq.errors import VitqError
from vitq.quant.quantizer import LogQuantizer, UniformQuantizer


def calibrated(q, x):
    q.start_observing()
    q(x)
    q.stop_observing()
    return q


@pytest.mark.parametrize("bits", [2, 3, 4, 6, 8])
@pytest.mark.parametrize("symmetric", [True, False])
def test_error_bounded_by_half_step_inside_range(bits, symmetric):
    x = torch.randn(4096) * 3 + (0 if symmetric else 1)
    q = calibrated(UniformQuantizer(bits, symmetric=symmetric), x)
    err = (q(x) - x).abs()
    step = q.scale.detach()
    if symmetric:  # the positive end is exact; the grid covers [-absmax - step, absmax]
        assert err.max() <= step / 2 + 1e-5
    else:  # zero-point rounding can shift the grid by up to half a step at either end
        assert err.max() <= step + 1e-5
    assert len(torch.unique(q(x))) <= 2**bits


def test_per_channel_shapes_and_independent_scales():
    w = torch.randn(16, 32) * torch.linspace(0.01, 10, 16)[:, None]
    q = calibrated(UniformQuantizer(4, symmetric=True, channels=16, ch_axis=0), w)
    assert q.scale.shape == (16,)
    expected = w.abs().amax(dim=1) / 7
    torch.testing.assert_close(q.scale.detach(), expected)
    p = q.qparams()
    assert p.axis == 0 and p.qmin == -8 and p.qmax == 7 and p.zero_point.dtype == torch.int32
    assert (q(w) - w).abs().div(q.scale.detach()[:, None]).max() <= 0.5 + 1e-5


def test_to_int_reproduces_forward():
    x = torch.randn(8, 64)
    q = calibrated(UniformQuantizer(6, symmetric=False), x)
    codes = q.to_int(x)
    assert codes.min() >= 0 and codes.max() <= 63
    torch.testing.assert_close((codes - q.zero_point) * q.scale.detach(), q(x).detach())


def test_lsq_step_size_gradient():
    q = UniformQuantizer(4, symmetric=True)
    q.initialized.fill_(True)
    with torch.no_grad():
        q.scale.fill_(0.5)
    x = torch.tensor([0.3, -1.1, 2.0, 10.0, -10.0])
    q(x).sum().backward()
    inside = torch.round(x[:3] / 0.5) - x[:3] / 0.5
    expected = inside.sum() + 7 + (-8)  # clipped at qmax and qmin
    torch.testing.assert_close(q.scale.grad, expected.reshape(1))


def test_input_gradient_is_straight_through_inside_range_only():
    q = UniformQuantizer(4, symmetric=True)
    q.initialized.fill_(True)
    x = torch.tensor([0.3, 100.0], requires_grad=True)
    q(x).sum().backward()
    assert x.grad.tolist() == [1.0, 0.0]


@pytest.mark.parametrize("bits", [1, 9, 0, 16])
def test_bits_outside_range_rejected(bits):
    with pytest.raises(VitqError, match="2..8"):
        UniformQuantizer(bits, symmetric=True)


def test_uncalibrated_quantizer_refuses_to_run():
    with pytest.raises(RuntimeError, match="calibration"):
        UniformQuantizer(8, symmetric=False)(torch.randn(3))


def test_calibration_without_data_is_an_error():
    q = UniformQuantizer(8, symmetric=False)
    q.start_observing()
    with pytest.raises(VitqError, match="no data"):
        q.stop_observing()


@pytest.mark.parametrize("base, ratio", [("log2", 2.0), ("log_sqrt2", 2.0**0.5)])
def test_log_quantizer_levels_are_powers_of_base(base, ratio):
    probs = torch.softmax(torch.randn(64, 50) * 3, dim=-1)
    q = calibrated(LogQuantizer(4, base=base), probs)
    out = q(probs)
    nonzero = out[out > 0]
    k = torch.log(q.scale / nonzero) / torch.log(torch.tensor(ratio))
    torch.testing.assert_close(k, k.round(), atol=1e-3, rtol=0)
    # relative error of values kept on the grid is bounded by the level spacing
    kept = out > 0
    rel = (out[kept] / probs[kept]).log().abs()
    assert rel.max() <= torch.log(torch.tensor(ratio)) / 2 + 1e-4
