"""Q-HyViT's per-layer activation layout search: scheme (symmetric / asymmetric) x granularity
(per-tensor / per-channel), chosen by the unit's reconstruction loss.

Hybrid ViTs mix convolution outputs with a few huge channels and LayerNorm / attention outputs
whose range barely includes zero; no single layout fits every layer. For each activation
quantizer of a unit, in order, each candidate layout is calibrated in place on the unit's
quantized input and scored by the unit's output error; the best one stays.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from vitq import distributed
from vitq.models.units import unique_submodules
from vitq.quant.layout import Layout, layout_of, relayout
from vitq.quant.modules import QuantConv2d, QuantLinear, QuantMatMul
from vitq.quant.quantizer import UniformQuantizer

SEARCH_SAMPLES = 32


def activation_sites(modules: Sequence[nn.Module]) -> Iterator[tuple[nn.Module, str, int | None, int]]:
    """(owner, attribute, channels or None, channel axis) of each activation quantizer; matmul
    operands only get the scheme choice (their channel axis is not a feature axis), and so do both
    quantizers of a conv with a quantized output: onnxruntime's integer conv takes per-tensor scales only."""
    for m in unique_submodules(modules, lambda m: isinstance(m, (QuantLinear, QuantConv2d, QuantMatMul))):
        if isinstance(m, QuantLinear):
            yield m, "input_quant", m.in_features, -1
        elif isinstance(m, QuantConv2d) and m.output_quant is not None:
            yield m, "input_quant", None, 1
            yield m, "output_quant", None, 1
        elif isinstance(m, QuantConv2d):
            yield m, "input_quant", m.in_channels, 1
        else:
            yield m, "a_quant", None, 0
            yield m, "b_quant", None, 0


def candidates(channels: int | None, axis: int, per_channel: bool = True) -> list[Layout]:
    layouts = [Layout(symmetric=False), Layout(symmetric=True)]
    if per_channel and channels is not None and channels > 1:
        layouts += [Layout(False, channels, axis), Layout(True, channels, axis)]
    return layouts


@torch.no_grad()
def select_layouts(modules: Sequence[nn.Module], forward: Callable[[torch.Tensor], torch.Tensor], x_q: torch.Tensor,
                   y: torch.Tensor, device: str, per_channel: bool = True) -> dict[int, str]:
    """Choose each enabled uniform activation quantizer's layout in ``modules`` (``per_channel=False``:
    the scheme only); returns ``{id(chosen quantizer): layout description}`` for the log."""
    x, target = distributed.from_main((x_q[:SEARCH_SAMPLES], y[:SEARCH_SAMPLES]))  # torchrun: every rank decides alike
    x, target = x.to(device), target.to(device)
    chosen: dict[int, str] = {}
    for owner, attr, channels, axis in list(activation_sites(modules)):
        current = getattr(owner, attr)
        if not isinstance(current, UniformQuantizer) or not current.enabled:
            continue
        best: tuple[float, UniformQuantizer] | None = None
        for layout in candidates(channels, axis, per_channel):
            q = current if layout == layout_of(current) else relayout(current, layout).to(device)
            setattr(owner, attr, q)
            if q is not current:
                q.start_observing()
                forward(x)
                q.stop_observing()
            loss = float((forward(x) - target).pow(2).mean())
            if best is None or loss < best[0]:
                best = (loss, q)
        setattr(owner, attr, best[1])
        chosen[id(best[1])] = layout_of(best[1]).describe()
    return chosen
