"""CIFAR-10 table: a checkpoint trained on CIFAR-10 x bit-widths x PTQ methods, paired against fp32.

The Q-HyViT table of a hybrid ViT:

    python benchmarks/hybrid_table.py --checkpoint assets/cifar10/mobilevit_xxs.safetensors \\
        --data ../shared/data/cifar10-test.tar.gz --out benchmarks/results/hybrid_mobilevit_xxs.json

PFCR against BRECQ and calibration on the 64 px Swin (or DeiT) checkpoint, from percentile calibration
as on ImageNet:

    python benchmarks/hybrid_table.py --checkpoint assets/cifar10/swin_tiny_patch4_window7_224.safetensors \\
        --data ../shared/data/cifar10-test.tar.gz --methods percentile,brecq,pfcr --bits W4A4,W3A3 \\
        --recon-preset fast --set calibration=percentile --out benchmarks/results/cifar10_pfcr_swin.json

Calibration images come from the CIFAR-10 train archive (``--calib-images``, evenly spaced, all
classes), evaluation from the 10,000 test images. Every method runs on identical wrapping and
images through ``vitq.pipeline.workflow.quantize_and_evaluate``; the file is rewritten after every run, so an
interrupted sweep keeps what it finished. A checkpoint whose fp32 top-1 is below 85 % is marked
``under_trained`` in every record.
"""
from __future__ import annotations

import logging
from pathlib import Path

import click
import torch

from calib.loaders import load_splits
from calib.transforms import eval_transform
from vitq.errors import VitqError
from vitq.evaluate import predict
from vitq.methods import get_method
from vitq.models.loading import checkpoint_spec, create_float_model
from vitq.pipeline.workflow import ACCURACY_COLUMNS, quantize_and_evaluate
from vitq.recipe import make_recipe, parse_settings
from vitq.report import UNDER_TRAINED_BELOW
from vitq.report.tables import text_table
from vitq.results import write_results


@click.command()
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="A CIFAR-10 checkpoint made by benchmarks/train_cifar10.py (carries its model spec).")
@click.option("--data", type=click.Path(exists=True, path_type=Path), required=True, help="cifar10-test.tar.gz")
@click.option("--methods", default="minmax,easyquant,fqvit,ptq4vit,qhyvit", show_default=True, help="Comma-separated methods.")
@click.option("--bits", "bits_spec", default="W8A8,W6A6,W4A4", show_default=True, help="Comma-separated WxAy.")
@click.option("--calib-images", type=int, default=256, show_default=True, help="Calibration images from the train archive.")
@click.option("--eval-limit", type=int, default=None, help="Evaluate on this many test images (default: all).")
@click.option("--recon-preset", default="hybrid", show_default=True, help="Reconstruction preset for qhyvit.")
@click.option("--set", "sets", multiple=True,
              help="Recipe setting KEY=VALUE for the reconstruction methods, e.g. calibration=percentile.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the recipe (sampling, augmentation) and torch.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda[:N].")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Results file (JSON).")
def main(checkpoint: Path, data: Path, methods: str, bits_spec: str, calib_images: int, eval_limit: int | None,
         recon_preset: str, sets: tuple[str, ...], seed: int, device: str, out: Path) -> None:
    """Every method x bit-width on one CIFAR-10 checkpoint, paired against fp32."""
    logging.basicConfig(level=logging.WARNING)
    spec = checkpoint_spec(checkpoint)
    if spec is None:
        raise click.ClickException(f"{checkpoint} carries no vitq model spec (make it with benchmarks/train_cifar10.py)")
    # reconstruction starts from min-max calibration here, as the published hybrid tables did
    recon = {"calibration": "minmax", "recon_preset": recon_preset}
    try:  # a bad bit-width, method or setting fails here, before any image is loaded
        recon |= parse_settings(sets)
        recipes = [make_recipe(bits, method, recon if get_method(method).reconstructs else {}, seed=seed)
                   for bits in bits_spec.split(",") for method in methods.split(",")]
    except VitqError as e:
        raise click.ClickException(str(e)) from None
    name = spec["model"]
    model = create_float_model(name, checkpoint=checkpoint)
    calib, evaluation = load_splits(data, eval_transform(model), eval_limit, batch_size=100, calib_limit=calib_images)
    fp32_logits = predict(model, evaluation, device)
    n_calib = sum(len(y) for _, y in calib)
    records = []
    for recipe in recipes:
        torch.manual_seed(seed)
        _, run = quantize_and_evaluate(model, name, recipe, calib, evaluation, dataset="cifar10-test", device=device,
                                       fp32_logits=fp32_logits)
        record = {**run.record(), "checkpoint": str(checkpoint), "calib_images": n_calib}
        record["under_trained"] = record["fp32_top1"] < UNDER_TRAINED_BELOW
        records.append(record)
        write_results(out, records)
        click.echo(text_table([record], ACCURACY_COLUMNS))
    click.echo(text_table(records, ACCURACY_COLUMNS))


if __name__ == "__main__":
    main()
