"""Export choices and the parity bar as plain data (no onnx / onnxruntime import), so the command line
can offer them without loading the export stack."""
from __future__ import annotations

from dataclasses import dataclass

WEIGHT_CONTAINERS = ("int8", "int4")
ACTIVATION_TYPES = ("uint8", "int8")
MIN_AGREEMENT = 99.5  # percent of images with the same top-1 class in ORT and the float64 reference
# onnxruntime execution providers vitq's targets use
CPU = "CPUExecutionProvider"
XNNPACK = "XnnpackExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"


@dataclass(frozen=True)
class ExportOptions:
    """Container choices; none of them changes the computed values.

    ``weight_container="int4"`` packs weights of <= 4 bits two per byte (opset 21; ORT then runs
    those layers as DQ + float MatMul: smallest file, not fastest). ``activation_type="int8"``
    shifts unsigned activation grids to signed for S8S8 kernels.
    """

    weight_container: str = "int8"
    activation_type: str = "uint8"
