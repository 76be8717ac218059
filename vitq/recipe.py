"""A recipe: the number format, the method, its calibration and refinements, and the reconstruction
settings, validated once and recorded verbatim in every checkpoint and result record.

    recipe = make_recipe("W4A4", "pfcr", {"iters": 90})             # or preset_recipe("w4a4-pfcr-fast")
    recipe = load_recipe("my_recipe.yaml")                          # the same keys, from a file

``make_recipe`` is the one place where defaults that depend on the bit-widths or the method are
filled in; each one it fills is listed in ``Recipe.derived`` with the reason, so a record shows what
the user chose and what vitq chose. Named presets are plain data (``RECIPE_PRESETS``). This module
imports no torch.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from vitq.errors import VitqError
from vitq.methods import Method, get_method, method_names
from vitq.quant.config import QuantConfig, parse_bits
from vitq.recon.config import RECON_PRESETS, ReconConfig

# Calibration a reconstruction starts from unless its method or the recipe says otherwise: DeiT-Tiny
# W4A4, PFCR with 125 samples x 60 iterations: 61.0 % top-1 from percentile (99.9) vs 50.7 % from MSE
# (benchmarks/results/recon_table_cpu_large*.json)
DEFAULT_CALIBRATION = "percentile"
# At or below this many bits percentile calibration switches to the low-bit settings (:func:`low_bit_defaults`)
LOW_BITS = 4
FORMAT_KEYS = tuple(k for k in QuantConfig.field_names() if k not in ("w_bits", "a_bits", "overrides"))
# recipe switches (true / false): a step after calibration and the opt-in model changes before wrapping
FLAG_KEYS = ("bias_correction", "relu_mlp", "rotate", "rotate_heads", "rotate_mlp")
ROTATION_KEYS = ("rotate", "rotate_heads", "rotate_mlp")
# the seed of the rotations' random draws; its own key, so a recipe says which rotation it ran with
MODEL_CHANGE_KEYS = (*FLAG_KEYS, "rotation_seed")
RECIPE_KEYS = ("calibration", *MODEL_CHANGE_KEYS)
RECON_KEYS = tuple(["recon_preset", *(f.name for f in fields(ReconConfig) if f.name not in ("preset", "seed"))])


def default_percentile(a_bits: int) -> float:
    """Clipping percentile of the ``percentile`` observer when none is given.

    Fewer bits make each step coarser, so clipping more of the tail pays. DeiT-Tiny, exact
    percentiles, 875 evaluation images: W8A8 mean KL to fp32 0.0067 at 99.999 vs 0.0092 at 99.99;
    W6A6 top-1 77.6 at 99.9 vs 75.9 at 99.99 (baseline_deit_tiny_percentile_exact.json). With the
    low-bit settings W4A4 61.0 at 99.9 vs 59.2 at 99.5, but W3A3 10.6 at 99.5 vs 6.9 at 99.9
    (baseline_deit_tiny_lowbit_*.json).
    """
    if a_bits >= 8:
        return 99.999
    return 99.9 if a_bits >= 4 else 99.5


def low_bit_defaults(w_bits: int, a_bits: int) -> dict[str, tuple[Any, str]]:
    """Weight observer and attention-probability bit-width of percentile calibration at ``LOW_BITS`` and below,
    each with the reason recorded in ``Recipe.derived``.

    DeiT-Tiny, 875 evaluation images: MSE-searched weight scales are what lets W3A3 reconstruct at all
    (baseline_deit_tiny_lowbit_*.json). The attention probabilities keep a uniform 8-bit grid: at W4A4 it gives
    62.86 top-1 without reconstruction and 68.00 with PFCR (fast preset), against 61.03 / 65.49 for the 4-bit log2
    grid and 44.91 for a 4-bit uniform one (exportable_softmax_deit_tiny.json), and, unlike log2, it is a
    QuantizeLinear grid, so the exported ONNX model computes exactly what torch measured.
    """
    defaults: dict[str, tuple[Any, str]] = {}
    if w_bits <= LOW_BITS:
        defaults["weight_observer"] = ("mse", f"percentile calibration at <= {LOW_BITS}-bit weights")
    if a_bits <= LOW_BITS:
        defaults["softmax_bits"] = (8, f"uniform 8-bit attention probabilities at <= {LOW_BITS}-bit activations "
                                       "(exports exactly; more accurate than 4-bit log2)")
    return defaults


def layout_search_defaults(a_bits: int) -> dict[str, tuple[Any, str]]:
    """Where a layout-searching method (Q-HyViT) quantizes activations and convolutions, by activation bits, each
    with the reason recorded in ``Recipe.derived``.

    Above ``LOW_BITS`` the layouts onnxruntime's CPU kernels run in integer: per-tensor activations and the
    ``integer`` conv layout, so the hybrid table measures the model that ships. CIFAR-10 checkpoints, all
    10,000 test images: MobileViTv2-0.5 W8A8 drop 0.29 against 0.55 with per-channel activations
    (qhyvit_ablation_mobilevitv2_050_*.json); MobileViT-XXS -0.01 / 0.80 at W8A8 / W6A6 against 0.29 / 0.61,
    EfficientFormerV2-S0 0.20 / 0.48 against 0.09 / 0.45 (hybrid_cifar10_*_qhyvit_integer_layout.json). At 4 bits per-channel
    activations are what keeps the model: MobileViTv2-0.5 W4A4 3.41 against 15.83 per-tensor.
    """
    if a_bits > LOW_BITS:
        why = f"integer-kernel layout above {LOW_BITS}-bit activations (exports what onnxruntime runs in integer)"
        return {"per_channel_activations": (False, why), "conv_layout": ("integer", why)}
    return {"per_channel_activations": (True, f"per-channel activations at <= {LOW_BITS} bits (accuracy)")}


@dataclass(frozen=True)
class Recipe:
    """Everything that decides a quantized model, resolved (no field left for later to fill in).

    Attributes:
        method: a ``vitq.methods`` name.
        calibration: the calibration method whose observers set the initial scales.
        format: the number format (``vitq.quant.config.QuantConfig``).
        bias_correction: after calibration (and a baseline's search), cancel each quantized layer's
            mean output error on the calibration images through its bias (``vitq.calibration.correct_biases``).
        recon: reconstruction settings, for a method with a schedule (else ``None``).
        relu_mlp: before wrapping, change every transformer MLP's GELU to ReLU and refit the MLPs in float on
            the calibration images (``vitq.models.relu_mlp``); an explicit model change, off by default.
        rotate: before wrapping, rotate a plain ViT's residual stream (``vitq.models.rotation``): exact in float,
            folded into the weights, off by default.
        rotate_heads: before wrapping, rotate a plain ViT's queries and keys, and values, within every attention head
            (``vitq.models.rotation.rotate_attention_heads``): exact in float, folded into ``qkv`` and ``proj``.
        rotate_mlp: before wrapping, rotate every transformer MLP's hidden activation online (a Hadamard MatMul in
            front of ``fc2``, ``vitq.models.rotation``): exact in float, one float MatMul per block at run time.
        rotation_seed: the seed of the rotations' random matrices and signs. Unless set, the run's seed (0 without
            one), so repeating a run with another seed re-draws the rotations too: on DeiT-Tiny W4A4 the rotation
            alone moves calibration-only top-1 by several points at the same KL (docs/reconstruction.md).
        name: the preset this recipe came from, if any.
        derived: ``{key: reason}`` for every value ``make_recipe`` chose rather than the user.
    """

    method: str
    calibration: str
    format: QuantConfig
    bias_correction: bool = False
    recon: ReconConfig | None = None
    relu_mlp: bool = False
    rotate: bool = False
    rotate_heads: bool = False
    rotate_mlp: bool = False
    rotation_seed: int = 0
    name: str | None = None
    derived: Mapping[str, str] = field(default_factory=dict)

    @property
    def bits(self) -> str:
        return self.format.bits

    @property
    def method_spec(self) -> Method:
        return get_method(self.method)

    @property
    def rotates(self) -> bool:
        return any(getattr(self, key) for key in ROTATION_KEYS)

    @property
    def seed(self) -> int | None:
        """The seed of what is random in a run of this recipe: the reconstruction's, else the rotations' (``None``:
        nothing is, so another seed repeats the same run)."""
        if self.recon is not None:
            return self.recon.seed
        return self.rotation_seed if self.rotates else None

    @property
    def reconstructs(self) -> bool:
        return self.recon is not None

    @property
    def bias_offsets(self) -> bool:
        """Whether wrapped layers carry a ``bias_delta``: bias correction sets it, PFCR's model level
        can learn it (``ReconConfig.lr_bias``); baselines never do."""
        schedule = self.method_spec.schedule
        return self.bias_correction or (self.recon is not None and schedule is not None and schedule.learns_biases(self.recon))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "method": self.method, "bits": self.bits, "calibration": self.calibration,
                **{key: getattr(self, key) for key in FLAG_KEYS},
                **({"rotation_seed": self.rotation_seed} if self.rotates else {}), "format": self.format.to_dict(),
                "recon": self.recon.to_dict() if self.recon else None, "derived": dict(self.derived)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipe:
        """The inverse of :meth:`to_dict`, also the recipe-file format: ``method``, ``bits`` (or ``w_bits`` /
        ``a_bits`` in ``format``), optional ``calibration``, ``bias_correction``, ``format`` (QuantConfig
        fields), ``recon`` (ReconConfig fields, ``preset`` naming a reconstruction preset) and ``name``."""
        if not isinstance(data, Mapping):
            raise VitqError(f"a recipe must be an object, got {type(data).__name__}")
        known = {"name", "method", "bits", "format", "recon", "derived", *RECIPE_KEYS}
        unknown = set(data) - known
        if unknown:
            raise VitqError(f"unknown recipe keys {sorted(unknown)}; known: {sorted(known)}")
        fmt = dict(data.get("format") or {})
        bits = data.get("bits") or f"W{fmt.get('w_bits', 8)}A{fmt.get('a_bits', 8)}"
        fmt.pop("w_bits", None), fmt.pop("a_bits", None)
        overrides = fmt.pop("overrides", None) or {}
        settings: dict[str, Any] = {**fmt, **{k: data[k] for k in RECIPE_KEYS if k in data}}
        recon = dict(data.get("recon") or {})
        seed = recon.pop("seed", None)
        if "preset" in recon:
            settings["recon_preset"] = recon.pop("preset")
        settings.update(_differing(recon, settings.get("recon_preset")))
        stored = data.get("derived") or {}
        settings = {k: v for k, v in settings.items() if _path(k) not in stored}  # derived values are re-derived
        method = data.get("method", "percentile")
        spec = get_method(method)
        if not spec.reconstructs and settings.get("calibration") in (method, spec.calibration):
            del settings["calibration"]  # fixed by the method: recorded, not chosen
        return make_recipe(bits, method, settings, overrides, name=data.get("name"), seed=seed)


def _differing(recon: dict[str, Any], preset: str | None) -> dict[str, Any]:
    """The reconstruction options that differ from ``preset``'s values (a written recipe lists them all;
    the ones a schedule ignores are at the preset's value and must not count as set)."""
    base = RECON_PRESETS.get(preset or "fast")
    if base is None:
        return recon
    same = ReconConfig.from_dict({"preset": preset or "fast"}).to_dict()
    return {k: v for k, v in recon.items() if k not in same or _plain(same[k]) != _plain(v)}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple | list) else value


def _path(key: str) -> str:
    """The ``derived`` key of a setting: format fields as ``format.<field>``, recon fields as ``recon.<field>``."""
    if key in FORMAT_KEYS:
        return f"format.{key}"
    if key in RECON_KEYS:
        return "recon.preset" if key == "recon_preset" else f"recon.{key}"
    return key


def applicable_keys(method: Method) -> list[str]:
    """The ``--set`` keys that mean something for ``method``."""
    keys = [*FORMAT_KEYS, "overrides", *MODEL_CHANGE_KEYS]
    if method.reconstructs:
        ignored = method.schedule.inapplicable()
        keys += ["calibration", *(k for k in RECON_KEYS if k not in ignored)]
    return keys


def make_recipe(bits: str = "W8A8", method: str = "percentile", settings: Mapping[str, Any] | None = None,
                overrides: Mapping[str, Mapping[str, Any]] | None = None, name: str | None = None,
                seed: int | None = None) -> Recipe:
    """Validate ``settings`` (flat ``--set`` keys: number-format fields, ``calibration``, ``bias_correction``
    and, for a reconstruction method, ``ReconConfig`` fields plus ``recon_preset``) for ``method`` and
    resolve every default, recording each one chosen here in ``Recipe.derived``.

    A key that does not apply to the method is an error naming the keys that do."""
    spec = get_method(method)
    settings = dict(settings or {})
    extra = settings.pop("overrides", None) or {}
    if not isinstance(extra, Mapping) or not all(isinstance(v, Mapping) for v in extra.values()):
        raise VitqError(f'overrides must be a JSON object {{"PATTERN": {{"bits": 8, ...}}}}, got {extra!r}')
    overrides = {**(overrides or {}), **extra}
    allowed = applicable_keys(spec)
    wrong = [k for k in settings if k not in allowed]
    if wrong:
        known = FORMAT_KEYS + RECIPE_KEYS + RECON_KEYS
        unknown = [k for k in wrong if k not in known]
        what = f"unknown setting {', '.join(unknown)}" if unknown else f"setting {', '.join(wrong)} does not apply to {method}"
        raise VitqError(f"{what}; {method} ({spec.kind}) takes: {', '.join(allowed)}")
    w_bits, a_bits = parse_bits(bits)
    derived: dict[str, str] = {}

    def choose(key: str, value: Any, why: str) -> Any:
        if key in settings:
            return settings[key]
        derived[_path(key)] = why
        return value

    if spec.observers is not None:
        calibration = method
    elif spec.reconstructs:
        start = spec.calibration or DEFAULT_CALIBRATION
        calibration = choose("calibration", start, f"{method} starts from {start} calibration")
    else:
        calibration = spec.calibration
    calib_spec = get_method(calibration) if calibration in method_names("calibration") else None
    if calib_spec is None:
        raise VitqError(f"calibration must be one of {', '.join(method_names('calibration'))}, got {calibration!r}")
    weight_obs, act_obs = calib_spec.observers
    fmt: dict[str, Any] = {"activation_observer": choose("activation_observer", act_obs, f"{calibration} calibration")}
    low_bit = low_bit_defaults(w_bits, a_bits) if calibration == "percentile" else {}
    fmt["weight_observer"] = choose("weight_observer", *low_bit.get("weight_observer", (weight_obs, f"{calibration} calibration")))
    fmt["percentile"] = choose("percentile", default_percentile(a_bits), f"default at {a_bits}-bit activations")
    for key, value in spec.format_settings.items():
        fmt[key] = choose(key, value, f"defines {method}")
    softmax = settings.get("softmax_quantizer", fmt.get("softmax_quantizer", "uniform"))
    if "softmax_bits" in low_bit and softmax == "uniform":
        fmt["softmax_bits"] = choose("softmax_bits", *low_bit["softmax_bits"])
    layout = layout_search_defaults(a_bits) if spec.reconstructs and spec.schedule.select_layouts else {}
    if "conv_layout" in layout:
        fmt["conv_layout"] = choose("conv_layout", *layout["conv_layout"])
    fmt.update({k: settings[k] for k in FORMAT_KEYS if k in settings})
    try:
        qformat = QuantConfig(w_bits=w_bits, a_bits=a_bits, overrides={k: dict(v) for k, v in (overrides or {}).items()}, **fmt)
    except TypeError as e:
        raise VitqError(f"bad format setting: {e}") from None
    recon = None
    if spec.reconstructs:
        options = {k: settings[k] for k in RECON_KEYS if k in settings and k != "recon_preset"}
        if "per_channel_activations" in layout:
            options["per_channel_activations"] = choose("per_channel_activations", *layout["per_channel_activations"])
        preset = choose("recon_preset", spec.recon_preset, f"{method}'s default reconstruction preset")
        recon = ReconConfig.from_dict({"preset": preset, **options, **({"seed": seed} if seed is not None else {})})
    flags = {key: settings.get(key, False) for key in FLAG_KEYS}
    for key, value in flags.items():
        if not isinstance(value, bool):
            raise VitqError(f"{key} must be true or false, got {value!r}")
    rotation_seed = _rotation_seed(settings, flags, seed, derived)
    return Recipe(method, calibration, qformat, recon=recon, name=name, derived=derived, rotation_seed=rotation_seed, **flags)


def seeded_recipes(bits: str, method: str, settings: Mapping[str, Any], seeds: list[int]) -> list[Recipe]:
    """``make_recipe`` once per seed; a recipe with nothing random in it (``Recipe.seed`` is ``None``) once in all,
    since another seed would repeat the same run."""
    runs = [make_recipe(bits, method, settings, seed=seed) for seed in seeds]
    return runs if runs[0].seed is not None else runs[:1]


def _rotation_seed(settings: Mapping[str, Any], flags: Mapping[str, bool], seed: int | None, derived: dict[str, str]) -> int:
    """``rotation_seed`` as set, else the run's ``seed`` (recorded in ``derived`` when a rotation uses it)."""
    rotates = any(flags[k] for k in ROTATION_KEYS)
    if "rotation_seed" in settings:
        value = settings["rotation_seed"]
        if not rotates:
            raise VitqError(f"rotation_seed applies to a rotation; set one of {', '.join(ROTATION_KEYS)} to true")
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise VitqError(f"rotation_seed must be an integer >= 0, got {value!r}")
        return value
    if rotates:
        derived["rotation_seed"] = "the run's seed" if seed is not None else "no run seed: 0"
    return seed or 0


# PFCR for a plain ViT (timm VisionTransformer): the stream and head rotations folded into the weights, the MLP hidden
# activation rotated online, 280 steps per level without the whole-model level (the model level over-fits once the
# rotations are in), APHQ-ViT's Hessian-weighted loss and 512 samples (the calibration images plus random crops and
# flips). DeiT-Tiny, torch / onnxruntime, seeds 0 and 1: W4A4 73.26 / 73.49 and 74.17 / 74.51 (KL 0.168, 0.162), against
# KL 0.201 / 0.195 at 70 steps per level and 0.166 (seed 1) at 140 (docs/reconstruction.md "Rotations inside the
# attention heads and the MLP")
PFCR_VIT = {"rotate": True, "rotate_heads": True, "rotate_mlp": True, "iters": 280, "model_iters": 0, "loss": "aph",
            "samples": 512, "augment": True}

# Named recipes as data (``vitq list`` shows them, ``--preset NAME`` picks one): bits, method and the
# settings that differ from that method's defaults.
RECIPE_PRESETS: dict[str, dict[str, Any]] = {
    "w8a8": {"bits": "W8A8", "method": "percentile", "summary": "8-bit, percentile calibration (the deployment default)"},
    "w6a6": {"bits": "W6A6", "method": "percentile", "summary": "6-bit, percentile calibration"},
    "w4a4": {"bits": "W4A4", "method": "percentile", "summary": "4-bit calibration only (low-bit settings derived)"},
    "w3a3": {"bits": "W3A3", "method": "percentile", "summary": "3-bit calibration only (low-bit settings derived)"},
    "w6a6-pfcr-fast": {"bits": "W6A6", "method": "pfcr", "summary": "PFCR, CPU-sized (minutes)"},
    "w4a4-pfcr-fast": {"bits": "W4A4", "method": "pfcr", "summary": "PFCR, CPU-sized (minutes)"},
    "w3a3-pfcr-fast": {"bits": "W3A3", "method": "pfcr", "summary": "PFCR, CPU-sized (minutes)"},
    "w4a4-pfcr-vit": {"bits": "W4A4", "method": "pfcr", "settings": PFCR_VIT,
                      "summary": "PFCR + stream, head and MLP rotations, APH loss, 512 samples; plain ViT/DeiT (most accurate)"},
    "w3a3-pfcr-vit": {"bits": "W3A3", "method": "pfcr", "settings": PFCR_VIT,
                      "summary": "PFCR + stream, head and MLP rotations, APH loss, 512 samples; plain ViT/DeiT (most accurate)"},
    "w4a4-pfcr-full": {"bits": "W4A4", "method": "pfcr", "settings": {"recon_preset": "full"},
                       "summary": "PFCR, paper-sized (GPU)"},
    "w3a3-pfcr-full": {"bits": "W3A3", "method": "pfcr", "settings": {"recon_preset": "full"},
                       "summary": "PFCR, paper-sized (GPU)"},
    "w4a4-brecq-fast": {"bits": "W4A4", "method": "brecq", "summary": "BRECQ, CPU-sized (the PFCR baseline)"},
    "w8a8-qhyvit": {"bits": "W8A8", "method": "qhyvit", "settings": {"recon_preset": "hybrid"},
                    "summary": "Q-HyViT for hybrid ViTs (MobileViT, EfficientFormer, Mobile-Former); integer-kernel layout"},
    "w6a6-qhyvit": {"bits": "W6A6", "method": "qhyvit", "settings": {"recon_preset": "hybrid"},
                    "summary": "Q-HyViT for hybrid ViTs"},
    "w4a4-qhyvit": {"bits": "W4A4", "method": "qhyvit", "settings": {"recon_preset": "hybrid"},
                    "summary": "Q-HyViT for hybrid ViTs"},
    "w8a8-qhyvit-ort": {"bits": "W8A8", "method": "qhyvit",
                        "settings": {"recon_preset": "hybrid", "conv_layout": "integer", "per_channel_activations": False},
                        "summary": "w8a8-qhyvit with its integer-kernel layout pinned (integer convs, per-tensor "
                                   "activations) whatever the defaults become"},
}


def preset_recipe(name: str, bits: str | None = None, method: str | None = None, settings: Mapping[str, Any] | None = None,
                  overrides: Mapping[str, Mapping[str, Any]] | None = None, seed: int | None = None) -> Recipe:
    """The preset ``name`` with the caller's bits, method and settings on top."""
    if name not in RECIPE_PRESETS:
        raise VitqError(f"unknown recipe preset {name!r}; choose one of: {', '.join(RECIPE_PRESETS)}")
    preset = RECIPE_PRESETS[name]
    merged = {**preset.get("settings", {}), **(settings or {})}
    return make_recipe(bits or preset["bits"], method or preset["method"], merged, overrides, name=name, seed=seed)


def read_recipe_file(path: str | Path) -> dict[str, Any]:
    """A recipe file (``.json``, ``.yaml`` or ``.yml``) as a dict, with a one-line error for any problem."""
    path = Path(path)
    if not path.is_file():
        raise VitqError(f"recipe file not found: {path}")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as e:  # noqa: BLE001 - any parser error is a malformed file
        raise VitqError(f"cannot parse recipe file {path}: {str(e).splitlines()[0][:200]}") from None
    if not isinstance(data, dict):
        raise VitqError(f"recipe file {path} must hold an object (keys method, bits, format, recon, ...)")
    return data


def load_recipe(path: str | Path, bits: str | None = None, method: str | None = None,
                settings: Mapping[str, Any] | None = None, overrides: Mapping[str, Mapping[str, Any]] | None = None,
                seed: int | None = None) -> Recipe:
    """A recipe file with the caller's bits, method, settings and overrides on top."""
    base = Recipe.from_dict(read_recipe_file(path))
    data = base.to_dict()
    if bits:
        data["bits"] = bits
        data["format"] = {k: v for k, v in data["format"].items() if k not in ("w_bits", "a_bits")}
    if method and method != base.method:
        data.update(method=method, recon=None)
    if overrides:
        data["format"]["overrides"] = {**data["format"]["overrides"], **overrides}
    for key, value in (settings or {}).items():
        if key == "overrides":
            data["format"]["overrides"] = {**data["format"]["overrides"], **value}
            continue
        section = "format" if key in FORMAT_KEYS else "recon" if key in RECON_KEYS else None
        if section == "recon":
            data["recon"] = {**(data["recon"] or {}), ("preset" if key == "recon_preset" else key): value}
        elif section:
            data[section][key] = value
        else:
            data[key] = value
        data["derived"] = {k: v for k, v in data["derived"].items() if k != _path(key)}
    if seed is not None and data["recon"]:
        data["recon"]["seed"] = seed
    return replace(Recipe.from_dict(data), name=base.name)


def parse_settings(pairs: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``["iters=90", "bias_correction=true", "units=blocks.0.attn,model"]`` -> typed values: JSON where
    the value parses as JSON (numbers, true/false, lists), a comma list for ``units``, else the string."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise VitqError(f"--set takes KEY=VALUE, got {pair!r}")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if key == "units" and isinstance(value, str):
            value = [u for u in value.split(",") if u]
        out[key] = value
    return out


def recipe_from_options(preset: str | None = None, recipe_file: str | Path | None = None, bits: str | None = None,
                        method: str | None = None, settings: Mapping[str, Any] | None = None,
                        overrides: Mapping[str, Mapping[str, Any]] | None = None, seed: int | None = None) -> Recipe:
    """The recipe the command line describes: a preset or a recipe file (not both; neither means plain
    ``make_recipe``), with bits, method, settings and overrides on top."""
    if preset and recipe_file:
        raise VitqError("give either --preset or --recipe, not both")
    if recipe_file:
        return load_recipe(recipe_file, bits, method, settings, overrides, seed)
    if preset:
        return preset_recipe(preset, bits, method, settings, overrides, seed)
    return make_recipe(bits or "W8A8", method or "percentile", settings, overrides, seed=seed)
