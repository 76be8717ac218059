"""CI accuracy regression: PFCR (``ci`` preset) on the bundled DeiT-Tiny at W4A4 must beat
no reconstruction (``percentile`` with the low-bit recipe, the calibration PFCR starts from) by a
clear margin — in agreement with fp32 and in mean KL to fp32 — and stay above a floor.

Thresholds come from the measured run in ``benchmarks/results/recon_ci.json`` (same command,
same images: the bundled calibration split, the first 100 bundled evaluation images), set with
head-room for run-to-run noise but well above what no reconstruction reaches, so a broken engine
fails. A few minutes on 2 CPU cores.
"""
from __future__ import annotations

import pytest

from calib.datasets import open_split
from calib.loaders import load_batches
from calib.transforms import eval_transform
from vitq.assets import DEMO_MODEL
from vitq.models.loading import create_float_model
from vitq.pipeline.workflow import quantize_and_evaluate
from vitq.recipe import make_recipe

EVAL_IMAGES = 100
# measured (recon_ci.json, uniform 8-bit attention probabilities): pfcr top-1 68.0 / agreement 73.0 / KL 0.58,
# percentile 63.0 / 68.0 / 0.82
PFCR_TOP1_FLOOR = 55.0
MIN_AGREEMENT_GAIN = 3.0  # points of top-1 agreement with fp32 over the percentile calibration
MAX_KL_RATIO = 0.8  # PFCR's mean KL to fp32 as a share of the percentile calibration's (measured 0.71)


@pytest.mark.accuracy
def test_pfcr_ci_beats_no_reconstruction_w4a4(deit_checkpoint, sample_images):
    model = create_float_model(DEMO_MODEL, checkpoint=deit_checkpoint)
    transform = eval_transform(model)
    calib = load_batches(open_split(sample_images, "calibration", transform), 32, progress=False)
    evaluation = load_batches(open_split(sample_images, "evaluation", transform, limit=EVAL_IMAGES), 32, progress=False)
    runs = {}
    for method, settings in (("percentile", {}), ("pfcr", {"recon_preset": "ci"})):
        recipe = make_recipe("W4A4", method, settings, seed=0)
        _, runs[method] = quantize_and_evaluate(model, DEMO_MODEL, recipe, calib, evaluation, "bundled", progress=False)
    pfcr, calibrated = runs["pfcr"].quantized, runs["percentile"].quantized
    assert pfcr.top1 >= PFCR_TOP1_FLOOR, f"PFCR W4A4 top-1 {pfcr.top1:.1f} below the recorded floor {PFCR_TOP1_FLOOR}"
    assert pfcr.agreement >= calibrated.agreement + MIN_AGREEMENT_GAIN, (
        f"PFCR agreement {pfcr.agreement:.1f} not {MIN_AGREEMENT_GAIN} points above percentile {calibrated.agreement:.1f}")
    assert pfcr.kl <= MAX_KL_RATIO * calibrated.kl, f"PFCR KL {pfcr.kl:.3f} vs percentile {calibrated.kl:.3f}"
