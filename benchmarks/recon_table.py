"""Reconstruction accuracy table: methods x bit-widths on DeiT-Tiny, paired against fp32.

    python benchmarks/recon_table.py --data ../shared/data/imagenet-sample \\
        --methods mse,pfcr,brecq,adaround --bits W4A4,W3A3,W6A6 --preset fast \\
        --out benchmarks/results/recon_table.json

Each run goes through ``vitq.pipeline.workflow.quantize_and_evaluate`` (identical wrapping, calibration
images and evaluation images for every method); the file is rewritten after every run, so an
interrupted sweep keeps what it finished. ``--pos`` and ``--set key=value`` override the preset
(the POS ablation uses them), and every record carries the resolved recipe.
"""
from __future__ import annotations

import logging
import resource
from pathlib import Path

import click
import torch

from calib.loaders import load_splits
from calib.transforms import eval_transform
from vitq.assets import DEMO_MODEL, demo_checkpoint, demo_images
from vitq.methods import get_method
from vitq.models.loading import create_float_model
from vitq.pipeline.workflow import ACCURACY_COLUMNS, quantize_and_evaluate
from vitq.recipe import parse_settings, seeded_recipes
from vitq.report.tables import text_table
from vitq.results import write_results


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@click.command()
@click.option("--data", type=click.Path(path_type=Path), default=None, help="Image folder; default: bundled sample.")
@click.option("--methods", default="mse,pfcr,brecq,adaround", show_default=True, help="Comma-separated methods (`vitq list`).")
@click.option("--bits", "bits_spec", default="W4A4,W3A3,W6A6", show_default=True, help="Comma-separated WxAy.")
@click.option("--preset", default="fast", show_default=True, help="Reconstruction preset of the reconstruction methods.")
@click.option("--pos", "pos_list", default=None, help="Comma-separated POS variants to run for pfcr (ablation).")
@click.option("--set", "sets", multiple=True, help="Recipe setting KEY=VALUE for the reconstruction methods, e.g. iters=40.")
@click.option("--quant", "quant_sets", multiple=True, help="Recipe setting KEY=VALUE for every method, e.g. ln_reparam=false.")
@click.option("--seeds", default="0", show_default=True,
              help="Comma-separated seeds, one run each: of the reconstruction and of any rotation (rotation_seed follows).")
@click.option("--eval-limit", type=int, default=None, help="Evaluate on this many evaluation images.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda[:N].")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Results file (JSON).")
def main(data: Path | None, methods: str, bits_spec: str, preset: str, pos_list: str | None, sets: tuple[str, ...],
         quant_sets: tuple[str, ...], seeds: str, eval_limit: int | None, device: str, out: Path) -> None:
    """Methods x bit-widths on DeiT-Tiny, each paired against fp32 on the same evaluation images."""
    logging.basicConfig(level=logging.WARNING)
    common, recon = parse_settings(quant_sets), {"recon_preset": preset, **parse_settings(sets)}
    recipes = []
    for bits in bits_spec.split(","):
        for method in methods.split(","):
            reconstructs = get_method(method).reconstructs
            for pos in (pos_list.split(",") if pos_list and method == "pfcr" else [None]):
                settings = {**common, **(recon if reconstructs else {}), **({"pos": pos} if pos else {})}
                recipes += seeded_recipes(bits, method, settings, [int(seed) for seed in seeds.split(",")])
    model = create_float_model(DEMO_MODEL, checkpoint=demo_checkpoint())
    data = data or demo_images()
    calib, evaluation = load_splits(data, eval_transform(model), eval_limit)
    records = []
    for recipe in recipes:
        torch.manual_seed(0)
        _, run = quantize_and_evaluate(model, DEMO_MODEL, recipe, calib, evaluation, dataset=str(data), device=device)
        record = {**run.record(), "seed": recipe.seed, "peak_rss_mb": round(peak_rss_mb(), 1), "threads": torch.get_num_threads()}
        records.append(record)
        write_results(out, records)
        pos = recipe.recon.pos if recipe.recon else ""
        click.echo(f"{recipe.bits} {recipe.method} {pos}: top-1 {record['top1']:.2f} drop {record['drop']:.2f} "
                   f"agree {record['agreement']:.1f} ({record['seconds']:.0f} s)", err=True)
    click.echo(text_table(records, [*ACCURACY_COLUMNS, ("peak_rss_mb", "peak RSS MB")]))


if __name__ == "__main__":
    main()
