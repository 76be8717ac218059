"""Quantizers, observers, quantized layers and configs."""
from vitq.quant.config import PRESETS, QuantConfig, parse_bits
from vitq.quant.modules import QuantConv2d, QuantLinear, QuantMatMul
from vitq.quant.observers import OBSERVERS, IntRange
from vitq.quant.ptf import PowerOfTwoFactorQuantizer
from vitq.quant.quantizer import LogQuantizer, QParams, Quantizer, UniformQuantizer, fake_quantize
from vitq.quant.twin import TwinUniformQuantizer

__all__ = [
    "PRESETS", "QuantConfig", "parse_bits", "QuantConv2d", "QuantLinear", "QuantMatMul", "OBSERVERS",
    "IntRange", "LogQuantizer", "PowerOfTwoFactorQuantizer", "QParams", "Quantizer", "TwinUniformQuantizer",
    "UniformQuantizer", "fake_quantize",
]
