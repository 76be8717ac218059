"""Export choices and the parity bar as plain data (no onnx / onnxruntime import), so the command line
can offer them without loading the export stack."""
from __future__ import annotations

from dataclasses import dataclass

WEIGHT_CONTAINERS = ("int8", "int4")
ACTIVATION_TYPES = ("uint8", "int8")
# The parity gate (vitq/export/parity.py, docs/deployment.md "Parity"); measured in benchmarks/results/parity_gate_deit_tiny.json.
MIN_AGREEMENT = 99.0  # %: top-1 agreement with the float64 reference that float32 rounding noise alone reaches at least
# (a flip-rate floor of 1 %); the gate allows flips up to a binomial bound for that rate, or torch float32's own if higher
FALSE_ALARM = 1e-3  # probability that rounding noise alone exceeds the allowed number of top-1 flips
CODE_TOLERANCE = 1  # steps: a rounding tie may land one integer code apart
MAX_CODES_OFF = 5.0  # %: of one quantization point's codes more than CODE_TOLERANCE steps from the float64 reference
# (or twice torch float32's own share there, if more: noise compounds with depth)
MAX_HISTOGRAM_SHIFT = 2.0  # %: total-variation distance of a node's code histogram from float64's (or twice torch float32's)
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

    ``float_conv_weights``: a 3x3 (or larger) convolution that onnxruntime runs in float (no integer kernel:
    its output is not quantized, or it is depthwise) gets its weight as the dequantized float32 values, the
    numbers DequantizeLinear would produce, as a constant. onnxruntime then pre-packs it (NCHWc) as in the
    fp32 graph; behind a runtime DequantizeLinear the same conv runs 1.1-6x slower
    (``benchmarks/results/ort_op_speed.json``). The cost is 4 bytes per such weight instead of 1.

    ``contrib_ops``: write SiLU as onnxruntime's ``com.microsoft.QuickGelu`` (``vitq.export.fusions``), which
    onnxruntime cannot fuse by itself behind a DequantizeLinear. Off: standard ONNX ops only, for other runtimes.
    """

    weight_container: str = "int8"
    activation_type: str = "uint8"
    float_conv_weights: bool = True
    contrib_ops: bool = True
