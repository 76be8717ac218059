"""Train a model of any vitq family on CIFAR-10 (upsampled) to get a real checkpoint; stoppable and resumable.

The schedule is a cosine over ``--epochs`` with a short warm-up. A run can stop at any time and the same
command continues it: the state (weights, optimizer, step, the epoch's shuffle, the random generators and the
wall time so far) is written every ``--save-every`` minutes, when ``--max-minutes`` or ``--max-steps`` ends
this run, and on Ctrl-C. It lives outside the repo (``--state``, default ``~/.cache/vitq/train/``), keyed by
the settings, so a changed setting starts a new schedule instead of continuing an unrelated one. A resumed
run ends bit-identical to an uninterrupted one on the same machine and thread count.

``--init`` starts from a published checkpoint (a longer schedule on top of an earlier one); the record keeps
the earlier epochs and wall time, so ``epochs_total`` and ``train_seconds_total`` say what the checkpoint
took in all. ``--transfer`` starts from ImageNet weights of the same timm architecture instead (fine-tuning):
timm's own checkpoint filter resamples position embeddings to the training grid and the classifier starts
fresh; the record names the weights in ``transfer``.

    python benchmarks/train_cifar10.py --model deit_tiny_patch16_224 --epochs 8 --lr 5e-4 --threads 1 \\
        --transfer ../shared/data/weights/deit_tiny_patch16_224.safetensors

    python benchmarks/train_cifar10.py --model mobilevit_xxs --epochs 30 --max-minutes 60 --threads 1 \\
        --init assets/cifar10/mobilevit_xxs.safetensors

When the schedule ends it writes ``assets/cifar10/<model>.safetensors`` (fp16, with the model spec of
``vitq.models.loading.create_float_model`` as metadata, so ``vitq`` rebuilds the model without extra
flags) and ``benchmarks/results/train_cifar10_<model>.json`` (fp32 top-1 on all 10,000 test images).
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from calib.cifar10 import augment, decode_split, model_spec_for, to_input, top1, train_step
from vitq.assets import ASSETS_DIR
from vitq.errors import VitqError
from vitq.files import atomic_write
from vitq.models.loading import CHECKPOINT_META_KEY, create_float_model, model_spec
from vitq.report.records import RESULTS_DIR, UNDER_TRAINED_BELOW
from vitq.results import write_results

REPO = Path(__file__).resolve().parents[1]
STATE_DIR = Path.home() / ".cache" / "vitq" / "train"
RATE_STEPS = 20  # --fit-minutes times this many steps (after the first, which warms the caches)
TRAINING_META_KEY = "vitq_training"  # safetensors metadata: epochs and wall time the weights took in all


@dataclass
class Schedule:
    """What defines a run's trajectory; its hash keys the state file."""

    spec: dict[str, Any]
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_epochs: float
    label_smoothing: float
    seed: int
    init_sha256: str | None

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.__dict__, sort_keys=True).encode()).hexdigest()[:16]

    def lr_at(self, step: int, total: int, steps_per_epoch: int) -> float:
        warm = min(1.0, step / max(1.0, self.warmup_epochs * steps_per_epoch))
        return self.lr * warm * 0.5 * (1.0 + math.cos(math.pi * step / total))


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def earlier_training(path: Path) -> dict[str, float]:
    """Epochs and seconds an ``--init`` checkpoint took (its metadata; 0 for a checkpoint that records none)."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if TRAINING_META_KEY in meta:
        return json.loads(meta[TRAINING_META_KEY])
    record = RESULTS_DIR / f"train_cifar10_{path.stem}.json"  # checkpoints published before the metadata existed
    if record.exists():
        r = json.loads(record.read_text())["records"][0]
        return {"epochs": r.get("epochs_total", r["epochs_completed"]), "seconds": r.get("train_seconds_total", r["seconds"])}
    return {"epochs": 0.0, "seconds": 0.0}


def transfer_weights(net: torch.nn.Module, path: Path) -> list[str]:
    """Load ImageNet weights of ``net``'s architecture into it and return the keys left at their fresh init.

    The family's timm ``checkpoint_filter_fn`` adapts what depends on the input size (position embeddings,
    patch size, attention-bias tables); a tensor whose shape still differs (the classifier) keeps its init.
    Anything else missing or left over means the weights belong to another architecture: an error.
    """
    state = load_file(str(path))
    adapt = getattr(sys.modules[type(net).__module__], "checkpoint_filter_fn", None)
    if adapt is not None:
        state = adapt(state, net)
    own = net.state_dict()
    fresh = sorted(k for k, v in state.items() if k in own and own[k].shape != v.shape)
    missing, unexpected = net.load_state_dict({k: v for k, v in state.items() if k not in fresh}, strict=False)
    if unexpected or sorted(missing) != fresh:
        raise VitqError(f"--transfer {path}: not weights of {type(net).__name__} (missing "
                        f"{sorted(set(missing) - set(fresh))[:3]}, unexpected {unexpected[:3]})")
    return fresh


def save_state(path: Path, key: str, net: torch.nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator,
               step: int, total: int, perm: torch.Tensor, seconds: float, runs: int) -> None:
    state = {"key": key, "model": net.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(),
             "torch_rng": torch.get_rng_state(), "step": step, "total": total, "perm": perm, "seconds": seconds,
             "runs": runs}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(path: Path, key: str) -> dict[str, Any]:
    state = torch.load(path, weights_only=True)
    if state.get("key") != key:
        raise click.ClickException(f"{path} holds the state of another schedule (key {state.get('key')}, this one "
                                   f"{key}); pass --fresh to start over or another --state")
    return state


def display_path(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(REPO) if path.is_relative_to(REPO) else path)


@click.command()
@click.option("--model", required=True, help="A timm model name vitq can wrap (`vitq list`); Swin and DeiT use a 64 px "
              "configuration (calib.cifar10.SCALED_CONFIGS).")
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=REPO.parent / "shared" / "data",
              show_default=True, help="Folder with cifar10-train.tar.gz and cifar10-test.tar.gz.")
@click.option("--img-size", type=click.IntRange(min=8), default=64, show_default=True, help="Training and test resolution (px).")
@click.option("--epochs", type=click.IntRange(min=1), default=30, show_default=True, help="Epochs of the cosine schedule.")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True, help="Training batch size.")
@click.option("--lr", type=float, default=2e-3, show_default=True, help="Peak AdamW learning rate.")
@click.option("--weight-decay", type=float, default=0.05, show_default=True, help="AdamW weight decay.")
@click.option("--warmup-epochs", type=click.FloatRange(min=0), default=0.5, show_default=True, help="Linear warm-up length.")
@click.option("--label-smoothing", type=click.FloatRange(0, 1), default=0.1, show_default=True, help="Cross-entropy label smoothing.")
@click.option("--init", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Start from this checkpoint (.safetensors of the same model spec) instead of random init.")
@click.option("--transfer", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Fine-tune from ImageNet weights of the same timm architecture (.safetensors, timm key names): "
              "position embeddings resampled to --img-size, classifier re-initialised.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds initialisation, shuffling and augmentation.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch threads (default: torch's choice).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True, help="Where to train.")
@click.option("--channels-last/--no-channels-last", default=True, show_default=True,
              help="Train in channels-last memory format (1.2-1.6x the images/s of the hybrids on CPU).")
@click.option("--max-minutes", type=click.FloatRange(min=0), default=None,
              help="Stop this run after this long (state saved; the same command continues).")
@click.option("--max-steps", type=click.IntRange(min=1), default=None,
              help="Stop this run after this many steps (state saved; the same command continues).")
@click.option("--fit-minutes", type=click.FloatRange(min=0), default=None,
              help="Shorten the schedule so it ends about this long after this run starts: the step rate is timed over "
              f"this run's first {RATE_STEPS} steps and the total (kept in the state) cut to fit, never lengthened. On a "
              "resumed run it re-fits what is left (the cosine then continues from the cut total's point), for time-boxed "
              "runs such as a GPU slice or a machine that turned out slower than when the schedule was fitted.")
@click.option("--save-every", type=click.FloatRange(min=0), default=2.0, show_default=True,
              help="Minutes between state saves.")
@click.option("--state", "state_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="State file (default: ~/.cache/vitq/train/<model>-<settings hash>.pt).")
@click.option("--fresh", is_flag=True, help="Ignore an existing state file and start the schedule over.")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=ASSETS_DIR / "cifar10", show_default=True,
              help="Folder for <model>.safetensors.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=REPO / ".cache", show_default=True,
              help="Folder for the decoded, resized images (.npz).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Results file (JSON); default: benchmarks/results/train_cifar10_<model>.json.")
def main(model: str, data: Path, img_size: int, epochs: int, batch_size: int, lr: float, weight_decay: float,
         warmup_epochs: float, label_smoothing: float, init: Path | None, transfer: Path | None, seed: int, threads: int | None,
         device: str,
         channels_last: bool, max_minutes: float | None, max_steps: int | None, fit_minutes: float | None, save_every: float,
         state_path: Path | None, fresh: bool, out_dir: Path, cache_dir: Path, out: Path | None) -> None:
    """Train a model on upsampled CIFAR-10 (resumably); when the schedule ends, write its checkpoint and test top-1."""
    options = click.get_current_context().params
    if threads:
        torch.set_num_threads(threads)
    if device == "cuda" and not torch.cuda.is_available():
        raise click.ClickException("--device cuda: torch sees no CUDA device")
    if init and transfer:
        raise click.ClickException("use either --init or --transfer, not both")
    start_weights = init or transfer
    schedule = Schedule(model_spec_for(model, img_size), epochs, batch_size, lr, weight_decay, warmup_epochs,
                        label_smoothing, seed, file_sha256(start_weights) if start_weights else None)
    key = schedule.key()
    state_path = state_path or STATE_DIR / f"{model}-{key}.pt"

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    try:  # an unknown model, or an --init checkpoint that does not fit it, is one line
        net = create_float_model(model, checkpoint=init, spec=schedule.spec)
        if transfer:
            click.echo(f"--transfer: {', '.join(transfer_weights(net, transfer))} start fresh", err=True)
    except VitqError as e:
        raise click.ClickException(str(e)) from None
    net.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    x_train, y_train = decode_split(data / "cifar10-train.tar.gz", img_size, cache_dir)
    x_test, y_test = decode_split(data / "cifar10-test.tar.gz", img_size, cache_dir)
    cfg = timm.data.resolve_model_data_config(net)
    mean, std = (torch.tensor(cfg[k], device=device).view(1, 3, 1, 1) for k in ("mean", "std"))
    images, labels = torch.from_numpy(x_train).to(device), torch.from_numpy(y_train).to(device)

    steps_per_epoch = len(x_train) // batch_size
    total = steps_per_epoch * epochs
    step, seconds, runs, perm = 0, 0.0, 0, torch.empty(0, dtype=torch.long)
    if state_path.exists() and not fresh:
        state = load_state(state_path, key)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        torch.set_rng_state(state["torch_rng"])
        step, seconds, runs, perm, total = state["step"], state["seconds"], state["runs"], state["perm"], state["total"]
        click.echo(f"resuming {state_path} at step {step}/{total} (epoch {step / steps_per_epoch:.2f})", err=True)
    runs += 1
    run_start_step = step

    def checkpoint_state() -> None:
        save_state(state_path, key, net, opt, gen, step, total, perm, seconds + time.perf_counter() - start, runs)

    start = last_save = time.perf_counter()
    run_steps, stop_reason = 0, None
    bar = tqdm(total=total, initial=step, desc=f"train {model}", unit="step")
    net.train()
    try:
        while step < total:
            if max_minutes is not None and time.perf_counter() - start >= max_minutes * 60:
                stop_reason = f"--max-minutes {max_minutes:g}"
                break
            if max_steps is not None and run_steps >= max_steps:
                stop_reason = f"--max-steps {max_steps}"
                break
            i = step % steps_per_epoch
            if i == 0:
                perm = torch.randperm(len(x_train), generator=gen)
            for group in opt.param_groups:
                group["lr"] = schedule.lr_at(step, total, steps_per_epoch)
            idx = perm[i * batch_size:(i + 1) * batch_size].to(device)
            batch = to_input(augment(images[idx], gen), mean, std, channels_last)
            loss = train_step(net, opt, batch, labels[idx], label_smoothing)
            step += 1
            run_steps += 1
            if fit_minutes is not None and run_steps == 1:
                rate_start = time.perf_counter()
            elif fit_minutes is not None and run_steps == RATE_STEPS + 1:
                rate = RATE_STEPS / (time.perf_counter() - rate_start)
                total = max(step, min(total, run_start_step + int(rate * fit_minutes * 60)))
                bar.total = total
                click.echo(f"--fit-minutes {fit_minutes:g}: {rate:.1f} steps/s, schedule cut to {total} steps "
                           f"({total / steps_per_epoch:.2f} epochs)", err=True)
            bar.update(1)
            bar.set_postfix(epoch=step // steps_per_epoch, loss=f"{loss:.3f}")
            if time.perf_counter() - last_save >= save_every * 60:
                checkpoint_state()
                last_save = time.perf_counter()
    except KeyboardInterrupt:
        bar.close()
        checkpoint_state()
        raise click.exceptions.Exit(130) from None
    bar.close()
    if stop_reason:
        checkpoint_state()
        click.echo(f"stopped by {stop_reason} at step {step}/{total}; state in {state_path}: run the same command "
                   "to continue", err=True)
        return
    seconds += time.perf_counter() - start
    publish(net, model, schedule, init, x_test, y_test, mean, std, channels_last, out_dir, out, options,
            {"steps": step, "steps_per_epoch": steps_per_epoch, "seconds": seconds, "runs": runs})
    state_path.unlink(missing_ok=True)


def publish(net: torch.nn.Module, model: str, schedule: Schedule, init: Path | None, x_test: np.ndarray,
            y_test: np.ndarray, mean: torch.Tensor, std: torch.Tensor, channels_last: bool, out_dir: Path,
            out: Path | None, options: dict[str, Any], run: dict[str, Any]) -> None:
    """Store the weights in fp16 (half the size) and measure top-1 on the stored weights, reloaded as fp32."""
    earlier = earlier_training(init) if init else {"epochs": 0.0, "seconds": 0.0}
    epochs = run["steps"] / run["steps_per_epoch"]
    training = {"epochs": round(earlier["epochs"] + epochs, 2), "seconds": round(earlier["seconds"] + run["seconds"], 1)}
    meta = {CHECKPOINT_META_KEY: json.dumps(model_spec(net)), TRAINING_META_KEY: json.dumps(training)}
    ckpt = out_dir / f"{model}.safetensors"
    state = {k: (v.half() if v.is_floating_point() else v).cpu().contiguous() for k, v in net.state_dict().items()}
    atomic_write(ckpt, lambda tmp: save_file(state, str(tmp), metadata=meta))
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    acc = top1(net, x_test, y_test, mean, std, channels_last)
    record = {
        "model": model, "dataset": "cifar10-test", "n_images": len(x_test), "method": "fp32", "bits": "fp32",
        "top1": round(acc, 2), "top5": None, "fp32_top1": round(acc, 2), "drop": 0.0, "agreement": 100.0,
        "runtime": "torch", "device": options["device"], "seconds": round(run["seconds"], 1),
        "params_m": round(sum(p.numel() for p in net.parameters()) / 1e6, 3),
        "under_trained": acc < UNDER_TRAINED_BELOW, "epochs_completed": round(epochs, 2), "train_steps": run["steps"],
        "runs": run["runs"], "images_per_s": round(run["steps"] * schedule.batch_size / run["seconds"], 1),
        "init": display_path(init) if init else None,
        "transfer": display_path(options["transfer"]) if options["transfer"] else None, "epochs_total": training["epochs"],
        "train_seconds_total": training["seconds"], "checkpoint": display_path(ckpt),
        "config": {**options, **schedule.spec["data_config"], "spec": schedule.spec},
    }
    write_results(out or RESULTS_DIR / f"train_cifar10_{model}.json", [record])
    click.echo(json.dumps({k: record[k] for k in ("model", "top1", "epochs_total", "under_trained", "train_seconds_total")}))


if __name__ == "__main__":
    main()
