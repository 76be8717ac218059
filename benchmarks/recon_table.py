"""Reconstruction accuracy table: methods x bit-widths on DeiT-Tiny, paired against fp32.

    python benchmarks/recon_table.py --data ../shared/data/imagenet-sample \\
        --methods mse,pfcr,brecq,adaround --bits W4A4,W3A3,W6A6 --preset fast \\
        --out benchmarks/results/recon_table.json

Each run goes through ``vitq.workflow.quantize_and_evaluate`` (identical wrapping, calibration
images and evaluation images for every method); the file is rewritten after every run, so an
interrupted sweep keeps what it finished. ``--pos`` and ``--set key=value`` override the preset
(the POS ablation uses them), and every record carries the resolved reconstruction config.
"""
from __future__ import annotations

import json
import logging
import resource
import sys
from pathlib import Path

import click
import torch

from calib.loaders import load_splits
from calib.transforms import eval_transform
from vitq.assets import DEMO_MODEL, demo_checkpoint, demo_images
from vitq.models.loading import create_float_model
from vitq.quant.config import QuantConfig, parse_bits, recon_config
from vitq.results import write_results
from vitq.workflow import ACCURACY_COLUMNS, format_table, quantize_and_evaluate


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def parse_sets(pairs: tuple[str, ...]) -> dict:
    """``("iters=40", "units=[\"blocks.0\"]")`` -> ``{"iters": 40, "units": ["blocks.0"]}`` (values are JSON)."""
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        out[key] = json.loads(value)
    return out


@click.command()
@click.option("--data", type=click.Path(path_type=Path), default=None, help="Image folder; default: bundled sample.")
@click.option("--methods", default="mse,pfcr,brecq,adaround", show_default=True)
@click.option("--bits", "bits_spec", default="W4A4,W3A3,W6A6", show_default=True)
@click.option("--preset", default="fast", show_default=True, help="Reconstruction preset (fast, full, ci).")
@click.option("--pos", "pos_list", default=None, help="Comma-separated POS variants to run for pfcr (ablation).")
@click.option("--set", "sets", multiple=True, help="Reconstruction override key=JSON, e.g. --set iters=40.")
@click.option("--quant", "quant_sets", multiple=True, help="QuantConfig override key=JSON, e.g. --quant ln_reparam=false.")
@click.option("--eval-limit", type=int, default=None, help="Evaluate on this many evaluation images.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def main(data: Path | None, methods: str, bits_spec: str, preset: str, pos_list: str | None, sets: tuple[str, ...],
         quant_sets: tuple[str, ...], eval_limit: int | None, device: str, out: Path) -> None:
    logging.basicConfig(level=logging.WARNING)
    model = create_float_model(DEMO_MODEL, checkpoint=demo_checkpoint())
    data = data or demo_images()
    transform = eval_transform(model)
    calib, evaluation = load_splits(data, transform, eval_limit)
    recon = {"preset": preset, **parse_sets(sets)}
    runs = []
    for bits in bits_spec.split(","):
        w, a = parse_bits(bits)
        for method in methods.split(","):
            variants = pos_list.split(",") if (pos_list and method == "pfcr") else [None]
            for pos in variants:
                extra = {"pos": pos} if pos else {}
                reconstructs = method not in ("minmax", "percentile", "mse")
                runs.append(QuantConfig(w_bits=w, a_bits=a, method=method, recon={**recon, **extra} if reconstructs else {},
                                        **parse_sets(quant_sets)))
    records = []
    for config in runs:
        torch.manual_seed(0)
        _, run = quantize_and_evaluate(model, DEMO_MODEL, config, calib, evaluation, dataset=str(data), device=device)
        record = run.record()
        if config.reconstructs:
            record["recon"] = recon_config(config).to_dict()
        record["peak_rss_mb"] = round(peak_rss_mb(), 1)
        record["threads"] = torch.get_num_threads()
        records.append(record)
        write_results(out, records, command=" ".join(["python", *sys.argv]))
        click.echo(f"{config.bits} {config.method} {config.recon.get('pos', '')}: top-1 {record['top1']:.2f} "
                   f"drop {record['drop']:.2f} agree {record['agreement']:.1f} ({record['seconds']:.0f} s)", err=True)
    click.echo(format_table(records, [*ACCURACY_COLUMNS, ("peak_rss_mb", "peak RSS MB")]))


if __name__ == "__main__":
    main()
