"""Resumable reconstruction: the engine's state after every finished unit, in one file.

A reconstruction is a deterministic function of the calibrated model, the calibration samples and
the settings, and everything it carries from one unit to the next is: the model's state (scales,
hard roundings, bias offsets, and the quantizer layouts Q-HyViT chose), each learned-rounding quantizer's soft logits (a coarser level
continues from them; they are not part of the state dict), the engine's random generator, and the
losses so far. The unit caches are not stored: a resumed run recomputes them by running the
finished units of the current level forward, which gives the same tensors. So a run killed at any
point continues from its last finished unit and ends bit-identical to an uninterrupted one.

The file is keyed by a hash of what the run depends on; a state written for another model, recipe
or calibration set is refused, not silently continued.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitq.errors import VitqError
from vitq.files import atomic_write
from vitq.models.wrap import apply_layouts, quantizer_layouts
from vitq.recon.rounding import LearnedRoundingQuantizer, with_grid_scales

log = logging.getLogger(__name__)

STATE_FORMAT = "vitq-recon-state"


def run_key(model: nn.Module, samples: torch.Tensor, context: dict[str, Any]) -> str:
    """sha256 of the calibrated model's state, the calibration samples and ``context`` (method, settings, recipe)."""
    digest = hashlib.sha256(json.dumps(context, sort_keys=True, default=str).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(samples.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@dataclass
class Position:
    """Where a run stands: ``units_done`` units of level ``level`` are finished."""

    level: int
    units_done: int


@dataclass
class ResumeFile:
    """The state file of one reconstruction; ``resume=False`` ignores (and then overwrites) an existing one."""

    path: Path
    resume: bool = True

    def save(self, key: str, model: nn.Module, position: Position, levels: list[str], losses: list[dict],
             generator: torch.Generator) -> None:
        soft = {n: m.soft_logits.detach().cpu() for n, m in model.named_modules()
                if isinstance(m, LearnedRoundingQuantizer) and m.soft_logits is not None}
        payload = {"format": STATE_FORMAT, "key": key, "level": position.level, "units_done": position.units_done,
                   "levels": list(levels), "losses": list(losses), "rng": generator.get_state(),
                   "layouts": quantizer_layouts(model),
                   "model": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "soft_logits": soft}
        atomic_write(self.path, lambda tmp: torch.save(payload, tmp))

    def load(self, key: str) -> dict[str, Any] | None:
        """The saved state, None when there is none to continue (or ``resume`` is off); refuses a state
        that another run wrote."""
        if not self.resume or not self.path.is_file():
            if self.path.is_file():
                log.warning("%s holds the state of an earlier reconstruction; starting over (--resume continues it)", self.path)
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any parser failure means an unusable file
            raise VitqError(f"cannot read reconstruction state {self.path}: {str(e).splitlines()[0][:200]} "
                            "(delete it to start over)") from None
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise VitqError(f"{self.path} is not a vitq reconstruction state (delete it to start over)")
        if state["key"] != key:
            raise VitqError(f"{self.path} was written by a run with another model, recipe or calibration set; "
                            "resume with the same command, or delete it to start over")
        return state

    def restore(self, state: dict[str, Any], model: nn.Module, generator: torch.Generator) -> Position:
        """Put ``state`` back into ``model`` (learned rounding attached) and ``generator``."""
        apply_layouts(model, state["layouts"])
        model.load_state_dict(with_grid_scales(state["model"]), strict=True)
        modules = dict(model.named_modules())
        for name, logits in state["soft_logits"].items():
            modules[name].soft_logits = logits.to(modules[name].rounding.device)
        generator.set_state(state["rng"])
        log.warning("resuming reconstruction from %s: level %d, %d unit(s) of it done", self.path, state["level"],
                    state["units_done"])
        return Position(state["level"], state["units_done"])

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
