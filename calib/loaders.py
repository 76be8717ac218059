"""Batching: datasets become lists of (images, labels) batches held in memory.

The demo and benchmarks run several quantized variants over the same images; decoding once and
reusing tensors keeps those runs fast and guarantees every variant sees identical inputs.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from calib.datasets import open_split

Batch = tuple[torch.Tensor, torch.Tensor]


def load_batches(dataset: Dataset, batch_size: int = 32, progress: bool = True, desc: str = "load images") -> list[Batch]:
    if batch_size <= 0:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    return [(x, y) for x, y in tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False)]


def images_only(batches: list[Batch]) -> list[torch.Tensor]:
    return [x for x, _ in batches]


def load_splits(path: str | Path, transform: Callable, eval_limit: int | None = None, batch_size: int = 32,
                progress: bool = True, calib_limit: int | None = None) -> tuple[list[Batch], list[Batch]]:
    """Calibration and evaluation batches of the data at ``path`` (disjoint splits, see calib.datasets);
    the limits take evenly spaced subsets (CIFAR-10's calibration split is the whole train archive)."""
    calib = load_batches(open_split(path, "calibration", transform, limit=calib_limit), batch_size, progress,
                         desc="load calibration images")
    evaluation = load_batches(open_split(path, "evaluation", transform, limit=eval_limit), batch_size, progress,
                              desc="load evaluation images")
    return calib, evaluation
