"""Power-of-Two Factor (PTF) quantization of LayerNorm-adjacent activations (FQ-ViT, Lin et al., IJCAI 2022).

ViT LayerNorm activations vary strongly between channels. FQ-ViT keeps one per-tensor scale ``s``
and gives each channel a power-of-two factor, ``s_c = s * 2^alpha_c`` with ``alpha_c`` in 0..K, so
that integer hardware aligns the channels with bit shifts. In vitq these per-channel quantizers sit
on the post-LayerNorm Linear inputs that ``vitq.models.ln_reparam`` calibrates per channel; the
fold then moves exactly these power-of-two factors into LayerNorm + Linear.
"""
from __future__ import annotations

import torch

from vitq.quant.observers import Observer, scale_zero_point, zero_point_for
from vitq.quant.quantizer import UniformQuantizer

PTF_MAX_EXPONENT = 3  # K in FQ-ViT: factors 1, 2, 4, 8


class PowerOfTwoFactorQuantizer(UniformQuantizer):
    """Per-channel uniform quantizer with scales ``base * 2^alpha_c`` (``alpha_c`` in 0..K).

    ``base`` is the whole tensor's min-max scale divided by 2^K. Each channel takes the smallest
    factor whose grid still covers its own min-max range (min-max calibration never clips, and
    FQ-ViT calibrates with min-max), and its own zero-point, which the LayerNorm fold absorbs.
    """

    kind = "uniform_ptf"

    def _set_from_observer(self, observer: Observer) -> None:
        whole, _ = scale_zero_point(observer.lo.min(), observer.hi.max(), self.grid)
        base = whole / (1 << PTF_MAX_EXPONENT)
        own, _ = scale_zero_point(observer.lo, observer.hi, self.grid)
        alpha = torch.ceil(torch.log2(own / base)).clamp(0, PTF_MAX_EXPONENT)
        scale = base * torch.exp2(alpha)
        with torch.no_grad():
            self.scale.copy_(scale)
            self.zero_point.copy_(zero_point_for(observer.lo, scale, self.grid))
