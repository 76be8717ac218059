"""MobileViT v1 and v2 (timm ``mobilevit`` on ``byobnet``): stages of conv bottlenecks; a MobileViT block
(conv -> unfold -> transformer -> fold -> conv) is a bridge between feature maps and tokens.

Units: one atom per block. v1 attention is timm's ViT ``Attention`` (inside its transformer), v2's is
``LinearSelfAttention``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from vitq.models.families.base import Family, FoldPairs, register_family
from vitq.models.units import Partition, block_partition

if TYPE_CHECKING:
    from torch import nn


def attention() -> dict[type, type]:
    from timm.models.mobilevit import LinearSelfAttention
    from timm.models.vision_transformer import Attention

    from vitq.models.attention import QuantAttention
    from vitq.models.hybrid_attention import QuantLinearSelfAttention

    return {Attention: QuantAttention, LinearSelfAttention: QuantLinearSelfAttention}


def fold_pairs() -> FoldPairs:
    return {}  # timm's ConvNormAct and plain Sequential pairs only (vitq.models.bn_fold)


def partition(model: nn.Module) -> Partition:
    from timm.models.mobilevit import MobileVitBlock, MobileVitV2Block

    blocks = [(f"stages.{s}.{j}", b) for s, stage in enumerate(model.stages) for j, b in enumerate(stage)]
    return block_partition("stages", blocks, lambda m: isinstance(m, MobileVitBlock | MobileVitV2Block))


register_family(Family("mobilevit", ("mobilevit_*",), first=("stem.conv",), last=("head.fc",), partition=partition,
                       attention=attention, fold_pairs=fold_pairs, summary="MobileViT v1 (hybrid)"))
register_family(Family("mobilevitv2", ("mobilevitv2_*",), first=("stem.conv",), last=("head.fc",), partition=partition,
                       attention=attention, fold_pairs=fold_pairs, summary="MobileViT v2 (hybrid)"))
