"""`vitq bench`: fp32, onnxruntime quantize_static and vitq int8 side by side on one target."""
from __future__ import annotations

import tempfile
from pathlib import Path

import click

from calib.loaders import images_only, load_splits
from calib.transforms import eval_transform
from vitq.api import atomic_write, load_quantized
from vitq.assets import demo_images
from vitq.bench.report import accuracy_table, markdown, speed_table
from vitq.bench.runner import BenchConfig, benchmark
from vitq.bench.targets import list_targets, resolve_target
from vitq.bench.variants import DEFAULT_VARIANTS
from vitq.errors import VitqError
from vitq.results import machine, provenance, write_results


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
@click.option("--target", default="cpu", show_default=True, help=f"One of: {', '.join(list_targets())}.")
@click.option("--data", type=click.Path(path_type=Path), default=None, help="Image data (calibration + evaluation). Default: bundled.")
@click.option("--limit", type=int, default=None, help="Use this many evaluation images for accuracy.")
@click.option("--calib-size", type=int, default=256, show_default=True,
              help="Calibration images for onnxruntime quantize_static (evenly spaced; CIFAR-10's train split has 50,000).")
@click.option("--threads", "threads_spec", default="1,2", show_default=True, help="Thread counts (cpu/cuda targets).")
@click.option("--batch", "batch_spec", default="1,32", show_default=True, help="Batch sizes; the first is the latency batch.")
@click.option("--runs", type=int, default=50, show_default=True, help="Timed runs per variant at batch 1 (interleaved).")
@click.option("--large-batch-runs", type=int, default=8, show_default=True, help="Timed runs per variant at larger batches.")
@click.option("--variants", "variant_spec", default=",".join(DEFAULT_VARIANTS), show_default=True)
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep the built ONNX files here (default: a temporary folder).")
@click.option("--results-file", type=click.Path(dir_okay=False, path_type=Path), default=None, help="JSON records (DESIGN.md schema).")
@click.option("--markdown", "markdown_file", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Markdown report.")
def bench_cmd(qcheckpoint: Path, target: str, data: Path | None, limit: int | None, calib_size: int, threads_spec: str,
              batch_spec: str, runs: int, large_batch_runs: int, variant_spec: str, workdir: Path | None,
              results_file: Path | None, markdown_file: Path | None) -> None:
    """Benchmark QCHECKPOINT's vitq int8 export against fp32 and onnxruntime quantize_static on TARGET."""
    resolve_target(target)  # fail before any slow work
    if runs <= 0 or large_batch_runs <= 0:
        raise VitqError("--runs and --large-batch-runs must be positive")
    config = BenchConfig(target, int_list(threads_spec, "--threads"), int_list(batch_spec, "--batch"), runs, large_batch_runs,
                         tuple(v.strip() for v in variant_spec.split(",") if v.strip()))
    qmodel, header = load_quantized(qcheckpoint)
    transform = eval_transform(qmodel)
    data_path = data or demo_images()
    calib, evaluation = load_splits(data_path, transform, limit, calib_limit=calib_size)
    with tempfile.TemporaryDirectory(prefix="vitq-bench-") as tmp:
        report = benchmark(qmodel, header["model_name"], images_only(calib), evaluation, workdir or Path(tmp), config,
                           dataset=str(data_path), bits=header["config"].bits)
    click.echo(accuracy_table(report))
    click.echo("")
    click.echo(speed_table(report))
    for note in report.target.notes:
        click.echo(f"note: {note}")
    prov = provenance()
    if results_file:
        write_results(results_file, report.records(), **report.extra())
    if markdown_file:
        text = markdown(report, prov["command"], f"{machine().get('cpu')} ({machine().get('cores')} cores)")
        atomic_write(markdown_file, lambda tmp: tmp.write_text(text))
