"""Build float timm models and load local checkpoints, with one-line errors for bad input.

Hub downloads happen only with ``pretrained=True`` (CLI ``--pretrained``); tests and the demo use
local files (``--checkpoint``) so nothing is fetched at run time.
"""
from __future__ import annotations

import json
import logging
import pickle
import warnings
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from vitq.errors import NonFiniteError, VitqError
from vitq.models import mobile_former  # noqa: F401  (registers mobile_former_* with timm)
from vitq.models.families import family_for

log = logging.getLogger(__name__)

STATE_DICT_KEYS = ("state_dict", "model", "model_state", "model_ema", "module")
# safetensors metadata key for the model spec a vitq training run stores (benchmarks/train_cifar10.py):
# {"model": timm name, "kwargs": create_model kwargs, "data_config": overrides of the timm data config,
#  "relu_mlp": true for a model whose MLPs vitq changed to ReLU (vitq.models.relu_mlp),
#  "mlp_rotation": block-size limit of the online MLP rotations vitq added (vitq.models.rotation)}
CHECKPOINT_META_KEY = "vitq.model"


_SPECS: weakref.WeakKeyDictionary[nn.Module, dict[str, Any]] = weakref.WeakKeyDictionary()


def model_spec(model: nn.Module) -> dict[str, Any] | None:
    """How :func:`create_float_model` built ``model`` (timm name, ``create_model`` kwargs, data-config
    overrides), or None for a model made elsewhere."""
    return _SPECS.get(model)


def changed_spec(changed: nn.Module, original: nn.Module, model_name: str, **changes: Any) -> None:
    """Record that ``changed`` is ``original`` with vitq's model ``changes`` (spec keys such as ``relu_mlp``), so a
    checkpoint of it rebuilds the changed architecture; a model made outside :func:`create_float_model` gets a spec
    with its class count."""
    spec = model_spec(original) or {"model": model_name, "kwargs": {"num_classes": int(getattr(original, "num_classes", 1000))}}
    _SPECS[changed] = {**spec, **changes}


def check_model_name(model_name: str) -> None:
    """Fail clearly for names timm does not know or vitq cannot wrap."""
    if model_name not in timm.list_models():
        close = timm.list_models(f"*{model_name.split('_')[0]}*")[:8]
        hint = f"; similar: {', '.join(close)}" if close else ""
        raise VitqError(f"unknown model {model_name!r} (not a timm model name){hint}")
    family_for(model_name)


def load_weights_file(path: Path, what: str = "checkpoint") -> Any:
    """``torch.load(weights_only=True)`` or safetensors' ``load_file``, with the reason for a failure in a few words
    instead of torch's page (which invites ``weights_only=False``: vitq never unpickles code)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch's note on unusual pickle protocols
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any parser failure means an unreadable file
        raise VitqError(f"cannot read {what} {path}: {_load_failure(path, e, what)}") from None


def _load_failure(path: Path, error: Exception, what: str) -> str:
    text = str(error)
    if path.stat().st_size == 0:
        return "the file is empty"
    if path.suffix == ".safetensors":
        return f"not a safetensors file, or a truncated one ({type(error).__name__}: {text.splitlines()[0][:120] if text else ''})"
    if isinstance(error, pickle.UnpicklingError) and "Unsupported global" in text:
        found = text.split("Unsupported global:", 1)[1].split(" was not", 1)[0].strip()[:100]
        fix = ("; re-save the weights with torch.save(model.state_dict(), ...) or as .safetensors" if what == "checkpoint"
               else "")
        return f"not a plain tensor file: it holds pickled Python objects ({found}), and vitq never unpickles code{fix}"
    if "zip archive" in text or "central directory" in text or isinstance(error, EOFError):
        return "a truncated or damaged PyTorch file (its zip archive is incomplete)"
    return "not a PyTorch or safetensors weights file"


def first_non_finite(tensors: Mapping[str, torch.Tensor]) -> tuple[str, int] | None:
    """(name, count) of the first floating-point tensor holding NaN or Inf values, or None."""
    for name, t in tensors.items():
        if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
            return name, int((~torch.isfinite(t)).sum())
    return None


def check_finite(tensors: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise :class:`NonFiniteError` naming the first tensor with NaN/Inf values."""
    bad = first_non_finite(tensors)
    if bad is not None:
        raise NonFiniteError(f"{source}: tensor {bad[0]} has {bad[1]} NaN/Inf value(s)")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors / .pth / .pt / .bin checkpoint; unwrap the usual nesting and 'module.' prefixes.
    Every tensor must be finite."""
    path = Path(path)
    if not path.is_file():
        raise VitqError(f"checkpoint not found: {path}")
    obj = load_weights_file(path)
    for key in STATE_DICT_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise VitqError(f"checkpoint {path} does not contain a state dict of tensors")
    state_dict = {str(k).removeprefix("module."): v for k, v in obj.items()}
    check_finite(state_dict, f"checkpoint {path}")
    return state_dict


def checkpoint_spec(path: str | Path) -> dict[str, Any] | None:
    """The model spec stored in a vitq-made safetensors checkpoint, or None for any other file."""
    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            raw = (f.metadata() or {}).get(CHECKPOINT_META_KEY)
        return json.loads(raw) if raw else None
    except Exception:  # noqa: BLE001 - an unreadable file is reported by read_state_dict
        return None


def _classifier_hint(key: str, theirs: torch.Tensor, ours: torch.Tensor) -> str:
    """Name the usual cause of a head shape mismatch: a different number of classes."""
    if key.rsplit(".", 1)[0].split(".")[0] in ("head", "fc", "classifier", "head_dist") and theirs.dim() >= 1:
        return (f"; the checkpoint's classifier has {theirs.shape[0]} classes, the model {ours.shape[0]}: vitq builds timm's "
                f"default head unless a .safetensors checkpoint carries a model spec (metadata {CHECKPOINT_META_KEY!r} = "
                f'{{"model": NAME, "kwargs": {{"num_classes": {theirs.shape[0]}}}}}, as benchmarks/train_cifar10.py writes it)')
    return ""


def state_dict_mismatch(own: Mapping[str, torch.Tensor], state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """What keeps ``state_dict`` from loading strictly into a module whose state dict is ``own``, in one line."""
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [k for k in own if k in state_dict and own[k].shape != state_dict[k].shape]
    if not (missing or unexpected or shapes):
        return None
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key{'s' * (len(missing) > 1)} (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key{'s' * (len(unexpected) > 1)} (e.g. {unexpected[0]})")
    if shapes:
        k, plural = shapes[0], "es" * (len(shapes) > 1)
        parts.append(f"{len(shapes)} shape mismatch{plural} (e.g. {k}: {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)})"
                     + _classifier_hint(k, state_dict[k], own[k]))
    return "; ".join(parts)


def load_matching(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str, model_name: str) -> None:
    """load_state_dict(strict) that explains a mismatch in one line instead of a page."""
    problem = state_dict_mismatch(model.state_dict(), state_dict)
    if problem:
        raise VitqError(f"checkpoint {source} does not fit {model_name}: {problem}")
    model.load_state_dict(state_dict, strict=True)


def create_float_model(
    model_name: str,
    checkpoint: str | Path | None = None,
    pretrained: bool = False,
    num_classes: int | None = None,
    spec: dict[str, Any] | None = None,
) -> nn.Module:
    """A float timm model in eval mode: random init, a local checkpoint, or (explicitly) hub weights.

    A checkpoint made by vitq's training script carries its model spec (``create_model`` kwargs such
    as the number of classes and input size, and data-config overrides): the model is built to
    match it, its timm data config is updated so evaluation uses the trained resolution, and the
    spec is kept (:func:`model_spec`) so quantized checkpoints can rebuild the same model (``spec``
    passes it back in).
    """
    check_model_name(model_name)
    if checkpoint is not None and pretrained:
        raise VitqError("use either --checkpoint or --pretrained, not both")
    if spec is None and checkpoint is not None:
        spec = checkpoint_spec(checkpoint)
    spec = dict(spec or {"model": model_name, "kwargs": {}})
    kwargs: dict[str, Any] = dict(spec.get("kwargs", {}))
    if spec["model"] != model_name:
        raise VitqError(f"checkpoint {checkpoint} was trained for {spec['model']}, not {model_name}")
    if num_classes is not None:
        if kwargs.get("num_classes", num_classes) != num_classes:
            raise VitqError(f"checkpoint {checkpoint} has a {kwargs['num_classes']}-class classifier, "
                            f"but {num_classes} classes were requested")
        kwargs["num_classes"] = num_classes
    try:
        model = timm.create_model(model_name, pretrained=pretrained, **kwargs)
    except Exception as e:  # noqa: BLE001 - hub/network failures surface as one line
        raise VitqError(f"cannot create {model_name} (pretrained={pretrained}): {str(e).splitlines()[0][:200]}") from None
    if spec.get("relu_mlp"):
        from vitq.models.relu_mlp import use_relu

        use_relu(model, model_name)  # a model changed by vitq before quantization (weights refitted for ReLU)
    if spec.get("mlp_rotation"):
        from vitq.models.rotation import add_hidden_rotations

        add_hidden_rotations(model, model_name, spec["mlp_rotation"])  # online MLP rotations; the weights set them
    if spec.get("data_config"):
        data_config = {k: tuple(v) if isinstance(v, list) else v for k, v in spec["data_config"].items()}
        model.pretrained_cfg = {**model.pretrained_cfg, **data_config}
    _SPECS[model] = {**spec, "kwargs": kwargs}
    if checkpoint is not None:
        load_matching(model, read_state_dict(checkpoint), str(checkpoint), model_name)
        log.info("loaded %s from %s", model_name, checkpoint)
    elif pretrained:
        check_finite(model.state_dict(), f"{model_name} hub weights")
    return model.eval()
