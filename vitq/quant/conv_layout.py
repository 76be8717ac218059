"""Which convolutions run faster as integer kernels in onnxruntime (CPU EP), for ``conv_layout="integer"``.

onnxruntime turns ``DQ -> Conv -> Q`` into QLinearConv only when the conv's output is quantized; whether that pays
depends on the conv's shape. Measured single-op speedups over fp32 (``benchmarks/results/ort_op_speed.json``,
1 thread, batch 1, each integer case including the QuantizeLinear of its float input):

* full 3x3 convs from 64 channels: 2.5x; 1x1 convs from 64-96 channels: 1.5-1.7x; a ViT's patch embedding: 2.4x;
* a 1x1 conv from 16 channels: 1.04x (break-even);
* depthwise convs: 0.72-0.85x; the 3-channel 3x3 stem: 0.45x.

So a conv runs integer when it is not grouped and either patchifies (stride = kernel) or reads at least
``MIN_CHANNELS`` channels (``MIN_CHANNELS_1X1`` for a 1x1 conv). Everything else runs in float, where a
quantize/dequantize pair on its input would only add time.
"""
from __future__ import annotations

from torch import nn

MIN_CHANNELS = 16  # a 3x3 conv from this many input channels already gains from the integer kernel
MIN_CHANNELS_1X1 = 32  # below this a 1x1 conv only breaks even, and its output Q/DQ pair costs more


def runs_integer(conv: nn.Conv2d) -> bool:
    """Whether onnxruntime's integer conv (QLinearConv) is faster than its float conv for ``conv``."""
    if conv.groups != 1:
        return False
    kernel, stride = tuple(conv.kernel_size), tuple(conv.stride)
    if kernel == stride and kernel != (1, 1):
        return True  # patchifying conv (ViT patch embedding)
    if kernel == (1, 1):
        return conv.in_channels >= MIN_CHANNELS_1X1
    return conv.in_channels >= MIN_CHANNELS
