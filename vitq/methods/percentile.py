"""Percentile calibration: activation ranges clipped at an exact percentile of every calibration value,
min-max weights; at 4 bits and below the recipe derives the low-bit settings (``vitq.recipe``)."""
from vitq.methods.base import Method, register_method

register_method(Method("percentile", "min-max weights, percentile-clipped activations (default)",
                       observers=("minmax", "percentile")))
