"""Model families: which timm names vitq knows how to wrap, and where each family's
first and last layers are (for the first/last precision policy).

Later stages (reconstruction partitions, bridge blocks) attach their per-family rules here, so a
model without a rule fails early with the list of what is supported.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from vitq.errors import VitqError
from vitq.registry import Registry


@dataclass(frozen=True)
class Family:
    """A set of timm architectures that share wrapping rules."""

    name: str
    patterns: tuple[str, ...]
    first: tuple[str, ...]
    last: tuple[str, ...]
    hybrid: bool = False  # convolution + attention: BatchNorm is folded into convolutions before wrapping

    def matches(self, model_name: str) -> bool:
        return any(fnmatch.fnmatchcase(model_name, p) for p in self.patterns)


FAMILIES: Registry[Family] = Registry("model family")


def register_family(family: Family) -> Family:
    return FAMILIES.register(family.name)(family)


register_family(Family("vit", ("vit_*", "deit_*", "deit3_*"), first=("patch_embed.proj",), last=("head", "head_dist")))
register_family(Family("swin", ("swin_*",), first=("patch_embed.proj",), last=("head.fc",)))
register_family(Family("mobilevit", ("mobilevit_*",), first=("stem.conv",), last=("head.fc",), hybrid=True))
register_family(Family("mobilevitv2", ("mobilevitv2_*",), first=("stem.conv",), last=("head.fc",), hybrid=True))
register_family(Family("efficientformer", ("efficientformer_l*",), first=("stem.conv1",), last=("head", "head_dist"),
                       hybrid=True))
register_family(Family("efficientformerv2", ("efficientformerv2_*",), first=("stem.conv1.conv",),
                       last=("head", "head_dist"), hybrid=True))
register_family(Family("mobile_former", ("mobile_former_*",), first=("stem.conv",), last=("head.fc",), hybrid=True))


def family_for(model_name: str) -> Family:
    for name in FAMILIES.names():
        family = FAMILIES.get(name)
        if family.matches(model_name):
            return family
    supported = "; ".join(f"{n}: {', '.join(FAMILIES.get(n).patterns)}" for n in FAMILIES.names())
    raise VitqError(f"model {model_name!r} belongs to no supported family ({supported})")
