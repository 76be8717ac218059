"""Twin-uniform quantizer for post-softmax and post-GELU activations (PTQ4ViT, Yuan et al., ECCV 2022).

One uniform grid fits these distributions badly: post-softmax values are mostly tiny with a few
large ones, and post-GELU values have a short negative tail (GELU >= -0.17) next to a long
positive one. Twin-uniform quantization splits a k-bit code into a range flag and a (k-1)-bit
magnitude on one of two uniform grids whose steps differ by a power of two:

    fine step   s        (the ``scale`` parameter)
    coarse step s * 2^m  (``m`` is the ``shift`` buffer, an integer >= 0)

* unsigned (post-softmax): both grids start at 0; a value that fits the fine grid
  (``round(x / s) <= 2^(k-1) - 1``) uses it, larger values use the coarse grid.
* signed (post-GELU): negative values use the fine grid, positive values the coarse one.

The power-of-two relation is what makes the format cheap in hardware: codes of both ranges are
aligned by a bit shift before an integer matmul. It also means a scale search only chooses ``m``
once one range is anchored (see ``vitq.baselines.search.candidates``).

There is no ONNX QDQ equivalent: exporters fall back to one uniform 8-bit grid over
:meth:`TwinUniformQuantizer.value_range` (see ``vitq.export.markers.uniform_fallback``).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from vitq.quant.observers import Observer
from vitq.quant.quantizer import Quantizer, round_ste

MAX_SHIFT = 16  # coarse / fine step ratio at most 2^16; beyond that the fine grid represents nothing useful
# Unsigned start: fine step 1/8 of the coarse one. Minimises the MSE on softmax over 197 tokens at
# 4..8 bits (1/4 is close, 1/16 and beyond lose the mid-range values); PTQ4ViT then searches it.
UNSIGNED_SHIFT = 3


class TwinUniformQuantizer(Quantizer):
    """Two (k-1)-bit uniform grids with steps ``scale`` and ``scale * 2**shift`` (see module docstring).

    Calibration (min/max of the observer): the coarse grid covers the observed maximum. Unsigned,
    the fine step starts ``UNSIGNED_SHIFT`` octaves below it (PTQ4ViT searches this shift later);
    signed, the fine grid covers the observed minimum and the shift is the smallest one whose
    coarse grid still reaches the maximum.
    """

    kind = "twin_uniform"

    def __init__(self, bits: int, signed: bool, observer: str = "minmax", observer_kwargs: dict | None = None) -> None:
        super().__init__(bits, observer, observer_kwargs)
        self.signed = signed
        self.levels = (1 << (bits - 1)) - 1  # top magnitude code of each (k-1)-bit grid
        self.scale = nn.Parameter(torch.ones(1), requires_grad=False)
        self.register_buffer("shift", torch.zeros(1, dtype=torch.long))

    def _describe(self) -> str:
        return f"{'signed' if self.signed else 'unsigned'}, shift={int(self.shift)}"

    @property
    def coarse_scale(self) -> torch.Tensor:
        return torch.ldexp(self.scale, self.shift)

    def _set_from_observer(self, observer: Observer) -> None:
        eps = torch.finfo(torch.float32).eps
        coarse = float(observer.hi.max().clamp_min(eps)) / self.levels
        if self.signed:
            fine = max(float(-observer.lo.min()) / self.levels, math.ldexp(coarse, -MAX_SHIFT))
            shift = max(0, math.ceil(math.log2(coarse / fine)))
        else:
            shift = UNSIGNED_SHIFT
            fine = math.ldexp(coarse, -shift)
        with torch.no_grad():
            self.scale.fill_(fine)
            self.shift.fill_(shift)

    def _quantize(self, x: torch.Tensor) -> torch.Tensor:
        fine, coarse = self.scale, self.coarse_scale
        on_fine = round_ste(x / fine)
        on_coarse = torch.clamp(round_ste(x / coarse), 0, self.levels) * coarse
        if self.signed:
            return torch.where(x < 0, torch.clamp(on_fine, -self.levels, 0) * fine, on_coarse)
        return torch.where(on_fine <= self.levels, torch.clamp(on_fine, 0, self.levels) * fine, on_coarse)

    def value_range(self) -> tuple[float, float]:
        """The float range both grids span together (what an export fallback must cover)."""
        lo = -self.levels * float(self.scale) if self.signed else 0.0
        return lo, self.levels * float(self.coarse_scale)
