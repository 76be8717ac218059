"""Each baseline on a tiny random ViT and on MobileViT-XXS improves its own objective over the
min-max scales it starts from."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.baselines.conftest import MODELS, calibrated, float_model
from vitq.baselines import easyquant, ptq4vit
from vitq.baselines.search import SearchSettings
from vitq.calibration import calibrate
from vitq.models.ln_reparam import fold_ln_scales, ln_linear_pairs, per_channel_ln_inputs
from vitq.models.wrap import wrap_model
from vitq.pipeline.quantize import quantize
from vitq.quant.ptf import PTF_MAX_EXPONENT, PowerOfTwoFactorQuantizer
from vitq.quant.quantizer import LogQuantizer, UniformQuantizer
from vitq.quant.twin import TwinUniformQuantizer
from vitq.recipe import make_recipe

SMALL = SearchSettings(n_candidates=4, rounds=1)


def assert_improves(results):
    assert results, "no layer was searched"
    assert all(r.final <= r.initial for r in results)
    assert any(r.final < r.initial for r in results)


@pytest.mark.parametrize("key", MODELS)
def test_easyquant_never_lowers_a_layers_cosine(key):
    qmodel, batches = calibrated(key, "easyquant")
    results = easyquant.refine(qmodel, batches, progress=False, settings=SMALL)
    assert_improves(results)
    assert all(-1.0 <= -r.final <= 1.0 + 1e-6 for r in results)  # the loss is minus the mean cosine
    assert {r.name for r in results} >= {n for n, m in qmodel.named_modules() if n.endswith("qkv")}


@pytest.mark.parametrize("key", MODELS)
def test_ptq4vit_lowers_hessian_weighted_error_with_twin_quantizers(key):
    qmodel, batches = calibrated(key, "ptq4vit")
    twins = {n: q for n, q in qmodel.named_modules() if isinstance(q, TwinUniformQuantizer)}
    assert any(n.endswith("av_matmul.a_quant") and not q.signed for n, q in twins.items())
    assert any(n.endswith("mlp.fc2.input_quant") and q.signed for n, q in twins.items())
    shifts = {n: int(q.shift) for n, q in twins.items()}
    results = ptq4vit.refine(qmodel, batches, progress=False, settings=SMALL)
    assert_improves(results)
    assert shifts != {n: int(q.shift) for n, q in twins.items()}  # the search moved some twin ranges


@pytest.mark.parametrize("key", MODELS)
def test_fqvit_factors_are_powers_of_two_and_beat_one_scale(key):
    name, model, batches = float_model(key)
    qmodel = wrap_model(model, name, make_recipe("W4A4", "fqvit").format)
    assert per_channel_ln_inputs(qmodel, power_of_two=True) > 0
    calibrate(qmodel, batches, progress=False)
    inputs = {}
    hooks = [linear.register_forward_pre_hook(lambda m, a: inputs.__setitem__(m, a[0])) for _, linear in ln_linear_pairs(qmodel)]
    with torch.no_grad():
        qmodel(batches[0])
    for h in hooks:
        h.remove()
    gains = []
    for _, linear in ln_linear_pairs(qmodel):
        q = linear.input_quant
        assert isinstance(q, PowerOfTwoFactorQuantizer)
        exponents = torch.log2(q.scale.detach() / q.scale.detach().amin())
        assert torch.equal(exponents, exponents.round()) and exponents.max() <= PTF_MAX_EXPONENT
        x = inputs[linear]
        one = UniformQuantizer(4, symmetric=False)  # FQ-ViT's baseline: one min-max scale per tensor
        with torch.no_grad():
            one.start_observing()
            one(x)
            one.stop_observing()
            gains.append(float(F.mse_loss(one(x), x) - F.mse_loss(q(x), x)))
    assert all(g >= 0 for g in gains) and any(g > 0 for g in gains)
    before = {id(ln): ln.weight.detach().clone() for ln, _ in ln_linear_pairs(qmodel)}
    fold_ln_scales(qmodel)
    for ln, _ in ln_linear_pairs(qmodel):
        r = torch.log2(before[id(ln)] / ln.weight.detach())  # the folded factor of every channel
        assert torch.equal(r, r.round())


@pytest.mark.parametrize("key", MODELS)
def test_fqvit_quantize_uses_log_int_softmax(key):
    name, model, batches = float_model(key)
    qmodel = quantize(model, name, batches, make_recipe("W4A4", "fqvit"), progress=False).model
    logs = [q for q in qmodel.modules() if isinstance(q, LogQuantizer)]
    assert logs and all(q.kind == "log2" and float(q.scale) == 1.0 for q in logs)
    assert not any(isinstance(q, PowerOfTwoFactorQuantizer) for q in qmodel.modules())  # folded to per-tensor
    assert torch.isfinite(qmodel(batches[0])).all()
