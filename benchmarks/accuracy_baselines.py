"""Regenerate benchmarks/results/baseline_deit_tiny.json: DeiT-Tiny, no reconstruction,
methods x bit-widths, each evaluated side by side with fp32 on the same images.

    python benchmarks/accuracy_baselines.py --data ../shared/data/imagenet-sample \\
        --checkpoint ../shared/data/weights/deit_tiny_patch16_224.safetensors \\
        --methods percentile --bits W8A8,W6A6,W4A4 --percentiles 99.9,99.99,99.999 \\
        --out benchmarks/results/baseline_deit_tiny_percentile_exact.json

Every run goes through ``vitq.pipeline.workflow.quantize_and_evaluate``; the file is rewritten after
every run, so an interrupted sweep keeps what it finished. ``--percentiles`` sweeps the clipping
percentile of the recipes that calibrate with a percentile observer ('default': the one the recipe
derives from the activation bits); every record carries the resolved recipe.
"""
from __future__ import annotations

import logging
from pathlib import Path

import click
import torch

from calib.loaders import load_splits
from calib.transforms import eval_transform
from vitq.assets import DEMO_MODEL, demo_checkpoint, demo_images
from vitq.methods import get_method, method_names
from vitq.models.loading import create_float_model
from vitq.pipeline.workflow import accuracy_table, quantize_and_evaluate
from vitq.recipe import Recipe, make_recipe
from vitq.report.records import RESULTS_DIR
from vitq.results import write_results


def uses_percentile(recipe: Recipe) -> bool:
    """Whether the recipe's clipping percentile matters: some observer of its format is the percentile observer."""
    fmt = recipe.format
    return "percentile" in (fmt.weight_observer, fmt.activation_observer, *(o.get("observer") for o in fmt.overrides.values()))


@click.command()
@click.option("--data", type=click.Path(path_type=Path), default=None, help="Image folder; default: bundled sample.")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help=f"{DEMO_MODEL} float weights; default: the bundled ones.")
@click.option("--methods", default=",".join(method_names("calibration")), show_default=True,
              help="Comma-separated methods that do not reconstruct (`vitq list`).")
@click.option("--bits", "bits_spec", default="W8A8,W6A6,W4A4", show_default=True, help="Comma-separated WxAy.")
@click.option("--percentiles", default="default", show_default=True,
              help="Comma-separated clipping percentiles run for recipes with a percentile observer ('default': the recipe's).")
@click.option("--no-ln-reparam", is_flag=True, help="Recipe setting ln_reparam=false for every run.")
@click.option("--eval-limit", type=int, default=None, help="Evaluate on this many evaluation images (default: the whole split).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=RESULTS_DIR / "baseline_deit_tiny.json",
              show_default=True, help="Results file (JSON).")
def main(data: Path | None, checkpoint: Path | None, methods: str, bits_spec: str, percentiles: str, no_ln_reparam: bool,
         eval_limit: int | None, out: Path) -> None:
    """Calibration and baseline methods x bit-widths on DeiT-Tiny, each paired against fp32."""
    logging.basicConfig(level=logging.WARNING)
    common = {"ln_reparam": False} if no_ln_reparam else {}
    recipes = []
    for bits in bits_spec.split(","):
        for method in methods.split(","):
            if get_method(method).reconstructs:
                raise click.BadParameter(f"{method} reconstructs (use benchmarks/recon_table.py)", param_hint="--methods")
            recipe = make_recipe(bits, method, common)
            sweep = percentiles.split(",") if uses_percentile(recipe) else ["default"]
            recipes += [recipe if p == "default" else make_recipe(bits, method, {**common, "percentile": float(p)}) for p in sweep]
    model = create_float_model(DEMO_MODEL, checkpoint=checkpoint or demo_checkpoint())
    data = data or demo_images()
    calib, evaluation = load_splits(data, eval_transform(model), eval_limit)
    records = []
    for recipe in recipes:
        torch.manual_seed(0)
        _, run = quantize_and_evaluate(model, DEMO_MODEL, recipe, calib, evaluation, dataset=str(data))
        records.append(run.record())
        write_results(out, records)
        clip = f" percentile {recipe.format.percentile}" if uses_percentile(recipe) else ""
        click.echo(f"{recipe.bits} {recipe.method}{clip}: top-1 {run.quantized.top1:.2f} agree {run.quantized.agreement:.1f} "
                   f"({run.seconds:.0f} s)", err=True)
    click.echo(accuracy_table(records))


if __name__ == "__main__":
    main()
