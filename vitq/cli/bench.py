"""`vitq bench`: fp32, onnxruntime quantize_static and vitq int8 side by side on one target."""
from __future__ import annotations

import tempfile
from pathlib import Path

import click

from vitq.bench.variants import DEFAULT_VARIANTS
from vitq.cli.options import data_option, data_or_demo, limit_option, results_option
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
@click.option("--variants", "variant_spec", default=",".join(DEFAULT_VARIANTS), show_default=True, help="Variants to compare.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep the built ONNX files (fp32 included) here (default: a temporary folder).")
@results_option
@click.option("--markdown", "markdown_file", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Markdown report.")
def bench_cmd(qcheckpoint: Path, target: str, data: Path | None, limit: int | None, calib_size: int, threads_spec: str,
              batch_spec: str, runs: int, large_batch_runs: int, variant_spec: str, workdir: Path | None,
              results_file: Path | None, markdown_file: Path | None) -> None:
    """Benchmark QCHECKPOINT's vitq int8 export against fp32 and onnxruntime quantize_static on TARGET."""
    from calib.loaders import images_only, load_splits
    from calib.transforms import eval_transform
    from vitq.bench.report import accuracy_table, markdown, speed_table
    from vitq.bench.runner import BenchConfig
    from vitq.bench.targets import resolve_target
    from vitq.files import atomic_write
    from vitq.pipeline.bench import bench_quantized
    from vitq.pipeline.checkpoint import load_quantized
    from vitq.results import machine, provenance, write_results

    resolve_target(target)  # fail before any slow work
    config = BenchConfig(target, int_list(threads_spec, "--threads"), int_list(batch_spec, "--batch"), runs, large_batch_runs,
                         tuple(v.strip() for v in variant_spec.split(",") if v.strip()))
    qm = load_quantized(qcheckpoint)
    data_path = data_or_demo(data)
    calib, evaluation = load_splits(data_path, eval_transform(qm.model), limit, calib_limit=calib_size)
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
