"""Data parallelism under torchrun (gloo, 2 CPU processes) against one process on the same images:
calibration scales bit-identical, evaluation tallies identical, reconstruction identical on both ranks
and as good as one process, a failing rank ends the job with its error."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from tests import distributed_worker as worker
from vitq import distributed
from vitq.errors import VitqError

ROOT = Path(__file__).resolve().parents[1]
MODEL = "deit_tiny_patch16_224"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
            "--master-port", str(free_port()), *args]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


@pytest.mark.parametrize(("n", "world"), [(16, 2), (17, 2), (875, 3), (5, 5), (1000, 8)])
def test_shard_plan_covers_every_item_once_and_the_last_shard_takes_the_remainder(n, world):
    plan = distributed.shard_plan(n, world)
    assert [i for start, stop in plan for i in range(start, stop)] == list(range(n))
    sizes = [stop - start for start, stop in plan]
    assert sizes[:-1] == [n // world] * (world - 1) and sizes[-1] == n // world + n % world


def test_shard_plan_refuses_an_empty_rank():
    with pytest.raises(VitqError, match="3 images cannot be shared by 4 processes"):
        distributed.shard_plan(3, 4)


@pytest.fixture(scope="module")
def library_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    result = torchrun("tests/distributed_worker.py", "library", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def load(out: Path, name: str) -> list:
    return [torch.load(out / f"{name}_rank{r}.pt", weights_only=True) for r in range(2)]


def untimed(report: object) -> object:
    """A reconstruction report without its wall-clock ``seconds`` entries, which no two processes share."""
    if isinstance(report, dict):
        return {k: untimed(v) for k, v in report.items() if k != "seconds"}
    if isinstance(report, list):
        return [untimed(v) for v in report]
    return report


def different(a: dict, b: dict) -> list[str]:
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


@pytest.mark.parametrize("method", ["minmax", "percentile"])
def test_calibration_under_two_ranks_is_bit_identical_to_one_process(library_run, method):
    single = worker.quantized("W8A8", method, worker.data()).model.state_dict()
    for rank_state in load(library_run, f"calib_{method}"):
        assert different(single, rank_state) == []


def test_evaluation_tallies_over_two_ranks_equal_one_process(library_run):
    from vitq.calibration import FloatView
    from vitq.evaluate import evaluate

    model = worker.quantized("W8A8", "minmax", worker.data()).model
    single = {k: v.to_dict() for k, v in evaluate({"fp32": FloatView(model), "quant": model}, worker.data(), progress=False).items()}
    for ranked in load(library_run, "eval"):
        for name in single:
            assert ranked[name]["n_images"] == worker.N_IMAGES
            assert {k: v for k, v in ranked[name].items() if k != "kl"} == {k: v for k, v in single[name].items() if k != "kl"}
            assert ranked[name]["kl"] == pytest.approx(single[name]["kl"], rel=1e-9, abs=1e-12)


def test_reconstruction_under_two_ranks_ends_identical_on_both_and_as_good_as_one_process(library_run):
    first, second = load(library_run, "recon")
    assert different(first["state"], second["state"]) == []
    assert untimed(first["losses"]) == untimed(second["losses"])  # wall times differ between ranks
    single = worker.quantized("W4A4", "pfcr", worker.data(), **worker.RECON).recon_losses
    for two, one in zip(first["losses"]["levels"], single["levels"]):
        assert two["level"] == one["level"] and two["units"] == one["units"]
        assert two["after"] <= two["before"]  # the losses are rounded: a level already at 1e-4 can stay equal
        assert two["after"] == pytest.approx(one["after"], rel=0.25), (two, one)


def test_cli_quantize_and_eval_under_torchrun_match_one_process(tmp_path, deit_checkpoint, sample_images):
    from vitq.cli import main
    from vitq.pipeline.checkpoint import load_quantized

    args = ["--checkpoint", str(deit_checkpoint), "--data", str(sample_images), "--method", "percentile",
            "--calib-size", "16", "--batch-size", "8"]
    one = CliRunner().invoke(main, ["quantize", MODEL, str(tmp_path / "one.pt"), *args])
    assert one.exit_code == 0, one.output
    two = torchrun("-m", "vitq", "quantize", MODEL, str(tmp_path / "two.pt"), *args)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("saved deit_tiny_patch16_224") == 1  # rank 0 speaks
    a, b = load_quantized(tmp_path / "one.pt"), load_quantized(tmp_path / "two.pt")
    assert different(a.model.state_dict(), b.model.state_dict()) == []
    assert b.meta["distributed"] == {"world_size": 2, "shards": [[0, 8], [8, 16]]}

    eval_args = ["--data", str(sample_images), "--limit", "16", "--batch-size", "8", "--json"]
    one = CliRunner().invoke(main, ["eval", str(tmp_path / "one.pt"), *eval_args])
    assert one.exit_code == 0, one.output
    two = torchrun("-m", "vitq", "eval", str(tmp_path / "one.pt"), *eval_args)
    assert two.returncode == 0, two.stderr[-3000:]
    import json

    single = json.loads(one.output[one.output.index("{"):])
    ranked = json.loads(two.stdout[two.stdout.index("{"):])
    assert ranked.pop("distributed") == {"world_size": 2, "shards": [[0, 8], [8, 16]]}
    for key in ("n_images", "top1", "top5", "fp32_top1", "fp32_top5", "agreement", "kl"):
        assert ranked[key] == single[key], key


def test_a_failing_rank_ends_the_job_with_its_error_not_a_hang(tmp_path):
    start = time.monotonic()
    result = torchrun("tests/distributed_worker.py", "fail", str(tmp_path), timeout=120, env={"VITQ_DIST_TIMEOUT": "30"})
    assert result.returncode != 0
    assert time.monotonic() - start < 90
    assert "Error: rank 1: " in result.stderr and "no_such_model_name" in result.stderr


def test_commands_that_cannot_shard_refuse_torchrun(monkeypatch):
    from vitq.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    result = CliRunner().invoke(main, ["bench", "q.pt"])
    assert result.exit_code == 2 and "vitq bench runs in one process; launch it without torchrun" in result.output
