"""vitq: post-training quantization of vision transformers with ONNX QDQ export.

Flow: wrap -> calibrate -> reconstruct -> export -> bench. The Python API:

    from vitq import create_float_model, make_recipe, quantize, save_quantized, load_quantized

Names are imported on first use, so ``import vitq`` (and ``vitq --help``) does not load torch.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "QuantConfig": "vitq.quant.config",
    "Recipe": "vitq.recipe",
    "make_recipe": "vitq.recipe",
    "preset_recipe": "vitq.recipe",
    "load_recipe": "vitq.recipe",
    "VitqError": "vitq.errors",
    "create_float_model": "vitq.models.loading",
    "wrap_model": "vitq.models.wrap",
    "QuantizedModel": "vitq.pipeline.quantize",
    "quantize": "vitq.pipeline.quantize",
    "save_quantized": "vitq.pipeline.checkpoint",
    "load_quantized": "vitq.pipeline.checkpoint",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'vitq' has no attribute {name!r}")
