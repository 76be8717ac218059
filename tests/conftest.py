"""Shared fixtures: tiny random inputs, the bundled DeiT-Tiny and images (no network, no ../shared)."""
from __future__ import annotations

import pytest
import torch

from vitq.assets import demo_checkpoint, demo_images


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def deit_checkpoint():
    return demo_checkpoint()


@pytest.fixture(scope="session")
def sample_images():
    return demo_images()


def _write_cifar_checkpoint(path, model_name: str = "mobilevit_xxs", **kwargs):
    """A random-init checkpoint like benchmarks/train_cifar10.py writes: 10 classes, 64 px, model spec
    in the safetensors metadata."""
    import json

    import timm
    from safetensors.torch import save_file

    from vitq.models.loading import CHECKPOINT_META_KEY

    kwargs = {"num_classes": 10, **kwargs}
    model = timm.create_model(model_name, **kwargs)
    spec = {"model": model_name, "kwargs": kwargs, "data_config": {"input_size": [3, 64, 64], "crop_pct": 1.0}}
    save_file(model.state_dict(), str(path), metadata={CHECKPOINT_META_KEY: json.dumps(spec)})
    return path


@pytest.fixture
def cifar_checkpoint():
    return _write_cifar_checkpoint
