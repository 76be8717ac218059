"""Quantize a float model with a recipe: (change the model) -> wrap -> calibrate -> (fold LayerNorm) ->
refine -> bias correction -> reconstruct, in that order for every method (``vitq.methods``).

    model = create_float_model("deit_tiny_patch16_224", checkpoint="deit_tiny.safetensors")
    qm = quantize(model, "deit_tiny_patch16_224", calib_batches, make_recipe("W4A4", "pfcr"))
    save_quantized("deit_w4a4.pt", qm)
"""
from __future__ import annotations

import copy
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from vitq import distributed
from vitq.calibration import calibrate, correct_biases
from vitq.models.families import family_for
from vitq.models.ln_reparam import fold_ln_scales, per_channel_ln_inputs
from vitq.models.loading import model_spec
from vitq.models.relu_mlp import relu_mlp_model
from vitq.models.rotation import rotate_attention_heads, rotate_mlp_hidden, rotate_residual
from vitq.models.units import Partition
from vitq.models.wrap import float_layers_left, wrap_model
from vitq.recipe import Recipe
from vitq.recon.engine import check_plan, reconstruct
from vitq.recon.resume import ResumeFile

ROTATION_PROBE = 4  # calibration images the rotated model is compared on (its report's max logit change)


@dataclass
class QuantizedModel:
    """A wrapped, calibrated (and possibly reconstructed) model with what made it.

    Attributes:
        model: the fake-quant ``nn.Module`` (quantizers switched off, it is the float model).
        model_name: timm name.
        recipe: the resolved recipe.
        spec: how to rebuild the float architecture (``vitq.models.loading.model_spec``).
        recon_losses: the reconstruction's per-level losses (``ReconReport.summary``), if it reconstructed.
        seconds: quantization wall time.
        meta: anything else worth keeping with a checkpoint (calibration images, data path, ...); a model
            changed before quantization keeps the change's report under ``relu_mlp`` / ``rotate`` / ``rotate_heads`` /
            ``rotate_mlp``.
    """

    model: nn.Module
    model_name: str
    recipe: Recipe
    spec: dict[str, Any] | None = None
    recon_losses: dict[str, Any] | None = None
    seconds: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def float_layers(self) -> list[str]:
        return float_layers_left(self.model)


def quantize(model: nn.Module, model_name: str, calib_batches: Iterable[torch.Tensor], recipe: Recipe,
             device: str = "cpu", progress: bool = True, inplace: bool = False, state: ResumeFile | None = None) -> QuantizedModel:
    """Quantize ``model`` (a float timm model named ``model_name``) as ``recipe`` says, on the calibration
    images; every method runs the same steps, skipping the hooks it does not have. ``state``: where a
    reconstruction keeps its progress after every unit, and continues from (``vitq.recon.resume``)."""
    start = time.perf_counter()
    method = recipe.method_spec
    calib_batches = list(calib_batches)
    meta: dict[str, Any] = {}
    if recipe.rotate:  # exact in float, so the checkpoint's weights alone rebuild it: no spec change
        model, rotation = rotate_residual(model, model_name, recipe.rotation_seed, probe=calib_batches[0][:ROTATION_PROBE])
        meta["rotate"] = rotation.summary()
        inplace = True
    if recipe.rotate_heads:  # exact in float and in the weights, like ``rotate``
        model, heads = rotate_attention_heads(model, model_name, recipe.rotation_seed, probe=calib_batches[0][:ROTATION_PROBE])
        meta["rotate_heads"] = heads.summary()
        inplace = True
    if recipe.relu_mlp:  # the float model itself changes: a new copy, so ``inplace`` has nothing to save
        _wrap_and_plan(copy.deepcopy(model), model_name, recipe)  # a bad plan fails before the minutes-long fit
        model, change = relu_mlp_model(model, model_name, calib_batches, progress=progress)
        meta["relu_mlp"] = change.summary()
        inplace = True
    if recipe.rotate_mlp:  # adds modules, so the spec changes and the copy is new
        model, hidden = rotate_mlp_hidden(model, model_name, recipe.rotation_seed, probe=calib_batches[0][:ROTATION_PROBE])
        meta["rotate_mlp"] = hidden.summary()
        inplace = True
    spec = model_spec(model)
    qmodel, partition = _wrap_and_plan(model if inplace else copy.deepcopy(model), model_name, recipe)
    if recipe.format.ln_reparam:
        per_channel_ln_inputs(qmodel, power_of_two=recipe.format.ln_power_of_two)
    calibrate(qmodel, calib_batches, device=device, progress=progress)
    if recipe.format.ln_reparam:
        fold_ln_scales(qmodel)
    if method.refine is not None:
        method.refine(qmodel, calib_batches, device=device, progress=progress)
    if recipe.bias_correction:
        correct_biases(qmodel, calib_batches, device=device, progress=progress)
    losses = None
    if method.schedule is not None:
        losses = reconstruct(qmodel, partition, calib_batches, method.name, method.schedule, recipe.recon, device=device,
                             progress=progress, state=state, context={"model": model_name, "recipe": recipe.to_dict()}).summary()
    distributed.check_identical(qmodel, "quantization")  # under torchrun: every rank holds the same model
    return QuantizedModel(qmodel, model_name, recipe, spec, losses, time.perf_counter() - start, meta)


def _wrap_and_plan(model: nn.Module, model_name: str, recipe: Recipe) -> tuple[nn.Module, Partition | None]:
    """``model`` wrapped in place for ``recipe``, and the reconstruction units of a method that reconstructs, its
    plan checked (unit names, loss, bridges) so that a schedule the model cannot take fails before calibrating."""
    method = recipe.method_spec
    qmodel = wrap_model(model, model_name, recipe.format, bias_offsets=recipe.bias_offsets)
    if method.schedule is None:
        return qmodel, None
    partition = family_for(model_name).partition(qmodel)
    check_plan(qmodel, partition, method.name, method.schedule, recipe.recon)
    return qmodel, partition
