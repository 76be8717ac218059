"""The model files a benchmark compares, by name: fp32 (plain and transformer-optimized), onnxruntime's
``quantize_static`` and vitq's QDQ exports (built by ``vitq.pipeline.variants``)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

FP32, FP32_OPT, ORT_STATIC, VITQ_U8S8, VITQ_S8S8 = "fp32", "fp32-opt", "ort-quantize-static", "vitq-int8", "vitq-int8-s8s8"
VITQ_INT4W = "vitq-int4w"  # <= 4-bit weights packed as int4 (opset 21): the smallest file
VITQ_DQ_CONV = "vitq-int8-dqconv"  # float-run conv weights kept as int8 codes + DequantizeLinear (ExportOptions.float_conv_weights off)
FLOAT_VARIANTS = (FP32, FP32_OPT)
VITQ_VARIANTS = (VITQ_U8S8, VITQ_S8S8, VITQ_INT4W, VITQ_DQ_CONV)
DEFAULT_VARIANTS = (FP32, FP32_OPT, ORT_STATIC, VITQ_U8S8, VITQ_S8S8)
ALL_VARIANTS = (*DEFAULT_VARIANTS, VITQ_INT4W, VITQ_DQ_CONV)


@dataclass(frozen=True)
class Variant:
    """One ONNX file in a comparison."""

    name: str
    path: Path
    description: str
