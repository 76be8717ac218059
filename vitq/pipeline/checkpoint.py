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
from torch import nn

from vitq.errors import VitqError
from vitq.files import atomic_write
from vitq.methods import get_method
from vitq.models.loading import create_float_model, first_non_finite, load_weights_file, state_dict_mismatch
from vitq.models.wrap import apply_layouts, iter_quantizers, quantizer_layouts, wrap_model
from vitq.pipeline.quantize import QuantizedModel
from vitq.quant.quantizer import UniformQuantizer
from vitq.recipe import Recipe, make_recipe
from vitq.recon.rounding import attach_learned_rounding, with_grid_scales

CHECKPOINT_FORMAT = "vitq-quantized"
CHECKPOINT_VERSION = 2  # 1: a QuantConfig that also held the method and its reconstruction options
# payload entry -> (accepted types, required); version 1 has "config" instead of "recipe"
PAYLOAD_ENTRIES: dict[str, tuple[tuple[type, ...], bool]] = {
    "model_name": ((str,), True), "state_dict": ((dict,), True), "num_classes": ((int, type(None)), False),
    "spec": ((dict, type(None)), False), "layouts": ((dict,), False), "meta": ((dict, type(None)), False),
}


def quantizer_problem(model: nn.Module) -> str | None:
    """Why the quantizers of ``model`` cannot compute (an enabled one uncalibrated, a scale that is not a
    positive finite number, a zero-point off its grid), or None."""
    for name, q in iter_quantizers(model):
        if not q.enabled:
            continue
        if not bool(q.initialized):
            return f"quantizer {name} is enabled but not calibrated"
        scale = getattr(q, "scale", None)
        if isinstance(scale, torch.Tensor):
            if not bool(torch.isfinite(scale).all()):
                return f"quantizer {name} has {int((~torch.isfinite(scale)).sum())} NaN/Inf scale value(s)"
            if not bool((scale > 0).all()):
                return f"quantizer {name} has a scale <= 0"
        if isinstance(q, UniformQuantizer):
            zp = q.zero_point
            if not bool(torch.isfinite(zp).all()) or not bool(((zp >= q.grid.qmin) & (zp <= q.grid.qmax)).all()):
                return f"quantizer {name} has a zero-point outside its grid {q.grid.qmin}..{q.grid.qmax}"
    return None


def save_quantized(path: str | Path, qm: QuantizedModel, meta: dict[str, Any] | None = None) -> Path:
    """Write ``qm`` atomically; ``meta`` (and ``qm.meta``) is kept in the header for ``vitq eval``.

    Refuses (a :class:`VitqError`, nothing written) a model with a NaN/Inf tensor or a quantizer that
    cannot compute: such a checkpoint would evaluate to nonsense."""
    model = qm.model
    state_dict = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    bad = first_non_finite(state_dict)
    problem = f"tensor {bad[0]} has {bad[1]} NaN/Inf value(s)" if bad else quantizer_problem(model)
    if problem:
        raise VitqError(f"not saving {path}: {problem} (quantizing {qm.model_name} {qm.recipe.bits} {qm.recipe.method} failed)")
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
        "state_dict": state_dict,
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
            if not isinstance(payload.get("config"), dict):
                raise _Damaged("no 'config' object")
            return recipe_from_v1(payload["config"])
        if not isinstance(payload.get("recipe"), dict):
            raise _Damaged(f"its recipe is {_kind(payload.get('recipe'))}, not an object")
        return Recipe.from_dict(payload["recipe"])
    except VitqError as e:
        raise _Damaged(f"invalid recipe: {e}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise _Damaged(f"invalid recipe ({type(e).__name__}: {str(e)[:150]})") from None


class _Damaged(Exception):
    """What is wrong with a checkpoint's payload; load_quantized names the file."""


TYPE_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a number", bool: "a boolean",
              type(None): "null"}


def _kind(value: Any) -> str:
    return "missing" if value is None else TYPE_NAMES.get(type(value), f"a {type(value).__name__}")


def check_payload(payload: Any) -> None:
    """The entries a version-1/2 payload must have, with their types (raises :class:`_Damaged`)."""
    version = payload.get("version")
    if version not in (1, CHECKPOINT_VERSION) or isinstance(version, bool):
        raise _Damaged(f"version {version!r} (this vitq reads versions 1..{CHECKPOINT_VERSION})")
    for key, (types, required) in PAYLOAD_ENTRIES.items():
        if key not in payload:
            if required:
                raise _Damaged(f"no {key!r} entry")
            continue
        if not isinstance(payload[key], types) or isinstance(payload[key], bool):
            raise _Damaged(f"{key!r} is {_kind(payload[key])}, not {' or '.join(TYPE_NAMES.get(t, t.__name__) for t in types)}")
    state_dict = payload["state_dict"]
    if not state_dict or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()):
        raise _Damaged("'state_dict' is not a mapping of names to tensors")
    spec = payload.get("spec")
    if spec is not None and (not isinstance(spec.get("model"), str) or not isinstance(spec.get("kwargs", {}), dict)
                             or not isinstance(spec.get("data_config") or {}, dict)):
        raise _Damaged("'spec' lacks a model name or has malformed kwargs / data_config")
    if spec is not None and spec["model"] != payload["model_name"]:
        raise _Damaged(f"its spec is for {spec['model']}, its model_name {payload['model_name']}")
    if not all(isinstance(v, dict) for v in payload.get("layouts", {}).values()):
        raise _Damaged("'layouts' entries are not objects")
    bad = first_non_finite(state_dict)
    if bad is not None:
        raise _Damaged(f"tensor {bad[0]} has {bad[1]} NaN/Inf value(s)")


def load_quantized(path: str | Path) -> QuantizedModel:
    """Rebuild a quantized model from a checkpoint written by :func:`save_quantized`.

    Every entry is checked (types, finite tensors, calibrated quantizers with usable scales) before
    anything is evaluated: a tampered or damaged file is a :class:`VitqError` ("damaged vitq checkpoint")."""
    path = Path(path)
    if not path.is_file():
        raise VitqError(f"quantized checkpoint not found: {path}")
    payload = load_weights_file(path, "quantized checkpoint")
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise VitqError(f"{path} is not a vitq quantized checkpoint (make one with `vitq quantize`)")
    try:
        check_payload(payload)
        recipe = _recipe(payload, path)
        return _rebuild(payload, recipe, path)
    except _Damaged as e:
        raise VitqError(f"{path} is a damaged vitq checkpoint: {e}") from None


def _rebuild(payload: dict[str, Any], recipe: Recipe, path: Path) -> QuantizedModel:
    model_name, spec = payload["model_name"], payload.get("spec")
    try:
        model = create_float_model(model_name, num_classes=None if spec else payload.get("num_classes") or None, spec=spec)
    except VitqError as e:
        raise _Damaged(str(e)) from None
    qmodel = wrap_model(model, model_name, recipe.format, bias_offsets=recipe.bias_offsets)
    try:
        apply_layouts(qmodel, payload.get("layouts", {}))
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise _Damaged(f"invalid quantizer layouts ({type(e).__name__}: {str(e)[:150]})") from None
    if recipe.reconstructs:
        attach_learned_rounding(qmodel)
    state_dict = with_grid_scales(payload["state_dict"])
    problem = state_dict_mismatch(qmodel.state_dict(), state_dict)
    if problem:
        raise _Damaged(f"its state dict does not fit {model_name} {recipe.bits}: {problem}")
    try:
        qmodel.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        raise _Damaged(f"its state dict does not load into {model_name}: {str(e).strip().splitlines()[-1][:200]}") from None
    problem = quantizer_problem(qmodel)
    if problem:
        raise _Damaged(problem)
    meta = dict(payload.get("meta") or {})
    seconds = meta.get("seconds", 0.0)
    seconds = float(seconds) if isinstance(seconds, int | float) and not isinstance(seconds, bool) else 0.0
    recon_losses = meta.get("recon_losses") if isinstance(meta.get("recon_losses"), dict) else None
    return QuantizedModel(qmodel.eval(), model_name, recipe, spec, recon_losses, seconds, meta)
