"""Tiny random timm ViTs, wrapped and calibrated on random images: fast stand-ins for export tests."""
from __future__ import annotations

import pytest
import timm
import torch

from vitq.pipeline.quantize import QuantizedModel, quantize
from vitq.recipe import Recipe, make_recipe

TINY = {"img_size": 32, "patch_size": 8, "embed_dim": 48, "depth": 2, "num_heads": 3, "num_classes": 10}


def tiny_vit(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, **TINY)
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, 32, 32)}
    return model.eval()


def images(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def quantize_tiny_vit(recipe: Recipe) -> QuantizedModel:
    """The tiny ViT quantized by ``recipe``, with the spec that rebuilds its shape from a checkpoint."""
    qm = quantize(tiny_vit(), "vit_tiny_patch16_224", [images(16)], recipe, progress=False)
    qm.spec = {"model": "vit_tiny_patch16_224", "kwargs": TINY}
    return qm


def quantized_tiny_vit(recipe: Recipe) -> torch.nn.Module:
    return quantize_tiny_vit(recipe).model


@pytest.fixture(scope="session")
def tiny_w8a8() -> torch.nn.Module:
    return quantized_tiny_vit(make_recipe("W8A8", "minmax"))
