"""Parity: the ONNX model in onnxruntime must compute what the torch fake-quant model computes.

Compared on real images against the torch reference in float32 and against the same reference run in
float64 (the fake-quant function without float32 rounding noise). A fake-quant model is discontinuous:
a float32 rounding difference that lands on a rounding tie moves one integer code, and the flips
compound block after block, so on real checkpoints torch float32 itself disagrees with torch float64
on a few images (DeiT-Tiny W8A8: 1-2 % of the images, W4A4: 10-20 %; docs/deployment.md). A fixed
percentage of top-1 agreement is therefore either below the noise or, on a small sample, a bar that one
unlucky image breaks (99.5 % of 64 images allows no flip at all). The gate (:meth:`ParityReport.passes`)
decides on two things instead:

* **integer codes**: the graph is re-run with every QuantizeLinear output exposed and each one is
  compared with the codes the float64 reference produces at the same quantizer. Rounding noise moves
  codes by one step, rarely more; at most ``MAX_CODES_OFF`` % of a node's codes may be more than
  ``CODE_TOLERANCE`` steps off (or as many as torch float32 itself has there, if more). An export bug at
  one node (a wrong scale, a missing clip) puts most codes of that node and of everything after it far
  off, and the first such node is named.
* **top-1 flips** against the float64 reference: allowed up to the one-sided binomial upper bound, at
  false-alarm probability ``FALSE_ALARM``, for ``n`` images and a noise flip rate ``p0 = max(100 -
  min_agreement, torch float32's own flip rate on the same images) / 100``. One flip in 64 images passes;
  an export that flips most images fails at any ``n``.

Measured numbers behind the constants: benchmarks/results/parity_gate_deit_tiny.json
(``python benchmarks/parity_gate.py``).
"""
from __future__ import annotations

import copy
import logging
import math
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from vitq.errors import VitqError
from vitq.evaluate import paired_drop_se
from vitq.export.options import CODE_TOLERANCE, FALSE_ALARM, MAX_CODES_OFF, MAX_HISTOGRAM_SHIFT, MIN_AGREEMENT
from vitq.export.runtime import open_session, run
from vitq.quant.quantizer import Quantizer

log = logging.getLogger(__name__)

CODE_CHUNK = 16  # images per probe run when comparing codes (all QuantizeLinear outputs of a batch are held at once)
FLOAT32_NOISE_FACTOR = 2.0  # a node may be this many times as far from float64 as torch float32 is there
HISTOGRAM_BINS = 768  # codes + 256 index the histograms: covers int8, uint8 and any shift between them


class ParityError(VitqError):
    """ORT and torch disagree beyond tolerance."""


@dataclass(frozen=True)
class NodeCodes:
    """Integer codes at one QuantizeLinear node: onnxruntime and torch float32, each against torch float64."""

    node: str  # QuantizeLinear node name, ``<quantizer>/QuantizeLinear``
    codes: int  # codes compared (elements x images)
    off: int  # ORT codes more than CODE_TOLERANCE steps from the float64 reference
    differ: int  # ORT codes != float64 reference
    max_steps: int  # largest |ORT - float64| in steps
    float32_off: int  # torch float32 codes more than CODE_TOLERANCE steps from float64 (the reference's own noise)
    float32_differ: int
    steps: int = 0  # sum of |ORT - float64| in steps
    float32_steps: int = 0  # sum of |torch float32 - float64|
    shift_percent: float = 0.0  # total-variation distance (%) between the histograms of ORT's and float64's codes
    float32_shift_percent: float = 0.0  # the same for torch float32

    @property
    def off_percent(self) -> float:
        return 100.0 * self.off / max(self.codes, 1)

    @property
    def float32_off_percent(self) -> float:
        return 100.0 * self.float32_off / max(self.codes, 1)

    @property
    def mean_steps(self) -> float:
        return self.steps / max(self.codes, 1)

    @property
    def float32_mean_steps(self) -> float:
        return self.float32_steps / max(self.codes, 1)

    def allowed_off_percent(self, max_codes_off: float = MAX_CODES_OFF) -> float:
        return max(max_codes_off, FLOAT32_NOISE_FACTOR * self.float32_off_percent)

    def allowed_shift_percent(self) -> float:
        return max(MAX_HISTOGRAM_SHIFT, FLOAT32_NOISE_FACTOR * self.float32_shift_percent)

    def codes_off(self, max_codes_off: float = MAX_CODES_OFF) -> bool:
        """Element by element: more codes far from float64 than rounding noise moves (torch float32 at this node)."""
        return self.off_percent > self.allowed_off_percent(max_codes_off)

    def histogram_shifted(self, max_codes_off: float = MAX_CODES_OFF) -> bool:
        """Where rounding noise has already scrambled which element gets which code (torch float32 itself has more
        than ``max_codes_off`` % far off, deep in real models), the element test is blind; a wrong scale or
        zero-point still moves the distribution of codes, which noise does not."""
        return self.float32_off_percent > max_codes_off and self.shift_percent > self.allowed_shift_percent()

    def diverged(self, max_codes_off: float = MAX_CODES_OFF) -> bool:
        return self.codes_off(max_codes_off) or self.histogram_shifted(max_codes_off)

    def describe(self, max_codes_off: float = MAX_CODES_OFF) -> str:
        return (f"{self.node} ({self.off_percent:.2f} % of codes more than {CODE_TOLERANCE} step from torch float64, allowed "
                f"{self.allowed_off_percent(max_codes_off):.2f} %, up to {self.max_steps} steps; code histogram shifted "
                f"{self.shift_percent:.2f} %, allowed {self.allowed_shift_percent():.2f} %)")


def allowed_flips(n: int, p0: float, false_alarm: float = FALSE_ALARM) -> int:
    """Smallest ``k`` with ``P(X > k) <= false_alarm`` for ``X ~ Binomial(n, p0)``: the most top-1 flips that
    rounding noise at rate ``p0`` produces except with probability ``false_alarm``."""
    if n <= 0:
        return 0
    p0 = min(max(p0, 0.0), 1.0)
    if p0 == 0.0:
        return 0
    if p0 == 1.0:
        return n
    log_p, log_q = math.log(p0), math.log1p(-p0)
    cdf = 0.0
    for k in range(n + 1):
        cdf += math.exp(math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * log_p + (n - k) * log_q)
        if 1.0 - cdf <= false_alarm:
            return k
    return n


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
    flips: int | None = None  # images whose ORT top-1 differs from float64's (derived from exact_agreement if not given)
    float32_flips: int | None = None  # the same for torch float32
    nodes: list[NodeCodes] = field(default_factory=list)  # per QuantizeLinear node, graph order; empty: codes not compared
    code_images: int = 0  # images the codes were compared on
    drop_se: float | None = None  # points, with labels: standard error of ORT's top-1 drop against the reference

    def __post_init__(self) -> None:
        if self.flips is None:
            self.flips = round(self.n_images * (100.0 - self.exact_agreement) / 100.0)
        if self.float32_flips is None:
            self.float32_flips = round(self.n_images * (100.0 - self.float32_agreement) / 100.0)

    def to_dict(self) -> dict:
        out = {k: (round(v, 5) if isinstance(v, float) else v) for k, v in asdict(self).items() if k != "nodes"}
        if self.nodes:
            first = self.first_diverging_node()
            out["first_diverging_node"] = first.node if first else None
            out["worst_code_off_percent"] = round(max(n.off_percent for n in self.nodes), 5)
        return out

    # -- top-1 flips ------------------------------------------------------------------------------------------
    def noise_flip_rate(self, min_agreement: float = MIN_AGREEMENT) -> float:
        """``p0``: the flip rate rounding noise is assumed to reach, ``100 - min_agreement`` % or torch float32's own."""
        return max(1.0 - min_agreement / 100.0, self.float32_flips / max(self.n_images, 1))

    def allowed_flips(self, min_agreement: float = MIN_AGREEMENT) -> int:
        return allowed_flips(self.n_images, self.noise_flip_rate(min_agreement))

    def required_agreement(self, min_agreement: float = MIN_AGREEMENT) -> float:
        """The bar for ``exact_agreement`` (%) these ``n_images`` imply."""
        return 100.0 * (self.n_images - self.allowed_flips(min_agreement)) / max(self.n_images, 1)

    def flips_pass(self, min_agreement: float = MIN_AGREEMENT) -> bool:
        return self.flips <= self.allowed_flips(min_agreement)

    # -- integer codes ----------------------------------------------------------------------------------------
    def first_diverging_node(self, max_codes_off: float = MAX_CODES_OFF) -> NodeCodes | None:
        return next((n for n in self.nodes if n.diverged(max_codes_off)), None)

    def codes_pass(self, max_codes_off: float = MAX_CODES_OFF) -> bool:
        return self.first_diverging_node(max_codes_off) is None

    def passes(self, min_agreement: float = MIN_AGREEMENT, max_codes_off: float = MAX_CODES_OFF) -> bool:
        """Top-1 flips within the noise bound and, when codes were compared, every node's codes within tolerance."""
        return self.flips_pass(min_agreement) and self.codes_pass(max_codes_off)

    def summary(self, min_agreement: float = MIN_AGREEMENT, max_codes_off: float = MAX_CODES_OFF) -> str:
        acc = "" if self.ort_top1 is None else f"; top-1 ORT {self.ort_top1:.2f} vs torch {self.torch_top1:.2f}"
        codes = ""
        if self.nodes:
            worst = max(self.nodes, key=lambda n: max(n.off_percent / n.allowed_off_percent(max_codes_off),
                                                        n.shift_percent / n.allowed_shift_percent()))
            codes = (f"; codes within float32 noise at {sum(not n.diverged(max_codes_off) for n in self.nodes)}/"
                     f"{len(self.nodes)} QuantizeLinear nodes (closest to the bar: {worst.node}, {worst.off_percent:.3f} % "
                     f"more than {CODE_TOLERANCE} step off, allowed {worst.allowed_off_percent(max_codes_off):.3f} %; histogram "
                     f"shift {worst.shift_percent:.2f} %, allowed {worst.allowed_shift_percent():.2f} %)")
        return (f"parity on {self.n_images} images: {self.flips} top-1 flips vs torch float64 (allowed "
                f"{self.allowed_flips(min_agreement)} at noise rate {100 * self.noise_flip_rate(min_agreement):.2f} %; "
                f"torch float32 {self.float32_flips}), agreement {self.exact_agreement:.2f} %{codes}; "
                f"logit error max {self.max_abs_logit_error:.4f} mean {self.mean_abs_logit_error:.5f}{acc}")

    def failure(self, min_agreement: float = MIN_AGREEMENT, max_codes_off: float = MAX_CODES_OFF) -> str | None:
        """One line: why the gate failed and what to run next; ``None`` when it passes."""
        node = self.first_diverging_node(max_codes_off)
        if node is not None:
            return (f"ONNX/torch parity failed: integer codes diverge beyond float32 rounding noise at "
                    f"{node.describe(max_codes_off)}: an export bug at that node, not noise (more images will not help); "
                    f"report it with the node name and the checkpoint, or write the fp32 graph with --float "
                    f"[{self.summary(min_agreement, max_codes_off)}]")
        if not self.flips_pass(min_agreement):
            more = max(4 * self.n_images, 256)
            return (f"ONNX/torch parity failed: {self.flips} of {self.n_images} images change top-1 class vs torch float64, "
                    f"more than the {self.allowed_flips(min_agreement)} float32 rounding noise explains "
                    f"(p < {FALSE_ALARM:g}) although every quantized tensor's codes match; re-run with more images "
                    f"(--parity-images {more}) to confirm, and report a bug if it still fails "
                    f"[{self.summary(min_agreement, max_codes_off)}]")
        return None


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
            reference_logits: ReferenceLogits | None = None, code_images: int = 0) -> ParityReport:
    """Run ORT CPU and the torch reference on the same batches (images, or (images, labels)).

    ``code_images > 0`` also compares the integer codes at every QuantizeLinear node on the first that many
    images (:class:`CodeProbe`; the torch reference then runs once, with hooks, and ``reference_logits`` is
    not needed), which :meth:`ParityReport.passes` then checks too.
    """
    session = open_session(onnx_path)
    batches = list(batches)
    probe = CodeProbe(onnx_path, reference) if code_images > 0 else None
    if probe is not None:
        logits, coded = ReferenceLogits([], []), 0
        for b in batches:
            x = _split(b)[0]
            k = max(0, min(len(x), code_images - coded))
            parts = ([probe.run(x[:k])] if k else []) + ([probe.logits(x[k:])] if k < len(x) else [])
            logits.float32.append(np.concatenate([p[0] for p in parts]))
            logits.float64.append(np.concatenate([p[1] for p in parts]))
            coded += k
    else:
        logits = reference_logits if reference_logits is not None else torch_logits(reference, batches)
    n = agree = agree_exact = agree_float32 = ort_ok = torch_ok = torch_only = ort_only = 0
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
            ort_right, torch_right = o.argmax(1) == y.numpy(), t.argmax(1) == y.numpy()
            ort_ok, torch_ok = ort_ok + int(ort_right.sum()), torch_ok + int(torch_right.sum())
            torch_only, ort_only = torch_only + int((torch_right & ~ort_right).sum()), ort_only + int((ort_right & ~torch_right).sum())
    if n == 0:
        raise VitqError("parity check needs at least one image")
    return ParityReport(n, 100.0 * agree / n, 100.0 * agree_exact / n, 100.0 * agree_float32 / n, err_max, err_sum / err_count,
                        100.0 * ort_ok / n if labelled else None, 100.0 * torch_ok / n if labelled else None,
                        flips=n - agree_exact, float32_flips=n - agree_float32,
                        nodes=probe.nodes() if probe else [], code_images=probe.images if probe else 0,
                        drop_se=paired_drop_se(n, torch_only, ort_only) if labelled else None)


def check_parity(onnx_path: str | Path, reference: nn.Module, batches: Iterable, min_agreement: float = MIN_AGREEMENT,
                 max_codes_off: float = MAX_CODES_OFF) -> ParityReport:
    """:func:`compare` with the integer codes compared on every image, raising :class:`ParityError` (one line: the
    first diverging node or the flip count, and what to run next) when :meth:`ParityReport.passes` is false."""
    batches = list(batches)
    report = compare(onnx_path, reference, batches, code_images=sum(len(_split(b)[0]) for b in batches))
    log.info(report.summary(min_agreement, max_codes_off))
    problem = report.failure(min_agreement, max_codes_off)
    if problem:
        raise ParityError(problem)
    return report


def _quantize_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type == "QuantizeLinear"]


def _enabled_quantizers(model: nn.Module) -> list[tuple[str, Quantizer]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, Quantizer) and m.enabled and hasattr(m, "to_int")]


@torch.no_grad()
def _torch_codes(reference: nn.Module, x: torch.Tensor, sites: set[str] | None = None) -> tuple[dict[str, np.ndarray], torch.Tensor]:
    """Integer codes each enabled activation quantizer (of ``sites``, default all) produces for ``x`` in torch,
    and the logits."""
    codes: dict[str, np.ndarray] = {}

    def hook(name: str):
        def capture(module: Quantizer, inputs: tuple[torch.Tensor]) -> None:
            codes[name] = module.to_int(inputs[0]).numpy().astype(np.int16)
        return capture

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in _enabled_quantizers(reference) if sites is None or n in sites]
    try:
        logits = reference(x)
    finally:
        for h in handles:
            h.remove()
    return codes, logits


def _zero_point(reference: nn.Module, name: str) -> float:
    return float(reference.get_submodule(name).zero_point.flatten()[0])


class CodeProbe:
    """Integer codes at every QuantizeLinear node: onnxruntime's and torch float32's, each against the codes
    the float64 reference produces at the same quantizer, tallied over the images :meth:`run` sees.

    The graph is re-run with every QuantizeLinear output added as a graph output (onnxruntime then keeps
    those tensors instead of fusing them away; the values are the same up to float rounding); torch codes come
    from forward pre-hooks and each quantizer's ``to_int``.
    """

    def __init__(self, onnx_path: str | Path, reference: nn.Module) -> None:
        model = onnx.load(str(onnx_path))
        q_nodes = _quantize_nodes(model)
        self.reference = reference.eval()
        self.exact = copy.deepcopy(reference).double()
        present = {n for n, _ in _enabled_quantizers(reference)}
        self.sites = {n.name.rsplit("/", 1)[0]: n for n in q_nodes if n.name.rsplit("/", 1)[0] in present}
        inits = {t.name: t for t in model.graph.initializer}
        self.shift = {}  # ORT code + shift = torch code
        for site, node in self.sites.items():
            zp = inits.get(node.input[2]) if len(node.input) > 2 else None
            offset = int(onnx.numpy_helper.to_array(zp).astype(np.int64).ravel()[0]) if zp is not None else 0
            self.shift[site] = int(np.round(_zero_point(reference, site))) - offset
        known = {o.name for o in model.graph.output}
        model.graph.output.extend(onnx.ValueInfoProto(name=n.output[0]) for n in self.sites.values() if n.output[0] not in known)
        with tempfile.TemporaryDirectory() as tmp:  # the session keeps what it needs in memory
            probe = Path(tmp) / "probe.onnx"
            onnx.save(model, probe)
            self.session = open_session(probe)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.totals = {site: np.zeros(8, dtype=np.int64) for site in self.sites}
        self.histograms = {site: np.zeros((3, HISTOGRAM_BINS), dtype=np.int64) for site in self.sites}  # ORT, float32, float64
        self.images = 0

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """float32 and float64 reference logits, no codes compared."""
        return self.reference(x).float().numpy(), self.exact(x.double()).numpy()

    @torch.no_grad()
    def run(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Compare the codes on ``x`` (in chunks of ``CODE_CHUNK``); returns the float32 and float64 reference logits."""
        out32, out64 = [], []
        for chunk in x.split(CODE_CHUNK):
            feed = {self.session.get_inputs()[0].name: np.ascontiguousarray(chunk.numpy(), dtype=np.float32)}
            ort_codes = dict(zip(self.output_names, self.session.run(None, feed)))
            codes64, logits64 = _torch_codes(self.exact, chunk.double(), set(self.sites))
            codes32, logits32 = _torch_codes(self.reference, chunk, set(self.sites))
            for site, node in self.sites.items():
                if site not in codes64:
                    continue
                want = codes64[site].astype(np.int32)
                got = ort_codes[node.output[0]].astype(np.int32) + self.shift[site]
                if got.size != want.size:
                    continue
                d = np.abs(got.reshape(want.shape) - want)
                d32 = np.abs(codes32[site].astype(np.int32) - want)
                self.totals[site] += [d.size, (d > CODE_TOLERANCE).sum(), (d > 0).sum(), 0, (d32 > CODE_TOLERANCE).sum(),
                                      (d32 > 0).sum(), d.sum(), d32.sum()]
                self.totals[site][3] = max(self.totals[site][3], int(d.max(initial=0)))
                for row, c in enumerate((got, codes32[site], want)):
                    self.histograms[site][row] += np.bincount(np.clip(c.ravel().astype(np.int64) + 256, 0, HISTOGRAM_BINS - 1),
                                                              minlength=HISTOGRAM_BINS)
            del ort_codes, codes64, codes32
            out32.append(logits32.float().numpy())
            out64.append(logits64.numpy())
            self.images += len(chunk)
        return np.concatenate(out32), np.concatenate(out64)

    def nodes(self) -> list[NodeCodes]:
        """Per QuantizeLinear node, graph order."""
        out = []
        for site, node in self.sites.items():
            if not self.totals[site][0]:
                continue
            ort, f32, f64 = self.histograms[site]
            out.append(NodeCodes(node.name, *(int(v) for v in self.totals[site]), shift_percent=_tv_percent(ort, f64),
                                 float32_shift_percent=_tv_percent(f32, f64)))
        return out


def _tv_percent(a: np.ndarray, b: np.ndarray) -> float:
    """Total-variation distance between two histograms, in %."""
    return 50.0 * float(np.abs(a / max(a.sum(), 1) - b / max(b.sum(), 1)).sum())
