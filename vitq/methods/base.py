"""The method protocol and its registry.

A method is data: what it calibrates with, which number-format settings define it, and at most two
hooks that the pipeline (``vitq.pipeline.quantize``) runs in a fixed order after calibration:
``refine`` (a baseline's scale search) and ``schedule`` (reconstruction on the one engine,
``vitq.recon``). Calibration-only methods have neither. Declaring a method imports no torch: a
hook is a callable, usually ``lazy("package.module:function")``, resolved when it first runs.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

from vitq.errors import VitqError
from vitq.recon.schedules import Schedule
from vitq.registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import nn


class Refine(Protocol):
    """Refines the scales of a calibrated (and LayerNorm-folded) wrapped model on the calibration batches."""

    def __call__(self, model: nn.Module, batches: Sequence[torch.Tensor], *, device: str, progress: bool) -> object: ...


def lazy(target: str) -> Callable[..., Any]:
    """``"package.module:function"`` as a callable that imports its module on first call, so a method
    declaration stays cheap to import (``vitq list`` answers without loading torch)."""
    module_name, _, attr = target.partition(":")

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module_name), attr)(*args, **kwargs)

    call.__qualname__ = call.__name__ = attr
    call.target = target  # type: ignore[attr-defined]
    return call


@dataclass(frozen=True)
class Method:
    """One quantization method.

    Attributes:
        name: the ``--method`` value.
        summary: one line for ``vitq list`` and error messages.
        observers: (weight, activation) observers, for a method that *is* a calibration (minmax, ...).
        calibration: the calibration method a baseline or reconstruction starts from; ``None`` for a
            reconstruction lets the recipe choose (``vitq.recipe.DEFAULT_CALIBRATION`` unless set).
        format_settings: number-format fields the method is defined by (FQ-ViT's log2 softmax, ...);
            they apply unless the recipe sets the field itself.
        refine: a baseline's scale search, run after calibration.
        schedule: the reconstruction schedule, run after calibration and refinement.
        recon_preset: the ``vitq.recon.config.RECON_PRESETS`` entry a reconstruction starts from.
    """

    name: str
    summary: str
    observers: tuple[str, str] | None = None
    calibration: str | None = None
    format_settings: Mapping[str, Any] = field(default_factory=dict)
    refine: Refine | None = None
    schedule: Schedule | None = None
    recon_preset: str = "fast"

    def __post_init__(self) -> None:
        object.__setattr__(self, "format_settings", MappingProxyType(dict(self.format_settings)))
        if (self.observers is None) == (self.calibration is None and self.schedule is None):
            raise ValueError(f"method {self.name!r}: give observers (a calibration method) or calibration/schedule, not both")

    @property
    def kind(self) -> str:
        return "reconstruction" if self.schedule else "baseline" if self.refine else "calibration"

    @property
    def reconstructs(self) -> bool:
        return self.schedule is not None


METHODS: Registry[Method] = Registry("method")


def register_method(method: Method) -> Method:
    """Add ``method`` to the registry (``--method NAME``); returns it."""
    return METHODS.register(method.name)(method)


def get_method(name: str) -> Method:
    if not isinstance(name, str):
        raise VitqError(f"method must be a name, got {name!r}")
    return METHODS.get(name)


def method_names(kind: str | None = None) -> list[str]:
    return [n for n in METHODS.names() if kind is None or METHODS.get(n).kind == kind]
