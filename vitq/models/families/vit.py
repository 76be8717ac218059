"""ViT / DeiT / DeiT III (timm ``vision_transformer``).

Units: ``x + MHSA(LN1(x))`` and ``x + MLP(LN2(x))`` of every block (PFCR's finest atoms), blocks
above them; the classifier head is the final norm, pooling and ``head``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from vitq.models.families.base import Family, register_family
from vitq.models.units import Atom, Partition, norm_then_head

if TYPE_CHECKING:
    from torch import nn


def attention() -> dict[type, type]:
    from timm.models.vision_transformer import Attention

    from vitq.models.attention import QuantAttention

    return {Attention: QuantAttention}


def attn_branch(block: nn.Module):
    """``x + drop_path1(ls1(attn(norm1(x))))`` of a timm ``Block``."""
    return lambda x: x + block.drop_path1(block.ls1(block.attn(block.norm1(x))))


def mlp_branch(block: nn.Module):
    """``x + drop_path2(ls2(mlp(norm2(x))))`` of a timm ``Block``."""
    return lambda x: x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))


def partition(model: nn.Module) -> Partition:
    atoms, names = [], []
    for i, block in enumerate(model.blocks):
        names.append(f"blocks.{i}")
        atoms += [Atom(f"blocks.{i}.attn", i, block, attn_branch(block)),
                  Atom(f"blocks.{i}.mlp", i, block, mlp_branch(block), mlp=block.mlp)]
    return Partition("blocks", tuple(atoms), tuple(names), head=norm_then_head)


def transformer_shape(model: nn.Module) -> tuple[int, int]:
    return int(model.blocks[0].attn.num_heads), int(model.embed_dim)


register_family(Family("vit", ("vit_*", "deit_*", "deit3_*"), first=("patch_embed.proj",), last=("head", "head_dist"),
                       partition=partition, attention=attention, transformer_shape=transformer_shape,
                       summary="ViT / DeiT / DeiT III"))
