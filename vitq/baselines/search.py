"""The layer-wise scale search EasyQuant and PTQ4ViT share; only the metric differs.

For every quantized layer (Linear, Conv2d, MatMul) in execution order:

1. capture the layer's inputs as the quantized model feeds them (earlier layers already searched,
   so error accumulated upstream is what the scales must cope with) and the float model's output
   of the same layer (plus, for PTQ4ViT, the gradient of the task loss w.r.t. that output);
2. for ``rounds`` rounds, search each of the layer's quantizers in turn, weight first, with the
   others fixed: every candidate state is applied and the layer re-run on the captured inputs;
   the best state by the metric is kept (the current state is the first contender, so the
   metric never gets worse than the calibrated start).

Candidates: a uniform (or log) quantizer's calibrated scale times each multiplier; a
twin-uniform quantizer keeps its anchored range and tries power-of-two shifts for the other
(:func:`candidates`). Captures live on the CPU for one layer at a time; batches move to the
compute device one by one.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from vitq import distributed
from vitq.calibration import quantization_disabled
from vitq.quant.hooks import StopForward, run_until
from vitq.quant.modules import QuantConv2d, QuantLinear, QuantMatMul
from vitq.quant.quantizer import Quantizer
from vitq.quant.twin import TwinUniformQuantizer
from vitq.recon.cache import snapshot

# (quantized output, float output, gradient of the loss w.r.t. the output or None) -> loss summed
# over the batch, lower is better
Metric = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
State = dict[str, torch.Tensor]
SEARCHED_LAYERS = (QuantLinear, QuantConv2d, QuantMatMul)


@dataclass(frozen=True)
class SearchSettings:
    """Search space and effort. The papers use 100 candidates (EasyQuant: 0.5..2 x the initial
    scale, PTQ4ViT: 3 rounds); these defaults keep a CPU run of a small ViT to minutes. The range
    stops at 1.2 because vitq starts from min-max scales: larger steps only add rounding error."""

    low: float = 0.5
    high: float = 1.2
    n_candidates: int = 20
    rounds: int = 2

    @property
    def multipliers(self) -> torch.Tensor:
        return torch.linspace(self.low, self.high, self.n_candidates)


DEFAULT_SEARCH = SearchSettings()


@dataclass(frozen=True)
class LayerResult:
    """The metric (mean per calibration sample) of one layer before and after its search."""

    name: str
    initial: float
    final: float


@dataclass
class LayerData:
    """What one layer is searched on, one entry per calibration batch (CPU tensors)."""

    inputs: list[tuple[torch.Tensor, ...]]
    targets: list[torch.Tensor]
    grads: list[torch.Tensor] | None

    @property
    def n_samples(self) -> int:
        return sum(t.shape[0] for t in self.targets)


def layer_quantizers(layer: nn.Module) -> list[Quantizer]:
    """The layer's calibrated, enabled quantizers, weight first (EasyQuant's alternation order)."""
    if isinstance(layer, QuantMatMul):
        found = [layer.a_quant, layer.b_quant]
    else:
        found = [layer.weight_quant, layer.input_quant]
    return [q for q in found if q.enabled and bool(q.initialized)]


def candidates(q: Quantizer, multipliers: torch.Tensor, base: torch.Tensor) -> list[State]:
    """Candidate states of one quantizer (see the module docstring); uniform candidates are
    multiples of ``base``, the calibrated scale, in every round (not of the current scale: that
    would compound the range to 0.25..1.44 over two rounds).

    Twin-uniform, unsigned (post-softmax): the coarse step covers the maximum and stays; the fine
    step moves through 0..2(k-1) octaves below it. Signed (post-GELU): the fine step covers the
    negative tail and stays; the coarse step moves two octaves down and one up from calibration.
    """
    if isinstance(q, TwinUniformQuantizer):
        shift = int(q.shift)
        if q.signed:
            shifts = range(max(0, shift - 2), shift + 2)
            return [{"scale": q.scale.detach().clone(), "shift": torch.tensor([m])} for m in shifts]
        coarse = float(q.coarse_scale)
        return [{"scale": torch.tensor([math.ldexp(coarse, -m)]), "shift": torch.tensor([m])}
                for m in range(2 * (q.bits - 1) + 1)]
    return [{"scale": base * m} for m in multipliers.tolist()]


@torch.no_grad()
def apply_state(q: Quantizer, state: State) -> None:
    for key, value in state.items():
        getattr(q, key).copy_(value)


def current_state(q: Quantizer, like: State) -> State:
    return {key: getattr(q, key).detach().clone() for key in like}


@torch.no_grad()
def execution_order(model: nn.Module, x: torch.Tensor) -> list[tuple[str, nn.Module]]:
    """Searchable layers in the order the forward pass first calls them (not registration order:
    timm's attention registers ``proj`` before the matmuls it runs after)."""
    order: list[tuple[str, nn.Module]] = []
    handles = [module.register_forward_pre_hook(lambda m, _a, name=name: order.append((name, m)))
               for name, module in model.named_modules()
               if isinstance(module, SEARCHED_LAYERS) and layer_quantizers(module)]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    first: dict[str, nn.Module] = {}
    for name, module in order:
        first.setdefault(name, module)  # a layer called twice is searched once, at its first call
    return list(first.items())


@torch.no_grad()
def _quantized_inputs(model: nn.Module, layer: nn.Module, batches: Sequence[torch.Tensor],
                      device: str) -> list[tuple[torch.Tensor, ...]]:
    got: list[tuple[torch.Tensor, ...]] = []
    run_until(model, layer, (x.to(device) for x in batches), lambda args: got.append(tuple(snapshot(a) for a in args)))
    return got


def _float_outputs(model: nn.Module, layer: nn.Module, batches: Sequence[torch.Tensor], device: str,
                   with_grad: bool) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
    """The float model's output of ``layer`` and, with ``with_grad``, d loss / d output, where the
    loss is the cross-entropy of the float prediction against its own top-1 class (PTQ4ViT's task
    loss without labels: calibration images are unlabelled)."""
    outs: list[torch.Tensor] = []
    grads: list[torch.Tensor] = []
    live: list[torch.Tensor] = []

    def hook(_m: nn.Module, _a: tuple, out: torch.Tensor) -> torch.Tensor:
        outs.append(snapshot(out))
        if not with_grad:
            raise StopForward
        live.append(out)
        return out.clone()  # an in-place activation after the layer (timm's SiLU) must not rewrite ``out``

    handle = layer.register_forward_hook(hook)
    try:
        with quantization_disabled(model), torch.set_grad_enabled(with_grad):
            for x in batches:
                live.clear()
                try:
                    logits = model(x.to(device).detach().requires_grad_(with_grad))  # detach: never mark the caller's batch
                except StopForward:
                    continue
                loss = F.cross_entropy(logits, logits.detach().argmax(-1), reduction="sum")
                grads.append(torch.autograd.grad(loss, live[0])[0].cpu())
    finally:
        handle.remove()
    return outs, grads if with_grad else None


def capture_layer(model: nn.Module, layer: nn.Module, batches: Sequence[torch.Tensor], device: str,
                  with_grad: bool) -> LayerData:
    inputs = _quantized_inputs(model, layer, batches, device)
    targets, grads = _float_outputs(model, layer, batches, device, with_grad)
    return LayerData(inputs, targets, grads)


@torch.no_grad()
def layer_loss(layer: nn.Module, data: LayerData, metric: Metric, device: str) -> float:
    """Mean metric per calibration sample of ``layer`` (quantized) against the float targets."""
    total = 0.0
    for i, args in enumerate(data.inputs):
        grad = data.grads[i].to(device) if data.grads is not None else None
        total += float(metric(layer(*(a.to(device) for a in args)), data.targets[i].to(device), grad))
    total, n_samples = distributed.sum_over_ranks(total, data.n_samples)  # under torchrun: over every rank's images
    return total / n_samples


def search_layer(layer: nn.Module, data: LayerData, metric: Metric, settings: SearchSettings, device: str) -> tuple[float, float]:
    """Alternating search over the layer's quantizers; returns (initial, final) metric."""
    initial = best = layer_loss(layer, data, metric, device)
    bases = {id(q): q.scale.detach().clone() for q in layer_quantizers(layer)}
    for _ in range(settings.rounds):
        for q in layer_quantizers(layer):
            states = candidates(q, settings.multipliers, bases[id(q)])
            best_state = current_state(q, states[0])
            for state in states:
                apply_state(q, state)
                loss = layer_loss(layer, data, metric, device)
                if loss < best:
                    best, best_state = loss, state
            apply_state(q, best_state)
    return initial, best


def search_scales(model: nn.Module, batches: Sequence[torch.Tensor], metric: Metric, settings: SearchSettings,
                  device: str = "cpu", progress: bool = True, with_grad: bool = False) -> list[LayerResult]:
    """Search the scales of every quantized layer of a calibrated model, in execution order."""
    model.eval().to(device)
    results = []
    layers = execution_order(model, batches[0][:1].to(device))
    for name, layer in tqdm(layers, desc="scale search", unit="layer", disable=not progress, leave=False):
        data = capture_layer(model, layer, batches, device, with_grad)
        initial, final = search_layer(layer, data, metric, settings, device)
        results.append(LayerResult(name, initial, final))
    return results
