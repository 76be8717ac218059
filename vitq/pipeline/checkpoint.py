"""Quantized checkpoints: the float weights, every quantizer's scale / zero-point / learned rounding,
the model name and spec and the recipe, so a model reloads without re-running calibration and its
float reference (quantizers off) comes from the same file.

    save_quantized("deit_w4a4.pt", qm, meta={"calibration_images": 125})
    qm = load_quantized("deit_w4a4.pt")     # a QuantizedModel, recipe and meta included
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from vitq.errors import VitqError
from vitq.files import atomic_write
from vitq.methods import get_method
from vitq.models.loading import create_float_model
from vitq.models.wrap import apply_layouts, quantizer_layouts, wrap_model
from vitq.pipeline.quantize import QuantizedModel
from vitq.recipe import Recipe, make_recipe
from vitq.recon.rounding import attach_learned_rounding

CHECKPOINT_FORMAT = "vitq-quantized"
CHECKPOINT_VERSION = 2  # 1: a QuantConfig that also held the method and its reconstruction options


def save_quantized(path: str | Path, qm: QuantizedModel, meta: dict[str, Any] | None = None) -> Path:
    """Write ``qm`` atomically; ``meta`` (and ``qm.meta``) is kept in the header for ``vitq eval``."""
    model = qm.model
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model_name": qm.model_name,
        "num_classes": int(getattr(model, "num_classes", 0)),
        "spec": qm.spec,
        "recipe": qm.recipe.to_dict(),
        "layouts": quantizer_layouts(model),
        "meta": {"saved": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": round(qm.seconds, 1),
                 "recon_losses": qm.recon_losses, **qm.meta, **(meta or {})},
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def recipe_from_v1(config: dict[str, Any]) -> Recipe:
    """The recipe of a version-1 checkpoint, whose config held the format, the method, its start
    (``init_method``), bias correction and the reconstruction options in one dict."""
    config = dict(config)
    method = config.pop("method", "mse")
    calibration = config.pop("init_method", None)
    settings = {k: v for k, v in config.items() if k not in ("w_bits", "a_bits", "overrides", "recon") and v is not None}
    recon = dict(config.get("recon") or {})
    spec = get_method(method)
    if spec.reconstructs:
        settings["calibration"] = calibration
        if "preset" in recon:
            settings["recon_preset"] = recon.pop("preset")
        settings.update({k: v for k, v in recon.items() if k != "seed"})
    settings = {k: v for k, v in settings.items() if spec.format_settings.get(k, object()) != v}  # the method's own
    bits = f"W{config.get('w_bits', 8)}A{config.get('a_bits', 8)}"
    return make_recipe(bits, method, settings, config.get("overrides") or {}, seed=recon.get("seed"))


def _recipe(payload: dict[str, Any], path: Path) -> Recipe:
    try:
        if payload.get("version") == 1:
            return recipe_from_v1(payload["config"])
        return Recipe.from_dict(payload["recipe"])
    except KeyError as e:
        raise VitqError(f"{path} is a damaged vitq checkpoint: no {e.args[0]!r} entry") from None
    except VitqError as e:
        raise VitqError(f"{path} holds an invalid recipe: {e}") from None


def load_quantized(path: str | Path) -> QuantizedModel:
    """Rebuild a quantized model from a checkpoint written by :func:`save_quantized`."""
    path = Path(path)
    if not path.is_file():
        raise VitqError(f"quantized checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any parser failure means an unreadable file
        raise VitqError(f"cannot read quantized checkpoint {path}: {str(e).splitlines()[0][:200]}") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise VitqError(f"{path} is not a vitq quantized checkpoint (make one with `vitq quantize`)")
    recipe = _recipe(payload, path)
    model_name, spec = payload["model_name"], payload.get("spec")
    model = create_float_model(model_name, num_classes=None if spec else payload["num_classes"] or None, spec=spec)
    qmodel = wrap_model(model, model_name, recipe.format, bias_offsets=recipe.bias_offsets)
    apply_layouts(qmodel, payload.get("layouts", {}))
    if recipe.reconstructs:
        attach_learned_rounding(qmodel)
    try:
        qmodel.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as e:
        raise VitqError(f"{path} does not match {model_name}: {str(e).splitlines()[1][:200]}") from None
    meta = dict(payload.get("meta") or {})
    return QuantizedModel(qmodel.eval(), model_name, recipe, spec, meta.get("recon_losses"), float(meta.get("seconds", 0.0)), meta)
