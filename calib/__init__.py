"""Calibration and evaluation data: loaders for image folders and CIFAR archives, model transforms,
deterministic non-overlapping splits.

Names load on first use (``from calib import open_split`` works), so importing ``calib.errors`` does
not load torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DataError": "calib.errors",
    "ImageDataset": "calib.datasets",
    "Sample": "calib.datasets",
    "open_split": "calib.datasets",
    "scan": "calib.datasets",
    "images_only": "calib.loaders",
    "load_batches": "calib.loaders",
    "load_splits": "calib.loaders",
    "eval_transform": "calib.transforms",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'calib' has no attribute {name!r}")
