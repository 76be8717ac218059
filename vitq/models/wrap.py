"""Wrap a float timm model into a fake-quant model (in place, brevitas-style layer map).

What gets quantized (DESIGN.md): the input and weight of every Linear and Conv2d (qkv, proj, fc1,
fc2, head, patch embedding), both operands of q @ k^T and of probs @ v (and of the hybrids' other
attention products, see :mod:`vitq.models.hybrid_attention`). LayerNorm, softmax and GELU stay
float, as in the papers and in onnxruntime; BatchNorm of hybrid models is folded into its conv.
"""
from __future__ import annotations

from collections.abc import Iterator

from torch import nn

from vitq.models.bn_fold import fold_batchnorms
from vitq.models.families import Family, family_for
from vitq.models.hybrid_attention import ProductSites
from vitq.models.rotation import HiddenRotation
from vitq.models.units import reads_mlp_activation
from vitq.quant.config import QuantConfig
from vitq.quant.conv_layout import runs_integer
from vitq.quant.layout import Layout, layout_of, relayout
from vitq.quant.modules import MatMul, QuantConv2d, QuantLinear, QuantMatMul, set_child
from vitq.quant.quantizer import LogQuantizer, Quantizer, UniformQuantizer
from vitq.quant.twin import TwinUniformQuantizer


class QuantizerFactory:
    """Builds each quantizer from the config, the first/last policy and per-name overrides."""

    def __init__(self, config: QuantConfig, family: Family) -> None:
        self.config = config
        self.edge_layers = set(family.first) | set(family.last)
        self.w_observer, self.a_observer = config.weight_observer, config.activation_observer

    def _resolve(self, name: str, layer: str, bits: int, observer: str) -> tuple[int, str, bool, dict]:
        """(bits, observer, enabled, observer kwargs) of quantizer ``name`` after policies and overrides."""
        enabled = True
        if layer in self.edge_layers and self.config.first_last != "same":
            enabled = self.config.first_last != "float"
            bits = 8
        opts = self.config.override_for(name)
        observer = opts.get("observer", observer)
        kwargs = {"percentile": opts.get("percentile", self.config.percentile)} if observer == "percentile" else {}
        return opts.get("bits", bits), observer, opts.get("enable", enabled), kwargs

    def _finish(self, q: Quantizer, enabled: bool) -> Quantizer:
        q.enabled = enabled
        return q

    def weight(self, name: str, layer: str, channels: int) -> Quantizer:
        bits, obs, enabled, kwargs = self._resolve(name, layer, self.config.w_bits, self.w_observer)
        q = UniformQuantizer(bits, symmetric=True, channels=channels, ch_axis=0, observer=obs, observer_kwargs=kwargs)
        return self._finish(q, enabled)

    def activation(self, name: str, layer: str, bits: int | None = None) -> Quantizer:
        bits, obs, enabled, kwargs = self._resolve(name, layer, bits or self.config.a_bits, self.a_observer)
        return self._finish(UniformQuantizer(bits, symmetric=False, observer=obs, observer_kwargs=kwargs), enabled)

    def probabilities(self, name: str, layer: str) -> Quantizer:
        bits = self.config.softmax_bits or self.config.a_bits
        if self.config.softmax_quantizer == "uniform":
            return self.activation(name, layer, bits)
        bits, _, enabled, _ = self._resolve(name, layer, bits, "minmax")
        if self.config.softmax_quantizer == "twin_uniform":
            return self._finish(TwinUniformQuantizer(bits, signed=False), enabled)
        return self._finish(LogQuantizer(bits, base=self.config.softmax_quantizer), enabled)

    def post_activation(self, name: str, layer: str) -> Quantizer:
        """The input of an MLP's second Linear (GELU output): signed twin-uniform for PTQ4ViT."""
        if self.config.post_act_quantizer == "uniform":
            return self.activation(name, layer)
        bits, _, enabled, _ = self._resolve(name, layer, self.config.a_bits, "minmax")
        return self._finish(TwinUniformQuantizer(bits, signed=True), enabled)


# softmax attention's two products: q @ k^T, then probs @ v (operand a is the softmax output)
SOFTMAX_ATTENTION_SITES: ProductSites = {"qk_matmul": (QuantMatMul, False), "av_matmul": (QuantMatMul, True)}


def _product(factory: QuantizerFactory, name: str, layer: str, cls: type[QuantMatMul], probabilities: bool) -> QuantMatMul:
    """A quantized product named ``name``; operand ``a`` gets the softmax quantizer when it is a softmax output."""
    a_quant = factory.probabilities if probabilities else factory.activation
    return cls(a_quant(f"{name}.a_quant", layer), factory.activation(f"{name}.b_quant", layer))


def wrap_model(model: nn.Module, model_name: str, config: QuantConfig, bias_offsets: bool = False) -> nn.Module:
    """Swap attention, Linear and Conv2d modules for quantized ones; returns the same model object.

    The family adapter (``vitq.models.families``) says which attention modules to replace and, for
    hybrid (conv + attention) families, which BatchNorms to fold into the preceding convs first, so a
    quantized checkpoint's state dict matches what ``wrap_model`` makes of a fresh model.
    ``bias_offsets``: give every layer a ``bias_delta`` buffer (bias correction, learned biases).
    """
    family = family_for(model_name)
    factory = QuantizerFactory(config, family)
    if family.fold_pairs is not None:
        fold_batchnorms(model, family.fold_pairs())
    attention = family.attention()
    probability_inputs: set[str] = set()
    for name, module in list(model.named_modules()):
        quant_cls = attention.get(type(module))
        if quant_cls is not None:
            sites = getattr(quant_cls, "product_sites", SOFTMAX_ATTENTION_SITES)
            products = {site: _product(factory, f"{name}.{site}", name, cls, probs) for site, (cls, probs) in sites.items()}
            set_child(model, name, quant_cls(module, **products))
            probability_inputs.update(f"{name}.{child}" for child in getattr(quant_cls, "probability_inputs", ()))
        elif type(module) is MatMul:
            set_child(model, name, _product(factory, name, name, QuantMatMul, module.probabilities))
    for name, module in list(model.named_modules()):
        if type(module) not in (nn.Linear, nn.Conv2d):
            continue
        if name in probability_inputs:
            input_quant = factory.probabilities
        elif reads_mlp_activation(model, name):
            input_quant = factory.post_activation
        else:
            input_quant = factory.activation
        if type(module) is nn.Linear:
            new: nn.Module = QuantLinear(module, input_quant(f"{name}.input_quant", name),
                                         factory.weight(f"{name}.weight_quant", name, module.out_features),
                                         bias_offsets)
        else:
            new = _quant_conv(factory, name, module, input_quant(f"{name}.input_quant", name), bias_offsets)
        set_child(model, name, new)
    return model


def _quant_conv(factory: QuantizerFactory, name: str, conv: nn.Conv2d, input_quant: Quantizer,
                bias_offsets: bool) -> QuantConv2d:
    """A conv's quantized form under the config's ``conv_layout``: with ``integer``, a conv whose integer kernel pays
    (``vitq.quant.conv_layout.runs_integer``) also quantizes its output, and any other conv leaves its input float
    (its weight stays quantized)."""
    output_quant = None
    if factory.config.conv_layout == "integer":
        if runs_integer(conv):
            output_quant = factory.activation(f"{name}.output_quant", name)
        else:
            input_quant.enabled = False
    return QuantConv2d(conv, input_quant, factory.weight(f"{name}.weight_quant", name, conv.out_channels),
                       bias_offsets, output_quant)


def iter_quantizers(model: nn.Module) -> Iterator[tuple[str, Quantizer]]:
    for name, module in model.named_modules():
        if isinstance(module, Quantizer):
            yield name, module


def float_layers_left(model: nn.Module) -> list[str]:
    """Names of layers that compute in float: unwrapped Linear/Conv, unfolded BatchNorm (a float
    per-channel affine between quantized layers), online rotations (a float MatMul) or quantizers switched off."""
    float_types = (nn.BatchNorm2d, HiddenRotation)
    left = [n for n, m in model.named_modules() if type(m) in (nn.Linear, nn.Conv2d) or isinstance(m, float_types)]
    left += [n for n, q in iter_quantizers(model) if not q.enabled]
    return left


def quantizer_layouts(model: nn.Module) -> dict[str, dict]:
    """Every uniform quantizer's layout, recorded in quantized checkpoints (see ``vitq.quant.layout``)."""
    return {name: layout_of(q).to_dict() for name, q in iter_quantizers(model) if isinstance(q, UniformQuantizer)}


def apply_layouts(model: nn.Module, layouts: dict[str, dict]) -> None:
    """Rebuild the quantizers whose recorded layout differs from what wrapping produced."""
    quantizers = dict(iter_quantizers(model))
    for name, spec in layouts.items():
        layout = Layout(**spec)
        q = quantizers.get(name)
        if isinstance(q, UniformQuantizer) and layout_of(q) != layout:
            set_child(model, name, relayout(q, layout))
