"""ORT-format (``.ort``) conversion with onnxruntime's own tool, as mobile apps ship models."""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from vitq.errors import VitqError
from vitq.files import atomic_write

STYLES = ("Fixed", "Runtime")


def convert_to_ort(onnx_path: str | Path, output: str | Path | None = None, style: str = "Fixed",
                   target_platform: str = "amd64") -> Path:
    """Run ``python -m onnxruntime.tools.convert_onnx_models_to_ort``; returns the ``.ort`` path.

    ``Fixed`` bakes in the optimizations of the converting machine (QDQ fusions included), so convert
    with ``target_platform="arm"`` for an ARM phone; ``Runtime`` keeps them to replay on device.
    """
    onnx_path = Path(onnx_path)
    if style not in STYLES:
        raise VitqError(f"ORT optimization style must be one of {STYLES}, got {style!r}")
    output = Path(output) if output else onnx_path.with_suffix(".ort")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / onnx_path.name
        shutil.copyfile(onnx_path, src)
        cmd = [sys.executable, "-m", "onnxruntime.tools.convert_onnx_models_to_ort", str(src), "--output_dir",
               str(Path(tmp) / "out"), "--optimization_style", style, "--target_platform", target_platform]
        done = subprocess.run(cmd, capture_output=True, text=True)
        produced = sorted((Path(tmp) / "out").glob("*.ort"))
        if done.returncode != 0 or not produced:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise VitqError(f"ORT-format conversion of {onnx_path} failed: {tail[0][:300]}")
        return atomic_write(output, lambda dst: shutil.copyfile(produced[0], dst))
