"""Swin Transformer (timm ``swin_transformer``).

Units: the attention and MLP residual branches of every block on (B, H, W, C), shift and windowing
included; a stage's patch merging joins the first block of its stage.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from vitq.models.families.base import Family, register_family
from vitq.models.units import Atom, Partition, norm_then_head

if TYPE_CHECKING:
    from torch import nn


def attention() -> dict[type, type]:
    from timm.models.swin_transformer import WindowAttention

    from vitq.models.attention import QuantWindowAttention

    return {WindowAttention: QuantWindowAttention}


def attn_branch(block: nn.Module):
    """``x + drop_path1(window_attention(norm1(x)))``."""
    return lambda x: x + block.drop_path1(block._attn(block.norm1(x)))


def mlp_branch(block: nn.Module):
    """``x + drop_path2(mlp(norm2(x)))``."""
    return lambda x: x + block.drop_path2(block.mlp(block.norm2(x)))


def partition(model: nn.Module) -> Partition:
    from torch import nn

    atoms, names = [], []
    for s, stage in enumerate(model.layers):
        if not isinstance(stage.downsample, nn.Identity):
            atoms.append(Atom(f"layers.{s}.downsample", len(names), stage.downsample))
        for j, block in enumerate(stage.blocks):
            i = len(names)
            names.append(f"layers.{s}.blocks.{j}")
            atoms += [Atom(f"{names[-1]}.attn", i, block, attn_branch(block)),
                      Atom(f"{names[-1]}.mlp", i, block, mlp_branch(block), mlp=block.mlp)]
    return Partition("layers", tuple(atoms), tuple(names), head=norm_then_head)


register_family(Family("swin", ("swin_*",), first=("patch_embed.proj",), last=("head.fc",), partition=partition,
                       attention=attention, summary="Swin Transformer"))
