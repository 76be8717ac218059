"""Zero-point overflow (Q-HyViT): activations whose range excludes 0 (post-BN/ReLU maps in hybrid
models, e.g. all values in [5, 10]) would put ``qmin - lo / scale`` outside the integer grid. ONNX
QDQ needs an integer zero point inside [qmin, qmax] (0 exactly representable), so the observed range
is widened to include 0 before scale and zero point are computed."""
import pytest
import torch

from vitq.quant.quantizer import UniformQuantizer


@pytest.mark.parametrize("observer", ["minmax", "percentile", "mse"])
@pytest.mark.parametrize("lo, hi", [(5.0, 10.0), (-10.0, -5.0)])
@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("channels", [None, 3])
def test_range_without_zero_gives_exportable_zero_point(observer, lo, hi, bits, channels):
    x = torch.rand(3, 4096) * (hi - lo) + lo
    q = UniformQuantizer(bits, symmetric=False, channels=channels, observer=observer)
    q.start_observing()
    q(x)
    q.stop_observing()
    p = q.qparams()
    assert p.zero_point.dtype == torch.int32
    assert ((p.zero_point >= p.qmin) & (p.zero_point <= p.qmax)).all()
    torch.testing.assert_close(q.zero_point, q.zero_point.round())
    expected_zp = p.qmin if lo > 0 else p.qmax  # 0 sits at the grid end next to the data
    assert (p.zero_point == expected_zp).all()
    codes = q.to_int(x)
    assert codes.min() >= p.qmin and codes.max() <= p.qmax
    err, step = (q(x) - x).abs(), p.scale.max()
    assert err.median() <= step / 2  # the data lies on the grid, not clipped to its far end
    if observer == "minmax":  # nothing clipped: the grid spans [0, hi] or [lo, 0]
        assert err.max() <= step / 2 + 1e-5
