"""Which quantization sites cost the accuracy: keep one site class at 8 bits, everything else at ``--bits``.

    python benchmarks/sensitivity.py --data ../shared/data/imagenet-sample --bits W4A4,W3A3 \\
        --out benchmarks/results/sensitivity_deit_tiny.json

For each bit-width the first record is the plain recipe (every site at ``--bits``), then one record
per site class of a ViT block with that class raised to 8 bits through a format override (recorded
in each record's recipe). The gain of a record over the plain one is how much of the loss that site
class carries on its own. Calibration only (the default percentile recipe), so a sweep takes
minutes; ``--quant KEY=VALUE`` (a recipe setting, ``overrides={...}`` included) changes the starting
recipe for every record.
"""
from __future__ import annotations

import logging
from pathlib import Path

import click
import torch

from calib.loaders import load_splits
from calib.transforms import eval_transform
from vitq.assets import DEMO_MODEL, demo_checkpoint, demo_images
from vitq.models.loading import create_float_model
from vitq.pipeline.workflow import ACCURACY_COLUMNS, quantize_and_evaluate
from vitq.recipe import make_recipe, parse_settings
from vitq.report.tables import text_table
from vitq.results import write_results

# site class -> quantizer-name pattern (timm ViT/DeiT blocks; vitq.models.wrap names)
VIT_SITES = {
    "qkv weights": "blocks.*.attn.qkv.weight_quant",
    "proj weights": "blocks.*.attn.proj.weight_quant",
    "fc1 weights": "blocks.*.mlp.fc1.weight_quant",
    "fc2 weights": "blocks.*.mlp.fc2.weight_quant",
    "LN1 output (qkv input)": "blocks.*.attn.qkv.input_quant",
    "q": "blocks.*.attn.qk_matmul.a_quant",
    "k": "blocks.*.attn.qk_matmul.b_quant",
    "softmax output": "blocks.*.attn.av_matmul.a_quant",
    "v": "blocks.*.attn.av_matmul.b_quant",
    "attention output (proj input)": "blocks.*.attn.proj.input_quant",
    "LN2 output (fc1 input)": "blocks.*.mlp.fc1.input_quant",
    "GELU output (fc2 input)": "blocks.*.mlp.fc2.input_quant",
}


@click.command()
@click.option("--data", type=click.Path(path_type=Path), default=None, help="Image folder; default: bundled sample.")
@click.option("--bits", "bits_spec", default="W4A4", show_default=True, help="Comma-separated WxAy.")
@click.option("--method", default="percentile", show_default=True, help="Method of every recipe (`vitq list`).")
@click.option("--sites", default=None, help=f"Comma-separated site classes; default all: {', '.join(VIT_SITES)}.")
@click.option("--quant", "quant_sets", multiple=True, metavar="KEY=VALUE",
              help="Recipe setting for every record, repeatable, e.g. softmax_quantizer=uniform or overrides={...}.")
@click.option("--eval-limit", type=int, default=None, help="Evaluate on this many evaluation images.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Results file (JSON).")
def main(data: Path | None, bits_spec: str, method: str, sites: str | None, quant_sets: tuple[str, ...],
         eval_limit: int | None, out: Path) -> None:
    """Each site class of a ViT block at 8 bits, the rest at --bits, paired against fp32."""
    logging.basicConfig(level=logging.WARNING)
    chosen = sites.split(",") if sites else list(VIT_SITES)
    unknown = [s for s in chosen if s not in VIT_SITES]
    if unknown:
        raise click.BadParameter(f"unknown site classes {unknown}; known: {list(VIT_SITES)}", param_hint="--sites")
    settings = parse_settings(quant_sets)
    runs = []
    for bits in bits_spec.split(","):
        plain = make_recipe(bits, method, settings)
        runs.append((None, plain))
        for site in chosen:  # the site's pattern after the --quant overrides: it wins where both match
            overrides = {**plain.format.overrides, VIT_SITES[site]: {"bits": 8}}
            runs.append((site, make_recipe(bits, method, {**settings, "overrides": overrides})))
    model = create_float_model(DEMO_MODEL, checkpoint=demo_checkpoint())
    data = data or demo_images()
    calib, evaluation = load_splits(data, eval_transform(model), eval_limit)
    records = []
    for site, recipe in runs:
        torch.manual_seed(0)
        _, run = quantize_and_evaluate(model, DEMO_MODEL, recipe, calib, evaluation, dataset=str(data))
        record = {**run.record(), "site_at_8bit": site or "none"}
        records.append(record)
        write_results(out, records)
        click.echo(f"{recipe.bits} {site or 'all sites'}: top-1 {record['top1']:.2f} agree {record['agreement']:.1f}", err=True)
    click.echo(text_table(records, [("site_at_8bit", "8-bit site"), *ACCURACY_COLUMNS]))


if __name__ == "__main__":
    main()
