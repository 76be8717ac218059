"""EasyQuant (Wu et al., 2020): per layer, alternately search the weight and the activation scale
that maximise the cosine similarity between the layer's quantized and float outputs."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vitq.baselines.search import DEFAULT_SEARCH, LayerResult, SearchSettings, search_scales


def cosine_loss(quantized: torch.Tensor, target: torch.Tensor, _grad: torch.Tensor | None) -> torch.Tensor:
    """Minus the summed per-sample cosine similarity (each sample's output flattened to a vector)."""
    return -F.cosine_similarity(quantized.flatten(1).float(), target.flatten(1).float(), dim=1).sum()


def refine(model: nn.Module, batches: Sequence[torch.Tensor], *, device: str = "cpu", progress: bool = True,
           settings: SearchSettings = DEFAULT_SEARCH) -> list[LayerResult]:
    """Search every layer's scales in execution order; ``-result.final`` is the layer's mean cosine."""
    return search_scales(model, batches, cosine_loss, settings, device=device, progress=progress)
