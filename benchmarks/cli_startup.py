"""Start-up time of the command line: ``vitq --help``, ``vitq list`` and ``vitq quantize --help`` as whole
processes (the commands import torch, timm and onnx only when they run).

    python benchmarks/cli_startup.py --out benchmarks/results/cli_startup.json
"""
from __future__ import annotations

import shutil
import statistics
import subprocess
import time
from pathlib import Path

import click

from vitq.report.tables import text_table
from vitq.results import write_results

COMMANDS = (("--help",), ("list",), ("quantize", "--help"), ("quantize", "--set", "iters=3", "x", "o.pt"))


def wall_seconds(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, capture_output=True, check=False)
    return time.perf_counter() - start


@click.command()
@click.option("--runs", type=click.IntRange(min=1), default=10, show_default=True, help="Timed runs per command (after one warm-up).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Results file (JSON).")
def main(runs: int, out: Path) -> None:
    """Median / min / max wall time of each command as a fresh process."""
    vitq = shutil.which("vitq")
    if vitq is None:
        raise click.ClickException("the vitq entry point is not on PATH (pip install -e .)")
    records = []
    for args in COMMANDS:
        argv = [vitq, *args]
        wall_seconds(argv)  # warm-up: file-system caches
        times = [wall_seconds(argv) for _ in range(runs)]
        records.append({"cli": " ".join(["vitq", *args]), "runs": runs, "seconds_median": round(statistics.median(times), 3),
                        "seconds_min": round(min(times), 3), "seconds_max": round(max(times), 3)})
    write_results(out, records)
    click.echo(text_table(records, [("cli", "command"), ("seconds_median", "median s"), ("seconds_min", "min s"),
                                    ("seconds_max", "max s")]))


if __name__ == "__main__":
    main()
