"""Training images/s of every family's CIFAR-10 model, with and without channels-last, in one interleaved run.

Each model is built exactly as ``benchmarks/train_cifar10.py`` trains it (``calib.cifar10.model_spec_for``) and
timed on the real training step (AdamW, label smoothing) on random inputs, so the data pipeline is not in the
number; the pipeline (augment + normalise) is timed on its own. Settings alternate round by round so drift on a
shared machine falls on both alike; the record keeps the median of the rounds.

    python benchmarks/train_throughput.py --threads 1 --out benchmarks/results/train_throughput_cpu.json
"""
from __future__ import annotations

import statistics
import time

import click
import torch

from calib.cifar10 import augment, model_spec_for, to_input, train_step
from vitq.models.loading import create_float_model
from vitq.report.records import RESULTS_DIR
from vitq.results import write_results

MODELS = ("mobilevit_xxs", "mobilevitv2_050", "efficientformerv2_s0", "mobile_former_26m",
          "swin_tiny_patch4_window7_224", "deit_tiny_patch16_224")


def step_timer(name: str, img_size: int, batch_size: int, channels_last: bool):
    """A function that runs ``n`` training steps of ``name`` and returns the seconds they took."""
    torch.manual_seed(0)
    model = create_float_model(name, spec=model_spec_for(name, img_size)).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    inputs = torch.randn(batch_size, 3, img_size, img_size).contiguous(memory_format=fmt)
    labels = torch.randint(0, 10, (batch_size,))

    def run(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            train_step(model, opt, inputs, labels)
        return time.perf_counter() - start
    return run


def pipeline_images_per_s(img_size: int, batch_size: int, rounds: int = 20) -> float:
    """Images/s of the data side of a step: index, augment, normalise (channels-last)."""
    images = torch.randint(0, 256, (4 * batch_size, img_size, img_size, 3), dtype=torch.uint8)
    mean, std = torch.full((1, 3, 1, 1), 0.5), torch.full((1, 3, 1, 1), 0.25)
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in range(rounds):
        idx = torch.randperm(len(images), generator=gen)[:batch_size]
        to_input(augment(images[idx], gen), mean, std, channels_last=True)
    return rounds * batch_size / (time.perf_counter() - start)


@click.command()
@click.option("--models", default=",".join(MODELS), show_default=True, help="Comma-separated model names.")
@click.option("--img-size", type=click.IntRange(min=8), default=64, show_default=True, help="Input resolution (px).")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True, help="Training batch size.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="torch threads.")
@click.option("--steps", type=click.IntRange(min=1), default=3, show_default=True, help="Timed steps per round.")
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True, help="Interleaved rounds.")
@click.option("--out", type=click.Path(dir_okay=False), default=str(RESULTS_DIR / "train_throughput_cpu.json"),
              show_default=True, help="Results file (JSON).")
def main(models: str, img_size: int, batch_size: int, threads: int, steps: int, rounds: int, out: str) -> None:
    """Time one training step per family, contiguous vs channels-last."""
    torch.set_num_threads(threads)
    names = [m.strip() for m in models.split(",") if m.strip()]
    timers = {(n, cl): step_timer(n, img_size, batch_size, cl) for n in names for cl in (False, True)}
    for run in timers.values():
        run(1)  # warm-up: allocator, oneDNN primitive caches
    seconds: dict[tuple[str, bool], list[float]] = {key: [] for key in timers}
    for _ in range(rounds):
        for key, run in timers.items():
            seconds[key].append(run(steps))
    records = []
    for name in names:
        before, after = (steps * batch_size / statistics.median(seconds[(name, cl)]) for cl in (False, True))
        records.append({"model": name, "img_size": img_size, "batch_size": batch_size, "threads": threads,
                        "runtime": "torch", "device": "cpu", "images_per_s_contiguous": round(before, 1),
                        "images_per_s_channels_last": round(after, 1), "speedup": round(after / before, 3)})
        click.echo(f"{name:32s} {before:7.1f} -> {after:7.1f} img/s ({after / before:.2f}x)")
    pipeline = pipeline_images_per_s(img_size, batch_size)
    click.echo(f"data pipeline: {pipeline:.0f} img/s")
    write_results(out, records, settings={"steps": steps, "rounds": rounds}, pipeline_images_per_s=round(pipeline, 1))


if __name__ == "__main__":
    main()
