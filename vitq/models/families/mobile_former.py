"""Mobile-Former (implemented in ``vitq.models.mobile_former``): parallel MobileNet and transformer
streams joined by two-way cross-attention bridges.

Units: one atom per block on packed (map, tokens) tensors; every block holding the Mobile <-> Former
bridges is a bridge (the first, bneck-lite, is plain convolution). Its attention products are
already ``MatMul`` modules, so nothing is replaced.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from vitq.models.families.base import Family, FoldPairs, register_family
from vitq.models.units import Atom, Partition

if TYPE_CHECKING:
    from torch import nn


def fold_pairs() -> FoldPairs:
    from vitq.models import mobile_former

    return {mobile_former.ClassifierHead: (("conv", "bn"),)}


def _in_channels(block: nn.Module) -> int:
    """Channels of a block's input map: those of its first convolution."""
    return next(m.in_channels for m in block.modules() if hasattr(m, "in_channels") and hasattr(m, "weight"))


def partition(model: nn.Module) -> Partition:
    from vitq.models.mobile_former import PackedMapTokens, pack_map_tokens

    tokens = tuple(model.tokens.shape)
    atoms = []
    for i, b in enumerate(model.blocks):
        packed = PackedMapTokens(b, _in_channels(b), tokens)
        atoms.append(Atom(f"blocks.{i}", i, packed, bridge=hasattr(b, "mobile_to_former")))
    return Partition("blocks", tuple(atoms), tuple(a.name for a in atoms), pack_entry=lambda args: pack_map_tokens(*args))


register_family(Family("mobile_former", ("mobile_former_*",), first=("stem.conv",), last=("head.fc",), partition=partition,
                       fold_pairs=fold_pairs, summary="Mobile-Former (hybrid, implemented in vitq)"))
