"""One process x 2 threads against 2 torchrun processes x 1 thread, on the same machine in the same run
(writes benchmarks/results/distributed_scaling_cpu.json).

* Evaluation: ``vitq eval`` of a W8A8 DeiT-Tiny on the evaluation split, whole commands timed (start-up,
  image decoding, fp32 and int8 forward), and the metrics of the two runs compared (they must agree).
* Reconstruction: ``vitq quantize --method brecq`` on a few blocks; the step rate is the optimization
  steps (units x iters) over the reconstruction seconds the checkpoint records, at two batch sizes
  (under torchrun each rank takes half of every batch and the gradients are summed).

    nice python benchmarks/distributed_scaling.py --data ../shared/data/imagenet-sample \
        --out benchmarks/results/distributed_scaling_cpu.json
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import torch

from vitq.assets import demo_checkpoint, demo_images
from vitq.report.tables import text_table
from vitq.results import write_results

MODEL = "deit_tiny_patch16_224"
METRICS = ("n_images", "top1", "top5", "fp32_top1", "agreement", "kl")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: list[str], processes: int) -> tuple[float, str]:
    """Wall seconds and stdout of ``vitq ARGS`` as 1 process x 2 threads or 2 processes x 1 thread."""
    threads = 2 // processes
    if processes == 1:
        vitq = shutil.which("vitq")
        if vitq is None:
            raise click.ClickException("the vitq entry point is not on PATH (pip install -e .)")
        argv = [vitq, *args]
    else:
        argv = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes),
                "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "-m", "vitq", *args]
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise click.ClickException(f"{' '.join(args[:2])} with {processes} process(es) failed: {done.stderr.strip()[-500:]}")
    return seconds, done.stdout


@click.command()
@click.option("--data", type=click.Path(exists=True, path_type=Path), default=None, help="Image folder (default: the bundled sample).")
@click.option("--limit", type=click.IntRange(min=2), default=None, help="Evaluate at most this many images (default: all).")
@click.option("--units", default="blocks.0,blocks.1,blocks.2", show_default=True, help="Blocks the reconstruction runs on.")
@click.option("--iters", type=click.IntRange(min=1), default=100, show_default=True, help="Optimization steps per unit.")
@click.option("--batch-sizes", default="8,32", show_default=True, help="Reconstruction batch sizes to time (comma-separated).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Results file (JSON).")
def main(data: Path | None, limit: int | None, units: str, iters: int, batch_sizes: str, out: Path) -> None:
    """Evaluation wall time and reconstruction step rate, 1 process x 2 threads vs 2 processes x 1 thread."""
    data = data or demo_images()
    records = []
    n_units = len(units.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        q8 = Path(tmp) / "q8.pt"
        launch(["quantize", MODEL, str(q8), "--checkpoint", str(demo_checkpoint()), "--data", str(data), "--bits", "W8A8"], 1)
        eval_args = ["eval", str(q8), "--data", str(data), "--json", *(["--limit", str(limit)] if limit else [])]
        runs = {}
        for processes in (1, 2):
            seconds, stdout = launch(eval_args, processes)
            runs[processes] = json.loads(stdout[stdout.index("{"):])
            records.append({"runtime": "torch (CPU)", "task": "evaluate", "model": MODEL, "bits": "W8A8",
                            "processes": processes, "threads_per_process": 2 // processes,
                            "n_images": runs[processes]["n_images"], "wall_seconds": round(seconds, 2),
                            "images_per_second": round(runs[processes]["n_images"] / seconds, 2),
                            **{f"metric_{k}": runs[processes][k] for k in METRICS}})
        same = all(runs[1][k] == runs[2][k] for k in METRICS)
        for record in records:
            record["metrics_identical"] = same
        for batch in (int(b) for b in batch_sizes.split(",")):
            for processes in (1, 2):
                ckpt = Path(tmp) / f"r{batch}_{processes}.pt"
                launch(["quantize", MODEL, str(ckpt), "--checkpoint", str(demo_checkpoint()), "--data", str(data),
                        "--bits", "W4A4", "--method", "brecq", "--set", f"units={units}", "--set", f"iters={iters}",
                        "--set", f"batch_size={batch}", "--set", "samples=64", "--calib-size", "64"], processes)
                recon_seconds = torch.load(ckpt, map_location="cpu", weights_only=True)["meta"]["recon_losses"]["seconds"]
                records.append({"runtime": "torch (CPU)", "task": "reconstruct", "model": MODEL, "bits": "W4A4",
                                "method": "brecq", "processes": processes, "threads_per_process": 2 // processes,
                                "batch_size": batch, "units": n_units, "steps": n_units * iters,
                                "recon_seconds": recon_seconds, "steps_per_second": round(n_units * iters / recon_seconds, 3)})
    for r in records:
        rate = "images_per_second" if r["task"] == "evaluate" else "steps_per_second"
        base = next(b for b in records if b["task"] == r["task"] and b.get("batch_size") == r.get("batch_size") and b["processes"] == 1)
        r["speedup_vs_1_process"] = round(r[rate] / base[rate], 3)
    write_results(out, records, machine_note="2 CPU cores; 1 process x 2 threads vs torchrun 2 processes x 1 thread (gloo)")
    click.echo(text_table(records, [("task", "task"), ("processes", "procs"), ("batch_size", "batch"),
                                    ("wall_seconds", "wall s"), ("images_per_second", "img/s"),
                                    ("steps_per_second", "steps/s"), ("speedup_vs_1_process", "speedup"),
                                    ("metrics_identical", "same metrics")]))


if __name__ == "__main__":
    main()
