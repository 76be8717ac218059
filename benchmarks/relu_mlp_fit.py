"""How much float accuracy the ReLU-MLP model change keeps, per fit setting (``vitq.models.relu_mlp``).

    python benchmarks/relu_mlp_fit.py --data ../shared/data/imagenet-sample --fits 0:0,300:1e-4,300:1e-3,600:2e-3 \\
        --out benchmarks/results/relu_mlp_fit_deit_tiny.json

Each fit (``STEPS:LR``; ``0:0`` is the bare GELU -> ReLU swap) changes DeiT-Tiny on the calibration images (or,
with ``--samples N``, N samples made from them by random resized crops and flips, as reconstruction does) and
evaluates the changed *float* model against the original on the evaluation images (top-1, agreement, KL),
with the fit's relative block-output errors. No quantization: this is the price of the change itself.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import click
import torch

from calib.loaders import images_only, load_splits
from calib.transforms import eval_transform
from vitq.assets import DEMO_MODEL, demo_checkpoint, demo_images
from vitq.evaluate import evaluate
from vitq.models.loading import create_float_model
from vitq.models.relu_mlp import relu_mlp_model
from vitq.recon.cache import make_samples
from vitq.report.tables import text_table
from vitq.results import write_results

COLUMNS = [("fit", "fit"), ("n_images", "images"), ("top1", "top-1"), ("fp32_top1", "fp32 top-1"),
           ("drop", "drop"), ("agreement", "agree fp32 %"), ("kl", "KL"), ("mean_rel_error_after", "fit error"),
           ("seconds", "fit s")]


def parse_fits(spec: str) -> list[tuple[int, float]]:
    try:
        fits = [(int(steps), float(lr)) for steps, lr in (f.split(":") for f in spec.split(","))]
    except ValueError:
        raise click.BadParameter(f"expected STEPS:LR[,STEPS:LR...], got {spec!r}", param_hint="--fits") from None
    if any(steps < 0 or lr < 0 for steps, lr in fits):
        raise click.BadParameter("steps and learning rates must be >= 0", param_hint="--fits")
    return fits


@click.command()
@click.option("--data", type=click.Path(path_type=Path), default=None, help="Image folder; default: bundled sample.")
@click.option("--fits", default="0:0,300:1e-3", show_default=True, help="Comma-separated STEPS:LR fits (0:0 = swap only).")
@click.option("--samples", type=click.IntRange(min=1), default=None,
              help="Fit on this many samples: the calibration images, then augmented crops of them (default: the images).")
@click.option("--eval-limit", type=int, default=None, help="Evaluate on this many evaluation images.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Results file (JSON).")
def main(data: Path | None, fits: str, samples: int | None, eval_limit: int | None, out: Path) -> None:
    """The changed float model's accuracy against the original, per fit setting."""
    logging.basicConfig(level=logging.WARNING)
    settings = parse_fits(fits)
    model = create_float_model(DEMO_MODEL, checkpoint=demo_checkpoint())
    data = data or demo_images()
    calib, evaluation = load_splits(data, eval_transform(model), eval_limit)
    images = list(images_only(calib))
    n_calib = sum(len(x) for x in images)
    fit_on = make_samples(images, samples, augment=True, seed=0) if samples else torch.cat(images)
    records = []
    for steps, lr in settings:
        torch.manual_seed(0)
        start = time.perf_counter()
        changed, report = relu_mlp_model(model, DEMO_MODEL, [fit_on], steps=steps, lr=lr)
        results = evaluate({"fp32": model, "changed": changed}, evaluation, progress=False)
        fp32, result = results["fp32"], results["changed"]
        summary = report.summary()
        records.append({
            "model": DEMO_MODEL, "dataset": str(data), "n_images": result.n_images, "method": "relu_mlp",
            "bits": "fp32", "runtime": "torch", "device": "cpu", "steps": steps, "lr": lr,
            "fit": f"{steps} steps @ {lr:g}" if steps else "swap only",
            "top1": round(result.top1, 3), "top5": round(result.top5, 3), "fp32_top1": round(fp32.top1, 3),
            "drop": round(fp32.top1 - result.top1, 3), "agreement": round(result.agreement, 3), "kl": round(result.kl, 5),
            "mean_rel_error_before": summary["mean_rel_error_before"], "mean_rel_error_after": summary["mean_rel_error_after"],
            "per_mlp": summary["per_mlp"], "seconds": round(time.perf_counter() - start, 1),
            "config": {"calibration_images": n_calib, "fit_samples": len(fit_on), "augmented": bool(samples and samples > n_calib),
                       "tokens_per_step": summary["tokens_per_step"]},
        })
        write_results(out, records)
        click.echo(text_table(records[-1:], COLUMNS), err=True)
    click.echo(text_table(records, COLUMNS))


if __name__ == "__main__":
    main()
