"""Quantization config as data: frozen dataclass, named presets, wildcard per-module overrides.

A config is recorded verbatim (``to_dict``) in every quantized checkpoint and result record.
"""
from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from vitq.errors import VitqError
from vitq.quant.observers import OBSERVERS
from vitq.quant.quantizer import check_bits

FIRST_LAST_POLICIES = ("same", "8bit", "float")
SOFTMAX_QUANTIZERS = ("uniform", "log2", "log_sqrt2", "twin_uniform")
POST_ACT_QUANTIZERS = ("uniform", "twin_uniform")
CALIBRATION_METHODS = {
    # method -> (weight observer, activation observer)
    "minmax": ("minmax", "minmax"),
    "percentile": ("minmax", "percentile"),
    "mse": ("mse", "mse"),
    # published baselines (vitq.baselines): min-max start, then each method's own refinement
    "easyquant": ("minmax", "minmax"),
    "fqvit": ("minmax", "minmax"),
    "ptq4vit": ("minmax", "minmax"),
}
# Settings a baseline method is defined by; they replace fields left at their default, so the
# recorded config (and load_quantized) always shows the quantizers the model really has.
METHOD_SETTINGS: dict[str, dict[str, Any]] = {
    "fqvit": {"softmax_quantizer": "log2", "ln_power_of_two": True},
    "ptq4vit": {"softmax_quantizer": "twin_uniform", "post_act_quantizer": "twin_uniform"},
    # the hybrid tables (benchmarks/hybrid_table.py) measured Q-HyViT from min-max calibration
    "qhyvit": {"init_method": "minmax"},
}
# Calibration a reconstruction method starts from unless a method setting or the user says otherwise:
# DeiT-Tiny W4A4, PFCR with 125 samples x 60 iterations: 61.0 % top-1 from percentile (99.9) vs 50.7 % from
# MSE (benchmarks/results/recon_table_cpu_large*.json)
DEFAULT_INIT_METHOD = "percentile"
OVERRIDE_KEYS = {"enable", "bits", "observer", "percentile"}


# At or below this many bits the default (percentile) calibration switches to the low-bit recipe
# (:func:`low_bit_defaults`)
LOW_BITS = 4


def default_percentile(a_bits: int) -> float:
    """Clipping percentile of the ``percentile`` observer when none is given.

    Fewer bits make each step coarser, so clipping more of the tail pays. DeiT-Tiny, exact
    percentiles, 875 evaluation images: W8A8 mean KL to fp32 0.0067 at 99.999 vs 0.0092 at 99.99;
    W6A6 top-1 77.6 at 99.9 vs 75.9 at 99.99 (baseline_deit_tiny_percentile_exact.json). With the
    low-bit recipe (MSE weights, log2 softmax) W4A4 61.0 at 99.9 vs 59.2 at 99.5, but W3A3 10.6 at
    99.5 vs 6.9 at 99.9 (baseline_deit_tiny_lowbit_*.json).
    """
    if a_bits >= 8:
        return 99.999
    return 99.9 if a_bits >= 4 else 99.5


def low_bit_defaults(w_bits: int, a_bits: int) -> dict[str, str]:
    """Weight observer and softmax quantizer of percentile calibration at ``LOW_BITS`` and below.

    DeiT-Tiny, 875 evaluation images (benchmarks/results/baseline_deit_tiny_lowbit_*.json,
    recon_lowbit_log2_w3a3.json): MSE-searched weight scales are what lets W3A3 reconstruct at all
    (docs/reconstruction.md); the log2 softmax quantizer lifts W4A4 without reconstruction from 50.9
    (uniform) to 59.2 top-1, but at 3 bits its 8 levels reconstruct worse than the uniform grid
    (PFCR 31.4 vs 35.0), so 3-bit activations keep ``uniform``.
    """
    defaults = {}
    if w_bits <= LOW_BITS:
        defaults["weight_observer"] = "mse"
    if a_bits == LOW_BITS:
        defaults["softmax_quantizer"] = "log2"
    return defaults


@dataclass(frozen=True)
class QuantConfig:
    """How to quantize a model.

    Attributes:
        w_bits / a_bits: weight / activation bit-width (2..8).
        method: calibration method (minmax, percentile, mse), a published baseline (easyquant, fqvit,
            ptq4vit; ``vitq.baselines``) or a reconstruction method registered in ``vitq.recon``;
            reconstruction methods start from ``init_method`` observers (``None``: the method's setting,
            else ``DEFAULT_INIT_METHOD``).
        first_last: precision of the patch embedding (first) and the classifier head (last):
            ``same`` as the rest, ``8bit``, or ``float`` (left unquantized).
        softmax_quantizer: quantizer for the attention probabilities (the left operand of attn @ v);
            ``None``: ``log2`` for percentile calibration at 4-bit activations (:func:`low_bit_defaults`),
            else ``uniform``.
        post_act_quantizer: quantizer for MLP hidden activations (the input of ``mlp.fc2``, after GELU).
        weight_observer: observer of every weight quantizer (``minmax``, ``mse``, ``percentile``); ``None``
            keeps the calibration method's (``CALIBRATION_METHODS``), except that percentile calibration
            at ``LOW_BITS`` weight bits and below uses ``mse`` (:func:`low_bit_defaults`). MSE-searched weight clipping is
            what lets 3-bit weights reconstruct at all (docs/reconstruction.md).
        percentile: clipping percentile of the ``percentile`` observer; ``None`` picks
            :func:`default_percentile` for ``a_bits`` (and records the value).
        ln_reparam: calibrate post-LayerNorm Linear inputs per channel and fold the factors into
            LayerNorm + Linear (see ``vitq.models.ln_reparam``); the exported graph stays per-tensor.
        ln_power_of_two: restrict those per-channel factors to powers of two (FQ-ViT's PTF).
        bias_correction: after calibration (and a baseline's scale search), give every quantized
            Linear/Conv2d with a bias a correction that cancels the mean error of its own quantized
            output on the calibration images (``vitq.calibration.correct_biases``); it folds into the
            exported int32 bias. Helps calibration-only low-bit models; off by default.
        overrides: ``{"<fnmatch pattern on quantizer name>": {"enable": bool, "bits": int, "observer": str,
            "percentile": float}}``, e.g. ``{"blocks.11.*": {"bits": 8}}``; later patterns win.
        recon: reconstruction settings for a reconstruction method: a preset name and overrides,
            e.g. ``{"preset": "fast", "iters": 100}`` (``vitq.recon.ReconConfig.from_dict``).
    """

    w_bits: int = 8
    a_bits: int = 8
    method: str = "mse"
    init_method: str | None = None
    first_last: str = "8bit"
    softmax_quantizer: str | None = None
    post_act_quantizer: str = "uniform"
    weight_observer: str | None = None
    percentile: float | None = None
    ln_reparam: bool = True
    ln_power_of_two: bool = False
    bias_correction: bool = False
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    recon: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        defaults = {f.name: f.default for f in fields(self)}
        for key, value in METHOD_SETTINGS.get(self.method, {}).items():
            if getattr(self, key) == defaults[key]:
                object.__setattr__(self, key, value)  # frozen dataclass: normalise before anyone reads it
        check_bits(self.w_bits, "weight bit-width")
        check_bits(self.a_bits, "activation bit-width")
        if self.percentile is None:
            object.__setattr__(self, "percentile", default_percentile(self.a_bits))
        if self.init_method is None:
            object.__setattr__(self, "init_method", DEFAULT_INIT_METHOD)
        resolved = low_bit_defaults(self.w_bits, self.a_bits) if self.calibration == "percentile" else {}
        for key, value in {"softmax_quantizer": "uniform", **resolved}.items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)
        if self.first_last not in FIRST_LAST_POLICIES:
            raise VitqError(f"first_last must be one of {FIRST_LAST_POLICIES}, got {self.first_last!r}")
        if self.softmax_quantizer not in SOFTMAX_QUANTIZERS:
            raise VitqError(f"softmax_quantizer must be one of {SOFTMAX_QUANTIZERS}, got {self.softmax_quantizer!r}")
        if self.post_act_quantizer not in POST_ACT_QUANTIZERS:
            raise VitqError(f"post_act_quantizer must be one of {POST_ACT_QUANTIZERS}, got {self.post_act_quantizer!r}")
        if self.method not in CALIBRATION_METHODS:
            recon_config(self)
        if self.init_method not in CALIBRATION_METHODS:
            raise VitqError(f"init_method must be one of {sorted(CALIBRATION_METHODS)}, got {self.init_method!r}")
        if self.weight_observer is not None and self.weight_observer not in OBSERVERS.names():
            raise VitqError(f"weight_observer must be one of {OBSERVERS.names()}, got {self.weight_observer!r}")
        if not 50.0 < self.percentile <= 100.0:
            raise VitqError(f"percentile must be in (50, 100], got {self.percentile}")
        for pattern, opts in self.overrides.items():
            unknown = set(opts) - OVERRIDE_KEYS
            if unknown:
                raise VitqError(f"override {pattern!r} has unknown keys {sorted(unknown)}; allowed: {sorted(OVERRIDE_KEYS)}")
            if "bits" in opts:
                check_bits(opts["bits"], f"override {pattern!r} bits")
            if "percentile" in opts and not 50.0 < opts["percentile"] <= 100.0:
                raise VitqError(f"override {pattern!r} percentile must be in (50, 100], got {opts['percentile']}")

    @property
    def reconstructs(self) -> bool:
        return self.method not in CALIBRATION_METHODS

    @property
    def bias_offsets(self) -> bool:
        """Whether wrapped layers carry a ``bias_delta``: bias correction sets it, PFCR's model level
        can learn it (``ReconConfig.lr_bias``); baselines never do."""
        if self.bias_correction:
            return True
        return self.reconstructs and recon_schedule(self).learns_biases(recon_config(self))

    @property
    def bits(self) -> str:
        return f"W{self.w_bits}A{self.a_bits}"

    @property
    def calibration(self) -> str:
        """The calibration method whose observers set the scales: ``method`` itself, or the
        ``init_method`` a reconstruction method starts from."""
        return self.method if self.method in CALIBRATION_METHODS else self.init_method

    @property
    def observers(self) -> tuple[str, str]:
        """(weight observer, activation observer) used to initialise scales."""
        weights, activations = CALIBRATION_METHODS[self.calibration]
        return self.weight_observer or weights, activations

    def override_for(self, quantizer_name: str) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for pattern, opts in self.overrides.items():
            if fnmatch.fnmatchcase(quantizer_name, pattern):
                merged.update(opts)
        return merged

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise VitqError(f"unknown config keys {sorted(unknown)}; known: {sorted(known)}")
        config = cls(**data)
        if "weight_observer" not in data:  # written before the field existed: the method's own observer
            config = replace(config, weight_observer=CALIBRATION_METHODS[config.calibration][0])
        return config

    def with_(self, **changes: Any) -> QuantConfig:
        return replace(self, **changes)


def recon_methods() -> list[str]:
    """Reconstruction methods registered in ``vitq.recon`` (imported late: vitq.recon builds on this module)."""
    from vitq.recon import METHODS

    return METHODS.names()


def methods() -> list[str]:
    return [*CALIBRATION_METHODS, *recon_methods()]


def recon_config(config: QuantConfig):
    """The validated ``vitq.recon.ReconConfig`` of a config whose method reconstructs."""
    from vitq.recon import ReconConfig

    if config.method not in recon_methods():
        raise VitqError(f"unknown method {config.method!r}; available: {', '.join(methods())}")
    return ReconConfig.from_dict(config.recon)


def recon_schedule(config: QuantConfig):
    """The ``vitq.recon.Schedule`` registered for a config whose method reconstructs (the method name
    was validated when the config was built)."""
    from vitq.recon import METHODS

    return METHODS.get(config.method)


def parse_bits(spec: str) -> tuple[int, int]:
    """'W4A4' -> (4, 4). Raises VitqError for malformed specs or bits outside 2..8."""
    m = re.fullmatch(r"[Ww](\d+)[Aa](\d+)", spec.strip())
    if not m:
        raise VitqError(f"bits must look like W4A4 or W8A8, got {spec!r}")
    w, a = int(m.group(1)), int(m.group(2))
    return check_bits(w, "weight bit-width"), check_bits(a, "activation bit-width")


PRESETS: dict[str, QuantConfig] = {
    "W8A8": QuantConfig(w_bits=8, a_bits=8),
    "W6A6": QuantConfig(w_bits=6, a_bits=6),
    "W4A4": QuantConfig(w_bits=4, a_bits=4),
    "W3A3": QuantConfig(w_bits=3, a_bits=3),
}


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
