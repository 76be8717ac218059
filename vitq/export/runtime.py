"""onnxruntime sessions, in one place so parity checks and benchmarks configure them the same way."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from vitq.errors import VitqError
from vitq.export.options import CPU


def session_options(threads: int | None = None, sequential: bool = True, spinning: bool = True,
                    profile_prefix: str | None = None) -> ort.SessionOptions:
    """Graph optimizations at ORT_ENABLE_ALL (QDQ fusion needs EXTENDED or higher).

    ``threads=None`` lets ORT use all physical cores. Spinning threads cut latency on an idle machine
    but burn the other cores; the mobile target turns it off as a phone runtime would.
    """
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL if sequential else ort.ExecutionMode.ORT_PARALLEL
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    so.log_severity_level = 3  # hide optimizer chatter; errors still raise
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return so


def open_session(path: str | Path, options: ort.SessionOptions | None = None, providers: Sequence[str] = (CPU,),
                 disabled_optimizers: Sequence[str] = ()) -> ort.InferenceSession:
    path = Path(path)
    if not path.is_file():
        raise VitqError(f"ONNX model not found: {path}")
    try:
        return ort.InferenceSession(str(path), options or session_options(), providers=list(providers),
                                    disabled_optimizers=list(disabled_optimizers))
    except (ort.capi.onnxruntime_pybind11_state.Fail, ort.capi.onnxruntime_pybind11_state.InvalidGraph,
            ort.capi.onnxruntime_pybind11_state.InvalidProtobuf) as e:
        raise VitqError(f"onnxruntime cannot load {path}: {str(e).splitlines()[0][:300]}") from None


def run(session: ort.InferenceSession, images: np.ndarray) -> np.ndarray:
    """Logits for a float32 NCHW batch (the model's single input and first output)."""
    name = session.get_inputs()[0].name
    return session.run(None, {name: np.ascontiguousarray(images, dtype=np.float32)})[0]
