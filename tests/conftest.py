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
