"""`vitq bench`: fp32, onnxruntime quantize_static and vitq int8 side by side on one target."""
from __future__ import annotations

import tempfile
from pathlib import Path

import click

from vitq.bench.variants import ALL_VARIANTS, DEFAULT_VARIANTS, check_installed
from vitq.cli.options import (
    check_input_file,
    check_output,
    check_output_dir,
    check_results_file,
    data_option,
    data_or_demo,
    limit_option,
    name_list,
    results_option,
    warn_label_space,
)
from vitq.errors import VitqError


def int_list(spec: str, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(s) for s in spec.split(",") if s.strip())
    except ValueError:
        raise VitqError(f"{what} must be comma-separated integers, got {spec!r}") from None
    if not values or min(values) <= 0:
        raise VitqError(f"{what} must be positive integers, got {spec!r}")
    return values


@click.command("bench")
@click.argument("qcheckpoint", type=click.Path(path_type=Path))
@click.option("--target", default="cpu", show_default=True, help="cpu, mobile, cuda or tensorrt (`vitq list`).")
@data_option
@limit_option
@click.option("--calib-size", type=click.IntRange(min=1), default=256, show_default=True,
              help="Calibration images for onnxruntime quantize_static (evenly spaced; CIFAR-10's train split has 50,000).")
@click.option("--threads", "threads_spec", default="1,2", show_default=True, help="Thread counts (cpu/cuda targets).")
@click.option("--batch", "batch_spec", default="1,32", show_default=True, help="Batch sizes; the first is the latency batch.")
@click.option("--runs", type=click.IntRange(min=1), default=50, show_default=True, help="Timed runs per variant at batch 1 (interleaved).")
@click.option("--large-batch-runs", type=click.IntRange(min=1), default=8, show_default=True,
              help="Timed runs per variant at larger batches.")
@click.option("--variants", "variant_spec", default=",".join(DEFAULT_VARIANTS), show_default=True,
              help=f"Variants to compare, from {', '.join(ALL_VARIANTS)} (vitq-int4w: <= 4-bit weights packed as int4; "
                   "vitq-int8-dqconv: every conv weight as int8 codes + DequantizeLinear; vitq-int8-standard: standard "
                   "ONNX ops only; nncf: NNCF's quantize on the same fp32 graph and calibration images, needs pip "
                   "install 'vitq[peers]'; inc: Intel Neural Compressor's static quantizer on the same, needs "
                   "onnx-neural-compressor; ort-matmulnbits: onnxruntime's weight-only int4 MatMulNBits on the same fp32 "
                   "graph, needs pip install 'vitq[peers]').")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep the built ONNX files (fp32 included) here (default: a temporary folder).")
@click.option("--input-size", type=click.IntRange(min=8), default=None,
              help="Time the graphs at this square resolution (px) instead of the trained one; speed only, since "
                   "accuracy means the trained resolution.")
@results_option
@click.option("--markdown", "markdown_file", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Markdown report.")
def bench_cmd(qcheckpoint: Path, target: str, data: Path | None, limit: int | None, calib_size: int, threads_spec: str,
              batch_spec: str, runs: int, large_batch_runs: int, variant_spec: str, workdir: Path | None,
              input_size: int | None, results_file: Path | None, markdown_file: Path | None) -> None:
    """Benchmark QCHECKPOINT's vitq int8 export against fp32 and onnxruntime quantize_static on TARGET."""
    from vitq.bench.targets import resolve_target

    resolve_target(target)  # fail before any slow work: unknown target, no GPU build of onnxruntime
    variants = name_list(variant_spec, "--variants", ALL_VARIANTS)
    check_installed(variants)
    threads, batches = int_list(threads_spec, "--threads"), int_list(batch_spec, "--batch")
    check_input_file(qcheckpoint, "quantized checkpoint")
    if results_file and markdown_file and results_file.resolve() == markdown_file.resolve():
        raise VitqError(f"--results-file and --markdown are the same file ({results_file}); give each its own name")
    check_results_file(results_file, qcheckpoint, data)
    check_output(markdown_file, qcheckpoint, data, suffix=(".md", ".markdown"), what="markdown report")
    check_output_dir(workdir, "--workdir")

    from calib.datasets import open_split
    from calib.loaders import images_only, load_batches
    from calib.transforms import eval_transform
    from vitq.bench.report import accuracy_table, markdown, speed_table
    from vitq.bench.runner import BenchConfig
    from vitq.files import atomic_write
    from vitq.pipeline.bench import at_resolution, bench_quantized
    from vitq.pipeline.checkpoint import load_quantized
    from vitq.results import machine, provenance, write_results

    config = BenchConfig(target, threads, batches, runs, large_batch_runs, variants, accuracy=input_size is None)
    data_path = data_or_demo(data)
    splits = [open_split(data_path, "calibration", None, limit=calib_size),  # data errors before the model loads
              open_split(data_path, "evaluation", None, limit=limit)]
    qm = load_quantized(qcheckpoint)
    warn_label_space(qm.model, qm.model_name, splits[1], data_path)
    if input_size:
        at_resolution(qm, input_size)
    for split in splits:
        split.transform = eval_transform(qm.model)
    calib = load_batches(splits[0], 32, desc="load calibration images")
    evaluation = load_batches(splits[1], 32, desc="load evaluation images")
    with tempfile.TemporaryDirectory(prefix="vitq-bench-") as tmp:
        report = bench_quantized(qm, images_only(calib), evaluation, workdir or Path(tmp), config, dataset=str(data_path))
    click.echo(accuracy_table(report))
    click.echo("")
    click.echo(speed_table(report))
    for note in report.target.notes:
        click.echo(f"note: {note}")
    if results_file:
        write_results(results_file, report.records(), **report.extra())
    if markdown_file:
        text = markdown(report, provenance()["command"], f"{machine().get('cpu')} ({machine().get('cores')} cores)")
        atomic_write(markdown_file, lambda tmp: tmp.write_text(text))
