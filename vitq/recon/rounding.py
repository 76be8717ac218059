"""Learned weight rounding (AdaRound, Nagel et al. 2020) as a weight quantizer.

Reconstruction learns, per weight, whether to round down or up. During optimization the choice is
soft: ``h(V) = clamp(sigmoid(V) * (zeta - gamma) + gamma, 0, 1)``, pushed to 0/1 by a regularizer.
The result is stored as a hard 0/1 ``rounding`` buffer, so a saved checkpoint reloads without
re-running and the layer's float weights stay untouched (the fp32 reference shares them).
"""
from __future__ import annotations

import torch
from torch import nn

from vitq.quant.modules import QuantConv2d, QuantLinear
from vitq.quant.quantizer import UniformQuantizer

ZETA, GAMMA = 1.1, -0.1


class LearnedRoundingQuantizer(UniformQuantizer):
    """Symmetric per-channel weight quantizer whose rounding direction is learned.

    ``x_q = (clamp(floor(x / g) + r + zp, qmin, qmax) - zp) * s`` with ``r`` in {0, 1} (``rounding``
    buffer) or, while reconstructing, ``r = h(V)`` in [0, 1] (``soft_logits``, not part of the state).
    The rounding decisions are only meaningful on the grid they were learned on, so the codes stay
    relative to ``g`` (``grid_scale``, the calibrated step size, fixed), while the step size ``s``
    the codes are dequantized with may be learned (``ReconConfig.lr_weight_scale``): a learned ``s``
    rescales a channel's codes instead of re-deciding them, and ``s`` is what the export writes.
    """

    kind = "uniform"

    def __init__(self, bits: int, symmetric: bool, channels: int | None, ch_axis: int, weight_shape: torch.Size) -> None:
        super().__init__(bits, symmetric, channels, ch_axis)
        self.register_buffer("rounding", torch.zeros(weight_shape, dtype=torch.uint8))
        self.register_buffer("grid_scale", torch.ones(channels or 1))
        self.soft_logits: torch.Tensor | None = None

    @classmethod
    def replacing(cls, quantizer: UniformQuantizer, weight: torch.Tensor) -> LearnedRoundingQuantizer:
        """A drop-in replacement for a calibrated ``quantizer``, starting from round-to-nearest."""
        new = cls(quantizer.bits, quantizer.symmetric, quantizer.channels, quantizer.ch_axis, weight.shape)
        new.load_state_dict(quantizer.state_dict(), strict=False)
        new.enabled = quantizer.enabled
        new.scale.requires_grad_(False)
        new.to(weight.device)
        with torch.no_grad():
            new.grid_scale.copy_(new.scale)
            if bool(new.initialized):
                frac = weight / new._view(new.grid_scale, weight)
                new.rounding.copy_((frac - torch.floor(frac)) >= 0.5)
        return new

    def _floor(self, x: torch.Tensor) -> torch.Tensor:
        return torch.floor(x.detach() / self._view(self.grid_scale, x))

    def soft_rounding(self) -> torch.Tensor:
        return torch.clamp(torch.sigmoid(self.soft_logits) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)

    def start_soft(self, weight: torch.Tensor) -> None:
        """Make rounding learnable. The first time, ``h(V)`` equals the fractional part of ``w / s``
        (the soft-quantized weight is the float weight, as in AdaRound); a later level continues from
        the previous level's soft state, which is what "starting from the previous parameters" means.
        """
        if self.soft_logits is None:
            frac = (weight.detach() / self._view(self.grid_scale, weight)) - self._floor(weight)
            frac = frac.clamp(1e-4, 1.0 - 1e-4)
            self.soft_logits = -torch.log((ZETA - GAMMA) / (frac - GAMMA) - 1.0)
        self.soft_logits.requires_grad_(True)

    def reopen(self, margin: float) -> None:
        """Pull decided weights back onto the slope of ``h``, keeping every decision.

        An annealed level leaves most ``h(V)`` clamped at exactly 0 or 1, where the clamp has no
        gradient: a later, coarser level could then no longer revise those roundings. Clipping
        ``V`` to where ``h`` is in ``[margin, 1 - margin]`` keeps each choice (and the soft weight
        within ``margin`` steps of it) but makes it revisable again.
        """
        if self.soft_logits is None or margin <= 0.0:
            return
        sig = (1.0 - margin - GAMMA) / (ZETA - GAMMA)
        limit = float(torch.logit(torch.tensor(sig)))
        self.soft_logits = self.soft_logits.detach().clamp(-limit, limit)

    def freeze(self) -> None:
        """Stop learning but keep the soft state: forward uses the hard ``rounding`` again."""
        self.harden()
        if self.soft_logits is not None:
            self.soft_logits = self.soft_logits.detach()

    def harden(self) -> None:
        """Copy the current soft decision into the hard ``rounding`` buffer."""
        if self.soft_logits is not None:
            with torch.no_grad():
                self.rounding.copy_(self.soft_rounding() >= 0.5)

    def finish(self) -> None:
        self.harden()
        self.soft_logits = None

    @property
    def is_soft(self) -> bool:
        return self.soft_logits is not None and self.soft_logits.requires_grad

    def _codes(self, x: torch.Tensor, soft: bool) -> torch.Tensor:
        r = self.soft_rounding() if soft else self.rounding.to(x.dtype)
        return torch.clamp(self._floor(x) + r + self._view(self.zero_point, x), self.grid.qmin, self.grid.qmax)

    def _quantize(self, x: torch.Tensor) -> torch.Tensor:
        q = self._codes(x, soft=self.is_soft)
        return (q - self._view(self.zero_point, x)) * self._view(self.scale, x)

    @torch.no_grad()
    def to_int(self, x: torch.Tensor) -> torch.Tensor:
        return self._codes(x, soft=False).to(torch.int32)

    def rounding_regularizer(self, beta: float) -> torch.Tensor:
        """Mean of ``1 - |2h - 1|^beta``: 0 when every weight is decided, pushes h to 0/1."""
        return (1.0 - (2.0 * self.soft_rounding() - 1.0).abs().pow(beta)).mean()


def attach_learned_rounding(model: nn.Module) -> list[LearnedRoundingQuantizer]:
    """Replace every Linear/Conv weight quantizer of a wrapped model with a learned-rounding one.

    Called after calibration (rounding starts at round-to-nearest) and before loading a
    reconstructed checkpoint (the buffer is then overwritten by the saved decisions).
    """
    out = []
    for module in model.modules():
        if isinstance(module, (QuantLinear, QuantConv2d)):
            if not isinstance(module.weight_quant, LearnedRoundingQuantizer):
                module.weight_quant = LearnedRoundingQuantizer.replacing(module.weight_quant, module.weight)
            out.append(module.weight_quant)
    return out


def with_grid_scales(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state_dict`` (a checkpoint's or a resume file's) with the ``grid_scale`` of every learned-rounding weight
    quantizer saved before it had one: its codes were then relative to its (never learned) ``scale``."""
    rounded = [k.removesuffix(".rounding") for k in state_dict if k.endswith("weight_quant.rounding")]
    missing = {f"{p}.grid_scale": state_dict[f"{p}.scale"] for p in rounded
               if f"{p}.grid_scale" not in state_dict and f"{p}.scale" in state_dict}
    return {**state_dict, **missing} if missing else state_dict
