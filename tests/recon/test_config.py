"""Reconstruction settings are validated data with clear errors."""
from __future__ import annotations

import pytest

from vitq.errors import VitqError
from vitq.recipe import make_recipe
from vitq.recon.config import POS_VARIANTS, RECON_PRESETS, ReconConfig, Stage


def test_presets_and_overrides_round_trip():
    cfg = make_recipe("W4A4", "pfcr", {"recon_preset": "full", "iters": 7}).recon
    assert cfg.preset == "full" and cfg.iters == 7 and cfg.samples == 1024 and cfg.augment
    assert ReconConfig.from_dict(cfg.to_dict()) == cfg
    assert set(RECON_PRESETS) >= {"fast", "full"} and len(POS_VARIANTS) >= 3


@pytest.mark.parametrize(("bits", "method", "settings", "message"), [
    ("W9A4", "pfcr", {}, "2..8"),
    ("W4A1", "pfcr", {}, "2..8"),
    ("W4A4", "qdrop", {}, "unknown method 'qdrop'; choose one of: .*pfcr"),
    ("W4A4", "pfcr", {"recon_preset": "huge"}, "choose one of: fast"),
    ("W4A4", "pfcr", {"pos": "magic"}, "POS variant"),
    ("W4A4", "pfcr", {"coarsest": 3}, "power of two"),
    ("W4A4", "brecq", {"itrs": 3}, "unknown setting itrs; brecq .reconstruction. takes: .*iters"),
    ("W4A4", "brecq", {"pos": "joint"}, "setting pos does not apply to brecq"),
    ("W4A4", "percentile", {"iters": 3}, "setting iters does not apply to percentile"),
])
def test_bad_settings_fail_clearly(bits, method, settings, message):
    with pytest.raises(VitqError, match=message):
        make_recipe(bits, method, settings)


def test_bad_stage():
    with pytest.raises(VitqError, match="activations"):
        Stage(activations="sometimes")


def test_every_named_preset_builds_and_qhyvit_runs_integer_kernels_above_4_bits():
    from vitq.recipe import RECIPE_PRESETS, preset_recipe

    recipes = {name: preset_recipe(name) for name in RECIPE_PRESETS}
    for name in ("w8a8-qhyvit-ort", "w8a8-qhyvit", "w6a6-qhyvit"):
        assert recipes[name].format.conv_layout == "integer" and not recipes[name].recon.per_channel_activations, name
    assert "integer-kernel layout" in recipes["w6a6-qhyvit"].derived["recon.per_channel_activations"]
    low = recipes["w4a4-qhyvit"]  # 4 bits: per-channel activations keep the model (15.83 vs 3.41 points lost)
    assert low.format.conv_layout == "inputs" and low.recon.per_channel_activations
    pinned = preset_recipe("w8a8-qhyvit", settings={"per_channel_activations": True, "conv_layout": "inputs"})
    assert pinned.recon.per_channel_activations and pinned.format.conv_layout == "inputs"
    assert "recon.per_channel_activations" not in pinned.derived
