"""Bias correction: cancels each layer's mean quantization error, leaves the float reference alone,
survives save/load and exports into the bias."""
from __future__ import annotations

import torch

from tests.export.conftest import images, quantize_tiny_vit, quantized_tiny_vit
from vitq.calibration import FloatView, correct_biases
from vitq.export.markers import export_reference
from vitq.export.onnx_export import export_onnx
from vitq.export.parity import compare
from vitq.pipeline.checkpoint import load_quantized, save_quantized
from vitq.quant.modules import QuantLinear
from vitq.recipe import make_recipe
from vitq.report import setting

CONFIG = make_recipe("W4A4", "minmax", {"bias_correction": True})


def deltas(model: torch.nn.Module) -> list[torch.Tensor]:
    return [m.bias_delta.clone() for m in model.modules() if isinstance(m, QuantLinear) and m.bias_delta is not None]


def test_correction_cancels_the_mean_error_and_keeps_the_float_model():
    corrected = quantized_tiny_vit(CONFIG)
    plain = quantized_tiny_vit(make_recipe("W4A4", "minmax"))
    first = deltas(corrected)
    assert len(first) == sum(1 for m in corrected.modules() if isinstance(m, QuantLinear))
    assert all(d.abs().max() > 0 for d in first)
    assert not deltas(plain)
    # a second pass finds (almost) nothing left to correct: every layer's mean error is already ~0
    correct_biases(corrected, [images(16)], progress=False)
    for before, after in zip(first, deltas(corrected)):
        assert (after - before).abs().max() < 1e-3 * before.abs().max() + 1e-6
    x = images(4, seed=3)
    torch.testing.assert_close(FloatView(corrected)(x), FloatView(plain)(x), rtol=0, atol=0)
    assert not torch.equal(corrected(x), plain(x))


def test_corrected_checkpoint_reloads_and_exports(tmp_path):
    qm = quantize_tiny_vit(CONFIG)
    qmodel = qm.model
    reloaded = load_quantized(save_quantized(tmp_path / "q.pt", qm))
    x = images(4, seed=3)
    torch.testing.assert_close(reloaded.model(x), qmodel(x), rtol=0, atol=0)
    assert reloaded.recipe.bias_correction
    exported = export_onnx(qmodel, tmp_path / "m.onnx")
    assert compare(exported.path, export_reference(qmodel), [images(16, seed=7)]).agreement >= 99.5
    assert "bias-correction" in setting({"recipe": CONFIG.to_dict()})
