"""Fake quantizers: uniform (LSQ-style learnable step) and log2 / log-sqrt2 for post-softmax values.

A quantizer is an ``nn.Module`` with three states, checked in this order in ``forward``:
disabled (identity), observing (records statistics, passes values through in float) and
quantizing (fake-quantizes with its current scale). Every quantizer can describe itself for
export through :meth:`qparams`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vitq.errors import NonFiniteError, VitqError
from vitq.quant.config import check_bits
from vitq.quant.observers import IntRange, Observer, make_observer


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """round() in the forward pass, identity gradient in the backward pass."""
    return x + (torch.round(x) - x).detach()


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """Uniform fake quantization with LSQ gradients.

    d out / d x is 1 inside the clipping range and 0 outside; d out / d scale is
    round(x/s) - x/s inside and (q_clip - zp) outside, as in LSQ (Esser et al., 2020).
    """
    q = torch.clamp(round_ste(x / scale) + zero_point, qmin, qmax)
    return (q - zero_point) * scale


@dataclass(frozen=True)
class QParams:
    """What an exporter needs: ``x_q = clamp(round(x / scale) + zero_point, qmin, qmax)``.

    ``axis`` is the channel axis for per-channel parameters, ``None`` for per-tensor.
    """

    scale: torch.Tensor
    zero_point: torch.Tensor
    qmin: int
    qmax: int
    bits: int
    axis: int | None
    kind: str = "uniform"


class Quantizer(nn.Module):
    """Common state machine of all fake quantizers."""

    kind = "base"

    def __init__(self, bits: int, observer: str = "minmax", observer_kwargs: dict | None = None) -> None:
        super().__init__()
        self.bits = check_bits(bits)
        self.enabled = True
        self.observing = False
        self.observer_name = observer
        self.observer_kwargs = dict(observer_kwargs or {})
        self.observer: Observer | None = None
        self.label = "a quantizer"  # its module name once calibration has named it (error messages)
        self.register_buffer("initialized", torch.tensor(False))

    def extra_repr(self) -> str:
        state = "off" if not self.enabled else ("ready" if bool(self.initialized) else "uncalibrated")
        return f"{self.kind}, bits={self.bits}, {self._describe()}, {state}"

    def _describe(self) -> str:
        return ""

    def start_observing(self) -> None:
        self.observer = make_observer(self.observer_name, **self.observer_kwargs)
        self.observing = True

    def stop_observing(self) -> None:
        """Set the scale from what was observed and switch to quantizing."""
        self.observing = False
        if self.enabled:
            if self.observer is None or not self.observer.seen:
                raise VitqError(f"{self.label} saw no data during calibration (is the calibration set empty?)")
            self._set_from_observer(self.observer)
            scale = getattr(self, "scale", None)
            if isinstance(scale, torch.Tensor) and not bool(torch.isfinite(scale).all()):
                raise NonFiniteError(f"calibration gave {self.label} a NaN/Inf scale")
            self.initialized.fill_(True)
        self.observer = None

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(1, -1)

    @property
    def quantizing(self) -> bool:
        """Whether ``forward`` fake-quantizes now (enabled, calibrated and not observing)."""
        return self.enabled and not self.observing and bool(self.initialized)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        if self.observing:
            if not bool(torch.isfinite(x).all()):  # cheap next to the observer; a NaN range would make every scale NaN
                raise NonFiniteError(f"{self.label} saw {int((~torch.isfinite(x)).sum())} NaN/Inf value(s)")
            self.observer.update(self._rows(x))
            return x
        if not bool(self.initialized):
            raise RuntimeError("quantizer used before calibration; run vitq.calibrate() first")
        return self._quantize(x)

    def _set_from_observer(self, observer: Observer) -> None:
        raise NotImplementedError

    def _quantize(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def qparams(self) -> QParams:
        raise NotImplementedError


class UniformQuantizer(Quantizer):
    """Uniform affine quantizer, symmetric or asymmetric, per-tensor or per-channel.

    The scale is an ``nn.Parameter`` so reconstruction can learn it (LSQ); the zero-point is a
    buffer fixed at calibration, which keeps it an exact integer for export.
    """

    kind = "uniform"

    def __init__(
        self,
        bits: int,
        symmetric: bool,
        channels: int | None = None,
        ch_axis: int = 0,
        observer: str = "minmax",
        observer_kwargs: dict | None = None,
    ) -> None:
        super().__init__(bits, observer, observer_kwargs)
        self.grid = IntRange.for_bits(bits, symmetric)
        self.channels = channels
        self.ch_axis = ch_axis
        n = channels or 1
        self.scale = nn.Parameter(torch.ones(n))
        self.register_buffer("zero_point", torch.zeros(n))

    @property
    def per_channel(self) -> bool:
        return self.channels is not None

    @property
    def symmetric(self) -> bool:
        return self.grid.symmetric

    def _describe(self) -> str:
        gran = f"per-channel(axis={self.ch_axis})" if self.per_channel else "per-tensor"
        return f"{'sym' if self.symmetric else 'asym'}, {gran}"

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        if not self.per_channel:
            return x.reshape(1, -1)
        return x.movedim(self.ch_axis, 0).reshape(x.shape[self.ch_axis], -1)

    def _view(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if not self.per_channel:
            return t
        shape = [1] * x.dim()
        shape[self.ch_axis] = -1
        return t.view(shape)

    def _set_from_observer(self, observer: Observer) -> None:
        scale, zero_point = observer.compute(self.grid)
        with torch.no_grad():
            self.scale.copy_(scale.reshape(self.scale.shape))
            self.zero_point.copy_(zero_point.reshape(self.zero_point.shape))

    def _quantize(self, x: torch.Tensor) -> torch.Tensor:
        return fake_quantize(x, self._view(self.scale, x), self._view(self.zero_point, x), self.grid.qmin, self.grid.qmax)

    @torch.no_grad()
    def to_int(self, x: torch.Tensor) -> torch.Tensor:
        """The integer codes ``forward`` uses for ``x`` (exporters store weights this way).

        Subclasses with learned rounding override this together with ``_quantize`` so that
        ``(to_int(x) - zero_point) * scale == forward(x)`` always holds.
        """
        q = torch.round(x / self._view(self.scale, x)) + self._view(self.zero_point, x)
        return q.clamp(self.grid.qmin, self.grid.qmax).to(torch.int32)

    def qparams(self) -> QParams:
        return QParams(
            scale=self.scale.detach().clone(),
            zero_point=self.zero_point.detach().round().to(torch.int32),
            qmin=self.grid.qmin,
            qmax=self.grid.qmax,
            bits=self.bits,
            axis=self.ch_axis if self.per_channel else None,
        )


class LogQuantizer(Quantizer):
    """log2 (base 2) or log-sqrt2 (base sqrt 2) quantizer for values in [0, scale], e.g. softmax output.

    ``x_q = scale * base^-k`` with ``k = clamp(round(-log_base(x / scale)), 0, 2^bits - 2)``; the
    last code ``2^bits - 1`` represents 0. Dense levels near 0 keep the many small attention
    probabilities that a uniform 4-bit grid flushes to zero. There is no ONNX QDQ equivalent:
    exporters fall back to a uniform 8-bit grid (see vitq.export).
    """

    def __init__(self, bits: int, base: str = "log2", observer: str = "minmax", observer_kwargs: dict | None = None):
        super().__init__(bits, observer, observer_kwargs)
        if base not in ("log2", "log_sqrt2"):
            raise VitqError(f"log quantizer base must be 'log2' or 'log_sqrt2', got {base!r}")
        self.kind = base
        self.levels_per_octave = 1 if base == "log2" else 2
        self.scale = nn.Parameter(torch.ones(1), requires_grad=False)

    def _set_from_observer(self, observer: Observer) -> None:
        with torch.no_grad():
            self.scale.copy_(observer.hi.reshape(1).clamp_min(1e-8))

    def _quantize(self, x: torch.Tensor) -> torch.Tensor:
        top = (1 << self.bits) - 2
        ratio = (x / self.scale).clamp_min(1e-30)
        k = round_ste(-torch.log2(ratio) * self.levels_per_octave)
        out = self.scale * torch.pow(2.0, -k.clamp(0, top) / self.levels_per_octave)
        out = torch.where(k > top, torch.zeros_like(out), out)
        # straight-through: forward value is the log-grid value, gradient flows as identity
        return x + (out - x).detach()

    def value_range(self) -> tuple[float, float]:
        """The float range the log grid spans (what an export fallback must cover)."""
        return 0.0, float(self.scale)

    def qparams(self) -> QParams:
        return QParams(
            scale=self.scale.detach().clone(),
            zero_point=torch.zeros(1, dtype=torch.int32),
            qmin=0,
            qmax=(1 << self.bits) - 1,
            bits=self.bits,
            axis=None,
            kind=self.kind,
        )
