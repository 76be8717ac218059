"""Result records under benchmarks/results/: loading, the per-record ``setting`` label, the per-file dump."""
from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from vitq.report.tables import markdown_table

ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = ROOT / "benchmarks" / "results"

Results = list[tuple[str, dict[str, Any], list[dict[str, Any]]]]


def load_results(results_dir: Path = RESULTS_DIR) -> Results:
    """(file name, provenance, records) for every results file, sorted by name."""
    out = []
    for path in sorted(Path(results_dir).glob("*.json")):
        data = json.loads(path.read_text())
        if isinstance(data, dict):
            out.append((path.name, {k: v for k, v in data.items() if k != "records"}, data.get("records", [])))
        else:
            out.append((path.name, {}, data))
    return out


# calibration method -> its (weight, activation) observers, the values a recipe's format shows unless changed
CALIBRATION_OBSERVERS = {"minmax": ("minmax", "minmax"), "percentile": ("minmax", "percentile"), "mse": ("mse", "mse")}


@cache
def _preset_values(name: str) -> dict[str, Any] | None:
    """A reconstruction preset's values as JSON would hold them (tuples as lists); None if unknown."""
    from vitq.recon.config import RECON_PRESETS

    preset = RECON_PRESETS.get(name)
    return None if preset is None else json.loads(json.dumps(preset.to_dict()))


def _recon_shown(recon: dict[str, Any]) -> dict[str, Any]:
    """The keys of a resolved reconstruction config worth showing: the preset and what differs from its values."""
    preset = _preset_values(recon.get("preset", "fast"))
    if preset is None:
        return dict(recon)
    recon = json.loads(json.dumps(recon))  # tuples as lists, like the preset's values and a reloaded record
    return {k: v for k, v in recon.items() if k == "preset" or v != preset.get(k)}


def legacy_config(record: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(old-form ``config``, resolved recon values) of a record in either form.

    Old records carry ``config`` (format fields flat, plus method, init_method, bias_correction and ``recon``:
    only the user-given reconstruction overrides) and the resolved values in ``record["recon"]``. New records
    carry ``recipe`` (name, method, calibration, bias_correction, ``format``, resolved ``recon`` or null,
    ``derived``); it maps onto the old form with ``recon`` = the keys that differ from the named preset.
    """
    recipe = record.get("recipe")
    if not isinstance(recipe, dict):
        return record.get("config", {}), record.get("recon") or {}
    resolved = recipe.get("recon") or {}
    fmt = dict(recipe.get("format") or {})
    weights, acts = CALIBRATION_OBSERVERS.get(recipe.get("calibration"), (None, None))
    if fmt.get("weight_observer") == weights:  # old records name a weight observer only when it is not the calibration's
        fmt["weight_observer"] = None
    if fmt.get("activation_observer") == acts:
        fmt.pop("activation_observer")
    config = {**fmt, "method": recipe.get("method"), "init_method": recipe.get("calibration"),
              "bias_correction": recipe.get("bias_correction", False), "recon": _recon_shown(resolved) if resolved else {}}
    return config, resolved


def setting(record: dict[str, Any]) -> str:
    """What distinguishes a record beyond method and bits: non-default reconstruction options etc."""
    config, resolved = legacy_config(record)
    recon = config.get("recon") or {}
    recipe = record.get("recipe")
    parts = [f"recipe={recipe['name']}"] if isinstance(recipe, dict) and recipe.get("name") else []
    parts += [f"{k}={v}" for k, v in sorted(recon.items())]
    if "lr_rounding" in resolved and "lr_rounding" not in recon:  # presets change over time: say which rate ran
        parts.append(f"lr_rounding={resolved['lr_rounding']}")
    if config.get("softmax_quantizer", "uniform") != "uniform":
        parts.append(f"softmax={config['softmax_quantizer']}")
    if config.get("softmax_bits"):
        parts.append(f"softmax_bits={config['softmax_bits']}")
    reconstructs = bool(recon)
    if reconstructs and config.get("init_method", "mse") != "mse":  # records before percentile init say mse
        parts.append(f"init={config['init_method']}")
    method = record.get("method", config.get("method"))
    if method == "percentile" or (reconstructs and config.get("init_method") == "percentile"):
        parts.append(f"percentile={config.get('percentile', 99.99)}")
    if config.get("weight_observer"):
        parts.append(f"weights={config['weight_observer']}")
    if config.get("activation_observer"):
        parts.append(f"acts={config['activation_observer']}")
    if config.get("post_act_quantizer", "uniform") != "uniform":
        parts.append(f"post-act={config['post_act_quantizer']}")
    if config.get("ln_reparam") is False:
        parts.append("no-ln-reparam")
    if config.get("bias_correction"):
        parts.append("bias-correction")
    parts += [f"{pattern}: {json.dumps(opts, sort_keys=True)}" for pattern, opts in (config.get("overrides") or {}).items()]
    return ", ".join(parts)


# CIFAR-10 fp32 top-1 below this marks a checkpoint as under-trained (Q-HyViT issue); records carry ``under_trained``
UNDER_TRAINED_BELOW = 85.0


def labelled_model(record: dict[str, Any]) -> str:
    """The model name, marked when its checkpoint is under-trained (CIFAR-10 fp32 top-1 below 85 %)."""
    return f"{record.get('model', '?')} (under-trained)" if record.get("under_trained") else str(record.get("model", "?"))


ACCURACY = [("model", "model"), ("bits", "bits"), ("method", "method"), ("setting", "setting"), ("n_images", "images"),
            ("top1", "top-1"), ("fp32_top1", "fp32"), ("drop", "drop"), ("agreement", "agree %"), ("device", "device"),
            ("seconds", "quant s")]
SPEED = [("model", "model"), ("variant", "variant"), ("target", "target"), ("threads", "threads"), ("batch", "batch"),
         ("latency_ms_median", "median ms"), ("latency_ms_p90", "p90 ms"), ("throughput_ips", "img/s"),
         ("size_mb", "MB"), ("speedup", "speedup")]


def render(results: Results) -> str:
    """One section per results file: its command and commit, then its accuracy and speed tables."""
    parts = []
    for name, prov, records in results:
        machine = prov.get("machine", {})
        parts += [f"##### `{name}`", "",
                  f"`{prov.get('command', '?')}` (commit {str(prov.get('git_commit', '?'))[:10]}, "
                  f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores)", ""]
        accuracy = [{**r, "setting": setting(r), "model": labelled_model(r)} for r in records if "top1" in r]
        speed = [r for r in records if "latency_ms_median" in r]
        if accuracy:
            parts += [markdown_table(accuracy, ACCURACY), ""]
        if speed:
            parts += [markdown_table(speed, SPEED), ""]
    return "\n".join(parts).rstrip() + "\n"
