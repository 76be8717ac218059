"""The model files a benchmark compares, by name: fp32 (plain and transformer-optimized), onnxruntime's
``quantize_static`` and weight-only ``MatMulNBits``, NNCF's ``quantize``, Intel Neural Compressor's ONNX static quantizer
and vitq's QDQ exports (built by ``vitq.pipeline.variants``)."""
from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from vitq.errors import VitqError

FP32, FP32_OPT, ORT_STATIC, VITQ_U8S8, VITQ_S8S8 = "fp32", "fp32-opt", "ort-quantize-static", "vitq-int8", "vitq-int8-s8s8"
VITQ_INT4W = "vitq-int4w"  # <= 4-bit weights packed as int4 (opset 21): the smallest file
VITQ_DQ_CONV = "vitq-int8-dqconv"  # float-run conv weights kept as int8 codes + DequantizeLinear (ExportOptions.float_conv_weights off)
VITQ_STANDARD = "vitq-int8-standard"  # standard ONNX ops only (ExportOptions.contrib_ops off: SiLU as Sigmoid + Mul)
NNCF = "nncf"  # NNCF's post-training quantization of the same fp32 graph (optional package: pip install 'vitq[peers]')
ORT_NBITS = "ort-matmulnbits"  # onnxruntime's weight-only int4 (MatMulNBits) on the same fp32 graph (needs onnx-ir)
INC = "inc"  # Intel Neural Compressor's ONNX static quantization of the same fp32 graph (optional package, see INC_INSTALL)
FLOAT_VARIANTS = (FP32, FP32_OPT)
VITQ_VARIANTS = (VITQ_U8S8, VITQ_S8S8, VITQ_INT4W, VITQ_DQ_CONV, VITQ_STANDARD)
DEFAULT_VARIANTS = (FP32, FP32_OPT, ORT_STATIC, VITQ_U8S8, VITQ_S8S8)
ALL_VARIANTS = (*DEFAULT_VARIANTS, VITQ_INT4W, VITQ_DQ_CONV, VITQ_STANDARD, NNCF, INC, ORT_NBITS)
# onnx-neural-compressor 1.0 pins numpy<2, which would downgrade the numpy torch runs on; it runs on numpy 2
# (measured with 2.4), so it is installed without its pins, beside the few packages it imports
INC_INSTALL = ("pip install --no-deps onnx-neural-compressor==1.0 onnxruntime-extensions py-cpuinfo prettytable "
               "transformers")
# variant -> (module, install command) of the optional package that builds it
OPTIONAL_PACKAGES = {NNCF: ("nncf", "pip install 'vitq[peers]'"), INC: ("onnx_neural_compressor", INC_INSTALL),
                     ORT_NBITS: ("onnx_ir", "pip install 'vitq[peers]'")}


def check_installed(names: Iterable[str]) -> None:
    """Fail before any slow work when a requested variant needs an optional package that is not installed."""
    for name in names:
        module, install = OPTIONAL_PACKAGES.get(name, (None, None))
        if module is not None and importlib.util.find_spec(module) is None:
            raise VitqError(f"variant {name} needs the {module} package, which is not installed: {install}")


@dataclass(frozen=True)
class Variant:
    """One ONNX file in a comparison."""

    name: str
    path: Path
    description: str
