"""Wrapping covers every Linear and attention matmul, keeps float behaviour with quantizers off."""
import pytest
import timm
import torch
from torch import nn

from vitq.calibration import calibrate, quantization_disabled
from vitq.errors import VitqError
from vitq.models.families import family_for
from vitq.models.loading import create_float_model
from vitq.models.wrap import float_layers_left, iter_quantizers, wrap_model
from vitq.quant.config import QuantConfig
from vitq.quant.modules import QuantConv2d, QuantLinear, QuantMatMul
from vitq.quant.quantizer import LogQuantizer
from vitq.recipe import make_recipe

MODELS = ["deit_tiny_patch16_224", "vit_small_patch16_224", "swin_tiny_patch4_window7_224"]


def count(model, cls):
    return sum(isinstance(m, cls) for m in model.modules())


@pytest.mark.parametrize("name", MODELS)
def test_every_linear_conv_and_matmul_is_quantized(name):
    model = timm.create_model(name, pretrained=False).eval()
    n_linear, n_conv = count(model, nn.Linear), count(model, nn.Conv2d)
    n_attn = sum(type(m) in family_for(name).attention() for m in model.modules())
    expected_blocks = {"deit_tiny_patch16_224": 12, "vit_small_patch16_224": 12, "swin_tiny_patch4_window7_224": 12}
    assert n_attn == expected_blocks[name]
    x = torch.randn(1, 3, 224, 224)
    ref = model(x)
    q = wrap_model(model, name, QuantConfig())
    assert count(q, QuantLinear) == n_linear and count(q, QuantConv2d) == n_conv
    assert count(q, QuantMatMul) == 2 * n_attn
    assert float_layers_left(q) == []  # every layer has enabled quantizers
    # 2 quantizers per Linear/Conv (input, weight) + 2 per matmul
    assert len(list(iter_quantizers(q))) == 2 * (n_linear + n_conv) + 4 * n_attn
    with quantization_disabled(q):
        torch.testing.assert_close(q(x), ref, atol=1e-4, rtol=1e-4)


def test_state_dict_names_unchanged_so_float_checkpoints_load():
    model = timm.create_model("deit_tiny_patch16_224").eval()
    float_keys = set(model.state_dict())
    q = wrap_model(model, "deit_tiny_patch16_224", QuantConfig())
    assert float_keys <= set(q.state_dict())


@pytest.mark.parametrize("policy, first_bits, enabled", [("same", 4, True), ("8bit", 8, True), ("float", 8, False)])
def test_first_last_policy(policy, first_bits, enabled):
    q = wrap_model(timm.create_model("deit_tiny_patch16_224"), "deit_tiny_patch16_224",
                   QuantConfig(w_bits=4, a_bits=4, first_last=policy))
    for layer in (q.patch_embed.proj, q.head):
        assert layer.weight_quant.bits == first_bits and layer.weight_quant.enabled == enabled
    assert q.blocks[0].attn.qkv.weight_quant.bits == 4
    assert ("head.weight_quant" in float_layers_left(q)) == (not enabled)


def test_overrides_and_log_softmax():
    cfg = QuantConfig(w_bits=4, a_bits=4, softmax_quantizer="log2",
                      overrides={"blocks.11.*": {"bits": 8}, "blocks.0.mlp.fc2.input_quant": {"enable": False}})
    q = wrap_model(timm.create_model("deit_tiny_patch16_224"), "deit_tiny_patch16_224", cfg)
    assert q.blocks[11].mlp.fc1.weight_quant.bits == 8
    assert not q.blocks[0].mlp.fc2.input_quant.enabled
    assert isinstance(q.blocks[3].attn.av_matmul.a_quant, LogQuantizer)


def test_percentile_override_reaches_the_observer():
    cfg = make_recipe("W4A4", "percentile", overrides={"blocks.*.mlp.fc2.input_quant": {"percentile": 99.0}}).format
    q = wrap_model(timm.create_model("deit_tiny_patch16_224"), "deit_tiny_patch16_224", cfg)
    assert q.blocks[5].mlp.fc2.input_quant.observer_kwargs == {"percentile": 99.0}
    assert q.blocks[5].mlp.fc1.input_quant.observer_kwargs == {"percentile": cfg.percentile}
    with pytest.raises(VitqError, match="percentile must be in"):
        QuantConfig(overrides={"*": {"percentile": 101}})


def test_calibrated_wrapped_swin_runs_and_differs_from_float():
    name = "swin_tiny_patch4_window7_224"
    q = wrap_model(timm.create_model(name).eval(), name, QuantConfig(w_bits=4, a_bits=4))
    x = torch.randn(2, 3, 224, 224)
    calibrate(q, [x], progress=False)
    out = q(x)
    with quantization_disabled(q):
        ref = q(x)
    assert out.shape == ref.shape and torch.isfinite(out).all()
    assert not torch.allclose(out, ref)
    assert all(bool(qz.initialized) for _, qz in iter_quantizers(q))


def test_real_checkpoint_loads(deit_checkpoint):
    model = create_float_model("deit_tiny_patch16_224", checkpoint=deit_checkpoint)
    assert model.head.weight.shape == (1000, 192)
