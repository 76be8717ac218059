import timm
import torch

from vitq.calibration import calibrate, quantization_disabled
from vitq.models.ln_reparam import fold_ln_scales, ln_linear_pairs, per_channel_ln_inputs
from vitq.models.wrap import wrap_model
from vitq.quant.config import QuantConfig


def test_fold_keeps_float_function_and_integer_codes():
    name = "deit_tiny_patch16_224"
    model = timm.create_model(name, depth=2).eval()
    with torch.no_grad():  # give LayerNorms the channel-wise spread real ViTs have
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.mul_(torch.logspace(-1, 1, m.weight.numel())[torch.randperm(m.weight.numel())])
                m.bias.add_(torch.randn_like(m.bias))
    q = wrap_model(model, name, QuantConfig(w_bits=8, a_bits=4))
    assert per_channel_ln_inputs(q) == 4  # norm1->qkv and norm2->fc1 in two blocks
    x = torch.randn(4, 3, 224, 224)
    calibrate(q, [x], progress=False)
    for _, linear in ln_linear_pairs(q):
        linear.weight_quant.enabled = False  # isolate the activation quantizers
    with quantization_disabled(q):
        float_before = q(x)
    quant_before = q(x)
    assert fold_ln_scales(q) == 4
    for _, linear in ln_linear_pairs(q):
        assert not linear.input_quant.per_channel
        linear.weight_quant.enabled = False
    with quantization_disabled(q):
        torch.testing.assert_close(q(x), float_before, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(q(x), quant_before, atol=1e-2, rtol=1e-2)
