"""Observers: turn the values a quantizer sees during calibration into a scale and zero-point.

All observers view their input as rows: one row per channel for per-channel quantizers, a single
row for per-tensor ones. They never keep whole activations: min/max are exact, the percentile
observer keeps each batch's extreme values (enough for an exact tail percentile), and the MSE
search keeps a bounded random sample of each row.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from vitq import distributed
from vitq.registry import Registry

OBSERVERS: Registry[type[Observer]] = Registry("observer")

MAX_SAMPLES_PER_ROW = 1 << 20  # bounded memory for per-tensor activations
MAX_SAMPLES_PER_BATCH = 1 << 16
TAIL_MARGIN = 8  # each batch keeps this many times its share of the clipped tail, plus TAIL_EXTRA values
TAIL_EXTRA = 64

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IntRange:
    """The integer grid a quantizer maps onto."""

    qmin: int
    qmax: int
    symmetric: bool

    @classmethod
    def for_bits(cls, bits: int, symmetric: bool) -> IntRange:
        if symmetric:
            return cls(-(1 << (bits - 1)), (1 << (bits - 1)) - 1, True)
        return cls(0, (1 << bits) - 1, False)


def scale_zero_point(lo: torch.Tensor, hi: torch.Tensor, grid: IntRange) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and integer zero-point that map [lo, hi] (always widened to include 0) onto the grid."""
    lo = torch.minimum(lo, torch.zeros_like(lo))
    hi = torch.maximum(hi, torch.zeros_like(hi))
    eps = torch.finfo(torch.float32).eps
    if grid.symmetric:
        absmax = torch.maximum(-lo, hi)
        # the negative side has one more level; use the positive side so nothing above absmax clips
        scale = (absmax / grid.qmax).clamp_min(eps)
        zero_point = torch.zeros_like(scale)
    else:
        scale = ((hi - lo) / (grid.qmax - grid.qmin)).clamp_min(eps)
        zero_point = zero_point_for(lo, scale, grid)
    return scale, zero_point


def zero_point_for(lo: torch.Tensor, scale: torch.Tensor, grid: IntRange) -> torch.Tensor:
    """The integer zero-point that puts ``lo`` (<= 0) on the grid's lowest code for a given scale."""
    if grid.symmetric:
        return torch.zeros_like(scale)
    return (grid.qmin - torch.minimum(lo, torch.zeros_like(lo)) / scale).round().clamp(grid.qmin, grid.qmax)


def quantize_rows(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, grid: IntRange) -> torch.Tensor:
    """Plain (non-differentiable) fake quantization of rows x[C, N] with per-row scale [C, 1]."""
    q = torch.clamp(torch.round(x / scale) + zero_point, grid.qmin, grid.qmax)
    return (q - zero_point) * scale


class Observer:
    """Collects statistics of a tensor viewed as rows and computes (scale, zero_point) per row."""

    keeps_samples = False

    def __init__(self, **_: float) -> None:
        self.lo: torch.Tensor | None = None
        self.hi: torch.Tensor | None = None
        self.samples: list[torch.Tensor] = []

    def update(self, rows: torch.Tensor) -> None:
        rows = rows.detach().float()
        lo, hi = rows.amin(dim=1), rows.amax(dim=1)
        self.lo = lo if self.lo is None else torch.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else torch.maximum(self.hi, hi)
        if self.keeps_samples:
            if rows.shape[1] > MAX_SAMPLES_PER_BATCH:
                idx = torch.randint(rows.shape[1], (MAX_SAMPLES_PER_BATCH,), device=rows.device)
                rows = rows[:, idx]
            self.samples.append(rows.cpu())
            if sum(s.shape[1] for s in self.samples) > 2 * MAX_SAMPLES_PER_ROW:
                self.samples = [self._sample()]

    def _sample(self) -> torch.Tensor:
        rows = torch.cat(self.samples, dim=1)
        if rows.shape[1] > MAX_SAMPLES_PER_ROW:
            rows = rows[:, torch.randperm(rows.shape[1])[:MAX_SAMPLES_PER_ROW]]
        return rows

    @property
    def seen(self) -> bool:
        return self.lo is not None

    def merge(self) -> None:
        """Combine the statistics of every rank (a no-op in one process), so that ``compute`` gives the
        result of one observer that saw all ranks' data: min/max reduced, kept samples gathered."""
        if not distributed.active():
            return
        if not all(distributed.gather(self.seen)):
            return  # a quantizer some rank never reached: calibration names it
        self.lo, self.hi = distributed.reduce_min_max(self.lo, self.hi)
        if self.keeps_samples:  # subsampled with a fixed seed, so every rank keeps the same values
            rows = torch.cat(distributed.gather(self._sample()), dim=1)
            if rows.shape[1] > MAX_SAMPLES_PER_ROW:
                rows = rows[:, torch.randperm(rows.shape[1], generator=torch.Generator().manual_seed(0))[:MAX_SAMPLES_PER_ROW]]
            self.samples = [rows]

    def compute(self, grid: IntRange) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


@OBSERVERS.register("minmax")
class MinMaxObserver(Observer):
    """Exact running min/max: no clipping, so outliers set the step size."""

    def compute(self, grid: IntRange) -> tuple[torch.Tensor, torch.Tensor]:
        return scale_zero_point(self.lo, self.hi, grid)


@OBSERVERS.register("percentile")
class PercentileObserver(Observer):
    """Clips to the given percentile (and 100 - percentile below) of all values seen.

    The percentile is computed from every value, not from a sample: a 99.99th percentile of a
    per-tensor activation over 125 images is set by ~2,000 of its ~19 million values, and a random
    sample of a few hundred thousand leaves only a handful of them, so the clipping point (and the
    accuracy) moved with the random seed. Each batch keeps its ``TAIL_MARGIN`` x share of the tail
    at both ends; the result is exact unless one batch holds more than that share of the global
    tail, which is detected and logged.
    """

    def __init__(self, percentile: float = 99.99, **kw: float) -> None:
        super().__init__(**kw)
        self.percentile = percentile
        self.tops: list[torch.Tensor] = []
        self.bottoms: list[torch.Tensor] = []
        self.batch_sizes: list[int] = []

    def update(self, rows: torch.Tensor) -> None:
        super().update(rows)
        rows = rows.detach().float()
        n = rows.shape[1]
        k = min(n, TAIL_MARGIN * math.ceil((1.0 - self.percentile / 100.0) * n) + TAIL_EXTRA)
        self.tops.append(rows.topk(k, dim=1).values.cpu())
        self.bottoms.append(rows.topk(k, dim=1, largest=False).values.cpu())
        self.batch_sizes.append(n)

    def merge(self) -> None:
        super().merge()
        if distributed.active():
            self.tops = [t for rank in distributed.gather(self.tops) for t in rank]
            self.bottoms = [t for rank in distributed.gather(self.bottoms) for t in rank]
            self.batch_sizes = [n for rank in distributed.gather(self.batch_sizes) for n in rank]

    def _tail_value(self, tails: list[torch.Tensor], largest: bool) -> torch.Tensor:
        """The value at the percentile's rank from one end, over the kept tails of every batch."""
        rank = int((sum(self.batch_sizes) - 1) * (1.0 - self.percentile / 100.0)) + 1
        kept = torch.cat(tails, dim=1)
        values = kept.topk(min(rank, kept.shape[1]), dim=1, largest=largest).values[:, -1]
        # a batch that kept only part of its values, all of them strictly beyond the threshold, may have had
        # more (ties at the threshold, e.g. softmax outputs of exactly 0 or 1, leave the value exact)
        truncated = [t.shape[1] < n and bool(((t[:, -1] > values) if largest else (t[:, -1] < values)).any())
                     for t, n in zip(tails, self.batch_sizes)]
        if any(truncated):
            log.warning("percentile observer: one calibration batch holds most of the clipped tail; the %s clipping point "
                        "is approximate", "upper" if largest else "lower")
        return values

    def compute(self, grid: IntRange) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = self._tail_value(self.bottoms, largest=False), self._tail_value(self.tops, largest=True)
        return scale_zero_point(lo.to(self.lo.device), hi.to(self.lo.device), grid)


@OBSERVERS.register("mse")
class MSEObserver(Observer):
    """Searches the clipping ratio per row that minimises the mean |x - Q(x)|^p of the sampled values."""

    keeps_samples = True

    def __init__(self, p: float = 2.0, n_candidates: int = 100, min_ratio: float = 0.05, **kw: float) -> None:
        super().__init__(**kw)
        self.p = p
        self.ratios = torch.linspace(min_ratio, 1.0, int(n_candidates))

    def compute(self, grid: IntRange) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self._sample().to(self.lo.device)
        best_err = torch.full_like(self.lo, float("inf"))
        best_scale, best_zp = scale_zero_point(self.lo, self.hi, grid)
        for r in self.ratios.tolist():
            scale, zp = scale_zero_point(self.lo * r, self.hi * r, grid)
            err = (quantize_rows(rows, scale[:, None], zp[:, None], grid) - rows).abs().pow(self.p).mean(dim=1)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_scale = torch.where(better, scale, best_scale)
            best_zp = torch.where(better, zp, best_zp)
        return best_scale, best_zp


def make_observer(name: str, **kwargs: float) -> Observer:
    return OBSERVERS.get(name)(**kwargs)
