"""FQ-ViT (Lin et al., IJCAI 2022): min-max calibration, Power-of-Two Factor (PTF) for the
LayerNorm-adjacent activations and Log-Int-Softmax (LIS) for attention probabilities.

Both are wrapping/calibration choices that the method declaration (``vitq.methods.fqvit``) implies: PTF through
``ln_power_of_two`` (``vitq.quant.ptf``, folded by ``vitq.models.ln_reparam``) and the log2
softmax quantizer through ``softmax_quantizer``. What is left after calibration is LIS's grid:
FQ-ViT quantizes the probabilities themselves to ``2^-k`` (softmax never exceeds 1, and an
integer-only softmax needs the levels to be exact powers of two), not relative to an observed
maximum, so the refinement sets every log2 quantizer's scale to 1.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from vitq.quant.quantizer import LogQuantizer


@torch.no_grad()
def refine(model: nn.Module, batches: Sequence[torch.Tensor], *, device: str = "cpu", progress: bool = True) -> int:  # noqa: ARG001 - common baseline signature
    """Fix the range of every enabled log2 quantizer to [0, 1]; returns how many changed."""
    log2 = [q for q in model.modules() if isinstance(q, LogQuantizer) and q.enabled and q.kind == "log2"]
    for q in log2:
        q.scale.fill_(1.0)
    return len(log2)
