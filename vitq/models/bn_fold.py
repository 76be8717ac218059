"""Fold BatchNorm into the convolution it follows, for hybrid (conv + attention) models.

Quantizing a conv and then applying a float BatchNorm would leave a float per-channel affine in
the integer graph, and the weight quantizer would see weights whose per-channel scale the BN later
undoes. Folding (inference semantics, running statistics) gives one conv with the same function:

    s = gamma / sqrt(running_var + eps)
    W' = W * s (per output channel),  b' = (b - running_mean) * s + beta

Pairs are found from module structures (timm's generic ``ConvNormAct`` here, the rest declared by each
family adapter in ``vitq.models.families``), each checked against
its ``forward`` (the conv's output goes only into the BN), instead of from registration order or a
traced forward pass: registration order says nothing about data flow, and a trace would need an
input size that fixed-resolution models (EfficientFormer) do not expose reliably. A BatchNorm not
in the table (e.g. EfficientFormerV2's final ``norm``, which follows a residual sum) stays float
and ``vitq.models.wrap.float_layers_left`` reports it.
"""
from __future__ import annotations

import torch
from timm.layers import ConvNormAct
from torch import nn

from vitq.models.families import FoldPairs

# parent module type -> (conv attribute, BatchNorm attribute) pairs where forward does bn(conv(x)); timm's
# generic conv + norm layer, used by several families
GENERIC_PAIRS: FoldPairs = {ConvNormAct: (("conv", "bn"),)}


def _pairs(parent: nn.Module, known: FoldPairs) -> tuple[tuple[str, str], ...]:
    """Known pairs of ``parent``; in an ``nn.Sequential`` (whose forward is the chain of its
    children) every Conv2d directly followed by a BatchNorm2d is a pair too."""
    pairs = known.get(type(parent), ())
    if isinstance(parent, nn.Sequential) and type(parent).forward is nn.Sequential.forward:
        names = list(parent._modules)
        pairs += tuple((a, b) for a, b in zip(names, names[1:])
                       if isinstance(parent._modules[a], nn.Conv2d) and isinstance(parent._modules[b], nn.BatchNorm2d))
    return pairs


class FoldedNorm(nn.Module):
    """What is left of a BatchNorm after folding: timm's BatchNormAct2d applies ``drop`` then ``act``
    after normalising, so they stay, under the same attribute names (their state-dict keys, e.g. a
    PReLU weight, keep loading); for a plain BatchNorm2d both are identities."""

    def __init__(self, drop: nn.Module | None = None, act: nn.Module | None = None) -> None:
        super().__init__()
        self.drop = drop if drop is not None else nn.Identity()
        self.act = act if act is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(x))


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
            and bn.running_mean is not None and bn.running_var is not None and bn.num_features == conv.out_channels)


@torch.no_grad()
def fold_bn_into_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Rewrite ``conv`` in place so that ``conv(x) == bn(conv_before(x))`` in eval mode."""
    scale = torch.rsqrt(bn.running_var + bn.eps)
    shift = -bn.running_mean * scale
    if bn.weight is not None:
        scale, shift = scale * bn.weight, shift * bn.weight
    if bn.bias is not None:
        shift = shift + bn.bias
    bias = conv.bias if conv.bias is not None else torch.zeros_like(shift)
    conv.weight.mul_(scale.reshape(-1, 1, 1, 1).to(conv.weight.dtype))
    conv.bias = nn.Parameter((bias * scale + shift).to(conv.weight.dtype))


def fold_batchnorms(model: nn.Module, pairs: FoldPairs | None = None) -> list[str]:
    """Fold every BatchNorm of a known conv -> BN structure (``GENERIC_PAIRS`` plus a family's ``pairs``)
    into its conv; returns the folded BN names."""
    known = {**GENERIC_PAIRS, **(pairs or {})}
    folded = []
    for name, parent in list(model.named_modules()):
        for conv_attr, bn_attr in _pairs(parent, known):
            conv, bn = getattr(parent, conv_attr), getattr(parent, bn_attr)
            if not _foldable(conv, bn):
                continue
            fold_bn_into_conv(conv, bn)
            setattr(parent, bn_attr, FoldedNorm(getattr(bn, "drop", None), getattr(bn, "act", None)))
            folded.append(f"{name}.{bn_attr}" if name else bn_attr)
    return folded
