"""Every quantization method in one registry: calibration-only, baseline search and reconstruction.

One file per method declares it (``register_method(Method(...))``); a new method is one more file
imported below, or a ``register_method`` call in the user's own code. ``vitq.pipeline.quantize``
runs any of them through the same steps.
"""
from vitq.methods import (  # noqa: F401  (each module registers its method)
    adaround,
    brecq,
    easyquant,
    fqvit,
    minmax,
    mse,
    percentile,
    pfcr,
    ptq4vit,
    qhyvit,
)
from vitq.methods.base import METHODS, Method, Refine, get_method, lazy, method_names, register_method

__all__ = ["METHODS", "Method", "Refine", "get_method", "lazy", "method_names", "register_method"]
