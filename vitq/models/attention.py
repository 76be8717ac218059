"""Attention modules with the two matmuls as visible, quantizable modules.

timm computes attention with fused ``scaled_dot_product_attention`` or with inline ``@``; neither
exposes the operands. These modules (each family adapter in ``vitq.models.families`` names the ones it
uses) take over a float timm attention module's parameters (same
state-dict names) and compute ``softmax(q k^T * scale + bias) v`` through two :class:`QuantMatMul`.
"""
from __future__ import annotations

import torch
from timm.models.swin_transformer import WindowAttention
from timm.models.vision_transformer import Attention
from torch import nn

from vitq.errors import VitqError
from vitq.quant.modules import QuantMatMul


class QuantAttention(nn.Module):
    """Multi-head self-attention of timm ViT/DeiT (``timm.models.vision_transformer.Attention``)."""

    def __init__(self, attn: Attention, qk_matmul: QuantMatMul, av_matmul: QuantMatMul) -> None:
        super().__init__()
        if getattr(attn, "gate", None) is not None:
            raise VitqError("gated attention is not supported")
        self.num_heads, self.head_dim, self.scale = attn.num_heads, attn.head_dim, attn.scale
        self.attn_dim = attn.num_heads * attn.head_dim
        self.qkv, self.q_norm, self.k_norm = attn.qkv, attn.q_norm, attn.k_norm
        self.attn_drop, self.norm, self.proj, self.proj_drop = attn.attn_drop, attn.norm, attn.proj, attn.proj_drop
        self.qk_matmul = qk_matmul
        self.softmax = nn.Softmax(dim=-1)
        self.av_matmul = av_matmul

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        if attn_mask is not None or is_causal:
            raise NotImplementedError("attention masks are not supported by vitq's quantized attention")
        B, N, _ = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        attn = self.qk_matmul(q * self.scale, k.transpose(-2, -1))
        attn = self.attn_drop(self.softmax(attn))
        x = self.av_matmul(attn, v)
        x = self.norm(x.transpose(1, 2).reshape(B, N, self.attn_dim))
        return self.proj_drop(self.proj(x))


class QuantWindowAttention(nn.Module):
    """Swin window attention with relative position bias and shifted-window mask."""

    def __init__(self, attn: WindowAttention, qk_matmul: QuantMatMul, av_matmul: QuantMatMul) -> None:
        super().__init__()
        self.num_heads, self.scale, self.window_area = attn.num_heads, attn.scale, attn.window_area
        self.relative_position_bias_table = attn.relative_position_bias_table
        self.register_buffer("relative_position_index", attn.relative_position_index, persistent=False)
        self.qkv, self.attn_drop, self.proj, self.proj_drop = attn.qkv, attn.attn_drop, attn.proj, attn.proj_drop
        self.qk_matmul = qk_matmul
        self.softmax = nn.Softmax(dim=-1)
        self.av_matmul = av_matmul

    def _rel_pos_bias(self) -> torch.Tensor:
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(self.window_area, self.window_area, -1).permute(2, 0, 1).unsqueeze(0)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B_, N, _ = x.shape
        qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = self.qk_matmul(q * self.scale, k.transpose(-2, -1)) + self._rel_pos_bias()
        if mask is not None:
            num_win = mask.shape[0]
            attn = attn.view(-1, num_win, self.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, N, N)
        attn = self.attn_drop(self.softmax(attn))
        x = self.av_matmul(attn, v)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(B_, N, -1)))

