"""Regenerate benchmarks/results/baseline_deit_tiny.json: DeiT-Tiny, no reconstruction,
methods x bit-widths, each evaluated side by side with fp32 on the same images.

    python benchmarks/accuracy_baselines.py --data ../shared/data/imagenet-sample \
        --checkpoint ../shared/data/weights/deit_tiny_patch16_224.safetensors
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch

from calib import eval_transform, load_splits
from vitq.models.loading import create_float_model
from vitq.quant.config import QuantConfig, parse_bits
from vitq.results import write_results
from vitq.workflow import ACCURACY_COLUMNS, format_table, quantize_and_evaluate

MODEL = "deit_tiny_patch16_224"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("../shared/data/imagenet-sample"))
    p.add_argument("--checkpoint", type=Path, default=Path("assets/deit_tiny_patch16_224.safetensors"))
    p.add_argument("--methods", default="minmax,percentile,mse")
    p.add_argument("--bits", default="W8A8,W6A6,W4A4")
    p.add_argument("--limit", type=int, default=None, help="evaluation images (default: the whole split)")
    p.add_argument("--no-ln-reparam", action="store_true")
    p.add_argument("--percentiles", default="default",
                   help="clipping percentiles tried by the percentile method ('default': by activation bits)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/baseline_deit_tiny.json"))
    args = p.parse_args()
    torch.manual_seed(0)
    model = create_float_model(MODEL, checkpoint=args.checkpoint)
    transform = eval_transform(model)
    calib, evaluation = load_splits(args.data, transform, args.limit)
    records = []
    for bits in args.bits.split(","):
        w, a = parse_bits(bits)
        for method in args.methods.split(","):
            for pct in args.percentiles.split(",") if method == "percentile" else ["default"]:
                percentile = None if pct == "default" else float(pct)
                config = QuantConfig(w_bits=w, a_bits=a, method=method, percentile=percentile, ln_reparam=not args.no_ln_reparam)
                _, run = quantize_and_evaluate(model, MODEL, config, calib, evaluation, dataset=str(args.data))
                records.append(run.record())
                print(format_table(records[-1:], ACCURACY_COLUMNS), flush=True)
    print(format_table(records, ACCURACY_COLUMNS))
    write_results(args.out, records, command=shlex.join(["python", *sys.argv]))


if __name__ == "__main__":
    main()
