"""Evaluation transforms taken from the model's own timm data config (resize, crop, mean/std)."""
from __future__ import annotations

from collections.abc import Callable

import timm.data
from torch import nn


def eval_transform(model: nn.Module, input_size: int | None = None) -> Callable:
    """timm's eval transform for ``model``; ``input_size`` overrides the square input resolution."""
    cfg = timm.data.resolve_model_data_config(model)
    if input_size is not None:
        cfg["input_size"] = (3, input_size, input_size)
    return timm.data.create_transform(**cfg, is_training=False)

