"""Per-channel quantization of LayerNorm outputs, folded back to per-tensor (RepQ-ViT-style
scale reparameterization, Li et al., ICCV 2023).

Post-LayerNorm activations of ViTs have a few channels whose range is 10-100x the others; one
per-tensor step size either clips them or wastes the grid on the rest. We calibrate those
inputs per channel (scale s_c, zero-point z_c), then fold the per-channel factors into the
LayerNorm affine and the next Linear so that a single per-tensor quantizer (mean scale s~,
zero-point z~) produces exactly the same integer codes:

    r = s_c / s~,  d = z_c - z~
    LN:      gamma' = gamma / r,          beta' = beta / r + s~ * d
    Linear:  W' = W * r (input columns),  b' = b - W' (s~ * d)

The float function of the model is unchanged, and the exported graph keeps plain LayerNorm and
per-tensor QDQ, which onnxruntime fuses.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from vitq.calibration import init_weight_quantizers
from vitq.quant.modules import QuantLinear
from vitq.quant.ptf import PowerOfTwoFactorQuantizer
from vitq.quant.quantizer import UniformQuantizer

# (LayerNorm attribute, path of the Linear it feeds) inside timm ViT/Swin blocks and Swin patch merging
LN_LINEAR_EDGES = (("norm1", "attn.qkv"), ("norm2", "mlp.fc1"), ("norm", "reduction"))


def ln_linear_pairs(model: nn.Module) -> Iterator[tuple[nn.LayerNorm, QuantLinear]]:
    """LayerNorm -> Linear pairs whose Linear input can be quantized per channel and folded."""
    for module in model.modules():
        for ln_attr, linear_path in LN_LINEAR_EDGES:
            ln = getattr(module, ln_attr, None)
            try:
                linear = module.get_submodule(linear_path)
            except AttributeError:
                continue
            if (isinstance(ln, nn.LayerNorm) and ln.weight is not None and ln.bias is not None
                    and isinstance(linear, QuantLinear) and linear.bias is not None
                    and isinstance(linear.input_quant, UniformQuantizer) and linear.input_quant.enabled):
                yield ln, linear


def per_channel_ln_inputs(model: nn.Module, power_of_two: bool = False) -> int:
    """Before calibration: give every foldable post-LN Linear a per-channel input quantizer; with
    ``power_of_two`` its channel factors are powers of two (FQ-ViT's PTF, ``vitq.quant.ptf``)."""
    quant_cls = PowerOfTwoFactorQuantizer if power_of_two else UniformQuantizer
    n = 0
    for ln, linear in ln_linear_pairs(model):
        old = linear.input_quant
        linear.input_quant = quant_cls(old.bits, symmetric=old.symmetric, channels=ln.normalized_shape[0], ch_axis=-1,
                                              observer=old.observer_name, observer_kwargs=old.observer_kwargs)
        n += 1
    return n


@torch.no_grad()
def fold_ln_scales(model: nn.Module) -> int:
    """After calibration: fold per-channel input scales into LN + Linear, back to per-tensor quantizers."""
    n = 0
    for ln, linear in ln_linear_pairs(model):
        q = linear.input_quant
        if not q.per_channel:
            continue
        s, z = q.scale.detach(), q.zero_point
        # any shared scale gives the same codes; PTF shares its smallest, so every r is 2^k exactly
        s_t = s.amin() if isinstance(q, PowerOfTwoFactorQuantizer) else s.mean()
        z_t = z.mean().round()
        r, d = s / s_t, z - z_t
        ln.weight.div_(r)
        ln.bias.div_(r).add_(s_t * d)
        linear.weight.mul_(r)
        linear.bias.sub_(linear.weight @ (s_t * d))
        new = UniformQuantizer(q.bits, symmetric=q.symmetric, observer=q.observer_name, observer_kwargs=q.observer_kwargs)
        new.scale.fill_(float(s_t))
        new.zero_point.fill_(float(z_t))
        new.initialized.fill_(True)
        linear.input_quant = new.to(s.device)
        n += 1
    if n:
        init_weight_quantizers(model)  # folded weights need fresh weight scales
    return n
