"""Published PTQ baselines on vitq's own wrapping, so comparisons with vitq's methods are fair.

Each baseline is a calibration method (``vitq.quant.config.CALIBRATION_METHODS``: the observers it
starts from, ``METHOD_SETTINGS``: the quantizers it implies at wrapping time) plus a refinement
that ``vitq.api.quantize`` runs after calibration and LayerNorm folding:

* ``easyquant``: layer-wise alternating scale search maximising output cosine similarity;
* ``fqvit``: power-of-two LayerNorm factors and log2 softmax (min-max otherwise);
* ``ptq4vit``: twin-uniform softmax/GELU quantizers and Hessian-guided scale search.

See docs/baselines.md for where each one deviates from its paper.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from torch import nn

from vitq.baselines import easyquant, fqvit, ptq4vit
from vitq.baselines.search import LayerResult, SearchSettings, search_scales
from vitq.registry import Registry


class Refine(Protocol):
    """Refines the scales of a calibrated (and LN-folded) wrapped model on the calibration batches."""

    def __call__(self, model: nn.Module, batches: Sequence[torch.Tensor], *, device: str = ..., progress: bool = ...) -> object: ...


BASELINES: Registry[Refine] = Registry("baseline")
BASELINES.register("easyquant")(easyquant.refine)
BASELINES.register("fqvit")(fqvit.refine)
BASELINES.register("ptq4vit")(ptq4vit.refine)

__all__ = ["BASELINES", "LayerResult", "Refine", "SearchSettings", "search_scales"]
