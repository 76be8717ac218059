"""Benchmark targets: which execution provider and session settings stand for a deployment.

A target is plain data; :func:`resolve_target` checks that the installed onnxruntime can serve it
and fails with a one-line explanation when it cannot (no GPU, CPU-only wheel, unknown name).
"""
from __future__ import annotations

from dataclasses import dataclass

from vitq.errors import VitqError
from vitq.export.options import CPU, CUDA, TENSORRT, XNNPACK
from vitq.registry import Registry

TARGETS: Registry[Target] = Registry("bench target")
GPU_HINT = ("install onnxruntime-gpu in a fresh environment (`pip install -e .[gpu]` after `pip uninstall onnxruntime`; "
            "both wheels together hide the CUDA provider) on a machine with an NVIDIA GPU")


@dataclass(frozen=True)
class Target:
    """How sessions are built for a deployment class.

    ``threads=None`` means all cores. ``providers`` are tried in order, CPU last as ORT's fallback
    for unsupported nodes. ``ort_format`` converts models to ``.ort`` with onnxruntime's tool,
    as a mobile app would ship them.
    """

    name: str
    providers: tuple[str, ...]
    threads: int | None
    sequential: bool = True
    spinning: bool = True
    ort_format: bool = False
    description: str = ""
    notes: tuple[str, ...] = ()


def _register(target: Target) -> Target:
    TARGETS.register(target.name)(target)
    return target


_register(Target("cpu", (CPU,), None, description="CPU execution provider, all cores"))
_register(Target("mobile", (XNNPACK, CPU), 1, sequential=True, spinning=False, ort_format=True,
                 description="mobile-class CPU: 1 thread, sequential, no spinning, ORT-format model"))
_register(Target("cuda", (CUDA, CPU), None, description="CUDA execution provider (onnxruntime-gpu)"))
_register(Target("tensorrt", (TENSORRT, CUDA, CPU), None,
                 description="TensorRT execution provider (explicit QDQ int8; symmetric activations preferred)"))


def list_targets() -> list[str]:
    return TARGETS.names()


def resolve_target(name: str) -> Target:
    """The target with the providers this onnxruntime build really has; raises when it cannot run."""
    import onnxruntime as ort  # here, not at the top: listing targets must not load onnxruntime

    target = TARGETS.get(name)
    available = ort.get_available_providers()
    wanted = [p for p in target.providers if p != CPU]
    if name in ("cuda", "tensorrt") and target.providers[0] not in available:
        raise VitqError(f"target {name!r} needs {target.providers[0]}, but this onnxruntime "
                        f"{ort.__version__} has only {', '.join(available)}: {GPU_HINT}")
    present = tuple(p for p in wanted if p in available) + (CPU,)
    notes = target.notes
    if XNNPACK in wanted and XNNPACK not in available:
        notes += (f"{XNNPACK} is not in this onnxruntime build ({ort.__version__}: {', '.join(available)}); "
                  "the PyPI x86 wheels never ship it (it comes with the Android/iOS packages), so the "
                  "mobile target runs the CPU provider under mobile settings",)
    return Target(target.name, present, target.threads, target.sequential, target.spinning, target.ort_format,
                  target.description, notes)
