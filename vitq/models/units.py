"""Reconstruction units as a model family declares them: atoms (the finest pieces with one input and
one output), the runs of blocks they combine into, and the bridge groups of hybrid models.

A family adapter (``vitq.models.families``) builds a :class:`Partition` of a wrapped model; the
reconstruction engine (``vitq.recon``) only consumes it. Also here: the timm MLP structure rule
(``fc1 -> act -> fc2``) that wrapping and layer-wise reconstruction both read.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True)
class Atom:
    """A finest unit: ``name`` for schedules and logs, ``block`` = index of the block it belongs to,
    ``module`` = what holds its parameters and quantizers, ``forward`` = what it computes (default:
    ``module`` itself; a residual branch of a block computes part of it), ``bridge`` = a block where
    feature maps become tokens or back, ``mlp`` = the timm ``Mlp`` (``fc1 -> act -> fc2``) of a
    token-wise branch ``x + mlp(norm(x))``, which the ReLU-MLP model change (``vitq.models.relu_mlp``)
    refits one token at a time."""

    name: str
    block: int
    module: nn.Module
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None
    bridge: bool = False
    mlp: nn.Module | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (self.forward or self.module)(x)


@dataclass(frozen=True)
class Unit:
    """Consecutive atoms run as one piece: input of the first atom -> output of the last."""

    name: str
    atoms: tuple[Atom, ...]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for atom in self.atoms:
            x = atom(x)
        return x

    def modules(self) -> list[nn.Module]:
        return [a.module for a in self.atoms]


def unique_submodules(modules: Iterable[nn.Module], keep: Callable[[nn.Module], bool]) -> list:
    """Submodules of ``modules`` that pass ``keep``, once each, in execution (registration) order."""
    seen, out = set(), []
    for m in modules:
        for sub in m.modules():
            if id(sub) not in seen and keep(sub):
                seen.add(id(sub))
                out.append(sub)
    return out


def first_input(args: tuple) -> torch.Tensor:
    return args[0]


@dataclass(frozen=True)
class Partition:
    """The atoms of a wrapped model in execution order; ``entry`` is the module whose input is the
    first atom's input (everything before it, the stem, is not reconstructed)."""

    entry: str
    atoms: tuple[Atom, ...]
    block_names: tuple[str, ...]
    # turns the entry module's positional inputs into the one tensor the first atom takes
    pack_entry: Callable[[tuple], torch.Tensor] = first_input
    # (model, last atom's output) -> logits; needed by the whole-model level and the Fisher-weighted loss
    head: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None

    @property
    def num_blocks(self) -> int:
        return len(self.block_names)

    def units(self, blocks_per_unit: int) -> list[Unit]:
        """0 -> the atoms themselves; n >= 1 -> runs of n consecutive blocks."""
        if blocks_per_unit == 0:
            return [Unit(a.name, (a,)) for a in self.atoms]
        units = []
        for start in range(0, self.num_blocks, blocks_per_unit):
            stop = min(start + blocks_per_unit, self.num_blocks)
            atoms = tuple(a for a in self.atoms if start <= a.block < stop)
            name = self.block_names[start] if stop - start == 1 else f"{self.block_names[start]}..{self.block_names[stop - 1]}"
            units.append(Unit(name, atoms))
        return units

    def bridge_units(self) -> list[Unit]:
        """Every atom alone, except that each bridge atom is joined with the atom before it (the
        conv block whose feature map it turns into tokens) and, when the bridge has no weights of
        its own (a reshape such as EfficientFormer's ``Flat``), with the atom after it."""
        groups: list[list[Atom]] = []
        pending_after = False
        for atom in self.atoms:
            if pending_after:
                groups[-1].append(atom)
                pending_after = False
            elif atom.bridge and groups and not any(a.bridge for a in groups[-1]):
                groups[-1].append(atom)
                pending_after = not any(True for _ in atom.module.parameters())
            else:
                groups.append([atom])
        return [Unit(g[0].name if len(g) == 1 else f"{g[0].name}..{g[-1].name}", tuple(g)) for g in groups]


def block_partition(entry: str, named_blocks: list[tuple[str, nn.Module]], is_bridge: Callable[[nn.Module], bool],
                    head: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None) -> Partition:
    """One atom per block, in execution order; ``is_bridge`` flags the map <-> token transitions."""
    atoms = tuple(Atom(name, i, module, bridge=is_bridge(module)) for i, (name, module) in enumerate(named_blocks))
    return Partition(entry, atoms, tuple(a.name for a in atoms), head=head)


def norm_then_head(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What timm's ViT and Swin do after their blocks: final norm, pooling and classifier."""
    return model.forward_head(model.norm(x))


# layer attribute -> the sibling activation its output goes straight into (timm's Mlp: fc1 -> act -> fc2)
ACTIVATION_AFTER = {"fc1": "act"}


def _parent(model: nn.Module, layer_name: str) -> tuple[nn.Module, str]:
    parent_name, _, attr = layer_name.rpartition(".")
    return (model.get_submodule(parent_name) if parent_name else model), attr


def _mlp_activation(parent: nn.Module) -> nn.Module | None:
    from torch import nn

    act = getattr(parent, "act", None)
    return act if hasattr(parent, "fc1") and isinstance(act, nn.Module) and not isinstance(act, nn.Identity) else None


def activation_after(model: nn.Module, layer_name: str) -> nn.Module | None:
    """The elementwise activation that ``layer_name`` feeds directly, if any. Layer-wise
    reconstruction fits ``act(W x)`` there, as AdaRound does, not ``W x``: errors in the
    pre-activation that GELU squashes (its negative side) must not count as much as the ones it
    passes on (measured at W4A4: 62.9 % top-1 with it, 60.9 % without; docs/experiment_log.md)."""
    from torch import nn

    parent, attr = _parent(model, layer_name)
    act = getattr(parent, ACTIVATION_AFTER.get(attr, ""), None)
    return act if isinstance(act, nn.Module) else None


def reads_mlp_activation(model: nn.Module, layer_name: str) -> bool:
    """Whether Linear ``layer_name`` is ``fc2`` of a timm-style MLP (``fc1 -> act -> fc2``), i.e. reads GELU output."""
    parent, attr = _parent(model, layer_name)
    return attr == "fc2" and _mlp_activation(parent) is not None
