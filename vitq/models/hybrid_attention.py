"""Quantizable versions of the hybrid ViTs' own attention modules (MobileViTv2, EfficientFormer v1/v2).

Like :mod:`vitq.models.attention`, each module takes over the float timm module's parameters and
buffers under the same names (same persistence, so float checkpoints load) and computes every
activation-by-activation product through a quantized product module. ``wrap_model`` builds those
from ``product_sites`` (attribute name -> product class, whether operand ``a`` is a softmax output
and so gets the config's softmax quantizer); a class without it has softmax attention's
``qk_matmul`` / ``av_matmul``. ``probability_inputs`` names child layers whose input is a softmax
output, so their input quantizer is the softmax quantizer too.

MobileViT v1 uses timm's ViT ``Attention`` and needs nothing here.
"""
from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from timm.models import efficientformer, efficientformer_v2
from timm.models.mobilevit import LinearSelfAttention
from torch import nn

from vitq.errors import VitqError
from vitq.quant.modules import QuantMatMul, QuantMul

ProductSites = dict[str, tuple[type[QuantMatMul], bool]]


class QuantLinearSelfAttention(nn.Module):
    """MobileViTv2 separable self-attention (``timm.models.mobilevit.LinearSelfAttention``).

    The float module computes ``sum_N(key * softmax_N(query))`` and ``relu(value) * context``; the
    first is a weighted sum over the N patches, i.e. ``scores @ key^T`` per patch pixel, so it runs
    as a matmul with the context scores as its softmax operand; the second is a broadcast product.
    """

    product_sites: ClassVar[ProductSites] = {"context_matmul": (QuantMatMul, True), "value_mul": (QuantMul, False)}

    def __init__(self, attn: LinearSelfAttention, context_matmul: QuantMatMul, value_mul: QuantMul) -> None:
        super().__init__()
        self.embed_dim = attn.embed_dim
        self.qkv_proj, self.attn_drop, self.out_proj, self.out_drop = attn.qkv_proj, attn.attn_drop, attn.out_proj, attn.out_drop
        self.softmax = nn.Softmax(dim=-1)
        self.context_matmul = context_matmul
        self.value_mul = value_mul

    def forward(self, x: torch.Tensor, x_prev: torch.Tensor | None = None) -> torch.Tensor:
        if x_prev is not None:
            raise VitqError("MobileViTv2 cross-attention (x_prev) is not supported by vitq's quantized attention")
        query, key, value = self.qkv_proj(x).split([1, self.embed_dim, self.embed_dim], dim=1)  # [B, 1|d|d, P, N]
        scores = self.attn_drop(self.softmax(query))
        # [B, P, 1, N] @ [B, P, N, d] -> [B, P, 1, d] -> [B, d, P, 1]
        context = self.context_matmul(scores.transpose(1, 2), key.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.out_drop(self.out_proj(self.value_mul(F.relu(value), context)))


class _BiasedAttention(nn.Module):
    """What the EfficientFormer attentions share: heads, scale, one learned bias per head and
    relative position (fixed resolution), and ``softmax(q @ k * scale + bias)``."""

    def __init__(self, attn: nn.Module, qk_matmul: QuantMatMul, av_matmul: QuantMatMul) -> None:
        super().__init__()
        self.num_heads, self.scale, self.key_dim = attn.num_heads, attn.scale, attn.key_dim
        self.attention_biases = attn.attention_biases
        persistent = "attention_bias_idxs" in attn.state_dict(keep_vars=True)  # v1: persistent, v2: not
        self.register_buffer("attention_bias_idxs", attn.attention_bias_idxs, persistent=persistent)
        self.qk_matmul = qk_matmul
        self.softmax = nn.Softmax(dim=-1)
        self.av_matmul = av_matmul

    def _logits(self, q: torch.Tensor, k_t: torch.Tensor) -> torch.Tensor:
        """Attention logits from queries [..., Nq, dk] and transposed keys [..., dk, Nk]; the scale is
        applied after the product, as in timm (the integer product's output rescale)."""
        return self.qk_matmul(q, k_t) * self.scale + self.attention_biases[:, self.attention_bias_idxs]


class QuantEfficientFormerAttention(_BiasedAttention):
    """EfficientFormer v1 token attention (``timm.models.efficientformer.Attention``) on [B, N, C]."""

    def __init__(self, attn: efficientformer.Attention, qk_matmul: QuantMatMul, av_matmul: QuantMatMul) -> None:
        super().__init__(attn, qk_matmul, av_matmul)
        self.val_dim, self.val_attn_dim = attn.val_dim, attn.val_attn_dim
        self.qkv, self.proj = attn.qkv, attn.proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        qkv = self.qkv(x).reshape(B, N, self.num_heads, -1).permute(0, 2, 1, 3)
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.val_dim], dim=3)
        attn = self.softmax(self._logits(q, k.transpose(-2, -1)))
        return self.proj(self.av_matmul(attn, v).transpose(1, 2).reshape(B, N, self.val_attn_dim))


class _Attention2dBase(_BiasedAttention):
    """EfficientFormerV2 attention on [B, C, H, W]: 1x1 ConvNorm projections, a depthwise ``v_local``
    branch added to the attention output, GELU and a ConvNorm projection."""

    def __init__(self, attn: nn.Module, qk_matmul: QuantMatMul, av_matmul: QuantMatMul) -> None:
        super().__init__(attn, qk_matmul, av_matmul)
        self.resolution, self.N, self.d, self.dh = attn.resolution, attn.N, attn.d, attn.dh
        self.q, self.k, self.v, self.v_local = attn.q, attn.k, attn.v, attn.v_local
        self.act, self.proj = attn.act, attn.proj

    def _heads(self, t: torch.Tensor, n: int) -> torch.Tensor:
        """[B, heads * c, H, W] -> [B, heads, c, n]"""
        return t.reshape(t.shape[0], self.num_heads, -1, n)

    def _values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-head values [B, heads, N, d] and the local (depthwise conv) value branch."""
        v = self.v(x)
        return self._heads(v, self.N).transpose(2, 3), self.v_local(v)


class QuantAttention2d(_Attention2dBase):
    """``timm.models.efficientformer_v2.Attention2d``: talking heads (1x1 convs across heads) before and
    after the softmax, optional strided depthwise ConvNorm + bilinear upsample around it.

    ``av_matmul``'s left operand is ``talking_head2(softmax)``, a signed head mix and not a
    probability, so it gets the plain activation quantizer; the softmax output itself is the input
    of ``talking_head2`` and gets the softmax quantizer there.
    """

    product_sites: ClassVar[ProductSites] = {"qk_matmul": (QuantMatMul, False), "av_matmul": (QuantMatMul, False)}
    probability_inputs: ClassVar[tuple[str, ...]] = ("talking_head2",)

    def __init__(self, attn: efficientformer_v2.Attention2d, qk_matmul: QuantMatMul, av_matmul: QuantMatMul) -> None:
        super().__init__(attn, qk_matmul, av_matmul)
        self.stride_conv, self.upsample = attn.stride_conv, attn.upsample
        self.talking_head1, self.talking_head2 = attn.talking_head1, attn.talking_head2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride_conv is not None:
            x = self.stride_conv(x)
        q, k = self._heads(self.q(x), self.N).transpose(2, 3), self._heads(self.k(x), self.N)
        v, v_local = self._values(x)
        attn = self.talking_head2(self.softmax(self.talking_head1(self._logits(q, k))))
        x = self.av_matmul(attn, v).transpose(2, 3).reshape(x.shape[0], self.dh, *self.resolution) + v_local
        if self.upsample is not None:
            x = self.upsample(x)
        return self.proj(self.act(x))


class QuantAttention2dDownsample(_Attention2dBase):
    """``timm.models.efficientformer_v2.Attention2dDownsample``: stride-2 queries from
    ``LocalGlobalQuery`` (depthwise conv + pooling) attend to all full-resolution keys."""

    def __init__(self, attn: efficientformer_v2.Attention2dDownsample, qk_matmul: QuantMatMul,
                 av_matmul: QuantMatMul) -> None:
        super().__init__(attn, qk_matmul, av_matmul)
        self.resolution2, self.N2, self.out_dim = attn.resolution2, attn.N2, attn.out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k = self._heads(self.q(x), self.N2).transpose(2, 3), self._heads(self.k(x), self.N)
        v, v_local = self._values(x)
        attn = self.softmax(self._logits(q, k))
        x = self.av_matmul(attn, v).transpose(2, 3).reshape(x.shape[0], self.dh, *self.resolution2) + v_local
        return self.proj(self.act(x))

