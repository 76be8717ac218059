"""Reconstruction: one engine (``engine.py``), methods as schedules (``schedules.py``), settings as
data (``config.py``), unit partitions per model family (``partition.py``)."""
from vitq.recon.config import POS_VARIANTS, RECON_PRESETS, ReconConfig, Stage
from vitq.recon.engine import ReconReport, reconstruct
from vitq.recon.partition import PARTITIONS, partition_for
from vitq.recon.rounding import LearnedRoundingQuantizer, attach_learned_rounding
from vitq.recon.schedules import METHODS

__all__ = [
    "METHODS", "PARTITIONS", "POS_VARIANTS", "RECON_PRESETS", "LearnedRoundingQuantizer", "ReconConfig", "ReconReport",
    "Stage", "attach_learned_rounding", "partition_for", "reconstruct",
]
