"""Bench tests reuse the calibrated tiny ViT of the export tests."""
from tests.export.conftest import tiny_w8a8  # noqa: F401 - re-exported fixture
