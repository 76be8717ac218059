"""The deployment half of ``vitq demo``: export -> parity -> bench -> one table, kept to a few minutes."""
from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from calib.loaders import Batch
from vitq.bench.runner import BenchConfig, BenchReport, benchmark
from vitq.bench.variants import FP32, FP32_OPT, ORT_STATIC, VITQ_U8S8
from vitq.workflow import format_table

DEMO_VARIANTS = (FP32, FP32_OPT, ORT_STATIC, VITQ_U8S8)
DEMO_COLUMNS = [
    ("variant", "variant"), ("top1", "top-1"), ("agreement", "agree fp32 %"), ("agreement_with_torch", "agree torch %"),
    ("latency_ms_median", "ms (1 thread)"), ("speedup", "speedup"), ("size_mb", "MB"),
]


def deployment_rows(report: BenchReport) -> list[dict]:
    """One row per variant: its accuracy record joined with its batch-1 latency record."""
    accuracy = {r["method"]: r for r in report.accuracy_records()}
    return [{**accuracy[r["variant"]], **r} for r in report.speed_records() if r["batch"] == 1]


def deployment_table(qmodel: nn.Module, model_name: str, calib_images: Sequence[torch.Tensor], eval_batches: Sequence[Batch],
                     runs: int = 30, dataset: str = "bundled imagenet-sample") -> tuple[str, BenchReport]:
    """fp32 vs onnxruntime quantize_static vs vitq W8A8 in onnxruntime: accuracy and 1-thread batch-1 latency."""
    config = BenchConfig(target="cpu", threads=(1,), batches=(1,), runs=runs, variants=DEMO_VARIANTS, profile_runs=5)
    with tempfile.TemporaryDirectory(prefix="vitq-demo-") as tmp:
        report = benchmark(qmodel, model_name, calib_images, eval_batches, Path(tmp), config, dataset=dataset)
    return format_table(deployment_rows(report), DEMO_COLUMNS), report
