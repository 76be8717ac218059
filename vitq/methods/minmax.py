"""Min-max calibration: every scale covers the full observed range (no clipping)."""
from vitq.methods.base import Method, register_method

register_method(Method("minmax", "min-max calibration of weights and activations", observers=("minmax", "minmax")))
