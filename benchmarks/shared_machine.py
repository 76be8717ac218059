"""Reconstruction step rate alone and with a second job on the same cores, per OpenMP wait policy and
thread count (writes benchmarks/results/shared_machine_cpu.json).

Each job is one process running BRECQ on two DeiT-Tiny blocks (W4A4, bundled images); its rate is the
optimization steps over the reconstruction seconds. Jobs that run together start together. The policy
is OpenMP's ``OMP_WAIT_POLICY`` ("default": unset, libgomp spins for a while before it sleeps), read once
when torch loads, which is why every job is a fresh process.

    nice python benchmarks/shared_machine.py --out benchmarks/results/shared_machine_cpu.json
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import click

from vitq.report.tables import text_table
from vitq.results import write_results

CONDITIONS = (("default", 2), ("PASSIVE", 2), ("default", 1), ("PASSIVE", 1))  # (OMP_WAIT_POLICY, threads per job)


def job(iters: int) -> None:
    """One reconstruction; prints its steps per second as JSON."""
    import torch

    from calib.datasets import open_split
    from calib.loaders import images_only, load_batches
    from calib.transforms import eval_transform
    from vitq.assets import DEMO_MODEL, demo_checkpoint, demo_images
    from vitq.models.loading import create_float_model
    from vitq.pipeline.quantize import quantize
    from vitq.recipe import make_recipe

    torch.manual_seed(0)
    model = create_float_model(DEMO_MODEL, checkpoint=demo_checkpoint())
    calib = load_batches(open_split(demo_images(), "calibration", eval_transform(model), limit=32), 32, progress=False)
    units = ("blocks.0", "blocks.1")
    recipe = make_recipe("W4A4", "brecq", {"units": units, "iters": iters, "samples": 32, "batch_size": 32}, seed=0)
    qm = quantize(model, DEMO_MODEL, images_only(calib), recipe, progress=False)
    seconds = qm.recon_losses["seconds"]
    click.echo(json.dumps({"steps": len(units) * iters, "recon_seconds": seconds, "steps_per_second": len(units) * iters / seconds}))


def run_together(jobs: int, policy: str, threads: int, iters: int) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["OMP_NUM_THREADS"] = str(threads)
    if policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    procs = [subprocess.Popen([sys.executable, __file__, "--job", "--iters", str(iters)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(jobs)]
    out = []
    for p in procs:
        stdout, stderr = p.communicate()
        if p.returncode != 0:
            raise click.ClickException(f"a job failed: {stderr.strip()[-500:]}")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


@click.command()
@click.option("--iters", type=click.IntRange(min=1), default=150, show_default=True, help="Optimization steps per block.")
@click.option("--job", "is_job", is_flag=True, help="Run one job and print its rate (what the measurement launches).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Results file (JSON).")
def main(iters: int, is_job: bool, out: Path | None) -> None:
    """Steps per second of one job alone and of each of two jobs at once, per wait policy and thread count."""
    if is_job:
        job(iters)
        return
    if out is None:
        raise click.UsageError("--out is required")
    records = []
    for policy, threads in CONDITIONS:
        for jobs in (1, 2):
            rates = [r["steps_per_second"] for r in run_together(jobs, policy, threads, iters)]
            records.append({"runtime": "torch (CPU)", "task": "reconstruct", "model": "deit_tiny_patch16_224", "bits": "W4A4",
                            "method": "brecq", "omp_wait_policy": policy, "threads_per_job": threads, "jobs": jobs,
                            "steps_per_second_per_job": round(statistics.mean(rates), 3),
                            "steps_per_second_total": round(sum(rates), 3)})
    for r in records:
        alone = next(a for a in records if a["omp_wait_policy"] == r["omp_wait_policy"]
                     and a["threads_per_job"] == r["threads_per_job"] and a["jobs"] == 1)
        r["per_job_vs_alone"] = round(r["steps_per_second_per_job"] / alone["steps_per_second_per_job"], 3)
    write_results(out, records, machine_note=f"{os.cpu_count()} CPU cores; jobs started together")
    click.echo(text_table(records, [("omp_wait_policy", "OMP_WAIT_POLICY"), ("threads_per_job", "threads"), ("jobs", "jobs"),
                                    ("steps_per_second_per_job", "steps/s per job"), ("steps_per_second_total", "total"),
                                    ("per_job_vs_alone", "vs alone")]))


if __name__ == "__main__":
    main()
