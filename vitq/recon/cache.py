"""Calibration samples and the activation caches a unit is reconstructed from.

Caches live in CPU memory and only for the unit at hand: the engine walks the units in order and
replaces the current input caches with the unit's outputs, so memory holds one unit's float
input, quantized-prefix input and float target at a time (about 0.5 GB for DeiT-Tiny at 1024
samples), never every unit's tensors. Batches move to the compute device one at a time.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vitq.quant.hooks import run_until

MIN_CROP_AREA = 0.35


def make_samples(images: Sequence[torch.Tensor], n: int, augment: bool, seed: int) -> torch.Tensor:
    """``n`` calibration samples: the images themselves, then (with ``augment``) random resized
    crops and horizontal flips of them, so 125 images can stand in for the 1024 samples of the
    papers. Works on preprocessed tensors, so the model's own transform stays the only one."""
    base = torch.cat(list(images))
    if n <= len(base) or not augment:
        return base[:n]
    gen = torch.Generator().manual_seed(seed)
    extra = []
    size = base.shape[-2:]
    for i in range(n - len(base)):
        img = base[i % len(base)]
        area = MIN_CROP_AREA + (1.0 - MIN_CROP_AREA) * float(torch.rand((), generator=gen))
        h, w = (max(8, int(s * area ** 0.5)) for s in size)
        top = int(torch.randint(0, size[0] - h + 1, (), generator=gen))
        left = int(torch.randint(0, size[1] - w + 1, (), generator=gen))
        crop = F.interpolate(img[None, :, top:top + h, left:left + w], size=size, mode="bilinear", align_corners=False)
        if bool(torch.rand((), generator=gen) < 0.5):
            crop = crop.flip(-1)
        extra.append(crop)
    return torch.cat([base, *extra])


@torch.no_grad()
def run_batched(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int, device: str) -> torch.Tensor:
    """``fn`` over ``x`` in batches on ``device``; the result is gathered on the CPU."""
    return torch.cat([fn(x[i:i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)])


def snapshot(t: torch.Tensor) -> torch.Tensor:
    """A CPU copy: ``.cpu()`` of a CPU tensor shares storage, and an in-place op later in the
    forward (timm's ``SiLU(inplace=True)`` after a folded conv) would rewrite the capture."""
    return t.detach().to("cpu", copy=True)


@torch.no_grad()
def capture_input(model: nn.Module, module: nn.Module, x: torch.Tensor, batch_size: int, device: str,
                  pack: Callable[[tuple], torch.Tensor]) -> torch.Tensor:
    """The input of ``module`` when ``model`` runs on ``x`` (the forward stops right there); ``pack``
    makes one tensor of the module's positional inputs."""
    got: list[torch.Tensor] = []
    run_until(model, module, (x[i:i + batch_size].to(device) for i in range(0, len(x), batch_size)),
              lambda args: got.append(snapshot(pack(args))))
    return torch.cat(got)


@torch.no_grad()
def capture_io(fn: Callable[[torch.Tensor], torch.Tensor], layer: nn.Module, x: torch.Tensor, batch_size: int,
               device: str, output_of: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Input of ``layer`` and output of ``output_of`` (default: ``layer`` itself) inside ``fn`` run on
    ``x`` (for layer-wise reconstruction)."""
    ins: list[torch.Tensor] = []
    outs: list[torch.Tensor] = []

    def take_input(_mod: nn.Module, args: tuple, _out: torch.Tensor) -> None:
        ins.append(snapshot(args[0]))

    def take_output(_mod: nn.Module, _args: tuple, out: torch.Tensor) -> None:
        outs.append(snapshot(out))

    handles = [layer.register_forward_hook(take_input), (output_of or layer).register_forward_hook(take_output)]
    try:
        run_batched(fn, x, batch_size, device)
    finally:
        for handle in handles:
            handle.remove()
    return torch.cat(ins), torch.cat(outs)
