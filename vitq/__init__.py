"""vitq: post-training quantization of vision transformers with ONNX QDQ export.

Flow: wrap -> calibrate -> reconstruct -> export -> bench. The Python API:

    from vitq import QuantConfig, create_float_model, quantize, save_quantized, load_quantized
"""
from vitq.api import load_quantized, quantize, save_quantized
from vitq.errors import VitqError
from vitq.models import create_float_model, wrap_model
from vitq.quant import QuantConfig

__version__ = "0.1.0"
__all__ = ["QuantConfig", "VitqError", "create_float_model", "load_quantized", "quantize", "save_quantized", "wrap_model"]
