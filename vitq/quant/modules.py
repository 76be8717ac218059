"""Quantized drop-in layers: each keeps the float layer's parameters under the same names (so float
checkpoints load into a wrapped model) and adds named quantizers for its inputs and weight."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vitq.quant.quantizer import Quantizer, UniformQuantizer, round_ste


def set_child(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule at dotted path ``name`` (how wrapping and export swap layers)."""
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


class _QuantWeightLayer(nn.Module):
    """What QuantLinear and QuantConv2d share: the float layer's weight and bias under their own
    names, and an optional ``bias_delta`` (bias correction, ``vitq.calibration.correct_biases``)
    that only the quantized forward adds, so the float reference of a wrapped model stays exact."""

    def __init__(self, layer: nn.Linear | nn.Conv2d, input_quant: Quantizer, weight_quant: Quantizer,
                 bias_correction: bool) -> None:
        super().__init__()
        self.weight = layer.weight
        self.bias = layer.bias
        self.input_quant = input_quant
        self.weight_quant = weight_quant
        delta = torch.zeros_like(layer.bias.detach()) if bias_correction and layer.bias is not None else None
        self.register_buffer("bias_delta", delta)

    def quantized_bias(self) -> torch.Tensor | None:
        if self.bias_delta is None or not (self.input_quant.enabled or self.weight_quant.enabled):
            return self.bias
        return self.bias + self.bias_delta


class QuantLinear(_QuantWeightLayer):
    """``F.linear(input_quant(x), weight_quant(W), b)``; the bias stays float (int32 in export)."""

    def __init__(self, linear: nn.Linear, input_quant: Quantizer, weight_quant: Quantizer,
                 bias_correction: bool = False) -> None:
        super().__init__(linear, input_quant, weight_quant, bias_correction)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.input_quant(x), self.weight_quant(self.weight), self.quantized_bias())


class QuantConv2d(_QuantWeightLayer):
    """Conv2d with quantized input and (per-output-channel) weight, and optionally a quantized output:
    ``output_quant`` is what lets onnxruntime run the conv as an integer kernel (``DQ -> Conv -> Q`` is
    QLinearConv; ``QuantConfig.conv_layout``). It sees the conv's output after folded BatchNorm, before the
    activation."""

    def __init__(self, conv: nn.Conv2d, input_quant: Quantizer, weight_quant: Quantizer,
                 bias_correction: bool = False, output_quant: Quantizer | None = None) -> None:
        if conv.padding_mode != "zeros":
            raise ValueError(f"padding_mode {conv.padding_mode!r} is not supported")
        super().__init__(conv, input_quant, weight_quant, bias_correction)
        self.output_quant = output_quant
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride, self.padding = conv.kernel_size, conv.stride, conv.padding
        self.dilation, self.groups = conv.dilation, conv.groups

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"

    def quantized_bias(self) -> torch.Tensor | None:
        """With a quantized output the conv runs as an integer kernel, which adds the bias as int32 on the
        accumulator's grid (input scale x weight scale; onnxruntime quantizes a float bias the same way): the bias
        is rounded to that grid here too, so torch computes what the kernel does."""
        bias = super().quantized_bias()
        step = self.accumulator_step()
        return bias if bias is None or step is None else round_ste(bias / step) * step

    def accumulator_step(self) -> torch.Tensor | None:
        """Per output channel, the value of one unit of the integer conv's int32 accumulator; None while the conv
        does not run as an integer kernel (no output quantizer, a quantizer off or still observing)."""
        quantizers = (self.input_quant, self.weight_quant, self.output_quant)
        if self.output_quant is None or not all(isinstance(q, UniformQuantizer) and q.quantizing for q in quantizers) \
                or self.input_quant.per_channel:
            return None
        return self.input_quant.scale * self.weight_quant.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv2d(
            self.input_quant(x), self.weight_quant(self.weight), self.quantized_bias(),
            self.stride, self.padding, self.dilation, self.groups,
        )
        return out if self.output_quant is None else self.output_quant(out)


class MatMul(nn.Module):
    """Float ``a @ b`` as a module, for model code written in vitq (e.g. Mobile-Former): ``wrap_model``
    swaps it for a :class:`QuantMatMul`. ``probabilities`` marks ``a`` as softmax output, so it gets the
    config's softmax quantizer."""

    def __init__(self, probabilities: bool = False) -> None:
        super().__init__()
        self.probabilities = probabilities

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a @ b


class QuantMatMul(nn.Module):
    """``a @ b`` with both operands quantized (attention's q @ k^T and probs @ v)."""

    def __init__(self, a_quant: Quantizer, b_quant: Quantizer) -> None:
        super().__init__()
        self.a_quant = a_quant
        self.b_quant = b_quant

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.a_quant(a) @ self.b_quant(b)


class QuantMul(QuantMatMul):
    """Broadcast elementwise ``a * b`` with both operands quantized, for activation-by-activation
    products that are not matmuls (MobileViTv2's ``relu(value) * context_vector``); a subclass so
    that code handling every quantized product (calibration, export, counts) sees it."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.a_quant(a) * self.b_quant(b)
