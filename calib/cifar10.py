"""CIFAR-10 for training vitq's own checkpoints: decoded once into uint8 arrays, augmented on tensors.

No hybrid, Swin or small-ViT ImageNet weights can be downloaded here, so every family gets a CIFAR-10
checkpoint trained by ``benchmarks/train_cifar10.py``. This module holds what that script and the
throughput benchmark share: the decoded arrays (resized with PIL bicubic, exactly as
``calib.transforms.eval_transform`` does with crop_pct 1.0, which the checkpoint records), the augmentation,
the model spec each family is trained with, and one training step.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm import tqdm

from calib.datasets import ImageDataset, scan_cifar_archive

NUM_CLASSES = 10

# Configurations for families whose timm defaults are sized for 224 px ImageNet: scaled to 64 px with the
# family's structure intact (Swin: window attention, shifted windows and patch merging over four stages).
# DeiT-Tiny keeps its whole ImageNet architecture at 64 px (16x16 patches: 16 tokens plus the class token), so
# it can be fine-tuned from the ImageNet weights (``train_cifar10.py --transfer``); the position embeddings
# are resampled to the 4x4 grid.
SCALED_CONFIGS: dict[str, dict[str, Any]] = {
    "swin_tiny_patch4_window7_224": {"patch_size": 4, "window_size": 4, "embed_dim": 48, "depths": [2, 2, 2, 2],
                                     "num_heads": [2, 4, 8, 16]},
}


def model_spec_for(name: str, img_size: int) -> dict[str, Any]:
    """The ``create_float_model`` spec a CIFAR-10 checkpoint of ``name`` is trained with at ``img_size``.

    EfficientFormerV2, Swin and ViT size position tables or attention biases from ``img_size``; the other
    hybrids take any input size.
    """
    kwargs: dict[str, Any] = {"num_classes": NUM_CLASSES, **SCALED_CONFIGS.get(name, {})}
    if name.startswith(("efficientformerv2", "swin", "vit", "deit")):
        kwargs["img_size"] = img_size
    data_config = {"input_size": [3, img_size, img_size], "crop_pct": 1.0, "interpolation": "bicubic"}
    return {"model": name, "kwargs": kwargs, "data_config": data_config}


def decode_split(archive: Path, size: int, cache_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(N, size, size, 3) uint8 images and (N,) labels of a CIFAR-10 tar, cached after the first run (the cache
    name carries the archive's size and modification time, so another archive of the same name never reads it)."""
    stat = archive.stat()
    cache = cache_dir / f"{archive.name.split('.')[0]}_{size}_{stat.st_size}_{stat.st_mtime_ns}.npz"
    if cache.exists():
        data = np.load(cache)
        return data["x"], data["y"]
    dataset = ImageDataset(scan_cifar_archive(archive), lambda image: np.asarray(image.resize((size, size), Image.BICUBIC)),
                           archive=archive)
    pairs = [dataset[i] for i in tqdm(range(len(dataset)), desc=f"decode {archive.name}", unit="img")]
    x, y = np.stack([p[0] for p in pairs]), np.asarray([p[1] for p in pairs], dtype=np.int64)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")  # runs started side by side may race here
    with tmp.open("wb") as f:
        np.savez(f, x=x, y=y)
    os.replace(tmp, cache)
    return x, y


def to_input(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """A (B, H, W, 3) uint8 batch as the model's normalised float input."""
    out = (x.permute(0, 3, 1, 2).float() / 255.0 - mean) / std
    return out.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random crop with size/8 zero padding and horizontal flip on a (B, H, W, 3) uint8 batch (random numbers
    from ``gen`` on the CPU, so a run draws the same augmentation on any device)."""
    b, h, w, _ = x.shape
    pad = h // 8
    padded = F.pad(x, (0, 0, pad, pad, pad, pad))
    dy, dx = torch.randint(0, 2 * pad + 1, (2,), generator=gen).tolist()
    out = padded[:, dy:dy + h, dx:dx + w]
    flip = (torch.rand(b, generator=gen) < 0.5).to(x.device)
    out[flip] = out[flip].flip(2)
    return out


def train_step(model: nn.Module, opt: torch.optim.Optimizer, inputs: torch.Tensor, labels: torch.Tensor,
               label_smoothing: float = 0.1) -> float:
    """One optimizer step on one batch; returns the loss."""
    loss = F.cross_entropy(model(inputs), labels, label_smoothing=label_smoothing)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()


@torch.no_grad()
def top1(model: nn.Module, x: np.ndarray, y: np.ndarray, mean: torch.Tensor, std: torch.Tensor,
         channels_last: bool = False) -> float:
    """Top-1 (%) of ``model`` on uint8 images ``x`` with labels ``y``, in eval mode, on the model's device."""
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, len(x), 500):
        logits = model(to_input(torch.from_numpy(x[i:i + 500]).to(device), mean.to(device), std.to(device), channels_last))
        correct += int((logits.argmax(1).cpu() == torch.from_numpy(y[i:i + 500])).sum())
    return 100.0 * correct / len(x)
