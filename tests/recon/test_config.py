"""Reconstruction settings are validated data with clear errors."""
from __future__ import annotations

import pytest

from vitq.errors import VitqError
from vitq.quant.config import QuantConfig, recon_config
from vitq.recon import POS_VARIANTS, RECON_PRESETS, ReconConfig, Stage


def test_presets_and_overrides_round_trip():
    cfg = recon_config(QuantConfig(w_bits=4, a_bits=4, method="pfcr", recon={"preset": "full", "iters": 7}))
    assert cfg.preset == "full" and cfg.iters == 7 and cfg.samples == 1024 and cfg.augment
    assert ReconConfig.from_dict(cfg.to_dict()) == cfg
    assert set(RECON_PRESETS) >= {"fast", "full"} and len(POS_VARIANTS) >= 3


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"method": "pfcr", "w_bits": 9}, "2..8"),
    ({"method": "pfcr", "a_bits": 1}, "2..8"),
    ({"method": "qdrop"}, "available: .*pfcr"),
    ({"method": "pfcr", "recon": {"preset": "huge"}}, "choose one of: fast"),
    ({"method": "pfcr", "recon": {"pos": "magic"}}, "POS variant"),
    ({"method": "pfcr", "recon": {"coarsest": 3}}, "power of two"),
    ({"method": "brecq", "recon": {"itrs": 3}}, "unknown reconstruction options"),
])
def test_bad_settings_fail_clearly(kwargs, message):
    with pytest.raises(VitqError, match=message):
        QuantConfig(**kwargs)


def test_bad_stage():
    with pytest.raises(VitqError, match="activations"):
        Stage(activations="sometimes")
