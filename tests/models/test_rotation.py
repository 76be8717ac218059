"""Residual-stream rotation of a plain ViT: exact in float (layer scales, LayerNorm gains and biases, tokens and
position embedding all non-trivial), the original left alone, recorded by the recipe and rebuilt from a checkpoint's
weights; any other family is a clear error. The online MLP rotation: exact in float, rebuilt from a checkpoint's
spec, reported as float layers, exported to onnxruntime with the same logits."""
from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from vitq.calibration import quantization_disabled
from vitq.errors import VitqError
from vitq.export.markers import export_reference
from vitq.export.onnx_export import export_onnx
from vitq.export.parity import compare
from vitq.models.loading import create_float_model
from vitq.models.rotation import (
    HiddenRotation,
    hadamard,
    mlp_rotation_block,
    rotate_attention_heads,
    rotate_mlp_hidden,
    rotate_residual,
    rotation_fixing_ones,
)
from vitq.models.wrap import float_layers_left
from vitq.pipeline.checkpoint import load_quantized, save_quantized
from vitq.pipeline.quantize import quantize
from vitq.recipe import Recipe, make_recipe

NAME = "deit_tiny_patch16_224"
TINY = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2, "num_classes": 10, "init_values": 0.5}


@torch.no_grad()
def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    model = create_float_model(NAME, spec={"model": NAME, "kwargs": TINY, "data_config": {"input_size": [3, 32, 32]}})
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
    assert report.max_logit_change < 1e-4 and report.summary()["width"] == 32
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
    assert qm.spec["kwargs"] == TINY  # the rotated copy keeps the architecture's spec, so the checkpoint rebuilds it
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


def test_rotation_seed_follows_the_run_seed_unless_set_and_draws_other_rotations():
    follows = make_recipe("W4A4", "pfcr", {"rotate": True}, seed=3)
    assert follows.rotation_seed == 3 and follows.derived["rotation_seed"] == "the run's seed"
    assert Recipe.from_dict(follows.to_dict()) == follows
    pinned = make_recipe("W4A4", "pfcr", {"rotate": True, "rotation_seed": 0}, seed=3)
    assert pinned.rotation_seed == 0 and "rotation_seed" not in pinned.derived
    assert Recipe.from_dict(pinned.to_dict()).rotation_seed == 0
    assert make_recipe("W8A8", "minmax", {"rotate_mlp": True}).rotation_seed == 0
    with pytest.raises(VitqError, match="rotation_seed applies to a rotation"):
        make_recipe("W8A8", "minmax", {"rotation_seed": 1})
    with pytest.raises(VitqError, match="rotation_seed must be an integer >= 0"):
        make_recipe("W8A8", "minmax", {"rotate": True, "rotation_seed": -1})
    model, x = tiny_model(), images(16)
    one, two = (quantize(model, NAME, [x], make_recipe("W8A8", "minmax", {"rotate": True, "rotation_seed": s}),
                         progress=False) for s in (1, 2))
    assert one.meta["rotate"]["seed"] == 1 and two.meta["rotate"]["seed"] == 2
    assert not torch.allclose(one.model.head.weight, two.model.head.weight)


def test_hadamard_is_orthogonal_and_the_block_divides_the_width():
    h = hadamard(16)
    torch.testing.assert_close(h @ h.T, torch.eye(16, dtype=torch.float64))
    assert torch.allclose(h.abs(), torch.full_like(h, 0.25))
    with pytest.raises(VitqError, match="power-of-two"):
        hadamard(12)
    assert [mlp_rotation_block(w, limit=64) for w in (768, 3072, 384, 96, 100)] == [64, 64, 64, 32, 4]
    assert mlp_rotation_block(768) == 256


@pytest.mark.parametrize("block", [4, 32, 64])
def test_hidden_rotation_is_the_block_hadamard_in_kronecker_form(block):
    rotation = HiddenRotation(128, block)
    rotation.signs.copy_(torch.randint(0, 2, (128,), generator=torch.Generator().manual_seed(0)) * 2.0 - 1)
    x = torch.randn(3, 5, 128)
    dense = (x * rotation.signs).unflatten(-1, (-1, block)) @ hadamard(block).float()  # H_block on every block
    rows, cols = rotation.rows.shape[0], rotation.cols.shape[0]
    within = torch.arange(block).view(rows, cols).T.flatten()  # the transposed layout inside each block
    torch.testing.assert_close(rotation(x).unflatten(-1, (-1, block)), dense[..., within], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rotation(x).norm(dim=-1), x.norm(dim=-1))  # orthogonal
    with pytest.raises(VitqError, match="not a multiple"):
        HiddenRotation(96, 64)


def test_mlp_rotation_keeps_the_float_model_and_spreads_the_hidden_activation():
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = images()
    rotated, report = rotate_mlp_hidden(model, NAME, limit=32, probe=x)
    assert report.sizes == {"mlps": 2, "block": 32} and report.max_logit_change < 1e-3
    rotations = [b.mlp.norm for b in rotated.blocks]
    assert all(isinstance(r, HiddenRotation) for r in rotations)
    assert not torch.equal(rotations[0].signs, rotations[1].signs)  # independent random signs per MLP
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"the original model changed at {k}"
    with torch.no_grad():
        hidden = model.blocks[0].mlp.act(model.blocks[0].mlp.fc1(4 * torch.randn(4, 5, 32, generator=torch.Generator().manual_seed(0))))
        spread = rotations[0](hidden)
    assert hidden.min() >= -0.2 and spread.min() < -0.5  # GELU's one-sided output becomes two-sided


def test_rotate_mlp_recipe_quantizes_exports_and_reloads(tmp_path):
    model = tiny_model()
    recipe = make_recipe("W8A8", "minmax", {"rotate_mlp": True})
    assert recipe.to_dict()["rotate_mlp"] is True
    qm = quantize(model, NAME, [images(16)], recipe, progress=False)
    assert qm.meta["rotate_mlp"]["mlps"] == 2 and qm.spec["mlp_rotation"] == 256
    assert {"blocks.0.mlp.norm", "blocks.1.mlp.norm"} <= set(float_layers_left(qm.model))
    x = images(4, seed=5)
    with torch.no_grad(), quantization_disabled(qm.model):
        torch.testing.assert_close(qm.model(x), model(x), atol=1e-4, rtol=1e-4)
    reloaded = load_quantized(save_quantized(tmp_path / "r.pt", qm))
    assert reloaded.recipe.rotate_mlp and isinstance(reloaded.model.blocks[1].mlp.norm, HiddenRotation)
    with torch.no_grad():
        torch.testing.assert_close(reloaded.model(x), qm.model(x))
    exported = export_onnx(qm.model, tmp_path / "r.onnx")
    report = compare(exported.path, export_reference(qm.model), [images(8, seed=6)])
    assert report.agreement == 100.0 and report.max_abs_logit_error < 0.05


def test_rotate_mlp_is_a_clear_error_off_transformer_mlps():
    hybrid = timm.create_model("mobilevit_xxs", num_classes=10)
    with pytest.raises(VitqError, match="rotate_mlp changes the MLPs .* families that take it: .*vit"):
        rotate_mlp_hidden(hybrid, "mobilevit_xxs")


def test_head_rotation_keeps_the_float_model_and_every_attention_product():
    model = tiny_model()
    with torch.no_grad():
        model.blocks[0].attn.qkv.bias.normal_(0, 1.0)
    x = images()
    rotated, report = rotate_attention_heads(model, NAME, probe=x)
    assert report.sizes == {"heads": 4, "head_dim": 16} and report.max_logit_change < 1e-4
    with torch.no_grad():
        torch.testing.assert_close(rotated(x), model(x), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(rotated.blocks[0].attn.qkv.weight, model.blocks[0].attn.qkv.weight)
    recipe = make_recipe("W8A8", "minmax", {"rotate": True, "rotate_heads": True})
    qm = quantize(model, NAME, [images(16)], recipe, progress=False)
    assert qm.meta["rotate_heads"]["heads"] == 4 and qm.spec["kwargs"] == TINY
    with torch.no_grad(), quantization_disabled(qm.model):
        torch.testing.assert_close(qm.model(x), model(x), atol=1e-4, rtol=1e-4)


def test_head_rotation_refuses_normalized_queries_and_other_families():
    normed = create_float_model(NAME, spec={"model": NAME, "kwargs": {**TINY, "qk_norm": True}})
    with pytest.raises(VitqError, match="rotate_heads: blocks.0.attn .* no plain fused qkv"):
        rotate_attention_heads(normed, NAME)
    with pytest.raises(VitqError, match="plain ViT"):
        rotate_attention_heads(timm.create_model("mobilevit_xxs", num_classes=10), "mobilevit_xxs")
