"""Latency, throughput and accuracy measurements of onnxruntime sessions.

Latency runs are interleaved round-robin across all sessions, so background load on a shared
machine (CPU frequency, other jobs) hits every variant equally; medians and p90 summarize them.
"""
from __future__ import annotations

import json
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from tqdm import tqdm

from vitq.export.runtime import run


@dataclass(frozen=True)
class Latency:
    median_ms: float
    p90_ms: float
    batch: int

    @property
    def throughput_ips(self) -> float:
        return 1000.0 * self.batch / self.median_ms

    def file_record(self, model: str, variant: str, path: Path, baseline_ms: float, threads: int,
                    op_counts: Mapping[str, int]) -> dict:
        """The record of one ONNX file timed on the CPU: median / p90, speedup over ``baseline_ms``, size and the op
        counts of the graph onnxruntime runs (the A/B scripts under benchmarks/)."""
        return {"model": model, "variant": variant, "target": "cpu", "runtime": "onnxruntime", "threads": threads,
                "batch": self.batch, "latency_ms_median": round(self.median_ms, 3), "latency_ms_p90": round(self.p90_ms, 3),
                "speedup": round(baseline_ms / self.median_ms, 3), "size_mb": round(Path(path).stat().st_size / 1e6, 3),
                "optimized_graph_op_counts": dict(op_counts)}


def interleaved_latency(sessions: Mapping[str, ort.InferenceSession], images: np.ndarray, runs: int, warmup: int = 3,
                        progress: bool = True, desc: str = "latency") -> dict[str, Latency]:
    """Time ``runs`` calls per session, round-robin, after ``warmup`` untimed calls each."""
    for session in sessions.values():
        for _ in range(warmup):
            run(session, images)
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in tqdm(range(runs), desc=desc, unit="round", disable=not progress, leave=False):
        for name, session in sessions.items():
            start = time.perf_counter()
            run(session, images)
            times[name].append(1000.0 * (time.perf_counter() - start))
    return {name: Latency(float(np.median(t)), float(np.percentile(t, 90)), len(images)) for name, t in times.items()}


@dataclass(frozen=True)
class Accuracy:
    n_images: int
    top1: float
    top5: float
    agreement: float  # % top-1 equal to the reference (fp32) session


def accuracy(sessions: Mapping[str, ort.InferenceSession], batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
             reference: str, progress: bool = True) -> dict[str, Accuracy]:
    """Top-1/top-5 of each session and its top-1 agreement with ``sessions[reference]``, same images."""
    preds: dict[str, list[np.ndarray]] = {name: [] for name in sessions}
    labels: list[np.ndarray] = []
    for x, y in tqdm(list(batches), desc="accuracy", unit="batch", disable=not progress, leave=False):
        labels.append(y.numpy())
        for name, session in sessions.items():
            preds[name].append(np.argsort(-run(session, x.numpy()), axis=1)[:, :5])
    y = np.concatenate(labels)
    top = {name: np.concatenate(p) for name, p in preds.items()}
    ref = top[reference][:, 0]
    return {name: Accuracy(len(y), 100.0 * float((t[:, 0] == y).mean()), 100.0 * float((t == y[:, None]).any(1).mean()),
                           100.0 * float((t[:, 0] == ref).mean()))
            for name, t in top.items()}


def op_profile(session_factory: Callable[[str], ort.InferenceSession], images: np.ndarray, runs: int = 20) -> dict[str, float]:
    """Milliseconds per run spent in each op type (onnxruntime profiling of the optimized graph).

    ``session_factory(profile_prefix)`` must return a session with profiling enabled.
    """
    with tempfile.TemporaryDirectory() as tmp:
        session = session_factory(str(Path(tmp) / "profile"))
        for _ in range(runs):
            run(session, images)
        events = json.loads(Path(session.end_profiling()).read_text())
    total: Counter[str] = Counter()
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            total[e["args"]["op_name"]] += e["dur"]
    return {op: round(us / runs / 1000.0, 4) for op, us in total.most_common()}
