"""EfficientFormer v1 and v2 (timm ``efficientformer`` / ``efficientformer_v2``): stages of downsample +
meta blocks. Bridges: v1's ``Flat`` (4D -> 3D tokens) and, in v2, the first block of a stage that
uses attention after convolutional ones."""
from __future__ import annotations

from typing import TYPE_CHECKING

from vitq.models.families.base import Family, FoldPairs, register_family
from vitq.models.units import Partition, block_partition

if TYPE_CHECKING:
    from torch import nn


def attention() -> dict[type, type]:
    from timm.models import efficientformer, efficientformer_v2

    from vitq.models.hybrid_attention import QuantAttention2d, QuantAttention2dDownsample, QuantEfficientFormerAttention

    return {efficientformer.Attention: QuantEfficientFormerAttention, efficientformer_v2.Attention2d: QuantAttention2d,
            efficientformer_v2.Attention2dDownsample: QuantAttention2dDownsample}


def fold_pairs() -> FoldPairs:
    from timm.models import efficientformer, efficientformer_v2

    return {
        efficientformer_v2.ConvNorm: (("conv", "bn"),),
        efficientformer.Stem4: (("conv1", "norm1"), ("conv2", "norm2")),
        efficientformer.Downsample: (("conv", "norm"),),
        efficientformer.ConvMlpWithNorm: (("fc1", "norm1"), ("fc2", "norm2")),
    }


def partition(model: nn.Module) -> Partition:
    from timm.models import efficientformer
    from torch import nn

    attention_types = tuple(t for pair in attention().items() for t in pair)  # float or already wrapped

    def has_attention(module: nn.Module) -> bool:
        return any(isinstance(m, attention_types) for m in module.modules())

    blocks: list[tuple[str, nn.Module]] = []
    for s, stage in enumerate(model.stages):
        if not isinstance(stage.downsample, nn.Identity):
            blocks.append((f"stages.{s}.downsample", stage.downsample))
        blocks += [(f"stages.{s}.blocks.{j}", b) for j, b in enumerate(stage.blocks)]
    bridges = {id(b) for (_, prev), (_, b) in zip(blocks, blocks[1:])
               if isinstance(b, efficientformer.Flat) or (has_attention(b) and not has_attention(prev))}
    return block_partition("stages", blocks, lambda m: id(m) in bridges)


register_family(Family("efficientformer", ("efficientformer_l*",), first=("stem.conv1",), last=("head", "head_dist"),
                       partition=partition, attention=attention, fold_pairs=fold_pairs, summary="EfficientFormer v1 (hybrid)"))
register_family(Family("efficientformerv2", ("efficientformerv2_*",), first=("stem.conv1.conv",), last=("head", "head_dist"),
                       partition=partition, attention=attention, fold_pairs=fold_pairs, summary="EfficientFormer v2 (hybrid)"))
