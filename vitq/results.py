"""Result records with provenance (schema in ../shared/DESIGN.md "Result records").

A results file is ``{"command", "git_commit", "timestamp", "machine", "versions", "records": [...]}``;
each record carries the accuracy or speed fields and the provenance applies to all of them.
"""
from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from vitq.files import atomic_write

INTERESTING_CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512vnni", "avx_vnni", "amx_int8", "fma", "f16c")
# recorded where installed (nncf, onnx-neural-compressor, onnx-ir: the benchmark's peer variants)
PACKAGES = ("torch", "timm", "onnx", "onnxruntime", "onnxruntime-gpu", "numpy", "vitq", "nncf", "onnx-neural-compressor",
            "onnx-ir")


def git_commit() -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "cores": os.cpu_count(), "cpu": platform.processor()}
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        text = cpuinfo.read_text()
        for line in text.splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
        info["cpu_flags"] = sorted(f for f in flags if f in INTERESTING_CPU_FLAGS)
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def _invocation() -> str:
    """The command line as typed: ``python path/to/script.py ...`` for scripts, ``vitq ...`` for the CLI."""
    script = Path(sys.argv[0])
    if script.suffix != ".py":
        return shlex.join([script.name, *sys.argv[1:]])
    try:
        shown = str(script.resolve().relative_to(Path.cwd()))
    except ValueError:
        shown = str(script)
    return shlex.join(["python", shown, *sys.argv[1:]])


def provenance(command: str | None = None) -> dict[str, Any]:
    return {
        "command": command or _invocation(),
        "git_commit": git_commit(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "versions": versions(),
    }


def write_results(path: str | Path, records: list[dict[str, Any]], command: str | None = None, **extra: Any) -> Path:
    """Write records with provenance as one JSON file (atomically)."""
    payload = {**provenance(command), **extra, "records": records}
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n"))
