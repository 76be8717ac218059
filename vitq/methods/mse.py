"""MSE calibration: per-channel weight and per-tensor activation ranges chosen by quantization MSE."""
from vitq.methods.base import Method, register_method

register_method(Method("mse", "MSE-searched clipping of weights and activations", observers=("mse", "mse")))
