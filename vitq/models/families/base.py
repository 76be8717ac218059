"""What a model-family adapter declares, and the registry that finds a model's family by name.

An adapter (one file in this package) registers a :class:`Family`: the timm name patterns it
covers, its first and last layers (for the first/last precision policy), the attention modules it
replaces with quantizable ones, the conv -> BatchNorm pairs to fold (hybrids), and the unit
partition reconstruction walks. Declaring a family imports no torch: the hooks import what they
need when they run.
"""
from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vitq.errors import VitqError
from vitq.registry import Registry

if TYPE_CHECKING:
    from torch import nn

    from vitq.models.units import Atom, Partition

# parent module type -> (conv attribute, BatchNorm attribute) pairs where the parent's forward does bn(conv(x))
FoldPairs = dict[type, tuple[tuple[str, str], ...]]


def _none() -> dict:
    return {}


def _inferred(_model: nn.Module) -> tuple[int, int]:
    return 0, 0


@dataclass(frozen=True)
class Family:
    """A set of timm architectures that share wrapping and reconstruction rules.

    Attributes:
        name: registry name.
        patterns: fnmatch patterns of the timm names it covers.
        first / last: module names of the first (stem / patch embedding) and last (classifier) layers.
        partition: wrapped model -> its reconstruction units.
        attention: () -> ``{timm attention type: quantizable replacement type}``.
        fold_pairs: () -> the conv -> BatchNorm pairs to fold before wrapping (``vitq.models.bn_fold``);
            a family with any is a hybrid (conv + attention) whose BatchNorm is folded.
        transformer_shape: wrapped model -> (attention heads, hidden size) for onnxruntime's transformer
            fusions of the fp32 graph a benchmark compares against; (0, 0) lets onnxruntime infer them.
        summary: one line for ``vitq list``.
    """

    name: str
    patterns: tuple[str, ...]
    first: tuple[str, ...]
    last: tuple[str, ...]
    partition: Callable[[nn.Module], Partition]
    attention: Callable[[], dict[type, type]] = _none
    fold_pairs: Callable[[], FoldPairs] | None = None
    transformer_shape: Callable[[nn.Module], tuple[int, int]] = _inferred
    summary: str = ""

    @property
    def hybrid(self) -> bool:
        return self.fold_pairs is not None

    def matches(self, model_name: str) -> bool:
        return any(fnmatch.fnmatchcase(model_name, p) for p in self.patterns)


FAMILIES: Registry[Family] = Registry("model family")


def register_family(family: Family) -> Family:
    """Add ``family`` to the registry; returns it."""
    return FAMILIES.register(family.name)(family)


def family_for(model_name: str) -> Family:
    for name in FAMILIES.names():
        family = FAMILIES.get(name)
        if family.matches(model_name):
            return family
    supported = "; ".join(f"{n}: {', '.join(FAMILIES.get(n).patterns)}" for n in FAMILIES.names())
    raise VitqError(f"model {model_name!r} belongs to no supported family ({supported})")


def plain_transformer_families() -> list[str]:
    """Names of the registered families that are not hybrids: their partitions declare a classifier head and
    token-wise MLP branches, which the Fisher losses and the ReLU-MLP change need."""
    return [n for n in FAMILIES.names() if not FAMILIES.get(n).hybrid]


def mlp_branches(model: nn.Module, model_name: str, option: str) -> list[Atom]:
    """The token-wise MLP branches (``Atom.mlp``) of ``model``, in execution order, for the model change ``option``
    (``relu_mlp``, ``rotate_mlp``); a family whose partition marks none is an error naming the families that do."""
    family = family_for(model_name)
    atoms = [a for a in family.partition(model).atoms if a.mlp is not None]
    if not atoms:
        raise VitqError(f"{option} changes the MLPs of transformer blocks, which the {family.name} family's partition "
                        f"does not mark; families that take it: {', '.join(plain_transformer_families())}")
    return atoms


def partition_for(model: nn.Module, model_name: str) -> Partition:
    """The reconstruction units of a wrapped ``model_name`` model, as its family declares them."""
    return family_for(model_name).partition(model)
