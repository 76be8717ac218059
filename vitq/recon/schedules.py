"""Reconstruction methods as schedules on the one engine: which unit sizes, in which order.

Granularity is counted in blocks per unit: ``0`` = the finest atoms (``x + MHSA(LN1(x))`` and
``x + MLP(LN2(x))``), ``n`` = runs of n blocks, ``LAYER`` = single Linear/Conv layers, ``BRIDGE`` =
blocks, with each bridge block (feature map <-> tokens) joined to the block that feeds it, ``MODEL`` =
every block plus the classifier head as one unit, fitted to the float logits.
"""
from __future__ import annotations

from dataclasses import dataclass

from vitq.recon.config import POS_VARIANTS, ReconConfig, Stage

LAYER = -1
BRIDGE = -2
MODEL = -3
PROGRESSIVE_ONLY = ("pos", "lr_bias", "anneal", "reopen")
LAYOUT_ONLY = ("per_channel_activations",)


@dataclass(frozen=True)
class Schedule:
    """``progressive``: levels 0, 1, 2, 4, ... up to ``ReconConfig.coarsest`` (then ``MODEL`` when
    ``ReconConfig.model_iters`` > 0 and the partition has a classifier head) with the POS stages,
    each level starting from the previous one's parameters (PFCR). Otherwise one level at
    ``granularity`` with all parameters optimized jointly (BRECQ, AdaRound, Q-HyViT; methods are declared in ``vitq.methods``).
    ``select_layouts``: before optimizing a unit, pick each activation quantizer's scheme and
    granularity by reconstruction loss (Q-HyViT, ``vitq.recon.layouts``)."""

    progressive: bool
    granularity: int = 0
    select_layouts: bool = False

    def levels(self, cfg: ReconConfig, num_blocks: int, has_head: bool = True) -> list[int]:
        if not self.progressive:
            return [self.granularity]
        levels, n = [0], 1
        while n <= min(cfg.coarsest, num_blocks):
            levels.append(n)
            n *= 2
        return levels + [MODEL] if cfg.model_iters and has_head else levels

    def stages(self, cfg: ReconConfig) -> tuple[Stage, ...]:
        return cfg.stages if self.progressive else POS_VARIANTS["joint"]

    def inapplicable(self) -> tuple[str, ...]:
        """``ReconConfig`` fields this schedule ignores (a recipe that sets one is refused): the stage
        regime, bias learning and annealing across levels exist only for progressive schedules, the
        layout search's granularity option only where layouts are selected. ``coarsest`` and
        ``model_iters`` apply to every schedule: they set the compute budget baselines are matched to."""
        ignored = () if self.progressive else PROGRESSIVE_ONLY
        return ignored + (() if self.select_layouts else LAYOUT_ONLY)

    def learns_biases(self, cfg: ReconConfig) -> bool:
        """Whether the wrapped layers need ``bias_delta`` offsets: only the model level learns them,
        and only a progressive schedule reaches it."""
        return self.progressive and cfg.learns_biases

    def iters(self, cfg: ReconConfig, num_blocks: int, granularity: int, has_head: bool = True) -> int:
        """Iterations per unit at a level: baselines get as many in total as PFCR spends over its
        levels (a whole-model step counts as one step of every block)."""
        if self.progressive:
            return cfg.model_iters if granularity == MODEL else cfg.iters
        pfcr = Schedule(progressive=True).levels(cfg, num_blocks, has_head)
        return cfg.iters * len([g for g in pfcr if g != MODEL]) + (cfg.model_iters if MODEL in pfcr else 0)


def level_name(granularity: int) -> str:
    return {LAYER: "layer", BRIDGE: "bridge", MODEL: "model", 0: "fine"}.get(granularity, f"{granularity}-block")
