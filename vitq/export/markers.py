"""Find every quantizer's tensor in the exported graph by construction, not by name guessing.

Before ``torch.onnx.export`` each enabled quantizer is swapped for an :class:`ExportMarker`, an
identity whose ONNX symbolic is a custom ``vitq::QuantMarker`` node carrying the quantizer's index.
The exported float graph then holds one marker exactly where vitq quantized a tensor; the QDQ pass
(:mod:`vitq.export.qdq`) replaces each marker with QuantizeLinear/DequantizeLinear built from that
quantizer's parameters.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from vitq.errors import VitqError
from vitq.quant.modules import QuantConv2d, QuantLinear, set_child
from vitq.quant.observers import scale_zero_point
from vitq.quant.quantizer import LogQuantizer, QParams, Quantizer, UniformQuantizer
from vitq.quant.twin import TwinUniformQuantizer

MARKER_DOMAIN = "vitq"
MARKER_OP = "QuantMarker"
FALLBACK_BITS = 8  # log2 / log-sqrt2 / twin-uniform quantizers export as a uniform grid of this many bits
NON_AFFINE = (LogQuantizer, TwinUniformQuantizer)  # grids QuantizeLinear cannot express


@dataclass(frozen=True)
class Site:
    """One quantized tensor: the quantizer's module name, its parameters and, for weights, the integer codes."""

    name: str
    qparams: QParams
    codes: torch.Tensor | None  # integer weight codes (learned rounding included), None for activations

    @property
    def is_weight(self) -> bool:
        return self.codes is not None


class _MarkerFn(torch.autograd.Function):
    """Identity in torch; ``vitq::QuantMarker(index)`` in the exported graph."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, index: int) -> torch.Tensor:  # noqa: ARG004 - autograd signature
        return x.clone()

    @staticmethod
    def symbolic(g, x, index: int):
        out = g.op(f"{MARKER_DOMAIN}::{MARKER_OP}", x, index_i=index)
        out.setType(x.type())
        return out


class ExportMarker(nn.Module):
    """Stands in for an enabled quantizer while tracing (layers ask ``input_quant.enabled``)."""

    enabled = True

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _MarkerFn.apply(x, self.index)


def uniform_fallback(q: LogQuantizer | TwinUniformQuantizer) -> UniformQuantizer:
    """The documented export of a non-affine quantizer: uniform unsigned 8-bit over its value range.

    ONNX QuantizeLinear is affine only, so neither a log grid nor PTQ4ViT's twin-uniform grids can be
    expressed. An 8-bit uniform grid over the same range (``[0, scale]`` for log quantizers, both
    twin ranges together for twin-uniform ones) keeps the large values exact to 1/255 of the range;
    the exported model's accuracy (not the torch fake-quantized one's) is what vitq reports.
    """
    u = UniformQuantizer(FALLBACK_BITS, symmetric=False)
    lo, hi = q.value_range()
    scale, zero_point = scale_zero_point(torch.tensor([lo]), torch.tensor([hi]), u.grid)
    with torch.no_grad():
        u.scale.copy_(scale)
        u.zero_point.copy_(zero_point)
    u.initialized.fill_(True)
    return u


def check_calibrated(model: nn.Module) -> list[tuple[str, Quantizer]]:
    """The enabled quantizers of ``model``; raises if there are none or one was never calibrated."""
    enabled = [(n, m) for n, m in model.named_modules() if isinstance(m, Quantizer) and m.enabled]
    if not enabled:
        raise VitqError("the model has no enabled quantizers: wrap and calibrate it first (vitq quantize)")
    missing = [n for n, q in enabled if not bool(q.initialized)]
    if missing:
        raise VitqError(f"the model was never calibrated ({len(missing)} quantizers without scales, e.g. {missing[0]}); "
                        "run vitq quantize / vitq.pipeline.quantize.quantize first")
    return enabled


def fallback_quantizers(model: nn.Module) -> list[str]:
    """The enabled quantizers with no QDQ form, which export through :func:`uniform_fallback`: where this is not
    empty, the exported model computes something else than the torch model that was measured."""
    return [name for name, module in model.named_modules() if isinstance(module, NON_AFFINE) and module.enabled]


def fallback_warning(names: list[str]) -> str:
    """One line telling the user the export is not the measured model, and what exports exactly."""
    return (f"warning: {len(names)} quantizers (e.g. {names[0]}) have no QDQ form and export as {FALLBACK_BITS}-bit "
            "uniform, so the ONNX model differs from the torch one; quantize with softmax_quantizer=uniform "
            f"(softmax_bits={FALLBACK_BITS}) and post_act_quantizer=uniform for an exact export")


def export_reference(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose fake-quant forward is exactly what the ONNX export computes.

    Only the non-affine quantizers change (to :func:`uniform_fallback`); parity is checked against this model.
    """
    check_calibrated(model)
    ref = copy.deepcopy(model).eval()
    modules = dict(ref.named_modules())
    for name in fallback_quantizers(ref):
        set_child(ref, name, uniform_fallback(modules[name]))
    return ref


def mark_quantizers(reference: nn.Module) -> tuple[nn.Module, list[Site]]:
    """Copy ``reference`` (from :func:`export_reference`) with every enabled quantizer replaced by a marker."""
    marked = copy.deepcopy(reference)
    weights = {id(m.weight_quant): m.weight for m in marked.modules() if isinstance(m, (QuantLinear, QuantConv2d))}
    sites: list[Site] = []
    for name, q in check_calibrated(marked):
        if not isinstance(q, UniformQuantizer):
            raise VitqError(f"quantizer {name} ({q.kind}) has no ONNX QDQ form")
        weight = weights.get(id(q))
        codes = q.to_int(weight.detach()) if weight is not None else None
        sites.append(Site(name, q.qparams(), codes))
        set_child(marked, name, ExportMarker(len(sites) - 1))
    return marked, sites
