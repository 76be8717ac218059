"""Parity: the ONNX model in onnxruntime must compute what the torch fake-quant model computes.

Compared on real images: top-1 agreement and logit error against the torch reference in float32
and against the same reference run in float64 (the fake-quant function without float32 rounding
noise). A fake-quant model is discontinuous: a float32 rounding difference that lands on a
rounding tie moves one integer code, and the flips compound block after block, so on real
checkpoints torch float32 itself disagrees with torch float64 on a few images (98.7 % agreement
for DeiT-Tiny W8A8 on 875 images, docs/deployment.md). The bar is therefore relative to that
noise floor: onnxruntime must agree with the float64 reference at least ``min_agreement``
(99.5 % by default), or, when torch float32 itself falls short of that, at least as well as torch
float32 does, less ``FLOAT_NOISE_SLACK`` points. An export bug (a wrong scale, a missing node)
lands far below either. On failure the graph is re-run with every QuantizeLinear output exposed
and compared with the integer codes torch produces at the same quantizer, so the error names the
first tensor whose codes diverge instead of just saying "the logits differ".
"""
from __future__ import annotations

import copy
import logging
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from vitq.errors import VitqError
from vitq.export.options import MIN_AGREEMENT
from vitq.export.runtime import open_session, run
from vitq.quant.quantizer import Quantizer

log = logging.getLogger(__name__)

FLOAT_NOISE_SLACK = 0.5  # points below torch float32's own agreement with float64 that ORT may land
CODE_TOLERANCE = 1  # a rounding tie may land one code apart
DIVERGED_FRACTION = 1e-3  # more than this share of codes off by > CODE_TOLERANCE means diverged


class ParityError(VitqError):
    """ORT and torch disagree beyond tolerance."""


@dataclass
class ParityReport:
    n_images: int
    agreement: float  # %, top-1 of ORT == top-1 of torch fake-quant (float32)
    exact_agreement: float  # %, top-1 of ORT == top-1 of the same reference run in float64
    float32_agreement: float  # %, torch float32 vs float64: the reference's own rounding-noise floor
    max_abs_logit_error: float
    mean_abs_logit_error: float
    ort_top1: float | None  # % correct when labels were given
    torch_top1: float | None

    def to_dict(self) -> dict:
        return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    def required_agreement(self, min_agreement: float = MIN_AGREEMENT) -> float:
        """The bar for ``exact_agreement``: ``min_agreement``, lowered to torch float32's own floor less the slack."""
        return min(min_agreement, self.float32_agreement - FLOAT_NOISE_SLACK)

    def passes(self, min_agreement: float = MIN_AGREEMENT) -> bool:
        return self.exact_agreement >= self.required_agreement(min_agreement)

    def summary(self) -> str:
        acc = "" if self.ort_top1 is None else f", top-1 ORT {self.ort_top1:.2f} vs torch {self.torch_top1:.2f}"
        return (f"parity on {self.n_images} images: top-1 agreement with torch float64 {self.exact_agreement:.2f} % "
                f"(torch float32 vs float64 {self.float32_agreement:.2f} %), with torch float32 {self.agreement:.2f} %; "
                f"logit error max {self.max_abs_logit_error:.4f} mean {self.mean_abs_logit_error:.5f}{acc}")


def _split(batch: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
    return (batch[0], batch[1]) if isinstance(batch, (tuple, list)) else (batch, None)


@dataclass
class ReferenceLogits:
    """The torch reference's logits per batch in float32 and float64 (computed once when several
    exports are compared)."""

    float32: list[np.ndarray]
    float64: list[np.ndarray]


@torch.no_grad()
def torch_logits(reference: nn.Module, batches: Iterable) -> ReferenceLogits:
    """Run ``reference`` and a float64 copy of it (same scales and codes, no float32 rounding noise)."""
    batches = list(batches)
    reference.eval()
    exact = copy.deepcopy(reference).double()
    return ReferenceLogits([reference(_split(b)[0]).float().numpy() for b in batches],
                           [exact(_split(b)[0].double()).numpy() for b in batches])


def compare(onnx_path: str | Path, reference: nn.Module, batches: Iterable,
            reference_logits: ReferenceLogits | None = None) -> ParityReport:
    """Run ORT CPU and the torch reference on the same batches (images, or (images, labels))."""
    session = open_session(onnx_path)
    batches = list(batches)
    logits = reference_logits if reference_logits is not None else torch_logits(reference, batches)
    n = agree = agree_exact = agree_float32 = ort_ok = torch_ok = 0
    labelled = True
    err_max, err_sum, err_count = 0.0, 0.0, 0
    for batch, t, t64 in zip(batches, logits.float32, logits.float64):
        x, y = _split(batch)
        o = run(session, x.numpy())
        diff = np.abs(o - t)
        err_max, err_sum, err_count = max(err_max, float(diff.max())), err_sum + float(diff.sum()), err_count + diff.size
        n += len(x)
        agree += int((o.argmax(1) == t.argmax(1)).sum())
        agree_exact += int((o.argmax(1) == t64.argmax(1)).sum())
        agree_float32 += int((t.argmax(1) == t64.argmax(1)).sum())
        if y is None:
            labelled = False
        else:
            ort_ok += int((o.argmax(1) == y.numpy()).sum())
            torch_ok += int((t.argmax(1) == y.numpy()).sum())
    if n == 0:
        raise VitqError("parity check needs at least one image")
    return ParityReport(n, 100.0 * agree / n, 100.0 * agree_exact / n, 100.0 * agree_float32 / n, err_max, err_sum / err_count,
                        100.0 * ort_ok / n if labelled else None, 100.0 * torch_ok / n if labelled else None)


def check_parity(onnx_path: str | Path, reference: nn.Module, batches: Iterable, min_agreement: float = MIN_AGREEMENT) -> ParityReport:
    """:func:`compare`, raising :class:`ParityError` (with the first diverging node) when ORT's agreement with the
    float64 reference is below :meth:`ParityReport.required_agreement`."""
    batches = list(batches)
    report = compare(onnx_path, reference, batches)
    log.info(report.summary())
    if not report.passes(min_agreement):
        where = first_divergence(onnx_path, reference, _split(batches[0])[0])
        raise ParityError(f"ONNX/torch parity failed: {report.summary()} (float64 agreement below the required "
                          f"{report.required_agreement(min_agreement):.2f} %); first diverging node: {where}")
    return report


def _quantize_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type == "QuantizeLinear"]


def _torch_codes(reference: nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]:
    """Integer codes each enabled activation quantizer produces for ``x`` in torch."""
    codes: dict[str, np.ndarray] = {}

    def hook(name: str):
        def capture(module: Quantizer, inputs: tuple[torch.Tensor]) -> None:
            codes[name] = module.to_int(inputs[0]).numpy().astype(np.int64)
        return capture

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in reference.named_modules()
               if isinstance(m, Quantizer) and m.enabled and hasattr(m, "to_int")]
    try:
        with torch.no_grad():
            reference(x)
    finally:
        for h in handles:
            h.remove()
    return codes


def first_divergence(onnx_path: str | Path, reference: nn.Module, x: torch.Tensor) -> str:
    """Name of the first QuantizeLinear (graph order) whose ORT codes differ from torch's, else ``logits``."""
    model = onnx.load(str(onnx_path))
    q_nodes = _quantize_nodes(model)
    known = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.ValueInfoProto(name=n.output[0]) for n in q_nodes if n.output[0] not in known)
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.onnx"
        onnx.save(model, probe)
        session = open_session(probe)
        names = [o.name for o in session.get_outputs()]
        outputs = dict(zip(names, session.run(None, {session.get_inputs()[0].name: x.numpy()})))
    expected = _torch_codes(reference, x)
    for node in q_nodes:
        site = node.name.rsplit("/", 1)[0]
        if site not in expected:
            continue
        zp = next((t for t in model.graph.initializer if t.name == node.input[2]), None)
        offset = int(onnx.numpy_helper.to_array(zp).astype(np.int64).ravel()[0]) if zp is not None else 0
        torch_zp = int(np.round(_zero_point(reference, site)))
        got = outputs[node.output[0]].astype(np.int64) - offset + torch_zp
        off = np.abs(got - expected[site]) > CODE_TOLERANCE
        if off.mean() > DIVERGED_FRACTION:
            return f"{node.name} ({100 * off.mean():.2f} % of codes differ by more than {CODE_TOLERANCE})"
    return f"logits (all {len(q_nodes)} quantized tensors match; the float ops after them differ)"


def _zero_point(reference: nn.Module, name: str) -> float:
    return float(reference.get_submodule(name).zero_point.flatten()[0])
