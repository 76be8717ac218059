"""One benchmark run over ONNX files: accuracy and speed of every variant side by side, interleaved.

    report = benchmark(variants, eval_batches, BenchConfig(target="cpu"), model="deit_tiny_patch16_224")
    write_results("benchmarks/results/bench_deit_tiny_cpu.json", report.records(), **report.extra())

The files come from ``vitq.pipeline.variants`` (or anywhere); parity against the torch model is
checked by the caller (``vitq.pipeline.bench``) and only recorded here.
"""
from __future__ import annotations

import logging
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from tqdm import tqdm

from calib.loaders import Batch
from vitq.bench.measure import Accuracy, Latency, accuracy, interleaved_latency, op_profile
from vitq.bench.targets import Target, resolve_target
from vitq.bench.variants import ALL_VARIANTS, DEFAULT_VARIANTS, FLOAT_VARIANTS, FP32, VITQ_U8S8, VITQ_VARIANTS, Variant
from vitq.errors import VitqError
from vitq.export.ort_format import convert_to_ort
from vitq.export.parity import ParityReport
from vitq.export.runtime import open_session, session_options

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchConfig:
    """What to measure. ``threads`` is ignored by targets with a fixed thread count (mobile)."""

    target: str = "cpu"
    threads: tuple[int, ...] = (1, 2)
    batches: tuple[int, ...] = (1, 32)
    runs: int = 50
    large_batch_runs: int = 8
    variants: tuple[str, ...] = DEFAULT_VARIANTS
    profile_runs: int = 20
    accuracy: bool = True  # off for a second target of the same files (accuracy does not depend on it)


@dataclass
class BenchReport:
    model: str
    bits: str
    dataset: str
    target: Target
    variants: dict[str, Variant]
    sizes_mb: dict[str, float]
    accuracy: dict[str, Accuracy]
    parity: dict[str, ParityReport]
    latency: dict[tuple[int, int], dict[str, Latency]] = field(default_factory=dict)  # (threads, batch) -> variant
    op_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    profile_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    fallbacks: list[str] = field(default_factory=list)  # quantizers the vitq exports carry as 8-bit uniform
    input_px: int = 0  # the square input resolution the graphs were timed at

    def best_fp32(self, key: tuple[int, int]) -> float:
        return min(lat.median_ms for name, lat in self.latency[key].items() if name in FLOAT_VARIANTS)

    def speed_records(self) -> list[dict[str, Any]]:
        out = []
        for (threads, batch), lats in self.latency.items():
            best = self.best_fp32((threads, batch))
            for name, lat in lats.items():
                out.append({
                    "model": self.model, "variant": name, "target": self.target.name, "threads": threads, "batch": batch,
                    "latency_ms_median": round(lat.median_ms, 3), "latency_ms_p90": round(lat.p90_ms, 3),
                    "throughput_ips": round(lat.throughput_ips, 2), "size_mb": round(self.sizes_mb[name], 3),
                    "speedup": round(best / lat.median_ms, 3), "input_px": self.input_px, "providers": list(self.target.providers),
                })
        return out

    def accuracy_records(self) -> list[dict[str, Any]]:
        if not self.accuracy:
            return []
        fp32 = self.accuracy[FP32]
        out = []
        for name, acc in self.accuracy.items():
            record = {
                "model": self.model, "dataset": self.dataset, "n_images": acc.n_images, "method": name,
                "bits": "fp32" if name in FLOAT_VARIANTS else self.bits if name in VITQ_VARIANTS else "W8A8",
                "top1": round(acc.top1, 3), "top5": round(acc.top5, 3), "fp32_top1": round(fp32.top1, 3),
                "drop": round(fp32.top1 - acc.top1, 3), "agreement": round(acc.agreement, 3),
                "runtime": "onnxruntime", "size_mb": round(self.sizes_mb[name], 3),
            }
            if name in VITQ_VARIANTS:
                record.update({"exported_as_measured": not self.fallbacks, "export_fallbacks": len(self.fallbacks)})
            if name in self.parity:
                p = self.parity[name]
                record.update({"torch_top1": p.torch_top1, "agreement_with_torch": round(p.agreement, 3),
                               "agreement_with_torch_float64": round(p.exact_agreement, 3),
                               "torch_float32_vs_float64": round(p.float32_agreement, 3), "parity_passed": p.passes(),
                               "max_abs_logit_error": round(p.max_abs_logit_error, 5),
                               "mean_abs_logit_error": round(p.mean_abs_logit_error, 6)})
            out.append(record)
        return out

    def records(self) -> list[dict[str, Any]]:
        return self.speed_records() + self.accuracy_records()

    def extra(self) -> dict[str, Any]:
        """Fields for the results file besides the records (write_results(**extra))."""
        return {"target": self.target.name, "target_notes": list(self.target.notes),
                "ort_providers_available": ort.get_available_providers(),
                "variants": {n: v.description for n, v in self.variants.items()},
                "optimized_graph_op_counts": self.op_counts, "op_profile_ms_1thread_batch1": self.profile_ms}


def _images(batches: Sequence[Batch], n: int) -> np.ndarray:
    """``n`` real images (repeated if there are fewer) as one NCHW array."""
    x = torch.cat([b[0] for b in batches])[:n]
    return x.repeat(-(-n // len(x)), 1, 1, 1)[:n].numpy()


def optimized_op_counts(path: Path) -> dict[str, int]:
    """Op types of the graph onnxruntime actually runs (after its CPU optimizations)."""
    so = session_options(threads=1)
    optimized = path.with_suffix(".optimized.onnx")
    so.optimized_model_filepath = str(optimized)
    open_session(path, so)
    counts = Counter(n.op_type for n in onnx.load(str(optimized)).graph.node)
    optimized.unlink(missing_ok=True)
    return dict(counts.most_common())


class _Sessions:
    """Builds the sessions of one target for a thread count (files converted to .ort when asked)."""

    def __init__(self, target: Target, files: dict[str, Path]) -> None:
        self.target = target
        self.files = files

    def make(self, name: str, threads: int | None, profile_prefix: str | None = None) -> ort.InferenceSession:
        so = session_options(threads, sequential=self.target.sequential, spinning=self.target.spinning,
                             profile_prefix=profile_prefix)
        session = open_session(self.files[name], so, self.target.providers)
        if session.get_providers()[0] != self.target.providers[0]:
            raise VitqError(f"{self.target.providers[0]} did not initialise (no usable device?); got {session.get_providers()}")
        return session


def check_variants(config: BenchConfig, eval_batches: Sequence[Batch]) -> None:
    """Fail before any slow work: unknown target or variant names, no evaluation images."""
    resolve_target(config.target)
    unknown = [v for v in config.variants if v not in ALL_VARIANTS]
    if unknown:
        raise VitqError(f"unknown variant(s) {unknown}; choose from {', '.join(ALL_VARIANTS)}")
    if not eval_batches:
        raise VitqError("benchmark needs evaluation images")


def say_progress(progress: bool) -> Callable[[str], None]:
    """A one-line status printer above the progress bars (silent without ``progress``)."""
    return (lambda msg: tqdm.write(f"bench: {msg}", file=sys.stderr)) if progress else (lambda msg: None)


def benchmark(variants: dict[str, Variant], eval_batches: Sequence[Batch], config: BenchConfig = BenchConfig(),
              model: str = "", bits: str = "W8A8", dataset: str = "", parity: dict[str, ParityReport] | None = None,
              progress: bool = True, fallbacks: Sequence[str] = ()) -> BenchReport:
    """Every variant (an ONNX file with its name, ``fp32`` among them) side by side on ``config.target``:
    onnxruntime accuracy on ``eval_batches``, interleaved latency, optimized-graph op counts and an op
    profile. ``parity`` reports of the vitq variants against torch are recorded with their accuracy, and
    ``fallbacks`` (quantizers exported as 8-bit uniform) say whether those exports are the measured model."""
    check_variants(config, eval_batches)
    target = resolve_target(config.target)
    say = say_progress(progress)
    files = {n: v.path for n, v in variants.items()}
    if target.ort_format:
        say("convert to ORT format")
        files = {n: convert_to_ort(p) for n, p in files.items()}
    sessions = _Sessions(target, files)
    acc = {}
    if config.accuracy:
        say("accuracy")
        acc = accuracy({n: open_session(p, session_options()) for n, p in files.items()}, eval_batches, FP32, progress)
    report = BenchReport(model, bits, dataset, target, variants, {n: p.stat().st_size / 1e6 for n, p in files.items()},
                         acc, dict(parity or {}), fallbacks=list(fallbacks), input_px=int(eval_batches[0][0].shape[-1]))
    thread_counts = (target.threads,) if target.threads else config.threads
    for threads in thread_counts:
        live = {n: sessions.make(n, threads) for n in files}
        for batch in config.batches:
            runs = config.runs if batch == 1 else config.large_batch_runs
            say(f"latency threads={threads} batch={batch} runs={runs}")
            report.latency[(threads, batch)] = interleaved_latency(live, _images(eval_batches, batch), runs,
                                                                   progress=progress, desc=f"{threads}t b{batch}")
    one = _images(eval_batches, 1)
    for name in (FP32, VITQ_U8S8):
        if name in files:
            report.op_counts[name] = optimized_op_counts(variants[name].path)
            report.profile_ms[name] = op_profile(lambda prefix, n=name: sessions.make(n, 1, prefix), one, config.profile_runs)
    return report
