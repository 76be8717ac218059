"""Residual-stream rotation of a plain ViT: exact in float (layer scales, LayerNorm gains and biases, tokens and
position embedding all non-trivial), the original left alone, recorded by the recipe and rebuilt from a checkpoint's
weights; any other family is a clear error."""
from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from vitq.calibration import quantization_disabled
from vitq.errors import VitqError
from vitq.models.loading import create_float_model
from vitq.models.rotation import rotate_residual, rotation_fixing_ones
from vitq.pipeline.checkpoint import load_quantized, save_quantized
from vitq.pipeline.quantize import quantize
from vitq.recipe import make_recipe

NAME = "deit_tiny_patch16_224"
TINY = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2, "num_classes": 10, "init_values": 0.5}


@torch.no_grad()
def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    model = create_float_model(NAME, spec={"model": NAME, "kwargs": TINY})
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            module.weight.uniform_(0.5, 2.0)
            module.bias.normal_(0, 0.5)
    model.cls_token.normal_(0, 1.0)
    model.pos_embed.normal_(0, 1.0)
    model.head.weight.mul_(20.0)
    return model.eval()


def images(n: int = 8, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_the_rotation_is_orthogonal_and_fixes_the_ones_direction():
    q = rotation_fixing_ones(48, seed=3)
    torch.testing.assert_close(q @ q.T, torch.eye(48, dtype=torch.float64))
    torch.testing.assert_close(q @ torch.ones(48, dtype=torch.float64), torch.ones(48, dtype=torch.float64))
    assert not torch.allclose(q, torch.eye(48, dtype=torch.float64))
    assert not torch.allclose(q, rotation_fixing_ones(48, seed=4))


def test_rotated_vit_computes_the_same_logits_and_spreads_the_stream():
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = images()
    rotated, report = rotate_residual(model, NAME, probe=x)
    with torch.no_grad():
        torch.testing.assert_close(rotated(x), model(x), atol=1e-4, rtol=1e-4)
    assert report.max_logit_change < 1e-4 and report.width == 32
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"the original model changed at {k}"
    norms = [m for m in rotated.modules() if isinstance(m, nn.LayerNorm)]
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in norms)
    assert all(torch.all(b.ls1.gamma == 1) and torch.all(b.ls2.gamma == 1) for b in rotated.blocks)
    assert not torch.allclose(rotated.blocks[0].attn.qkv.weight, model.blocks[0].attn.qkv.weight)


def test_rotate_recipe_key_quantizes_the_rotated_model_and_the_checkpoint_rebuilds_it(tmp_path):
    model = tiny_model()
    recipe = make_recipe("W8A8", "minmax", {"rotate": True})
    assert recipe.rotate and recipe.to_dict()["rotate"] is True
    qm = quantize(model, NAME, [images(16)], recipe, progress=False)
    qm.spec = {"model": NAME, "kwargs": TINY}
    assert qm.meta["rotate"]["width"] == 32
    x = images(4, seed=5)
    with torch.no_grad(), quantization_disabled(qm.model):
        torch.testing.assert_close(qm.model(x), model(x), atol=1e-4, rtol=1e-4)  # the float model is the same function
    assert not torch.allclose(qm.model.head.weight, model.head.weight)  # ... with rotated weights
    reloaded = load_quantized(save_quantized(tmp_path / "r.pt", qm))
    assert reloaded.recipe.rotate
    with torch.no_grad():
        torch.testing.assert_close(reloaded.model(x), qm.model(x))


def test_rotate_is_a_clear_error_off_plain_vits_and_must_be_a_boolean():
    hybrid = timm.create_model("mobilevit_xxs", num_classes=10)
    with pytest.raises(VitqError, match="plain ViT"):
        rotate_residual(hybrid, "mobilevit_xxs")
    with pytest.raises(VitqError, match="rotate must be true or false"):
        make_recipe("W8A8", "minmax", {"rotate": "yes"})
