"""Calibration: set every quantizer's initial scale from the weights and from calibration images.

Weights are observed once, directly; activations are observed over the calibration batches with
weights already fake-quantized, so activation ranges match what the quantized model will see.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from tqdm import tqdm

from vitq import distributed
from vitq.errors import NonFiniteError, VitqError
from vitq.quant.hooks import run_until
from vitq.quant.modules import QuantConv2d, QuantLinear
from vitq.quant.quantizer import Quantizer

log = logging.getLogger(__name__)


def weight_quantizers(model: nn.Module) -> Iterator[tuple[nn.Module, Quantizer]]:
    for module in model.modules():
        if isinstance(module, (QuantLinear, QuantConv2d)):
            yield module, module.weight_quant


def activation_quantizers(model: nn.Module) -> list[Quantizer]:
    weights = {id(q) for _, q in weight_quantizers(model)}
    return [m for m in model.modules() if isinstance(m, Quantizer) and id(m) not in weights]


def name_quantizers(model: nn.Module) -> None:
    """Give every quantizer its module name (``Quantizer.label``) for error messages."""
    for name, module in model.named_modules():
        if isinstance(module, Quantizer):
            module.label = f"quantizer {name}"


@torch.no_grad()
def init_weight_quantizers(model: nn.Module) -> None:
    name_quantizers(model)
    for layer, quantizer in weight_quantizers(model):
        quantizer.start_observing()
        quantizer(layer.weight)
        quantizer.stop_observing()


@contextmanager
def quantization_disabled(model: nn.Module) -> Iterator[None]:
    """Temporarily run the wrapped model in float (the fp32 reference shares the same weights)."""
    quantizers = [m for m in model.modules() if isinstance(m, Quantizer)]
    saved = [q.enabled for q in quantizers]
    for q in quantizers:
        q.enabled = False
    try:
        yield
    finally:
        for q, enabled in zip(quantizers, saved):
            q.enabled = enabled


class FloatView(nn.Module):
    """The float model behind a wrapped model, as a module: forward runs with quantization off."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with quantization_disabled(self.model):
            return self.model(x)


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable[torch.Tensor], device: str = "cpu", progress: bool = True) -> None:
    """Initialise all quantizers of a wrapped model: weights directly, activations from ``batches``."""
    model.eval().to(device)
    init_weight_quantizers(model)
    acts = activation_quantizers(model)
    for q in acts:
        q.start_observing()
    n_batches = 0
    for x in tqdm(batches, desc="calibrate", unit="batch", disable=not progress, leave=False):
        try:
            model(x.to(device))
        except NonFiniteError as e:
            for q in acts:
                q.observing, q.observer = False, None
            raise NonFiniteError(f"calibration batch {n_batches}: {e} (the model overflows on these images)") from None
        n_batches += 1
    if n_batches == 0:
        raise VitqError("the calibration set is empty")
    for q in acts:
        if q.observer is not None:
            q.observer.merge()  # under torchrun: the statistics of every rank's images
        q.stop_observing()
    log.info("calibrated %d weight and %d activation quantizers", sum(1 for _ in weight_quantizers(model)), len(acts))


@torch.no_grad()
def correct_biases(model: nn.Module, batches: Iterable[torch.Tensor], device: str = "cpu", progress: bool = True) -> int:
    """Empirical bias correction: for each quantized layer with a ``bias_delta``, in forward order,
    subtract the mean (over calibration images and positions) of ``layer_q(x) - layer_fp(x)``, the
    error its own quantization adds to its output given the input the quantized model feeds it.

    At 3-4 bits a layer's rounding and clipping errors do not average to zero (e.g. a coarse grid
    maps GELU's small negative outputs, down to -0.17, onto the zero-point), and that shift
    accumulates through the residual stream; the correction is a per-channel constant, so it folds
    into the bias of the deployed layer. Layers are corrected one after another, each seeing its
    predecessors' corrections; each pass stops at the layer being corrected (a layer called twice
    per forward is corrected on its first call). Returns the count."""
    layers = [m for m in model.modules() if isinstance(m, (QuantLinear, QuantConv2d)) and m.bias_delta is not None]
    batches = [x.to(device) for x in batches]
    for layer in tqdm(layers, desc="bias correction", unit="layer", disable=not progress, leave=False):
        total, count = torch.zeros_like(layer.bias_delta), 0

        def accumulate(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            nonlocal total, count
            with quantization_disabled(module):
                error = output - module.forward(inputs[0])  # forward(), not __call__: no re-entry into this hook
            channel = 1 if isinstance(module, QuantConv2d) else -1
            error = error.movedim(channel, -1).reshape(-1, error.shape[channel])
            total += error.sum(0)
            count += error.shape[0]

        run_until(model, layer, batches, accumulate, after=True)  # the rest of the network cannot change this layer's error
        total, (count,) = distributed.summed(total), distributed.sum_over_ranks(count)  # under torchrun: every rank's images
        layer.bias_delta -= total / count
    return len(layers)
