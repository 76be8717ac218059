"""Options and helpers the commands share."""
from __future__ import annotations

import random
from pathlib import Path

import click

from vitq.errors import VitqError

data_option = click.option("--data", type=click.Path(path_type=Path), default=None,
                           help="Image folder or CIFAR-10 tar. Default: the bundled sample.")
seed_option = click.option("--seed", type=int, default=0, show_default=True, help="Seeds torch, numpy and random.")
device_option = click.option("--device", default="cpu", show_default=True, help="cpu or cuda[:N].")
batch_option = click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
                            help="Images per batch (loading, calibration, evaluation).")
results_option = click.option("--results-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
                              help="Also write result records (JSON, DESIGN.md schema) here.")
limit_option = click.option("--limit", type=click.IntRange(min=1), default=None,
                            help="Evaluate an evenly spaced subset of this many images.")


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def check_device(device: str) -> str:
    if not (device == "cpu" or device.startswith("cuda")):
        raise VitqError(f"device must be cpu or cuda[:N], got {device!r}")
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise VitqError(f"device {device!r} requested but no CUDA GPU is available")
    return device


def data_or_demo(data: Path | None) -> Path:
    from vitq.assets import demo_images

    return data or demo_images()
