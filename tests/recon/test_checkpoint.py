"""A reconstructed checkpoint reloads exactly without re-running; the float reference is unchanged
(learned rounding is quantizer state, never written into the weights the fp32 view shares)."""
from __future__ import annotations

import torch

from vitq.calibration import FloatView
from vitq.models.loading import create_float_model
from vitq.pipeline.checkpoint import load_quantized, save_quantized
from vitq.pipeline.quantize import quantize
from vitq.recipe import make_recipe

NAME = "deit_tiny_patch16_224"


def test_save_load_round_trip(tmp_path):
    model = create_float_model(NAME)
    images = [torch.randn(4, 3, 224, 224)]
    recipe = make_recipe("W4A4", "pfcr", {"calibration": "minmax", "recon_preset": "ci", "samples": 4, "iters": 3,
                                          "units": ["blocks.0.mlp", "blocks.1", "model"], "model_iters": 2, "lr_bias": 1e-2})
    qm = quantize(model, NAME, images, recipe, progress=False)
    qmodel = qm.model
    assert qmodel.head.bias_delta.abs().max() > 0  # learned at the model level, must survive the reload
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(FloatView(qmodel)(x), model.eval()(x), rtol=1e-4, atol=1e-4)
    path = save_quantized(tmp_path / "q.pt", qm)
    loaded = load_quantized(path)
    assert loaded.recipe == recipe
    assert loaded.recon_losses == qm.recon_losses
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), qmodel.eval()(x))


def test_checkpoint_from_before_learned_weight_scales_loads(tmp_path):
    """A checkpoint written before ``grid_scale`` existed: its codes are relative to ``scale``."""
    model = create_float_model(NAME)
    images = [torch.randn(4, 3, 224, 224)]
    recipe = make_recipe("W4A4", "brecq", {"calibration": "minmax", "recon_preset": "ci", "samples": 4, "iters": 3,
                                           "units": ["blocks.0"]})
    qm = quantize(model, NAME, images, recipe, progress=False)
    path = save_quantized(tmp_path / "q.pt", qm)
    payload = torch.load(path, weights_only=False)
    payload["state_dict"] = {k: v for k, v in payload["state_dict"].items() if not k.endswith("grid_scale")}
    torch.save(payload, path)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(load_quantized(path).model(x), qm.model.eval()(x))
