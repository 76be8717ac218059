"""How much work a killed reconstruction loses, and whether `vitq quantize --resume` ends where an
uninterrupted run ends (writes benchmarks/results/resume_lost_work.json).

Three `vitq quantize` processes on DeiT-Tiny (W4A4, pfcr, ci preset, bundled images): an uninterrupted
run; a run SIGKILLed halfway through a unit after ``--kill-after`` finished units; and that run resumed with
``--resume``. Each finished unit replaces OUT.pt.resume atomically, so the file's modification times are
the unit boundaries. Lost work is the time from the last state write to the kill; calibration, which a
resumed run repeats (it is deterministic and not part of the state), is reported beside it.

    nice python benchmarks/resume_lost_work.py --out benchmarks/results/resume_lost_work.json
"""
from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import click
import torch

from vitq.assets import demo_checkpoint
from vitq.report.tables import text_table
from vitq.results import write_results

POLL_S = 0.02


def quantize_argv(out: Path, calib_size: int) -> list[str]:
    vitq = shutil.which("vitq")
    if vitq is None:
        raise click.ClickException("the vitq entry point is not on PATH (pip install -e .)")
    return [vitq, "quantize", "deit_tiny_patch16_224", str(out), "--checkpoint", str(demo_checkpoint()), "--bits", "W4A4",
            "--method", "pfcr", "--set", "recon_preset=ci", "--calib-size", str(calib_size)]


def watch(argv: list[str], state: Path, kill_after: int | None = None, kill_fraction: float = 0.5,
          unit_s: float = 0.0) -> dict:
    """Run ``argv`` and note the time of every state write; with ``kill_after``, SIGKILL the process
    ``kill_fraction`` of a unit after that many writes."""
    writes: list[float] = []
    last_mtime = state.stat().st_mtime_ns if state.exists() else None  # a resumed run starts from an old state
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed_at = None
    while proc.poll() is None:
        try:
            mtime = state.stat().st_mtime_ns
        except FileNotFoundError:
            mtime = None
        if mtime is not None and mtime != last_mtime:
            last_mtime = mtime
            writes.append(time.perf_counter() - start)
        if kill_after is not None and len(writes) >= kill_after and killed_at is None \
                and time.perf_counter() - start >= writes[kill_after - 1] + kill_fraction * unit_s:
            killed_at = time.perf_counter() - start
            os.kill(proc.pid, signal.SIGKILL)
        time.sleep(POLL_S)
    return {"seconds": time.perf_counter() - start, "writes": writes, "killed_at": killed_at, "returncode": proc.returncode}


@click.command()
@click.option("--calib-size", type=click.IntRange(min=1), default=32, show_default=True, help="Calibration images.")
@click.option("--kill-after", type=click.IntRange(min=1), default=3, show_default=True, help="Finished units before the kill.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Results file (JSON).")
def main(calib_size: int, kill_after: int, out: Path) -> None:
    """Kill a reconstruction mid-unit, resume it, and compare with an uninterrupted run."""
    with tempfile.TemporaryDirectory() as tmp:
        full_out, run_out = Path(tmp) / "full.pt", Path(tmp) / "run.pt"
        full = watch(quantize_argv(full_out, calib_size), full_out.with_name(full_out.name + ".resume"))
        if full["returncode"] != 0:
            raise click.ClickException(f"the uninterrupted run failed (exit {full['returncode']})")
        units = [b - a for a, b in zip(full["writes"], full["writes"][1:])]
        unit_s = statistics.median(units)
        state = run_out.with_name(run_out.name + ".resume")
        killed = watch(quantize_argv(run_out, calib_size), state, kill_after=kill_after, unit_s=unit_s)
        if killed["killed_at"] is None:
            raise click.ClickException("the run ended before it was killed")
        saved = torch.load(state, map_location="cpu", weights_only=True)
        resumed = watch([*quantize_argv(run_out, calib_size), "--resume"], state)
        if resumed["returncode"] != 0:
            raise click.ClickException(f"the resumed run failed (exit {resumed['returncode']})")
        a = torch.load(full_out, weights_only=True)["state_dict"]
        b = torch.load(run_out, weights_only=True)["state_dict"]
        differing = [k for k in a if not torch.equal(a[k], b[k])]
    lost_s = killed["killed_at"] - killed["writes"][-1]
    record = {
        "runtime": "torch (CPU)", "model": "deit_tiny_patch16_224", "bits": "W4A4", "method": "pfcr", "recon_preset": "ci",
        "calibration_images": calib_size, "units_total": len(full["writes"]),
        "unit_seconds_median": round(unit_s, 3), "unit_seconds_max": round(max(units), 3),
        "uninterrupted_seconds": round(full["seconds"], 2),
        "seconds_before_first_unit": round(full["writes"][0], 2),
        "killed_after_units": len(killed["writes"]), "state_units_done": saved["units_done"], "state_level": saved["level"],
        "killed_at_seconds": round(killed["killed_at"], 2), "lost_seconds": round(lost_s, 3),
        "lost_units": round(lost_s / unit_s, 3), "resumed_seconds": round(resumed["seconds"], 2),
        "resumed_seconds_before_first_unit": round(resumed["writes"][0], 2) if resumed["writes"] else None,
        "resumed_units": len(resumed["writes"]),
        "resumed_unit_seconds_median": round(statistics.median(b - a for a, b in zip(resumed["writes"], resumed["writes"][1:])), 3),
        "bit_identical": not differing, "differing_tensors": differing[:10],
    }
    write_results(out, [record])
    click.echo(text_table([record], [("units_total", "units"), ("unit_seconds_median", "unit s"), ("killed_after_units", "killed after"),
                                     ("lost_seconds", "lost s"), ("lost_units", "lost units"),
                                     ("uninterrupted_seconds", "full s"), ("resumed_seconds", "resumed s"),
                                     ("bit_identical", "bit-identical")]))


if __name__ == "__main__":
    main()
