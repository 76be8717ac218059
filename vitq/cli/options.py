"""Options and helpers the commands share: every check that can run before a model is loaded or an image
decoded lives here (outputs, devices, lists), plus the warnings about results that would mislead."""
from __future__ import annotations

import difflib
import fnmatch
import functools
import logging
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from vitq.errors import VitqError
from vitq.files import check_output, check_output_dir  # noqa: F401 - the commands take both from here

log = logging.getLogger("vitq")

data_option = click.option("--data", type=click.Path(path_type=Path), default=None,
                           help="Image folder or CIFAR-10 tar. Default: the bundled sample.")
seed_option = click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True,
                           help="Seeds torch, numpy and random, the reconstruction and the rotations (unless rotation_seed is set).")
device_option = click.option("--device", default="cpu", show_default=True, help="cpu or cuda[:N].")
batch_option = click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
                            help="Images per batch (loading, calibration, evaluation).")
results_option = click.option("--results-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
                              help="Also write result records (JSON, DESIGN.md schema) here.")
limit_option = click.option("--limit", type=click.IntRange(min=1), default=None,
                            help="Evaluate an evenly spaced subset of this many images.")
RESULTS_SUFFIX = ".json"


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def check_device(device: str) -> str:
    kind, sep, index = device.partition(":")
    if not (device == "cpu" or (kind == "cuda" and (not sep or index.isdigit()))):
        raise VitqError(f"device must be cpu or cuda[:N], got {device!r}")
    if kind == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise VitqError(f"device {device!r} requested but no CUDA GPU is available")
        if index and int(index) >= torch.cuda.device_count():
            raise VitqError(f"device {device!r} requested but there are only {torch.cuda.device_count()} CUDA GPU(s)")
    return device


def runs_distributed(command: Callable[..., None]) -> Callable[..., None]:
    """Lets a command run under torchrun: the process joins the job's group for the command's duration,
    and ``--device cuda`` means this rank's GPU (``vitq.distributed``). The command shards its images
    with :func:`rank_shard` and prints and writes on rank 0 only."""
    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> None:
        from vitq import distributed

        if not distributed.launched():
            return command(*args, **kwargs)
        kwargs["device"] = distributed.local_device(kwargs["device"])
        with distributed.process_group(kwargs["device"]):
            return command(*args, **kwargs)
    return run


def rank_shard(dataset: Any) -> Any:
    """Under torchrun, this rank's contiguous share of ``dataset`` (``vitq.distributed.shard_plan``)."""
    from torch.utils.data import Subset

    from vitq import distributed

    return Subset(dataset, distributed.my_shard(len(dataset))) if distributed.active() else dataset


def check_input_file(path: Path, what: str) -> Path:
    """An input file that must exist (checked up front; its content is checked when it is read)."""
    if not path.is_file():
        raise VitqError(f"{what} not found: {path}" if not path.exists() else f"{what} {path} is not a file")
    return path


def check_results_file(path: Path | None, *inputs: Path | None) -> Path | None:
    """--results-file: a writable .json that is none of the inputs."""
    return check_output(path, *inputs, suffix=RESULTS_SUFFIX, what="results file")


def name_list(spec: str, what: str, allowed: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """A comma-separated list of names, each one of ``allowed``, at least one, no repeats."""
    names = tuple(s.strip() for s in spec.split(",") if s.strip())
    if not names:
        raise VitqError(f"{what} lists nothing; choose from {', '.join(allowed)}")
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise VitqError(f"unknown {what} {', '.join(map(repr, unknown))}; choose from {', '.join(allowed)}")
    if len(set(names)) != len(names):
        raise VitqError(f"{what} names one more than once: {spec!r}")
    return names


def data_or_demo(data: Path | None) -> Path:
    from vitq.assets import demo_images

    return data or demo_images()


def warn_label_space(model: Any, model_name: str, dataset: Any, data_path: Path) -> None:
    """Warn (the run goes on) when the labels of ``dataset`` cannot be ``model``'s classes: a label
    beyond its classifier, or data whose label space has another size (CIFAR-10 for an ImageNet model).
    Top-1/top-5 are then meaningless; agreement with fp32 is still valid."""
    n = getattr(model, "num_classes", None)
    if not isinstance(n, int) or n <= 0 or not getattr(dataset, "samples", None):
        return
    top = max(s.label for s in dataset.samples)
    space, kind = getattr(dataset, "num_classes", None), getattr(dataset, "kind", None) or "these"
    if top >= n:
        log.warning("%s: labels go up to %d but %s has %d classes: top-1/top-5 are meaningless (agreement with fp32 "
                    "still holds)", data_path, top, model_name, n)
    elif space is not None and space != n:
        log.warning("%s: %s labels index %d classes but %s has %d: top-1/top-5 compare different label spaces "
                    "(agreement with fp32 still holds)", data_path, kind, space, model_name, n)


def warn_unmatched_overrides(recipe: Any, model: Any, model_name: str) -> list[str]:
    """Warn about each recipe override pattern that matches no quantizer name of the wrapped ``model``
    (it changed nothing); returns those patterns."""
    from vitq.models.wrap import iter_quantizers

    names = [name for name, _ in iter_quantizers(model)]
    unmatched = [p for p in recipe.format.overrides if not any(fnmatch.fnmatchcase(n, p) for n in names)]
    for pattern in unmatched:
        close = difflib.get_close_matches(pattern, names, n=1, cutoff=0.5)
        hint = f"closest: {close[0]}" if close else f"names look like {names[0]}" if names else "the model has none"
        log.warning("override %r matches no quantizer of %s, so it changed nothing (%s)", pattern, model_name, hint)
    return unmatched
