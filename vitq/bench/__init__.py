"""onnxruntime benchmarks: targets (cpu, mobile, cuda, tensorrt), side-by-side variants, reports."""
from vitq.bench.runner import BenchConfig, BenchReport, benchmark
from vitq.bench.targets import list_targets, resolve_target

__all__ = ["BenchConfig", "BenchReport", "benchmark", "list_targets", "resolve_target"]
