"""Tiny random ViT/Swin models for reconstruction tests (seconds on a CPU, no weights, no network)."""
from __future__ import annotations

import pytest
import timm
import torch

from vitq.calibration import calibrate
from vitq.models.wrap import wrap_model
from vitq.quant.config import QuantConfig

TINY_VIT = dict(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2, num_classes=10)


def tiny_wrapped(config: QuantConfig, images: torch.Tensor, head_gain: float = 1.0, bias_offsets: bool = False) -> torch.nn.Module:
    """``head_gain`` scales the classifier so the random model's logits are far from uniform."""
    model = timm.create_model("deit_tiny_patch16_224", exportable=True, **TINY_VIT).eval()
    model.head.weight.data.mul_(head_gain)
    qmodel = wrap_model(model, "deit_tiny_patch16_224", config, bias_offsets=bias_offsets)
    calibrate(qmodel, [images], progress=False)
    return qmodel


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))
