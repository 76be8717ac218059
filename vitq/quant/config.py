"""The number format as data: bit-widths, observers and special quantizers, per-module overrides.

``QuantConfig`` says *what* numbers a quantized model computes with, nothing about *how* the scales
are found (calibration, baseline searches and reconstruction live in ``vitq.recipe`` and
``vitq.methods``). It is frozen and validated at construction, never rewritten: defaults that depend
on the bit-widths are resolved by ``vitq.recipe.make_recipe``, which records them as derived.
This module imports no torch, so the command line can list presets quickly.
"""
from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from vitq.errors import VitqError

SUPPORTED_BITS = range(2, 9)
FIRST_LAST_POLICIES = ("same", "8bit", "float")
SOFTMAX_QUANTIZERS = ("uniform", "log2", "log_sqrt2", "twin_uniform")
POST_ACT_QUANTIZERS = ("uniform", "twin_uniform")
CONV_LAYOUTS = ("inputs", "integer")
OVERRIDE_KEYS = {"enable", "bits", "observer", "percentile"}


def check_bits(bits: int, what: str = "bit-width") -> int:
    if not isinstance(bits, int) or isinstance(bits, bool) or bits not in SUPPORTED_BITS:
        raise VitqError(f"{what} must be an integer in 2..8, got {bits!r}")
    return bits


def check_percentile(value: float, what: str = "percentile") -> float:
    if not isinstance(value, int | float) or not 50.0 < value <= 100.0:
        raise VitqError(f"{what} must be in (50, 100], got {value!r}")
    return float(value)


def observer_names() -> list[str]:
    """Registered observers (``vitq.quant.observers``, imported here only when a config is validated)."""
    from vitq.quant.observers import OBSERVERS

    return OBSERVERS.names()


def _choice(name: str, value: object, allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        raise VitqError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


@dataclass(frozen=True)
class QuantConfig:
    """How a model's numbers are quantized.

    Attributes:
        w_bits / a_bits: weight / activation bit-width (2..8).
        weight_observer / activation_observer: observers that set the initial scales
            (``vitq.quant.observers``: minmax, percentile, mse).
        percentile: clipping percentile of every ``percentile`` observer.
        first_last: precision of the first (patch embedding / stem) and last (classifier) layers:
            ``same`` as the rest, ``8bit``, or ``float`` (left unquantized).
        softmax_quantizer: quantizer of the attention probabilities (the left operand of attn @ v).
        softmax_bits: bit-width of the attention probabilities (None: ``a_bits``). 8 with ``uniform`` keeps a
            low-bit model exactly expressible as QDQ, where the log2 grid has no QuantizeLinear form.
        post_act_quantizer: quantizer of MLP hidden activations (the input of ``mlp.fc2``, after GELU).
        ln_reparam: calibrate post-LayerNorm Linear inputs per channel and fold the factors into
            LayerNorm + Linear (``vitq.models.ln_reparam``); the exported graph stays per-tensor.
        ln_power_of_two: restrict those per-channel factors to powers of two (FQ-ViT's PTF).
        conv_layout: where convolutions are quantized. ``inputs``: every conv's input and weight, as the papers
            do. ``integer``: only what onnxruntime's CPU kernels run in integer (``vitq.quant.conv_layout``):
            convs whose integer kernel measured faster than float get a quantized input *and output*
            (``DQ -> Conv -> Q`` becomes QLinearConv); depthwise convs, 3-channel stems and narrow 1x1 convs
            compute in float on their quantized weights, with no quantize/dequantize pair around them.
        overrides: ``{"<fnmatch pattern on quantizer name>": {"enable": bool, "bits": int, "observer": str,
            "percentile": float}}``, e.g. ``{"blocks.11.*": {"bits": 8}}``; later patterns win.
    """

    w_bits: int = 8
    a_bits: int = 8
    weight_observer: str = "minmax"
    activation_observer: str = "minmax"
    percentile: float = 99.999
    first_last: str = "8bit"
    softmax_quantizer: str = "uniform"
    softmax_bits: int | None = None
    post_act_quantizer: str = "uniform"
    ln_reparam: bool = True
    ln_power_of_two: bool = False
    conv_layout: str = "inputs"
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_bits(self.w_bits, "weight bit-width")
        check_bits(self.a_bits, "activation bit-width")
        check_percentile(self.percentile)
        if self.softmax_bits is not None:
            check_bits(self.softmax_bits, "softmax_bits")
        for name in ("ln_reparam", "ln_power_of_two"):
            if not isinstance(getattr(self, name), bool):
                raise VitqError(f"{name} must be true or false, got {getattr(self, name)!r}")
        _choice("first_last", self.first_last, FIRST_LAST_POLICIES)
        _choice("softmax_quantizer", self.softmax_quantizer, SOFTMAX_QUANTIZERS)
        _choice("post_act_quantizer", self.post_act_quantizer, POST_ACT_QUANTIZERS)
        _choice("conv_layout", self.conv_layout, CONV_LAYOUTS)
        observers = observer_names()
        _choice("weight_observer", self.weight_observer, observers)
        _choice("activation_observer", self.activation_observer, observers)
        for pattern, opts in self.overrides.items():
            if not isinstance(opts, dict):
                raise VitqError(f"override {pattern!r} must map to an object with keys {sorted(OVERRIDE_KEYS)}")
            unknown = set(opts) - OVERRIDE_KEYS
            if unknown:
                raise VitqError(f"override {pattern!r} has unknown keys {sorted(unknown)}; allowed: {sorted(OVERRIDE_KEYS)}")
            if "bits" in opts:
                check_bits(opts["bits"], f"override {pattern!r} bits")
            if "percentile" in opts:
                check_percentile(opts["percentile"], f"override {pattern!r} percentile")
            if "observer" in opts:
                _choice(f"override {pattern!r} observer", opts["observer"], observers)

    @property
    def bits(self) -> str:
        return f"W{self.w_bits}A{self.a_bits}"

    @property
    def exports_exactly(self) -> bool:
        """Whether every quantizer this format makes is uniform, so the ONNX QDQ export computes exactly what the
        torch model does (log2 and twin-uniform grids export through an 8-bit uniform fallback)."""
        return self.softmax_quantizer == "uniform" and self.post_act_quantizer == "uniform"

    def override_for(self, quantizer_name: str) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for pattern, opts in self.overrides.items():
            if fnmatch.fnmatchcase(quantizer_name, pattern):
                merged.update(opts)
        return merged

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantConfig:
        if not isinstance(data, dict):
            raise VitqError(f"a number format must be an object with keys {cls.field_names()}, got {type(data).__name__}")
        unknown = set(data) - set(cls.field_names())
        if unknown:
            raise VitqError(f"unknown format keys {sorted(unknown)}; known: {cls.field_names()}")
        return cls(**data)

    def with_(self, **changes: Any) -> QuantConfig:
        return replace(self, **changes)


def parse_bits(spec: str) -> tuple[int, int]:
    """'W4A4' -> (4, 4). Raises VitqError for malformed specs or bits outside 2..8."""
    m = re.fullmatch(r"[Ww](\d+)[Aa](\d+)", str(spec).strip())
    if not m:
        raise VitqError(f"bits must look like W4A4 or W8A8, got {spec!r}")
    w, a = int(m.group(1)), int(m.group(2))
    return check_bits(w, "weight bit-width"), check_bits(a, "activation bit-width")


def parse_overrides(specs: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``["blocks.*.mlp.fc2.input_quant={\"bits\": 8}"]`` -> ``{"blocks.*.mlp.fc2.input_quant": {"bits": 8}}``
    (the command-line form of ``QuantConfig.overrides``; keys are checked by ``QuantConfig``)."""
    out: dict[str, dict[str, Any]] = {}
    for spec in specs:
        pattern, sep, value = spec.partition("=")
        try:
            opts = json.loads(value) if sep and pattern else None
        except json.JSONDecodeError:
            opts = None
        if not isinstance(opts, dict):
            raise VitqError(f"override {spec!r} must be PATTERN=JSON object, e.g. 'blocks.*.mlp.fc2.input_quant={{\"bits\": 8}}'; "
                            f"keys: {sorted(OVERRIDE_KEYS)}")
        out.setdefault(pattern, {}).update(opts)
    return out
