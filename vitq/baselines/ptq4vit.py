"""PTQ4ViT (Yuan et al., ECCV 2022): Hessian-guided layer-wise scale search on twin-uniform quantizers.

The twin-uniform quantizers for post-softmax and post-GELU values are chosen at wrapping time by
the method declaration (``vitq.methods.ptq4vit``) implies ``softmax_quantizer`` and
``post_act_quantizer`` = ``twin_uniform``). The scale search weights each output element's
squared error by the squared gradient of the task loss w.r.t. that element, the diagonal
(Fisher) approximation of the Hessian that makes the layer error an estimate of the loss increase.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from vitq.baselines.search import DEFAULT_SEARCH, LayerResult, SearchSettings, search_scales


def hessian_loss(quantized: torch.Tensor, target: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
    """``sum((dL/dO)^2 * (O_q - O)^2)`` over the batch."""
    if grad is None:
        raise ValueError("the Hessian-guided metric needs output gradients (search_scales(with_grad=True))")
    return (grad.float().pow(2) * (quantized.float() - target.float()).pow(2)).sum()


def refine(model: nn.Module, batches: Sequence[torch.Tensor], *, device: str = "cpu", progress: bool = True,
           settings: SearchSettings = DEFAULT_SEARCH) -> list[LayerResult]:
    """Search every layer's scales in execution order with the Hessian-guided metric."""
    return search_scales(model, batches, hessian_loss, settings, device=device, progress=progress, with_grad=True)
