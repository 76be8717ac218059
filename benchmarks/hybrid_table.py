"""Q-HyViT table: hybrid ViTs trained on CIFAR-10 x bit-widths x PTQ methods, paired against fp32.

    python benchmarks/hybrid_table.py --checkpoint assets/cifar10/mobilevit_xxs.safetensors \\
        --data ../shared/data/cifar10-test.tar.gz --out benchmarks/results/hybrid_mobilevit_xxs.json

Calibration images come from the CIFAR-10 train archive (``--calib-images``, evenly spaced, all
classes), evaluation from the 10,000 test images. Every method runs on identical wrapping and
images through ``vitq.workflow.quantize_and_evaluate``; the file is rewritten after every run, so an
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
from vitq.evaluate import predict
from vitq.models.loading import checkpoint_spec, create_float_model
from vitq.quant.config import QuantConfig, parse_bits
from vitq.report import UNDER_TRAINED_BELOW
from vitq.results import write_results
from vitq.workflow import ACCURACY_COLUMNS, format_table, quantize_and_evaluate


@click.command()
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="A CIFAR-10 checkpoint made by benchmarks/train_cifar10.py (carries its model spec).")
@click.option("--data", type=click.Path(exists=True, path_type=Path), required=True, help="cifar10-test.tar.gz")
@click.option("--methods", default="minmax,easyquant,fqvit,ptq4vit,qhyvit", show_default=True)
@click.option("--bits", "bits_spec", default="W8A8,W6A6,W4A4", show_default=True)
@click.option("--calib-images", type=int, default=256, show_default=True)
@click.option("--eval-limit", type=int, default=None, help="Evaluate on this many test images (default: all).")
@click.option("--recon-preset", default="hybrid", show_default=True, help="Reconstruction preset for qhyvit.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def main(checkpoint: Path, data: Path, methods: str, bits_spec: str, calib_images: int, eval_limit: int | None,
         recon_preset: str, device: str, out: Path) -> None:
    logging.basicConfig(level=logging.WARNING)
    spec = checkpoint_spec(checkpoint)
    if spec is None:
        raise click.ClickException(f"{checkpoint} carries no vitq model spec (make it with benchmarks/train_cifar10.py)")
    name = spec["model"]
    model = create_float_model(name, checkpoint=checkpoint)
    calib, evaluation = load_splits(data, eval_transform(model), eval_limit, batch_size=100, calib_limit=calib_images)
    fp32_logits = predict(model, evaluation, device)
    n_calib = sum(len(y) for _, y in calib)
    records = []
    for bits in bits_spec.split(","):
        w, a = parse_bits(bits)
        for method in methods.split(","):
            config = QuantConfig(w_bits=w, a_bits=a, method=method, init_method="minmax",
                                 recon={"preset": recon_preset} if method == "qhyvit" else {})
            torch.manual_seed(0)
            _, run = quantize_and_evaluate(model, name, config, calib, evaluation, dataset="cifar10-test", device=device,
                                           fp32_logits=fp32_logits)
            record = {**run.record(), "checkpoint": str(checkpoint), "calib_images": n_calib}
            record["under_trained"] = record["fp32_top1"] < UNDER_TRAINED_BELOW
            records.append(record)
            write_results(out, records)
            click.echo(format_table([record], ACCURACY_COLUMNS))
    click.echo(format_table(records, ACCURACY_COLUMNS))


if __name__ == "__main__":
    main()
