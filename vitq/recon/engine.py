"""The reconstruction engine: one loop for every schedule (PFCR, BRECQ, AdaRound).

For each level of the schedule, walk the units in order. For a unit: its float input X_fp and the
quantized-prefix input X_q are the current caches; compute the float target Y_fp = U(X_fp), then
minimize ||U_q(X_q) - Y_fp||^2 / ||Y_fp||^2 (+ rounding regularizer) over the unit's soft weight
rounding and activation step sizes, stage by stage; then advance the caches through the unit
(float -> Y_fp, quantized -> U_q(X_q) with hard rounding). PFCR's optional last level (``MODEL``) runs
every block and the classifier head as one unit against the float logits, by KL divergence: the
coarsest granularity there is, where only errors that change the prediction count. Layer-wise units live inside a block
"carrier": their caches are captured with hooks while the carrier runs. With ``loss="fisher"`` each
squared error is weighted by the float model's squared output gradient (``Reconstructor.output_weights``;
``fisher_mean`` averages those weights over the samples), with ``loss="aph"`` by APHQ-ViT's average perturbation
Hessian; ``fisher_dplr`` is FIMA-Q's diagonal-plus-low-rank Fisher of the KL from the quantized unit's output
(``vitq.recon.curvature``).
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from vitq import distributed
from vitq.calibration import quantization_disabled
from vitq.errors import VitqError
from vitq.models.units import Partition, Unit, activation_after, unique_submodules
from vitq.quant.modules import QuantConv2d, QuantLinear
from vitq.quant.quantizer import UniformQuantizer
from vitq.recon.cache import capture_input, capture_io, make_samples, run_batched
from vitq.recon.config import ReconConfig, Stage
from vitq.recon.curvature import LowRankFisher, perturbation_curvature, squared_gradient
from vitq.recon.layouts import select_layouts
from vitq.recon.resume import Position, ResumeFile, run_key
from vitq.recon.rounding import LearnedRoundingQuantizer, attach_learned_rounding
from vitq.recon.schedules import BRIDGE, LAYER, MODEL, Schedule, level_name

log = logging.getLogger(__name__)
# Samples (per rank) the ``aph`` weights are averaged over: each costs a double backward pass through the rest of the
# model for every unit: with 512 augmented samples DeiT-Tiny's fine level ran over 5x longer than without ``aph``
# (2 cores), the weights costing more than the optimization; they are one mean per token and channel, which the
# first samples (the calibration images themselves) estimate
APH_SAMPLES = 64


@dataclass
class ReconReport:
    """What a reconstruction did: per level and unit, the relative MSE before and after (on the
    calibration samples, each unit fed its quantized-prefix input)."""

    method: str
    config: ReconConfig
    levels: list[str] = field(default_factory=list)
    losses: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict:
        """Per level: units, mean relative MSE before/after and the worst unit after; small enough
        for every result record, so runs can be compared on reconstruction error, not only top-1."""
        levels = []
        for name in self.levels:
            rows = [r for r in self.losses if r["level"] == name]
            if not rows:  # ``units`` may leave a level with nothing to do
                continue
            worst = max(rows, key=lambda r: r["after"])
            levels.append({"level": name, "units": len(rows),
                           "before": round(sum(r["before"] for r in rows) / len(rows), 6),
                           "after": round(sum(r["after"] for r in rows) / len(rows), 6),
                           "worst_unit": worst["unit"], "worst_after": worst["after"]})
        return {"method": self.method, "seconds": round(self.seconds, 1), "levels": levels}


@dataclass
class _Target:
    """One optimization problem: ``forward`` over ``modules`` maps x_q -> y, starting at x_fp.
    ``logits``: y are logits, matched by KL divergence instead of relative MSE."""

    name: str
    forward: Callable[[torch.Tensor], torch.Tensor]
    modules: list[nn.Module]
    logits: bool = False

    def error(self, out: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        if self.logits:
            return F.kl_div(F.log_softmax(out, -1), F.log_softmax(y, -1), log_target=True, reduction="batchmean")
        return _weighted_mean((out - y).pow(2), weights)


def _layers(modules: Iterable[nn.Module]) -> list[nn.Module]:
    return unique_submodules(modules, lambda m: isinstance(m, (QuantLinear, QuantConv2d)))


@torch.no_grad()
def _modules_called(model: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> list[nn.Module]:
    """The submodules of ``model`` that run while ``fn(x)`` does (the blocks and the head's final norm
    and classifier, not the stem), so only their quantizers are optimized: a quantizer outside the
    forward gets no loss gradient to hold it in place."""
    called: list[nn.Module] = []
    model_hooks = [m.register_forward_pre_hook(lambda mod, _args: called.append(mod)) for m in model.modules()]
    try:
        fn(x)
    finally:
        for h in model_hooks:
            h.remove()
    return called


def _weighted_mean(sq: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    return (sq if weights is None else sq * weights).mean()


def _activation_quantizers(modules: Iterable[nn.Module]) -> list[UniformQuantizer]:
    """Activation quantizers with a learnable step (log quantizers and disabled ones are left alone)."""
    return unique_submodules(modules, lambda q: type(q) is UniformQuantizer and q.enabled and bool(q.initialized))


class Reconstructor:
    """Runs one schedule over a wrapped, calibrated model."""

    def __init__(self, model: nn.Module, partition: Partition, schedule: Schedule, cfg: ReconConfig,
                 device: str, progress: bool, method: str = "reconstruction") -> None:
        self.model, self.partition, self.schedule, self.cfg, self.method = model, partition, schedule, cfg, method
        self.device, self.progress = device, progress
        # under torchrun every rank draws its own samples (seed + rank) and its share of each batch
        self.gen = torch.Generator().manual_seed(cfg.seed + distributed.rank())
        start, stop = distributed.shard_plan(cfg.batch_size, distributed.world_size())[distributed.rank()]
        self.batch, self.batch_share = stop - start, (stop - start) / cfg.batch_size
        has_head = partition.head is not None
        if cfg.model_iters and not has_head and schedule.progressive:
            log.warning("this model family's partition has no classifier head: PFCR skips the whole-model level")
        self.levels = schedule.levels(cfg, partition.num_blocks, has_head)
        self.level_iters = [schedule.iters(cfg, partition.num_blocks, g, has_head) for g in self.levels]
        self.level_index = 0  # set by reconstruct() before each level
        self.float_logits: torch.Tensor | None = None  # the float model's logits of the samples (fisher_dplr)

    @property
    def iters(self) -> int:
        """Iterations per unit at the current level."""
        return self.level_iters[self.level_index]

    def regularizer_beta(self, step: int) -> float | None:
        """Beta of the rounding regularizer at ``step`` of the current level, ``None`` during warm-up.

        ``anneal="global"`` counts steps over all levels, so one warm-up and one beta schedule span
        the whole fine-to-coarse progression."""
        span = self.iters
        if self.cfg.anneal == "global":
            span, step = sum(self.level_iters), step + sum(self.level_iters[:self.level_index])
        warm = int(self.cfg.warmup * span)
        if step < warm:
            return None
        beta_start, beta_end = self.cfg.beta
        return beta_end + (beta_start - beta_end) * max(0.0, 1.0 - (step - warm) / max(1, span - warm))

    def carriers(self, granularity: int) -> list[Unit]:
        """The units a level walks (layer-wise levels walk blocks and optimize the layers inside)."""
        if granularity == BRIDGE:
            return self.partition.bridge_units()
        if granularity == MODEL:
            return [Unit("model", self.partition.atoms)]
        return self.partition.units(1 if granularity == LAYER else granularity)

    def unit_names(self, granularity: int) -> list[str]:
        if granularity == LAYER:
            names = {id(m): n for n, m in self.model.named_modules()}
            return [names[id(layer)] for unit in self.carriers(granularity) for layer in _layers(unit.modules())]
        return [u.name for u in self.carriers(granularity)]

    def check_units(self, levels: list[int]) -> None:
        if self.cfg.units is None:
            return
        known = [n for g in levels for n in self.unit_names(g)]
        missing = [n for n in self.cfg.units if n not in known]
        if missing:
            raise VitqError(f"schedule names unknown unit(s) {missing}; units of this model and schedule: {', '.join(known)}")

    def check_bridges(self, levels: list[int]) -> None:
        """A bridge-block schedule needs a partition with bridges (the hybrid families declare them)."""
        if BRIDGE in levels and not any(a.bridge for a in self.partition.atoms):
            raise VitqError(f"{self.method} reconstructs bridge blocks (feature map <-> tokens), and this model's "
                            "partition has none: it is for hybrid families (MobileViT, EfficientFormer, Mobile-Former); "
                            "use pfcr or brecq for a plain ViT")

    def check_loss(self, levels: list[int]) -> None:
        if self.cfg.loss == "mse":
            return
        if self.partition.head is None:
            from vitq.models.families import plain_transformer_families

            able = plain_transformer_families()
            raise VitqError(f"loss {self.cfg.loss!r} needs the partition's classifier head, which this model family's "
                            f"partition does not define; families that take it: {', '.join(able)} "
                            "(use loss 'mse' here)")
        if any(g in (LAYER, BRIDGE) for g in levels):
            raise VitqError(f"loss {self.cfg.loss!r} weights outputs of residual-stream units; this method reconstructs "
                            f"{'layers' if LAYER in levels else 'bridge blocks'} (use loss 'mse')")

    def selected(self, name: str) -> bool:
        return self.cfg.units is None or name in self.cfg.units

    # -- one optimization problem -------------------------------------------------------------
    def optimize(self, target: _Target, x_fp: torch.Tensor, x_q: torch.Tensor, y: torch.Tensor, bar: tqdm,
                 weights: torch.Tensor | None = None, curvature: LowRankFisher | None = None) -> dict:
        """Fit ``target`` so that it maps ``x_q`` to ``y``; ``weights`` (like ``y``) weight each squared error,
        or ``curvature`` replaces the error (refreshed as it asks; the reported before/after stay relative MSE).
        A logits target learns no weight rounding (see ``fit_logits``)."""
        layouts = {}
        if self.schedule.select_layouts:
            layouts = select_layouts(target.modules, target.forward, x_q, y, self.device,
                                     per_channel=self.cfg.per_channel_activations)
        layers = _layers(target.modules)
        rounders = [(layer.weight, layer.weight_quant) for layer in layers
                    if isinstance(layer.weight_quant, LearnedRoundingQuantizer) and layer.weight_quant.enabled
                    and not target.logits]
        acts = _activation_quantizers(target.modules)
        stepped = [*acts, *(q for _, q in rounders)]  # every quantizer whose step size a stage may learn
        biases = [layer.bias_delta for layer in layers if layer.bias_delta is not None] if target.logits else []
        for _, q in rounders:
            q.reopen(self.cfg.reopen)  # only logits left by an earlier level exist here
        y_norm = 1.0 if target.logits else max(distributed.mean_over_ranks(float(_weighted_mean(y.pow(2), weights)), len(y)), 1e-12)
        before = self.evaluate(target, x_q, y, weights) / y_norm
        step = 0
        for stage in self.schedule.stages(self.cfg):
            n_iters = max(1, round(stage.fraction * self.iters))
            opt = self._stage_optimizer(stage, rounders, acts, biases)
            for _ in range(n_iters):
                if curvature is not None and curvature.due(step):
                    with torch.no_grad():
                        out_q = run_batched(target.forward, x_q, 4 * self.cfg.batch_size, self.device)
                    curvature.refresh(out_q, y, lambda: quantization_disabled(self.model))
                idx = torch.randint(len(x_q), (self.batch,), generator=self.gen)
                xb = self._mix(x_q[idx], x_fp[idx], stage.qdrop).to(self.device)
                wb = None if weights is None else weights[idx].to(self.device)
                out, yb = target.forward(xb), y[idx].to(self.device)
                rec = curvature.error(out, yb) if curvature is not None else target.error(out, yb, wb) / y_norm
                loss = rec
                beta = self.regularizer_beta(step)
                if stage.weights and beta is not None:
                    loss = rec + self.cfg.round_weight * sum(q.rounding_regularizer(beta) for _, q in rounders)
                if opt is not None:
                    opt.zero_grad(set_to_none=True)
                    (loss * self.batch_share).backward()  # torchrun: the whole batch's gradient is the ranks' shares summed
                    distributed.reduce_gradients([p for group in opt.param_groups for p in group["params"]])
                    opt.step()
                    for q in stepped:
                        q.scale.data.clamp_(min=1e-8)
                step += 1
                bar.update(1)
                if step % 10 == 0:
                    bar.set_postfix(rec=f"{rec.item():.4f}")
            for q in acts:
                q.enabled = True
        for _, q in rounders:
            q.freeze()
        for q in stepped:
            q.scale.requires_grad_(False)
        for b in biases:
            b.requires_grad_(False)
        after = self.evaluate(target, x_q, y, weights) / y_norm
        log.info("%s: %s %.5f -> %.5f", target.name, "kl" if target.logits else "relative mse", before, after)
        result = {"unit": target.name, "before": round(before, 6), "after": round(after, 6)}
        if layouts:
            result["layouts"] = dict(Counter(layouts.values()))
        return result

    def _stage_optimizer(self, stage: Stage, rounders: list, acts: list[UniformQuantizer],
                         biases: list[torch.Tensor]) -> torch.optim.Adam | None:
        groups = []
        if biases and self.cfg.lr_bias > 0:
            groups.append({"params": [b.requires_grad_(True) for b in biases], "lr": self.cfg.lr_bias})
        learn_scale = stage.weights and self.cfg.lr_weight_scale > 0
        for weight, q in rounders:
            q.scale.requires_grad_(learn_scale)
            if stage.weights:
                q.start_soft(weight)
                groups.append({"params": [q.soft_logits], "lr": self.cfg.lr_rounding})
            else:
                q.freeze()
            if learn_scale:
                groups.append({"params": [q.scale], "lr": self.cfg.lr_weight_scale * float(q.scale.detach().mean())})
        for q in acts:
            q.enabled = stage.activations != "off"
            learn = stage.activations == "learn"
            q.scale.requires_grad_(learn)
            if learn:
                groups.append({"params": [q.scale], "lr": self.cfg.lr_act * float(q.scale.detach().abs().mean())})
        return torch.optim.Adam(groups) if groups else None

    def _mix(self, x_q: torch.Tensor, x_fp: torch.Tensor, p: float) -> torch.Tensor:
        if p <= 0.0:
            return x_q
        return torch.where(torch.rand(x_q.shape, generator=self.gen) < p, x_fp, x_q)

    @torch.no_grad()
    def evaluate(self, target: _Target, x_q: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None) -> float:
        out = run_batched(target.forward, x_q, 4 * self.cfg.batch_size, self.device)
        return distributed.mean_over_ranks(float(target.error(out, y, weights)), len(y))

    def tail(self, rest: list[Unit]) -> Callable[[torch.Tensor], torch.Tensor]:
        """The rest of the model after a unit: the ``rest`` of the units, then the classifier head."""
        def forward(h: torch.Tensor) -> torch.Tensor:
            for unit in rest:
                h = unit(h)
            return self.partition.head(self.model, h)
        return forward

    def low_rank_fisher(self, rest: list[Unit], y: torch.Tensor) -> LowRankFisher:
        """The ``fisher_dplr`` objective of a unit whose float output is ``y``. The float logits it compares with
        are the float model's on the samples whichever unit asks, so the first unit computes them for all."""
        tail = self.tail(rest)
        if self.float_logits is None:
            with quantization_disabled(self.model):
                self.float_logits = run_batched(tail, y, 4 * self.cfg.batch_size, self.device)
        return LowRankFisher(tail, self.float_logits, self.cfg.fisher_rank, self.iters, 4 * self.cfg.batch_size,
                             self.device)

    def output_weights(self, rest: list[Unit], y: torch.Tensor) -> torch.Tensor:
        """Per-element weights of the squared error of a unit whose float output is ``y``, scaled to mean 1 and
        kept in CPU memory like the other caches. Both are taken through the ``rest`` of the units and the
        classifier head of the float model, so no labels are needed:

        * ``fisher`` / ``fisher_mean``: the squared gradient of the cross-entropy against the model's own
          prediction (BRECQ's diagonal Fisher, :func:`squared_gradient`); errors the prediction is blind to (e.g. a ViT's patch tokens
          after its last block) get weight ~0. ``fisher_mean`` averages the weights over the samples.
        * ``aph``: APHQ-ViT's average perturbation Hessian, ``|H 1|`` averaged over the first ``APH_SAMPLES``
          samples (:func:`perturbation_curvature`).
        """
        weights = []
        batch = 4 * self.cfg.batch_size
        tail = self.tail(rest)
        aph = self.cfg.loss == "aph"
        weigh, source = (perturbation_curvature, y[:APH_SAMPLES]) if aph else (squared_gradient, y)
        with quantization_disabled(self.model), torch.enable_grad():
            for i in range(0, len(source), batch):
                weights.append(weigh(tail, source[i:i + batch].to(self.device).requires_grad_(True)).cpu())
        weight = torch.cat(weights)
        if aph or self.cfg.loss == "fisher_mean":
            weight = distributed.sample_mean(weight).expand(len(y), *weight.shape[1:])
        mean = torch.tensor(distributed.mean_over_ranks(float(weight.mean()), len(weight)), dtype=weight.dtype)
        return weight / mean.clamp_min(1e-30)

    def fit_logits(self, unit: Unit, x_fp: torch.Tensor, x_q: torch.Tensor, bar: tqdm) -> dict:
        """The ``MODEL`` level: ``unit`` (every block) and the classifier head against the float logits.

        Only activation step sizes (a few hundred scalars) and, with ``lr_bias``, the layers' bias
        offsets learn here: with the roundings of the head free as well (192k for DeiT-Tiny), KL on
        125 calibration images fell by half while the evaluation KL more than doubled
        (docs/experiment_log.md)."""
        def forward(x: torch.Tensor) -> torch.Tensor:
            return self.partition.head(self.model, unit(x))

        with quantization_disabled(self.model):
            logits = run_batched(forward, x_fp, 4 * self.cfg.batch_size, self.device)
            modules = _modules_called(self.model, forward, x_fp[:1].to(self.device))
        target = _Target(unit.name, forward, modules, logits=True)
        bar.set_description("model (logits)")
        return self.optimize(target, x_fp, x_q, logits, bar)

    # -- walking the units --------------------------------------------------------------------
    def float_forward(self, unit: Unit, x: torch.Tensor) -> torch.Tensor:
        with quantization_disabled(self.model):
            return run_batched(unit, x, 4 * self.cfg.batch_size, self.device)

    def run_level(self, granularity: int, x_fp: torch.Tensor, x_q: torch.Tensor, losses: list[dict], skip: int = 0,
                  unit_done: Callable[[int], None] = lambda _: None) -> None:
        """Walk the level's units in order, appending each optimized target's losses (tagged with the
        level) to ``losses``; the first ``skip`` units are finished already (a resumed run): their
        outputs only advance the caches. ``unit_done(n)`` runs after the n-th unit (1-based)."""
        carriers = self.carriers(granularity)
        names = {id(m): n for n, m in self.model.named_modules()}
        work = sum(len(_layers(u.modules())) if granularity == LAYER else 1 for u in carriers[skip:])
        bar = tqdm(total=work * self.iters, desc=level_name(granularity), disable=not self.progress, leave=False)
        level = level_name(granularity)
        for index, unit in enumerate(carriers):
            if index < skip:
                if granularity != MODEL:
                    x_q, x_fp = run_batched(unit, x_q, 4 * self.cfg.batch_size, self.device), self.float_forward(unit, x_fp)
                continue
            if granularity == MODEL:
                if self.selected(unit.name):
                    losses.append({"level": level, **self.fit_logits(unit, x_fp, x_q, bar)})
                unit_done(index + 1)
                break
            y_fp = self.float_forward(unit, x_fp)
            if granularity == LAYER:
                for layer in _layers(unit.modules()):
                    name = names[id(layer)]
                    if self.selected(name):
                        bar.set_description(f"layer {name}")
                        act = activation_after(self.model, name)
                        with quantization_disabled(self.model):
                            lx_fp, ly = capture_io(unit, layer, x_fp, 4 * self.cfg.batch_size, self.device, act)
                        lx_q, _ = capture_io(unit, layer, x_q, 4 * self.cfg.batch_size, self.device)
                        forward = layer if act is None else nn.Sequential(layer, act)
                        losses.append({"level": level, **self.optimize(_Target(name, forward, [layer]), lx_fp, lx_q, ly, bar)})
            elif self.selected(unit.name):
                bar.set_description(f"{level} {unit.name}")
                rest = carriers[index + 1:]
                weights = self.output_weights(rest, y_fp) if self.cfg.loss in ("fisher", "fisher_mean", "aph") else None
                curvature = self.low_rank_fisher(rest, y_fp) if self.cfg.loss == "fisher_dplr" else None
                target = _Target(unit.name, unit, unit.modules())
                losses.append({"level": level, **self.optimize(target, x_fp, x_q, y_fp, bar, weights, curvature)})
            x_q = run_batched(unit, x_q, 4 * self.cfg.batch_size, self.device)
            x_fp = y_fp
            unit_done(index + 1)
        bar.close()


def check_plan(model: nn.Module, partition: Partition, method: str, schedule: Schedule, cfg: ReconConfig) -> None:
    """Refuse, before any calibration or optimization runs, a schedule this model cannot take: unit names
    it does not have, a loss its partition cannot weight, bridge blocks it has none of."""
    engine = Reconstructor(model, partition, schedule, cfg, "cpu", False, method)
    engine.check_units(engine.levels)
    engine.check_loss(engine.levels)
    engine.check_bridges(engine.levels)


def reconstruct(model: nn.Module, partition: Partition, images: Iterable[torch.Tensor], method: str, schedule: Schedule,
                cfg: ReconConfig, device: str = "cpu", progress: bool = True, state: ResumeFile | None = None,
                context: dict | None = None) -> ReconReport:
    """Reconstruct a wrapped, calibrated model in place: ``schedule`` (of the method named ``method``,
    for the report) over the units its family declares (``partition``).

    With ``state``, the engine's state is written there after every finished unit, and a state that
    file already holds for the same run (same calibrated model, samples, settings and ``context``)
    is continued instead of starting over (``vitq.recon.resume``); the caller removes the file once
    the result is saved."""
    report = ReconReport(method, cfg)
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    model.eval().to(device)
    check_plan(model, partition, method, schedule, cfg)
    if state is not None and distributed.active():
        raise VitqError("resumable reconstruction runs in one process; run without --resume under torchrun")
    share = distributed.my_shard(cfg.samples)  # under torchrun: this rank's share of the samples, from its images
    samples = make_samples(list(images), len(share), cfg.augment, cfg.seed + distributed.rank())
    key = run_key(model, samples, {"method": method, "recon": cfg.to_dict(), **(context or {})}) if state else ""
    attach_learned_rounding(model)
    saved = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in saved:
        p.requires_grad_(False)
    engine = Reconstructor(model, partition, schedule, cfg, device, progress, method)
    position = Position(0, 0)
    previous = state.load(key) if state else None
    if previous is not None:
        position = state.restore(previous, model, engine.gen)
        report.levels, report.losses = previous["levels"], previous["losses"]
    entry = model.get_submodule(partition.entry)
    with quantization_disabled(model):
        x_fp = capture_input(model, entry, samples, 4 * cfg.batch_size, device, partition.pack_entry)
    x_q = capture_input(model, entry, samples, 4 * cfg.batch_size, device, partition.pack_entry)

    def unit_done(level: int, units: int) -> None:
        if state is not None:
            state.save(key, model, Position(level, units), report.levels, report.losses, engine.gen)

    try:
        for index, granularity in enumerate(engine.levels):
            if index < position.level:
                continue
            engine.level_index = index
            if index > position.level or previous is None:
                report.levels.append(level_name(granularity))
            skip = position.units_done if index == position.level else 0
            engine.run_level(granularity, x_fp, x_q, report.losses, skip, lambda n, i=index: unit_done(i, n))
    finally:
        for q in attach_learned_rounding(model):
            q.finish()
        for p, flag in saved:
            p.requires_grad_(flag)
    report.seconds = time.perf_counter() - start
    return report
