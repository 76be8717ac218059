"""Paths of the bundled demo assets (see assets/PROVENANCE.md)."""
from __future__ import annotations

from pathlib import Path

from vitq.errors import VitqError

ASSETS_DIR = Path(__file__).resolve().parents[1] / "assets"
DEMO_MODEL = "deit_tiny_patch16_224"


def asset(name: str) -> Path:
    path = ASSETS_DIR / name
    if not path.exists():
        raise VitqError(f"bundled asset {name} not found under {ASSETS_DIR}; install from a git clone with `pip install -e .`")
    return path


def demo_checkpoint() -> Path:
    return asset(f"{DEMO_MODEL}.safetensors")


def demo_images() -> Path:
    return asset("imagenet-sample")
