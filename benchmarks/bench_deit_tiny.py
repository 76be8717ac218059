"""Regenerate benchmarks/results/bench_deit_tiny_<target>.{json,md}: DeiT-Tiny fp32 (plain and
transformer-optimized) vs onnxruntime quantize_static vs vitq W8A8 QDQ, side by side in one run.

    python benchmarks/bench_deit_tiny.py --data ../shared/data/imagenet-sample \\
        --checkpoint ../shared/data/weights/deit_tiny_patch16_224.safetensors --method percentile \\
        --targets cpu,mobile --runs 100

Quantizes W8A8 with ``--method`` (default mse, the calibration split's 125 images) unless
``--qcheckpoint`` gives a checkpoint from ``vitq quantize``. The ONNX variants are built once
(``vitq.pipeline.bench.bench_quantized``, which also checks the vitq exports' parity against torch) and
the same files are benchmarked on every target; accuracy and parity on the whole evaluation split
(875 images) are measured once, with the first target.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import click
import torch

from calib.loaders import images_only, load_splits
from calib.transforms import eval_transform
from vitq.assets import DEMO_MODEL, demo_checkpoint, demo_images
from vitq.bench.report import accuracy_table, markdown, speed_table
from vitq.bench.runner import BenchConfig, benchmark
from vitq.bench.targets import resolve_target
from vitq.files import atomic_write
from vitq.models.loading import create_float_model
from vitq.pipeline.bench import bench_quantized
from vitq.pipeline.checkpoint import load_quantized
from vitq.pipeline.quantize import quantize
from vitq.recipe import make_recipe
from vitq.report.records import RESULTS_DIR
from vitq.results import machine, provenance, write_results


@click.command()
@click.option("--data", type=click.Path(path_type=Path), default=None, help="Image folder; default: bundled sample.")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help=f"{DEMO_MODEL} float weights; default: the bundled ones.")
@click.option("--qcheckpoint", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Quantized checkpoint (`vitq quantize`) to benchmark instead of quantizing here.")
@click.option("--method", default="mse", show_default=True, help="Method of the W8A8 recipe quantized here (`vitq list`).")
@click.option("--targets", default="cpu,mobile", show_default=True, help="Comma-separated bench targets (`vitq list`).")
@click.option("--runs", type=click.IntRange(min=1), default=100, show_default=True,
              help="Timed runs per variant at batch 1 (interleaved).")
@click.option("--large-batch-runs", type=click.IntRange(min=1), default=10, show_default=True,
              help="Timed runs per variant at larger batches.")
@click.option("--eval-limit", type=int, default=None, help="Evaluate on this many evaluation images (default: the whole split).")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=RESULTS_DIR, show_default=True,
              help="Folder for bench_deit_tiny_<target>.json and .md.")
def main(data: Path | None, checkpoint: Path | None, qcheckpoint: Path | None, method: str, targets: str, runs: int,
         large_batch_runs: int, eval_limit: int | None, out_dir: Path) -> None:
    """fp32 vs onnxruntime quantize_static vs vitq's W8A8 export of DeiT-Tiny on every target."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    configs = [BenchConfig(target=t, runs=runs, large_batch_runs=large_batch_runs, accuracy=i == 0)
               for i, t in enumerate(targets.split(","))]
    for config in configs:
        resolve_target(config.target)  # fail before any slow work
    recipe = None if qcheckpoint else make_recipe("W8A8", method)
    torch.manual_seed(0)
    qm = load_quantized(qcheckpoint) if qcheckpoint else None
    model = qm.model if qm else create_float_model(DEMO_MODEL, checkpoint=checkpoint or demo_checkpoint())
    data = data or demo_images()
    calib, evaluation = load_splits(data, eval_transform(model), eval_limit)
    if qm is None:
        qm = quantize(model, DEMO_MODEL, images_only(calib), recipe, inplace=True)
    command = provenance()["command"]
    cpu = machine()
    described = f"{cpu.get('cpu')} ({cpu.get('cores')} cores, flags {', '.join(cpu.get('cpu_flags', []))})"
    report = None
    with tempfile.TemporaryDirectory(prefix="vitq-bench-") as workdir:
        for config in configs:
            if report is None:  # builds the variants and checks the vitq exports' parity
                report = bench_quantized(qm, images_only(calib), evaluation, Path(workdir), config, dataset=str(data))
            else:  # the same files on the next target
                report = benchmark(report.variants, evaluation, config, model=qm.model_name, bits=qm.recipe.bits, dataset=str(data))
            click.echo(accuracy_table(report))
            click.echo("")
            click.echo(speed_table(report))
            stem = out_dir / f"bench_deit_tiny_{config.target}"
            write_results(stem.with_suffix(".json"), report.records(), **report.extra())
            text = markdown(report, command, described)
            atomic_write(stem.with_suffix(".md"), lambda tmp, text=text: tmp.write_text(text))


if __name__ == "__main__":
    main()
