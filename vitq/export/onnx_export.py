"""Quantized torch model -> ONNX QDQ file: float export with markers, QDQ rewrite, checker, atomic save."""
from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch
from onnx import version_converter
from torch import nn

from vitq.calibration import quantization_disabled
from vitq.errors import VitqError
from vitq.export.fusions import fuse_silu
from vitq.export.markers import MARKER_DOMAIN, ExportMarker, Site, export_reference, fallback_quantizers, mark_quantizers
from vitq.export.options import ExportOptions
from vitq.export.qdq import INT4_OPSET, insert_qdq
from vitq.files import atomic_write

log = logging.getLogger(__name__)

# opset 20 exports GELU as one Gelu node: in the Erf form, a GELU behind a DequantizeLinear (a hybrid's integer conv
# feeding it) stays unfused, because onnxruntime gives each consumer its own DequantizeLinear copy
# (docs/deployment.md, "GELU after an integer conv")
DEFAULT_OPSET = 20
INPUT_NAME, OUTPUT_NAME = "input", "logits"


@dataclass(frozen=True)
class ExportedModel:
    """What :func:`export_onnx` wrote: the file, its opset, one entry per quantized tensor, and the quantizers
    that exported through the uniform fallback (empty: the file computes exactly what torch measured)."""

    path: Path
    opset: int
    sites: list[Site]
    fallbacks: list[str]

    @property
    def size_mb(self) -> float:
        return self.path.stat().st_size / 1e6


def input_shape(model: nn.Module, batch: int = 1) -> tuple[int, ...]:
    """(batch, C, H, W) from the model's timm pretrained config (falls back to 3x224x224)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return (batch, *cfg.get("input_size", (3, 224, 224)))


def torch_to_onnx(model: nn.Module, shape: tuple[int, ...], opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """TorchScript export (``dynamo=False``): module-scoped node names and custom-op symbolics for the markers."""
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings from timm's shape asserts and the legacy exporter notice
        torch.onnx.export(
            model.eval(), (torch.zeros(shape),), buffer, dynamo=False, opset_version=opset,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            custom_opsets={MARKER_DOMAIN: 1} if any(isinstance(m, ExportMarker) for m in model.modules()) else None,
        )
    return onnx.load_from_string(buffer.getvalue())


def build_qdq_model(qmodel: nn.Module, options: ExportOptions = ExportOptions()) -> tuple[onnx.ModelProto, list[Site]]:
    """The checked QDQ ModelProto of a calibrated vitq model (nothing written to disk)."""
    marked, sites = mark_quantizers(export_reference(qmodel))
    model, uses_int4 = insert_qdq(torch_to_onnx(marked, input_shape(qmodel)), sites, options)
    if uses_int4:
        model = _to_int4_opset(model)
    if options.contrib_ops:
        fuse_silu(model)
    model.producer_name, model.doc_string = "vitq", "vitq QDQ export: learned scales/zero-points, integer weights"
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as e:
        raise RuntimeError(f"exported graph fails onnx.checker (a vitq bug): {str(e).splitlines()[0]}") from e
    return model, sites


def _to_int4_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    """int4/uint4 tensors need opset 21; upgrade the float ops around them with ONNX's converter."""
    return version_converter.convert_version(model, INT4_OPSET)


def export_onnx(qmodel: nn.Module, path: str | Path, options: ExportOptions = ExportOptions()) -> ExportedModel:
    """Write ``qmodel`` (wrapped and calibrated) as an ONNX QDQ model; no partial file on failure."""
    if Path(path).suffix != ".onnx":
        raise VitqError(f"ONNX output path must end in .onnx, got {path}")
    model, sites = build_qdq_model(qmodel, options)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    written = atomic_write(path, lambda tmp: onnx.save(model, tmp))
    log.info("exported %d quantized tensors to %s (opset %d)", len(sites), written, opset)
    return ExportedModel(written, opset, sites, fallback_quantizers(qmodel))


def export_float(qmodel: nn.Module, path: str | Path) -> Path:
    """The fp32 baseline: the same wrapped model with every quantizer off, same graph structure, same weights."""
    with quantization_disabled(qmodel):
        model = torch_to_onnx(qmodel, input_shape(qmodel))
    return atomic_write(path, lambda tmp: onnx.save(model, tmp))
