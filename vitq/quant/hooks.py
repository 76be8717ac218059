"""Running a model only as far as one of its modules: the one way calibration, bias correction,
baseline searches and reconstruction caches capture a module's input or output without paying for
the rest of the network."""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn


class StopForward(Exception):
    """Raised by a hook to stop a forward pass once the wanted tensor is captured."""


def run_until(model: nn.Module, module: nn.Module, inputs: Iterable[torch.Tensor], take: Callable[..., None],
              after: bool = False) -> None:
    """Run ``model`` on each of ``inputs`` until it reaches ``module``, then stop that forward pass.

    ``take(args)`` sees the module's positional inputs just before it runs; with ``after``,
    ``take(module, args, output)`` sees its output instead. A module called twice per forward is seen
    at its first call."""
    def before_hook(_mod: nn.Module, args: tuple) -> None:
        take(args)
        raise StopForward

    def after_hook(mod: nn.Module, args: tuple, output: torch.Tensor) -> None:
        take(mod, args, output)
        raise StopForward

    handle = module.register_forward_hook(after_hook) if after else module.register_forward_pre_hook(before_hook)
    try:
        for x in inputs:
            try:
                model(x)
            except StopForward:
                pass
    finally:
        handle.remove()
