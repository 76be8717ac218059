"""Step rate of reconstruction-like work alone and with a second job on the same cores, per OpenMP wait
policy and thread count (writes benchmarks/results/shared_machine_cpu.json).

Each job is one process that runs ``--steps`` optimization steps (forward, backward, Adam) of one
DeiT-Tiny block at batch 32: the op mix of a reconstruction step, without the fake quantization, so
that a slowed-down job still ends in minutes. Jobs that run together start together. The policy is
OpenMP's ``OMP_WAIT_POLICY`` ("default": unset; libgomp then spins for a while before it sleeps). It is
read once, when torch loads, which is why every job is a fresh process.

    nice python benchmarks/shared_machine.py --out benchmarks/results/shared_machine_cpu.json
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import click

from vitq.report.tables import text_table
from vitq.results import write_results

START_DELAY_S = 15.0  # enough for every job to load torch and timm and warm up
CONDITIONS = (("default", 2), ("PASSIVE", 2), ("default", 1), ("PASSIVE", 1))  # (OMP_WAIT_POLICY, threads per job)


def job(steps: int, start_at: float) -> None:
    """Time ``steps`` training steps of one DeiT-Tiny block; prints steps per second as JSON."""
    import time

    import timm
    import torch

    torch.manual_seed(0)
    block = timm.create_model("deit_tiny_patch16_224").blocks[0]
    x, y = torch.randn(32, 197, 192), torch.randn(32, 197, 192)
    opt = torch.optim.Adam(block.parameters(), lr=1e-4)
    for _ in range(3):  # warm-up
        torch.nn.functional.mse_loss(block(x), y).backward()
    time.sleep(max(0.0, start_at - time.time()))  # jobs that run together time the same seconds
    start = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(block(x), y).backward()
        opt.step()
    seconds = time.perf_counter() - start
    click.echo(json.dumps({"steps": steps, "seconds": seconds, "steps_per_second": steps / seconds}))


def run_together(jobs: int, policy: str, threads: int, steps: int) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["OMP_NUM_THREADS"] = str(threads)
    if policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    start_at = time.time() + START_DELAY_S
    argv = [sys.executable, __file__, "--job", "--steps", str(steps), "--start-at", str(start_at)]
    procs = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(jobs)]
    out = []
    for p in procs:
        stdout, stderr = p.communicate()
        if p.returncode != 0:
            raise click.ClickException(f"a job failed: {stderr.strip()[-500:]}")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


@click.command()
@click.option("--steps", type=click.IntRange(min=1), default=40, show_default=True, help="Timed steps per job.")
@click.option("--job", "is_job", is_flag=True, help="Run one job and print its rate (what the measurement launches).")
@click.option("--start-at", type=float, default=0.0, help="With --job: the wall-clock time (epoch s) to start timing at.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Results file (JSON).")
def main(steps: int, is_job: bool, start_at: float, out: Path | None) -> None:
    """Steps per second of one job alone and of each of two jobs at once, per wait policy and thread count."""
    if is_job:
        job(steps, start_at)
        return
    if out is None:
        raise click.UsageError("--out is required")
    records = []
    for policy, threads in CONDITIONS:
        for jobs in (1, 2):
            rates = [r["steps_per_second"] for r in run_together(jobs, policy, threads, steps)]
            records.append({"runtime": "torch (CPU)", "task": "block forward+backward+Adam, batch 32",
                            "model": "deit_tiny_patch16_224 (blocks.0)", "steps": steps, "omp_wait_policy": policy,
                            "threads_per_job": threads, "jobs": jobs,
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
