"""The Python API the CLI wraps: build -> wrap -> calibrate (-> reconstruct) -> save / load.

    model = create_float_model("deit_tiny_patch16_224", checkpoint="deit_tiny.safetensors")
    qmodel = quantize(model, "deit_tiny_patch16_224", calib_batches, QuantConfig(w_bits=4, a_bits=4))
    save_quantized("deit_w4a4.pt", qmodel, "deit_tiny_patch16_224", config)
    qmodel, meta = load_quantized("deit_w4a4.pt")

A quantized checkpoint holds the float weights, every quantizer's scale/zero-point and any learned
rounding state, plus the model name and config, so it reloads without re-running calibration, and
the float reference (quantizers off) comes from the same file.
"""
from __future__ import annotations

import copy
import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitq.baselines import BASELINES
from vitq.calibration import calibrate, correct_biases
from vitq.errors import VitqError
from vitq.models.ln_reparam import fold_ln_scales, per_channel_ln_inputs
from vitq.models.loading import create_float_model
from vitq.models.wrap import apply_layouts, quantizer_layouts, wrap_model
from vitq.quant.config import QuantConfig, recon_config
from vitq.recon import attach_learned_rounding, reconstruct

CHECKPOINT_FORMAT = "vitq-quantized"
CHECKPOINT_VERSION = 1


def quantize(
    model: nn.Module,
    model_name: str,
    calib_batches: Iterable[torch.Tensor],
    config: QuantConfig,
    device: str = "cpu",
    progress: bool = True,
    inplace: bool = False,
) -> nn.Module:
    """Wrap and calibrate a float model; a baseline method (``vitq.baselines``) then refines the scales,
    a reconstruction method (``vitq.recon``) calibrates with the ``init_method`` observers and then
    reconstructs, both on the same calibration images; its per-level losses stay on the model
    (:func:`recon_summary`) so callers can record them next to the accuracy."""
    qmodel = wrap_model(model if inplace else copy.deepcopy(model), model_name, config)
    calib_batches = list(calib_batches)
    if config.ln_reparam:
        per_channel_ln_inputs(qmodel, power_of_two=config.ln_power_of_two)
    calibrate(qmodel, calib_batches, device=device, progress=progress)
    if config.ln_reparam:
        fold_ln_scales(qmodel)
    if config.method in BASELINES:
        BASELINES.get(config.method)(qmodel, calib_batches, device=device, progress=progress)
    if config.bias_correction:
        correct_biases(qmodel, calib_batches, device=device, progress=progress)
    if config.reconstructs:
        qmodel.vitq_recon_report = reconstruct(qmodel, model_name, calib_batches, config.method, recon_config(config),
                                               device=device, progress=progress)
    return qmodel


def recon_summary(qmodel: nn.Module) -> dict | None:
    """The reconstruction's per-level losses (``ReconReport.summary``), or None without reconstruction."""
    report = getattr(qmodel, "vitq_recon_report", None)
    return report.summary() if report is not None else None


def atomic_write(path: str | Path, write: Any) -> Path:
    """Call ``write(tmp_path)`` and move the result into place, so failures leave no partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file normal permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def save_quantized(path: str | Path, model: nn.Module, model_name: str, config: QuantConfig, meta: dict | None = None) -> Path:
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model_name": model_name,
        "num_classes": int(getattr(model, "num_classes", 0)),
        "spec": getattr(model, "vitq_spec", None),
        "config": config.to_dict(),
        "layouts": quantizer_layouts(model),
        "meta": {"saved": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(meta or {})},
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_quantized(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a wrapped model from a quantized checkpoint; returns (model, header without weights)."""
    path = Path(path)
    if not path.is_file():
        raise VitqError(f"quantized checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any parser failure means an unreadable file
        raise VitqError(f"cannot read quantized checkpoint {path}: {str(e).splitlines()[0][:200]}") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise VitqError(f"{path} is not a vitq quantized checkpoint (make one with `vitq quantize`)")
    config = QuantConfig.from_dict(payload["config"])
    spec = payload.get("spec")
    model = create_float_model(payload["model_name"], num_classes=None if spec else payload["num_classes"] or None, spec=spec)
    qmodel = wrap_model(model, payload["model_name"], config)
    apply_layouts(qmodel, payload.get("layouts", {}))
    if config.reconstructs:
        attach_learned_rounding(qmodel)
    try:
        qmodel.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as e:
        raise VitqError(f"{path} does not match {payload['model_name']}: {str(e).splitlines()[1][:200]}") from None
    header = {k: v for k, v in payload.items() if k != "state_dict"}
    header["config"] = config
    return qmodel.eval(), header
