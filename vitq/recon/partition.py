"""Unit partition per model family: the finest residual pieces of each transformer block.

An *atom* is the smallest reconstruction unit with one input and one output on the residual
stream: ``x + MHSA(LN1(x))`` and ``x + MLP(LN2(x))`` of a block (plus Swin's patch merging, which
joins the first block of its stage). Coarser units are runs of consecutive blocks. Rules are keyed
by family name (``vitq.models.families``) so a model without one fails early, listing those that
have one.

Hybrid models (MobileViT, EfficientFormer) have no residual MHSA/MLP split that spans the whole
network: their atoms are whole blocks, and the blocks where feature maps become tokens (and back)
are flagged as *bridges* (Q-HyViT reconstructs each bridge together with the block feeding it).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from vitq.errors import VitqError
from vitq.models.families import family_for
from vitq.registry import Registry


class ViTAttnBranch(nn.Module):
    """``x + drop_path1(ls1(attn(norm1(x))))`` of a timm ViT/DeiT ``Block``."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.block
        return x + b.drop_path1(b.ls1(b.attn(b.norm1(x))))


class ViTMlpBranch(nn.Module):
    """``x + drop_path2(ls2(mlp(norm2(x))))`` of a timm ViT/DeiT ``Block``."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.block
        return x + b.drop_path2(b.ls2(b.mlp(b.norm2(x))))


class SwinAttnBranch(nn.Module):
    """``x + drop_path1(window_attention(norm1(x)))`` on (B, H, W, C), shift and windowing included."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block.drop_path1(self.block._attn(self.block.norm1(x)))


class SwinMlpBranch(nn.Module):
    """``x + drop_path2(mlp(norm2(x)))`` of a Swin block, on (B, H, W, C) like the block itself."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block.drop_path2(self.block.mlp(self.block.norm2(x)))


@dataclass(frozen=True)
class Atom:
    """A finest unit: ``name`` for schedules and logs, ``block`` = index of the block it belongs to."""

    name: str
    block: int
    module: nn.Module
    bridge: bool = False


@dataclass(frozen=True)
class Unit:
    """Consecutive atoms run as one piece: input of the first atom -> output of the last."""

    name: str
    atoms: tuple[Atom, ...]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for atom in self.atoms:
            x = atom.module(x)
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
    # (model, last atom's output) -> logits; needed by the Fisher-weighted loss, None where not defined
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


PARTITIONS: Registry[Callable[[nn.Module], Partition]] = Registry("partition rule")


def norm_then_head(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What timm's ViT and Swin do after their blocks: final norm, pooling and classifier."""
    return model.forward_head(model.norm(x))


@PARTITIONS.register("vit")
def vit_partition(model: nn.Module) -> Partition:
    atoms, names = [], []
    for i, block in enumerate(model.blocks):
        names.append(f"blocks.{i}")
        atoms += [Atom(f"blocks.{i}.attn", i, ViTAttnBranch(block)), Atom(f"blocks.{i}.mlp", i, ViTMlpBranch(block))]
    return Partition("blocks", tuple(atoms), tuple(names), head=norm_then_head)


@PARTITIONS.register("swin")
def swin_partition(model: nn.Module) -> Partition:
    atoms, names = [], []
    for s, stage in enumerate(model.layers):
        if not isinstance(stage.downsample, nn.Identity):
            atoms.append(Atom(f"layers.{s}.downsample", len(names), stage.downsample))
        for j, block in enumerate(stage.blocks):
            i = len(names)
            names.append(f"layers.{s}.blocks.{j}")
            atoms += [Atom(f"{names[-1]}.attn", i, SwinAttnBranch(block)), Atom(f"{names[-1]}.mlp", i, SwinMlpBranch(block))]
    return Partition("layers", tuple(atoms), tuple(names), head=norm_then_head)


def _block_partition(entry: str, named_blocks: list[tuple[str, nn.Module]], is_bridge: Callable[[nn.Module], bool]) -> Partition:
    """One atom per block, in execution order; ``is_bridge`` flags the map <-> token transitions."""
    atoms = tuple(Atom(name, i, module, is_bridge(module)) for i, (name, module) in enumerate(named_blocks))
    return Partition(entry, atoms, tuple(a.name for a in atoms))


def _has_attention(module: nn.Module) -> bool:
    return any("Attention" in type(m).__name__ for m in module.modules())


@PARTITIONS.register("mobilevit")
@PARTITIONS.register("mobilevitv2")
def mobilevit_partition(model: nn.Module) -> Partition:
    """ByobNet stages of conv bottlenecks; MobileViT blocks (conv -> unfold -> transformer -> fold -> conv) are bridges."""
    blocks = [(f"stages.{s}.{j}", b) for s, stage in enumerate(model.stages) for j, b in enumerate(stage)]
    return _block_partition("stages", blocks, lambda m: type(m).__name__ in ("MobileVitBlock", "MobileVitV2Block"))


@PARTITIONS.register("efficientformer")
@PARTITIONS.register("efficientformerv2")
def efficientformer_partition(model: nn.Module) -> Partition:
    """Stages of downsample + meta blocks. Bridges: v1's ``Flat`` (4D -> 3D tokens) and, in v2, the
    first block of a stage that uses attention after convolutional ones."""
    blocks: list[tuple[str, nn.Module]] = []
    for s, stage in enumerate(model.stages):
        if not isinstance(stage.downsample, nn.Identity):
            blocks.append((f"stages.{s}.downsample", stage.downsample))
        blocks += [(f"stages.{s}.blocks.{j}", b) for j, b in enumerate(stage.blocks)]
    bridges = {id(b) for (_, prev), (_, b) in zip(blocks, blocks[1:])
               if type(b).__name__ == "Flat" or (_has_attention(b) and not _has_attention(prev))}
    return _block_partition("stages", blocks, lambda m: id(m) in bridges)


def pack_map_tokens(x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) map + (B, T, D) tokens -> (B, C*H*W + T*D): one tensor for the engine's caches."""
    return torch.cat([x.flatten(1), tokens.flatten(1)], dim=1)


class PackedMapTokens(nn.Module):
    """Runs a Mobile-Former block, which maps (map, tokens) -> (map, tokens), on packed tensors.
    The map is square (H == W), as in every Mobile-Former input vitq makes."""

    def __init__(self, block: nn.Module, in_channels: int, tokens: tuple[int, int]) -> None:
        super().__init__()
        self.block, self.in_channels, self.tokens = block, in_channels, tokens

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        n_tok = self.tokens[0] * self.tokens[1]
        flat = z[:, :-n_tok]
        side = math.isqrt(flat.shape[1] // self.in_channels)
        x = flat.reshape(z.shape[0], self.in_channels, side, side)
        return pack_map_tokens(*self.block(x, z[:, -n_tok:].reshape(z.shape[0], *self.tokens)))


@PARTITIONS.register("mobile_former")
def mobile_former_partition(model: nn.Module) -> Partition:
    """One atom per block on packed (map, tokens) tensors; every block holding the Mobile <-> Former
    cross-attention bridges is a bridge (the first, bneck-lite, is plain convolution)."""
    tokens = tuple(model.tokens.shape)
    atoms = tuple(Atom(f"blocks.{i}", i, PackedMapTokens(b, _in_channels(b), tokens), hasattr(b, "mobile_to_former"))
                  for i, b in enumerate(model.blocks))
    return Partition("blocks", atoms, tuple(a.name for a in atoms), pack_entry=lambda args: pack_map_tokens(*args))


def _in_channels(block: nn.Module) -> int:
    """Channels of a block's input map: those of its first convolution."""
    return next(m.in_channels for m in block.modules() if hasattr(m, "in_channels") and hasattr(m, "weight"))


def partition_for(model: nn.Module, model_name: str) -> Partition:
    """The partition of a wrapped model; a family without a rule fails listing the families with one."""
    family = family_for(model_name).name
    if family not in PARTITIONS:
        raise VitqError(f"no reconstruction partition rule for family {family!r} ({model_name}); "
                        f"families with a rule: {', '.join(PARTITIONS.names())}")
    return PARTITIONS.get(family)(model)
