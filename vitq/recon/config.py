"""Reconstruction settings as data: frozen dataclasses, named presets, recorded in every result.

A *stage* says what is optimized and how activations are treated for a share of a level's
iterations; a *POS* (progressive optimization strategy) is the tuple of stages run at every level.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from vitq.errors import VitqError

ACTIVATION_MODES = ("learn", "fixed", "off")


@dataclass(frozen=True)
class Stage:
    """One stage of a level.

    Attributes:
        fraction: share of the level's iterations.
        weights: learn the weight rounding in this stage.
        activations: ``learn`` the activation step sizes (LSQ), keep them ``fixed``, or switch
            activation quantization ``off`` inside the unit (the relaxed problem).
        qdrop: probability of replacing each element of the quantized unit input by the float one.
    """

    fraction: float = 1.0
    weights: bool = True
    activations: str = "learn"
    qdrop: float = 0.0

    def __post_init__(self) -> None:
        if self.activations not in ACTIVATION_MODES:
            raise VitqError(f"stage activations must be one of {ACTIVATION_MODES}, got {self.activations!r}")
        if not 0.0 < self.fraction <= 1.0 or not 0.0 <= self.qdrop < 1.0:
            raise VitqError(f"stage fraction must be in (0, 1] and qdrop in [0, 1), got {self.fraction}, {self.qdrop}")


POS_VARIANTS: dict[str, tuple[Stage, ...]] = {
    # no POS: everything quantized and optimized jointly from the start
    "joint": (Stage(1.0),),
    # weights first with activation quantization off, then everything quantized, jointly
    "weights-first": (Stage(0.5, activations="off"), Stage(0.5)),
    # relaxed inputs first (QDrop mixing), then the true quantized inputs
    "qdrop-first": (Stage(0.5, qdrop=0.5), Stage(0.5)),
    # activation step sizes first with rounding fixed at nearest, then jointly
    "act-first": (Stage(0.5, weights=False), Stage(0.5)),
}
DEFAULT_POS = "qdrop-first"
# How PFCR anneals the rounding regularizer over its levels: ``level`` = warm-up and beta schedule
# restart at every level (each level ends with every rounding decided), ``global`` = one warm-up and
# one beta schedule spread over all levels (fine levels learn rounding freely, the coarsest decides)
ANNEAL_MODES = ("level", "global")
# What a unit's output error is weighted by: ``mse`` = every element alike; ``fisher`` = each element by
# the squared gradient of the float model's classification loss w.r.t. it (BRECQ's diagonal Fisher),
# so errors that reach the prediction (e.g. the class token late in a ViT) count more; ``fisher_mean`` =
# those weights averaged over the samples (per token and channel), so no sample's weight collapses to ~0;
# ``fisher_dplr`` = FIMA-Q's diagonal-plus-low-rank Fisher of the KL between the float prediction and the one
# made from the quantized unit's output (``vitq.recon.curvature``), ``fisher_rank`` refreshes per unit;
# ``aph`` = APHQ-ViT's average perturbation Hessian: each element by |H 1|, the Hessian of the (temperature-softened)
# KL to the float prediction times a uniform perturbation of the unit's output, averaged over the samples. Unlike the
# Fisher it does not vanish where the float model is confident (its gradient is ~0 there, its curvature is not)
LOSSES = ("mse", "fisher", "fisher_mean", "fisher_dplr", "aph")


@dataclass(frozen=True)
class ReconConfig:
    """How long and how hard to reconstruct.

    Attributes:
        preset: the preset these values started from (for the record).
        samples: calibration samples; more than the calibration images are made by augmentation.
        augment: random resized crops and flips of the calibration images (needed when
            ``samples`` exceeds the number of images).
        iters: optimizer iterations per unit and level (baselines get ``iters * levels`` so all
            methods spend the same compute).
        batch_size: samples per iteration.
        coarsest: PFCR's coarsest level in blocks per unit (1, 2, 4, ...).
        model_iters: iterations of one more, last PFCR level whose single unit is the whole block stack
            plus the classifier head, fitted to the float model's logits by KL divergence instead of a
            block output by MSE (0 = no such level; skipped, with a warning, for partitions without a
            ``head``, e.g. the hybrid families). Baselines get as many extra iterations per unit,
            since one whole-model step costs about one step of every block.
        pos: name of the stage regime in ``POS_VARIANTS``.
        lr_bias: Adam learning rate of the quantized layers' bias offsets (``bias_delta``, folded into
            the exported bias) at the model level; 0 keeps biases fixed there.
        lr_rounding: Adam learning rate of the rounding logits V.
        lr_act: Adam learning rate of activation step sizes, relative to each initial step size.
        lr_weight_scale: Adam learning rate of the per-channel weight step sizes, relative to each layer's mean
            step size, learned beside the rounding wherever it is learned; the codes stay on the calibrated grid
            (``LearnedRoundingQuantizer.grid_scale``), so a learned step rescales them. 0 keeps the calibrated
            (at <= 4-bit weights MSE-searched) step sizes.
        round_weight: weight of the rounding regularizer against the relative reconstruction MSE.
        beta: (start, end) exponent of the rounding regularizer, annealed after ``warmup``.
        warmup: fraction of each level's iterations without the regularizer.
        anneal: ``level`` or ``global`` (``ANNEAL_MODES``): whether PFCR's warm-up and beta schedule
            restart at every level or span all levels; schedules with one level are unaffected.
        reopen: at the start of every level after the first, move each soft rounding decided by the
            previous level back to ``h = margin`` (or ``1 - margin``) so the coarser level can still
            revise it (``LearnedRoundingQuantizer.reopen``); 0 keeps previous decisions frozen.
        loss: ``mse``, ``fisher``, ``fisher_mean``, ``fisher_dplr`` or ``aph`` (``LOSSES``): how the unit's output error
            is weighted; the Fisher and Hessian losses need a partition with a classifier head (``Partition.head``) and units on
            the residual stream.
        fisher_rank: with ``loss="fisher_dplr"``, how many times per unit (evenly over its iterations) the
            curvature is refreshed from the current quantized output, each adding one rank.
        units: restrict reconstruction to these unit names (``None`` = all); others only propagate.
        per_channel_activations: let Q-HyViT's layout search pick per-channel activation scales
            (more accurate; onnxruntime runs those layers in float, see docs/deployment.md). ``False``
            searches the scheme only, keeping every activation per-tensor and every kernel int8.
        seed: seeds augmentation, batch sampling and QDrop masks.
    """

    preset: str = "fast"
    samples: int = 64
    augment: bool = False
    iters: int = 20
    batch_size: int = 8
    coarsest: int = 1
    model_iters: int = 0
    pos: str = DEFAULT_POS
    lr_rounding: float = 3e-2
    lr_act: float = 2e-3
    lr_weight_scale: float = 0.0
    lr_bias: float = 0.0
    round_weight: float = 1e-2
    beta: tuple[float, float] = (20.0, 2.0)
    warmup: float = 0.2
    anneal: str = "level"
    reopen: float = 0.0
    loss: str = "mse"
    fisher_rank: int = 2
    units: tuple[str, ...] | None = None
    per_channel_activations: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.pos not in POS_VARIANTS:
            raise VitqError(f"unknown POS variant {self.pos!r}; choose one of: {', '.join(POS_VARIANTS)}")
        if self.coarsest < 1 or self.coarsest & (self.coarsest - 1):
            raise VitqError(f"coarsest level must be a power of two >= 1 blocks, got {self.coarsest}")
        if min(self.samples, self.iters, self.batch_size, self.fisher_rank) < 1 or self.model_iters < 0:
            raise VitqError("samples, iters, batch_size and fisher_rank must be positive and model_iters >= 0")
        if min(self.lr_rounding, self.lr_act, self.lr_weight_scale, self.lr_bias) < 0:
            raise VitqError("learning rates must be >= 0")
        if not 0.0 <= self.warmup < 1.0:
            raise VitqError(f"warmup must be in [0, 1), got {self.warmup}")
        if not 0.0 <= self.reopen < 0.5:
            raise VitqError(f"reopen must be in [0, 0.5), got {self.reopen}")
        if self.anneal not in ANNEAL_MODES:
            raise VitqError(f"anneal must be one of {ANNEAL_MODES}, got {self.anneal!r}")
        if self.loss not in LOSSES:
            raise VitqError(f"loss must be one of {LOSSES}, got {self.loss!r}")

    @property
    def learns_biases(self) -> bool:
        """Whether the wrapped layers need ``bias_delta`` offsets for this reconstruction."""
        return self.model_iters > 0 and self.lr_bias > 0

    @property
    def stages(self) -> tuple[Stage, ...]:
        return POS_VARIANTS[self.pos]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReconConfig:
        """A preset (``data["preset"]``, default ``fast``) with the other keys overriding it."""
        data = dict(data)
        name = data.pop("preset", "fast")
        if name not in RECON_PRESETS:
            raise VitqError(f"unknown reconstruction preset {name!r}; choose one of: {', '.join(RECON_PRESETS)}")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise VitqError(f"unknown reconstruction options {sorted(unknown)}; known: {sorted(known - {'preset'})}")
        base = RECON_PRESETS[name]
        for key, value in data.items():
            data[key] = _typed(key, value, getattr(base, key))
        return replace(base, **data)


def _typed(key: str, value: Any, like: Any) -> Any:
    """``value`` checked against the type of the preset's ``like`` (ints for counts, floats for rates, lists
    for ``beta`` / ``units``), so a mistyped setting is a one-line error, not a traceback later."""
    if key == "units":
        if value is None:
            return None
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise VitqError(f"units must be a list of unit names, got {value!r}")
        return tuple(value)
    if key == "beta":
        if not (isinstance(value, list | tuple) and len(value) == 2 and all(_is_number(v) for v in value)):
            raise VitqError(f"beta must be two numbers [start, end], got {value!r}")
        return tuple(float(v) for v in value)
    if isinstance(like, bool):
        ok = isinstance(value, bool)
    elif isinstance(like, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(like, float):
        ok = _is_number(value)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, type(like))
    if not ok:
        raise VitqError(f"reconstruction setting {key} must be {type(like).__name__}, got {value!r}")
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


RECON_PRESETS: dict[str, ReconConfig] = {
    # CPU, minutes: 64 calibration images, 20 steps per unit and level, levels fine -> block -> whole
    # model (100 steps on the logits, step sizes and bias offsets). Rounding learning rate 0.1, not the
    # dataclass's 0.03: with so few steps the rounding logits barely move at 0.03 (docs/experiment_log.md,
    # sweep_*.json: PFCR W3A3 20.6 -> 28.1 here, 34.6 -> 38.6 at 125 x 90); the model level took W3A3 on
    # to 33.4 (KL 2.80 -> 2.00) with W4A4 level (KL 0.47 -> 0.43; fast_preset_model_level_*.json)
    "fast": ReconConfig(lr_rounding=0.1, model_iters=100, lr_bias=1e-4),
    # paper-like (GPU): 1024 augmented samples, thousands of steps, levels fine -> 4 blocks -> whole
    # model, step sizes only (unmeasured at this scale, no GPU so far; bias offsets over-fitted W4A4
    # in the longest CPU model level)
    "full": ReconConfig(preset="full", samples=1024, augment=True, iters=2000, batch_size=32, coarsest=4,
                        lr_rounding=1e-2, lr_act=5e-4, model_iters=2000),
    # CI accuracy regression: fewer samples and steps, at the learning rates its floors were measured with
    "ci": ReconConfig(preset="ci", samples=32, iters=12),
    # CPU, small hybrid models (< 5M params): all 256 calibration images, 100 steps of 16 per unit;
    # on MobileViT-XXS/CIFAR-10 at W6A6 it beat `fast` by 0.7 points top-1 (2,000 images)
    "hybrid": ReconConfig(preset="hybrid", samples=256, iters=100, batch_size=16),
}
