"""Quantizers, observers, quantized layers and the number format (``config``: torch-free).

Import from the submodules (``vitq.quant.config``, ``vitq.quant.quantizer``, ...): this package
imports nothing itself, so reading a config does not load torch.
"""
