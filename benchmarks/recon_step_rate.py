"""Cost of one reconstruction step on DeiT-Tiny at batch 32, for a block (learned rounding) and for the
whole-model level (weights frozen, only activation steps learn); prints one JSON line.

The step cost is the difference between two runs with different iteration counts divided by the
difference in steps, so calibration and cache capture drop out. To compare two versions of vitq in one
run, point PYTHONPATH at each checkout in turn and alternate (this script only uses the public API):

    for tree in /tmp/vitq-before /work/main /tmp/vitq-before /work/main; do
        PYTHONPATH=$tree python benchmarks/recon_step_rate.py --label $tree >> /tmp/rates.jsonl; done
    python benchmarks/recon_step_rate.py --collect /tmp/rates.jsonl --out benchmarks/results/recon_step_rate.json
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import click

BATCH, SAMPLES = 32, 32


def step_seconds(method: str, units: tuple[str, ...], iters_key: str, low: int, high: int) -> float:
    from calib.datasets import open_split
    from calib.loaders import images_only, load_batches
    from calib.transforms import eval_transform
    from vitq.assets import DEMO_MODEL, demo_checkpoint, demo_images
    from vitq.models.loading import create_float_model
    from vitq.pipeline.quantize import quantize
    from vitq.recipe import make_recipe

    model = create_float_model(DEMO_MODEL, checkpoint=demo_checkpoint())
    images = images_only(load_batches(open_split(demo_images(), "calibration", eval_transform(model), limit=SAMPLES),
                                      BATCH, progress=False))
    seconds = {}
    for n in (low, high):
        settings = {"units": units, iters_key: n, "samples": SAMPLES, "batch_size": BATCH, "recon_preset": "fast"}
        start = time.perf_counter()
        quantize(model, DEMO_MODEL, images, make_recipe("W4A4", method, settings, seed=0), progress=False)
        seconds[n] = time.perf_counter() - start
    return (seconds[high] - seconds[low]) / (high - low)


@click.command()
@click.option("--label", default="", help="Names this run (e.g. the checkout it imported vitq from).")
@click.option("--low", type=click.IntRange(min=1), default=10, show_default=True, help="Iterations of the short run.")
@click.option("--high", type=click.IntRange(min=2), default=110, show_default=True, help="Iterations of the long run.")
@click.option("--model-high", type=click.IntRange(min=3), default=12, show_default=True,
              help="Whole-model steps of the long run (the short one takes 2; a step runs all 12 blocks).")
@click.option("--collect", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Instead of measuring, gather the JSON lines of earlier runs into one results file.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Results file (with --collect).")
def main(label: str, low: int, high: int, model_high: int, collect: Path | None, out: Path | None) -> None:
    """Seconds per reconstruction step (block level and whole-model level) at batch 32."""
    if collect is not None:
        from vitq.report.tables import text_table
        from vitq.results import write_results

        if out is None:
            raise click.UsageError("--collect needs --out")
        runs = [json.loads(line) for line in collect.read_text().splitlines() if line.strip()]
        records = []
        for name in dict.fromkeys(r["label"] for r in runs):
            mine = [r for r in runs if r["label"] == name]
            records.append({"runtime": "torch (CPU)", "model": "deit_tiny_patch16_224", "bits": "W4A4", "batch_size": BATCH,
                            "label": name, "runs": len(mine),
                            **{f"{k}_steps_per_second": round(1 / statistics.median(r[k] for r in mine), 3)
                               for k in ("block", "model_level")}})
        write_results(out, records)
        click.echo(text_table(records, [("label", "vitq"), ("runs", "runs"), ("block_steps_per_second", "block steps/s"),
                                        ("model_level_steps_per_second", "model-level steps/s")]))
        return
    import torch

    torch.manual_seed(0)
    result = {"label": label, "block": step_seconds("brecq", ("blocks.0",), "iters", low, high),
              "model_level": step_seconds("pfcr", ("model",), "model_iters", 2, model_high)}
    click.echo(json.dumps(result))


if __name__ == "__main__":
    main()
