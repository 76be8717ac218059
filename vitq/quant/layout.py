"""Quantizer layouts (scheme x granularity) that can change after wrapping.

Q-HyViT picks, per layer, symmetric vs asymmetric and per-tensor vs per-channel activation
quantization by reconstruction loss. The choice changes a quantizer's parameter shapes, so a
quantized checkpoint records every uniform quantizer's layout and ``load_quantized`` re-applies it
before loading the state dict.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from vitq.quant.quantizer import UniformQuantizer


@dataclass(frozen=True)
class Layout:
    """``channels is None`` is per-tensor; otherwise one scale per index of ``ch_axis``."""

    symmetric: bool
    channels: int | None = None
    ch_axis: int = 0

    def describe(self) -> str:
        scheme = "sym" if self.symmetric else "asym"
        return f"{scheme}/{'tensor' if self.channels is None else 'channel'}"

    def to_dict(self) -> dict:
        return asdict(self)


def layout_of(q: UniformQuantizer) -> Layout:
    return Layout(q.symmetric, q.channels, q.ch_axis if q.channels is not None else 0)


def relayout(q: UniformQuantizer, layout: Layout) -> UniformQuantizer:
    """A fresh, uncalibrated quantizer like ``q`` (bits, observer, enabled) with another layout."""
    new = UniformQuantizer(q.bits, symmetric=layout.symmetric, channels=layout.channels, ch_axis=layout.ch_axis,
                           observer=q.observer_name, observer_kwargs=q.observer_kwargs)
    new.enabled = q.enabled
    return new
