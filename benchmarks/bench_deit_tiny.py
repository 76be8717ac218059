"""Regenerate benchmarks/results/bench_deit_tiny_<target>.{json,md}: DeiT-Tiny fp32 (plain and
transformer-optimized) vs onnxruntime quantize_static vs vitq W8A8 QDQ, side by side in one run.

    python benchmarks/bench_deit_tiny.py --data ../shared/data/imagenet-sample \
        --checkpoint ../shared/data/weights/deit_tiny_patch16_224.safetensors --targets cpu,mobile

Quantizes with ``--method`` (default mse, 125 calibration images) unless ``--qcheckpoint`` gives a
checkpoint from ``vitq quantize``; accuracy and parity on the whole evaluation split (875 images),
measured once with the first target (the files are the same for the others).
"""
from __future__ import annotations

import argparse
import logging
import shlex
import sys
import tempfile
from pathlib import Path

import torch

from calib import eval_transform, images_only, load_splits
from vitq.api import atomic_write, load_quantized, quantize
from vitq.bench.report import accuracy_table, markdown, speed_table
from vitq.bench.runner import BenchConfig, benchmark
from vitq.models.loading import create_float_model
from vitq.quant.config import QuantConfig
from vitq.results import machine, write_results

MODEL = "deit_tiny_patch16_224"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("../shared/data/imagenet-sample"))
    p.add_argument("--checkpoint", type=Path, default=Path("assets/deit_tiny_patch16_224.safetensors"))
    p.add_argument("--qcheckpoint", type=Path, default=None, help="quantized checkpoint (vitq quantize); default: quantize here")
    p.add_argument("--method", default="mse")
    p.add_argument("--targets", default="cpu,mobile")
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--large-batch-runs", type=int, default=10)
    p.add_argument("--limit", type=int, default=None, help="evaluation images (default: the whole split)")
    p.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    torch.manual_seed(0)
    command = " ".join(shlex.quote(a) for a in ["python", *sys.argv])
    if args.qcheckpoint:
        qmodel, header = load_quantized(args.qcheckpoint)
        bits = header["config"].bits
    else:
        qmodel, bits = None, "W8A8"
    transform = eval_transform(qmodel or create_float_model(MODEL, checkpoint=args.checkpoint))
    calib, evaluation = load_splits(args.data, transform, args.limit)
    if qmodel is None:
        model = create_float_model(MODEL, checkpoint=args.checkpoint)
        qmodel = quantize(model, MODEL, images_only(calib), QuantConfig(method=args.method), inplace=True)
    cpu = machine()
    for i, target in enumerate(args.targets.split(",")):
        config = BenchConfig(target=target, runs=args.runs, large_batch_runs=args.large_batch_runs, accuracy=i == 0)
        with tempfile.TemporaryDirectory(prefix="vitq-bench-") as tmp:
            report = benchmark(qmodel, MODEL, images_only(calib), evaluation, Path(tmp), config, dataset=str(args.data), bits=bits)
        print(accuracy_table(report), "", speed_table(report), sep="\n")
        stem = args.out_dir / f"bench_deit_tiny_{target}"
        write_results(stem.with_suffix(".json"), report.records(), command=command, **report.extra())
        text = markdown(report, command, f"{cpu.get('cpu')} ({cpu.get('cores')} cores, flags {', '.join(cpu.get('cpu_flags', []))})")
        atomic_write(stem.with_suffix(".md"), lambda tmp, text=text: tmp.write_text(text))


if __name__ == "__main__":
    main()
