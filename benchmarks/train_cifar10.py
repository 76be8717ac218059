"""Train a hybrid ViT on CIFAR-10 (upsampled) to get a real checkpoint for Q-HyViT experiments.

No hybrid ImageNet weights can be downloaded here, so every hybrid family gets a CIFAR-10
checkpoint made by this script. Images are decoded once, resized to ``--img-size`` with PIL bicubic
(exactly what ``calib.transforms.eval_transform`` does with crop_pct 1.0, which the checkpoint
records), and cached as uint8 arrays; training augments on tensors (random crop with padding, flip).

The learning-rate schedule is a cosine over ``--epochs`` or over ``--max-minutes``, whichever ends
first, so a time-boxed CPU run still finishes with a decayed learning rate.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/train_cifar10.py --model mobilevit_xxs --epochs 40 \\
        --max-minutes 22 --threads 1

Writes ``assets/cifar10/<model>.safetensors`` (fp16, with the model spec of
``vitq.models.loading.create_float_model`` as metadata, so ``vitq`` rebuilds the model without extra
flags) and ``benchmarks/results/train_cifar10_<model>.json`` (fp32 test top-1 on all 10,000 test
images).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import click
import numpy as np
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from tqdm import tqdm

from calib.datasets import ImageDataset, scan_cifar_archive
from vitq.assets import ASSETS_DIR
from vitq.models.loading import CHECKPOINT_META_KEY, create_float_model, model_spec
from vitq.report.records import RESULTS_DIR, UNDER_TRAINED_BELOW
from vitq.results import write_results

REPO = Path(__file__).resolve().parents[1]


def decode_split(archive: Path, size: int, cache_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(N, size, size, 3) uint8 images and (N,) labels of a CIFAR-10 tar, cached after the first run."""
    cache = cache_dir / f"{archive.name.split('.')[0]}_{size}.npz"
    if cache.exists():
        data = np.load(cache)
        return data["x"], data["y"]
    dataset = ImageDataset(scan_cifar_archive(archive), lambda image: np.asarray(image.resize((size, size), Image.BICUBIC)),
                           archive=archive)
    pairs = [dataset[i] for i in tqdm(range(len(dataset)), desc=f"decode {archive.name}", unit="img")]
    x, y = np.stack([p[0] for p in pairs]), np.asarray([p[1] for p in pairs], dtype=np.int64)
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.savez(cache, x=x, y=y)
    return x, y


def to_input(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (x.permute(0, 3, 1, 2).float() / 255.0 - mean) / std


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random crop with size/8 zero padding and horizontal flip on a (B, H, W, 3) uint8 batch."""
    b, h, w, _ = x.shape
    pad = h // 8
    padded = F.pad(x, (0, 0, pad, pad, pad, pad))
    dy, dx = torch.randint(0, 2 * pad + 1, (2,), generator=gen).tolist()
    out = padded[:, dy:dy + h, dx:dx + w]
    flip = torch.rand(b, generator=gen) < 0.5
    out[flip] = out[flip].flip(2)
    return out


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, mean: torch.Tensor, std: torch.Tensor) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x), 500):
        logits = model(to_input(torch.from_numpy(x[i:i + 500]), mean, std))
        correct += int((logits.argmax(1) == torch.from_numpy(y[i:i + 500])).sum())
    return 100.0 * correct / len(x)


def display_path(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(REPO) if path.is_relative_to(REPO) else path)


def model_kwargs(name: str, size: int) -> dict:
    """efficientformerv2 sizes its attention biases from ``img_size``; the others take any input size."""
    return {"num_classes": 10, **({"img_size": size} if name.startswith("efficientformerv2") else {})}


@click.command()
@click.option("--model", required=True, help="A timm hybrid model name vitq can wrap (`vitq list`).")
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=REPO.parent / "shared" / "data",
              show_default=True, help="Folder with cifar10-train.tar.gz and cifar10-test.tar.gz.")
@click.option("--img-size", type=click.IntRange(min=1), default=64, show_default=True, help="Training and test resolution (px).")
@click.option("--epochs", type=click.IntRange(min=1), default=30, show_default=True, help="Epochs of the cosine schedule.")
@click.option("--max-minutes", type=float, default=None, help="Time box; the cosine schedule fits into it.")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True, help="Training batch size.")
@click.option("--lr", type=float, default=2e-3, show_default=True, help="Peak AdamW learning rate.")
@click.option("--weight-decay", type=float, default=0.05, show_default=True, help="AdamW weight decay.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch threads (default: torch's choice).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds initialisation, shuffling and augmentation.")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=ASSETS_DIR / "cifar10", show_default=True,
              help="Folder for <model>.safetensors.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=REPO / ".cache", show_default=True,
              help="Folder for the decoded, resized images (.npz).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Results file (JSON); default: benchmarks/results/train_cifar10_<model>.json.")
def main(model: str, data: Path, img_size: int, epochs: int, max_minutes: float | None, batch_size: int, lr: float,
         weight_decay: float, threads: int | None, seed: int, out_dir: Path, cache_dir: Path, out: Path | None) -> None:
    """Train a hybrid ViT on upsampled CIFAR-10; write its checkpoint and its fp32 test top-1."""
    options = click.get_current_context().params
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)

    # the model is built as vitq rebuilds it from the checkpoint's spec (create_float_model checks vitq can wrap it)
    data_config = {"input_size": [3, img_size, img_size], "crop_pct": 1.0, "interpolation": "bicubic"}
    spec = {"model": model, "kwargs": model_kwargs(model, img_size), "data_config": data_config}
    net = create_float_model(model, spec=spec)
    x_train, y_train = decode_split(data / "cifar10-train.tar.gz", img_size, cache_dir)
    x_test, y_test = decode_split(data / "cifar10-test.tar.gz", img_size, cache_dir)
    cfg = timm.data.resolve_model_data_config(net)
    mean, std = (torch.tensor(cfg[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = len(x_train) // batch_size
    total = steps_per_epoch * epochs
    budget = max_minutes * 60 if max_minutes else math.inf
    start, step, epoch = time.perf_counter(), 0, 0
    bar = tqdm(total=total, desc=f"train {model}", unit="step")
    while step < total:
        net.train()
        perm = torch.randperm(len(x_train), generator=gen)
        for i in range(steps_per_epoch):
            progress = max(step / total, (time.perf_counter() - start) / budget)
            if progress >= 1.0:
                break
            warm = min(1.0, step / (0.5 * steps_per_epoch))
            for group in opt.param_groups:
                group["lr"] = lr * warm * 0.5 * (1.0 + math.cos(math.pi * progress))
            idx = perm[i * batch_size:(i + 1) * batch_size]
            xb = to_input(augment(torch.from_numpy(x_train[idx.numpy()]), gen), mean, std)
            loss = F.cross_entropy(net(xb), torch.from_numpy(y_train[idx.numpy()]), label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{loss.item():.3f}")
        else:
            epoch += 1
            continue
        break
    bar.close()
    train_minutes = (time.perf_counter() - start) / 60

    # Store fp16 (half the size); accuracy is measured on the stored weights, reloaded as fp32.
    meta = {CHECKPOINT_META_KEY: json.dumps(model_spec(net))}
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = out_dir / f"{model}.safetensors"
    state = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(ckpt), metadata=meta)
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    top1 = evaluate(net, x_test, y_test, mean, std)
    params = sum(p.numel() for p in net.parameters())
    record = {
        "model": model, "dataset": "cifar10-test", "n_images": len(x_test), "method": "fp32", "bits": "fp32",
        "top1": round(top1, 2), "top5": None, "fp32_top1": round(top1, 2), "drop": 0.0, "agreement": 100.0,
        "device": "cpu", "seconds": round(train_minutes * 60, 1), "params_m": round(params / 1e6, 3),
        "under_trained": top1 < UNDER_TRAINED_BELOW, "epochs_completed": round(step / steps_per_epoch, 2),
        "train_steps": step, "checkpoint": display_path(ckpt), "config": {**options, **data_config},
    }
    write_results(out or RESULTS_DIR / f"train_cifar10_{model}.json", [record])
    click.echo(json.dumps({k: record[k] for k in ("model", "top1", "epochs_completed", "under_trained", "seconds")}))


if __name__ == "__main__":
    main()
