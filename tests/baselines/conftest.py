"""Tiny random-init models for the baseline tests: a 2-block DeiT at 32 px and MobileViT-XXS at 64 px."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
import timm
import torch
from torch import nn

from vitq.pipeline.quantize import quantize
from vitq.recipe import make_recipe

MODELS = {
    "deit": ("deit_tiny_patch16_224", {"img_size": 32, "patch_size": 8, "depth": 2, "num_classes": 10}, 32),
    "mobilevit": ("mobilevit_xxs", {"num_classes": 10}, 64),
}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Many tiny ops on a shared 2-core machine: one thread avoids oversubscription (10x faster)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def float_model(key: str) -> tuple[str, nn.Module, list[torch.Tensor]]:
    """(timm name, random-init model with LayerNorm channel spread, two calibration batches)."""
    name, kwargs, size = MODELS[key]
    torch.manual_seed(0)
    model = timm.create_model(name, **kwargs).eval()
    with torch.no_grad():  # real ViT LayerNorms scale channels very differently; random init does not
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.mul_(torch.logspace(-1, 1, m.weight.numel())[torch.randperm(m.weight.numel())])
    gen = torch.Generator().manual_seed(1)
    return name, model, [torch.randn(2, 3, size, size, generator=gen) for _ in range(2)]


def calibrated(key: str, method: str, bits: int = 4) -> tuple[nn.Module, list[torch.Tensor]]:
    """The model as ``method`` leaves calibration, before its refinement: same implied quantizers,
    min-max observers (the recipe keeps the format settings the method implied, minus its refinement)."""
    name, model, batches = float_model(key)
    recipe = replace(make_recipe(f"W{bits}A{bits}", method), method="minmax", calibration="minmax")
    return quantize(model, name, batches, recipe, progress=False).model, batches
