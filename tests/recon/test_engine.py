"""The engine on a tiny random DeiT: lower unit error, hard 0/1 rounding, determinism, errors."""
from __future__ import annotations

import contextlib
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vitq.calibration import quantization_disabled
from vitq.errors import VitqError
from vitq.methods import get_method, method_names
from vitq.models.families import partition_for
from vitq.models.units import activation_after
from vitq.quant.config import QuantConfig
from vitq.recipe import make_recipe
from vitq.recon import engine as engine_module
from vitq.recon.config import ReconConfig
from vitq.recon.curvature import KL_TEMPERATURE, LowRankFisher
from vitq.recon.engine import Reconstructor, check_plan, reconstruct
from vitq.recon.rounding import LearnedRoundingQuantizer

from .conftest import tiny_wrapped

NAME = "deit_tiny_patch16_224"
CFG = ReconConfig(samples=16, iters=20, batch_size=8, lr_rounding=5e-2)
MSE_W3A4 = QuantConfig(w_bits=3, a_bits=4, weight_observer="mse", activation_observer="mse")


def schedule(method: str):
    return get_method(method).schedule


def recon(qmodel: torch.nn.Module, method: str, images: torch.Tensor, cfg: ReconConfig):
    return reconstruct(qmodel, partition_for(qmodel, NAME), [images], method, schedule(method), cfg, progress=False)


def run(method: str, images: torch.Tensor, cfg: ReconConfig = CFG, head_gain: float = 1.0):
    qmodel = tiny_wrapped(MSE_W3A4, images, head_gain)
    return qmodel, recon(qmodel, method, images, cfg)


@pytest.mark.parametrize("method", ["pfcr", "brecq", "adaround"])
def test_reconstruction_lowers_unit_error(method, images):
    qmodel, report = run(method, images)
    levels = {"pfcr": ["fine", "1-block"], "brecq": ["1-block"], "adaround": ["layer"]}[method]
    assert report.levels == levels
    improved = [r["after"] < r["before"] for r in report.losses]
    assert sum(improved) >= 0.8 * len(improved), report.losses
    summary = report.summary()
    assert [lv["level"] for lv in summary["levels"]] == levels
    assert sum(lv["units"] for lv in summary["levels"]) == len(report.losses)
    last = [r["after"] for r in report.losses if r["level"] == levels[-1]]
    assert summary["levels"][-1]["after"] == pytest.approx(sum(last) / len(last), abs=1e-6)
    assert summary["levels"][-1]["worst_after"] == max(last)
    for m in qmodel.modules():
        if isinstance(m, LearnedRoundingQuantizer):
            assert m.soft_logits is None and set(m.rounding.unique().tolist()) <= {0, 1}


def test_learned_rounding_is_consistent_with_integer_codes(images):
    qmodel, _ = run("pfcr", images)
    layer = qmodel.blocks[0].mlp.fc1
    q = layer.weight_quant
    codes = q.to_int(layer.weight)
    assert codes.min() >= q.grid.qmin and codes.max() <= q.grid.qmax
    torch.testing.assert_close((codes - q.zero_point[:, None]) * q.scale[:, None], q(layer.weight))
    nearest = torch.round(layer.weight / q.scale[:, None]).clamp(q.grid.qmin, q.grid.qmax)
    assert (codes != nearest).any(), "reconstruction should flip some rounding decisions"


def test_learned_weight_scales_rescale_the_codes_of_the_calibrated_grid(images):
    calibrated = tiny_wrapped(MSE_W3A4, images)
    grid = calibrated.blocks[0].mlp.fc1.weight_quant.scale.detach().clone()
    fixed, _ = run("pfcr", images)
    learned, _ = run("pfcr", images, dataclasses.replace(CFG, lr_weight_scale=2e-2))
    assert torch.equal(fixed.blocks[0].mlp.fc1.weight_quant.scale, fixed.blocks[0].mlp.fc1.weight_quant.grid_scale)
    layer = learned.blocks[0].mlp.fc1
    q = layer.weight_quant
    torch.testing.assert_close(q.grid_scale, grid)  # the rounding stays relative to the calibrated grid
    assert not torch.allclose(q.scale, grid) and not q.scale.requires_grad
    codes = q.to_int(layer.weight)
    torch.testing.assert_close((codes - q.zero_point[:, None]) * q.scale[:, None], q(layer.weight))
    nearest = torch.round(layer.weight / grid[:, None]).clamp(q.grid.qmin, q.grid.qmax)
    assert ((codes - nearest).abs() <= 1).all()


def test_deterministic_with_seed(images):
    a, _ = run("pfcr", images)
    b, _ = run("pfcr", images)
    for (ka, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(va, vb), ka


def test_unknown_unit_is_rejected_with_the_list(images):
    with pytest.raises(VitqError, match="unknown unit.*blocks.7.*blocks.0.attn"):
        run("pfcr", images, ReconConfig(iters=1, units=("blocks.7",)))


def test_methods_registered():
    assert method_names("reconstruction") == ["adaround", "brecq", "pfcr", "qhyvit"]


@pytest.mark.parametrize("anneal", ["level", "global"])
def test_anneal_modes_schedule_the_rounding_regularizer(anneal, images):
    qmodel = tiny_wrapped(MSE_W3A4, images)
    cfg = ReconConfig(iters=10, warmup=0.2, beta=(20.0, 2.0), coarsest=2, anneal=anneal)
    engine = Reconstructor(qmodel, partition_for(qmodel, NAME), schedule("pfcr"), cfg, "cpu", progress=False)
    assert len(engine.levels) == 3  # fine, 1 block, 2 blocks
    betas = []
    for engine.level_index in range(3):
        betas.append([engine.regularizer_beta(step) for step in range(10)])
    if anneal == "level":  # every level: 2 warm-up steps, then beta 20 -> 2
        assert all(b[:2] == [None, None] and b[2] == 20.0 and b[-1] < 5.0 for b in betas)
    else:  # one warm-up (6 of 30 steps) and one schedule over all levels, ending at the coarsest
        flat = [b for level in betas for b in level]
        assert flat[:6] == [None] * 6 and flat[6] == 20.0 and flat[-1] < 3.0
        assert all(a >= b for a, b in zip(flat[6:], flat[7:]))


def test_bad_anneal_mode_is_rejected():
    with pytest.raises(VitqError, match="anneal must be one of"):
        ReconConfig(anneal="sometimes")


def test_reopen_keeps_decisions_but_makes_them_revisable_again():
    weight = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    q = LearnedRoundingQuantizer(4, True, 4, 0, weight.shape)
    with torch.no_grad():
        q.scale.copy_(weight.abs().amax(1) / 7)
    q.scale.requires_grad_(False)
    q.initialized.fill_(True)
    q.start_soft(weight)
    q.soft_logits = (torch.where(q.soft_rounding() >= 0.5, 8.0, -8.0)).requires_grad_(True)  # an annealed level
    q.freeze()
    decided = q.rounding.clone()
    q.start_soft(weight)
    q(weight).sum().backward()
    assert q.soft_logits.grad.abs().max() == 0  # clamped: a coarser level could not change anything
    q.reopen(0.1)
    q.start_soft(weight)
    q(weight).sum().backward()
    assert (q.soft_logits.grad != 0).float().mean() > 0.8  # all but codes clamped at the grid's ends
    h = q.soft_rounding().detach()
    assert torch.equal((h >= 0.5).to(torch.uint8), decided)
    torch.testing.assert_close(torch.where(decided.bool(), 1 - h, h), torch.full_like(h, 0.1))


def test_bad_reopen_margin_is_rejected():
    with pytest.raises(VitqError, match="reopen must be in"):
        ReconConfig(reopen=0.5)


def test_fisher_weights_follow_what_reaches_the_prediction(images):
    qmodel = tiny_wrapped(MSE_W3A4, images)
    part = partition_for(qmodel, NAME)
    engine = Reconstructor(qmodel, part, schedule("pfcr"), ReconConfig(loss="fisher"), "cpu", progress=False)
    y = torch.randn(6, 17, 32, generator=torch.Generator().manual_seed(0))  # 16 patches + class token
    last = engine.output_weights([], y)  # after the last block only the class token reaches the head
    assert last.shape == y.shape and last[:, 1:].abs().max() == 0 and (last[:, 0] > 0).any()
    torch.testing.assert_close(last.mean(), torch.tensor(1.0))
    earlier = engine.output_weights(part.units(1)[1:], y)  # before two more blocks, every token counts
    assert (earlier[:, 1:] > 0).float().mean() > 0.9
    engine.cfg = ReconConfig(loss="fisher_mean")  # the same weights for every sample
    mean = engine.output_weights(part.units(1)[1:], y)
    torch.testing.assert_close(mean, (earlier.mean(0, keepdim=True) / earlier.mean()).expand_as(y))


def test_aph_weights_are_the_curvature_of_the_softened_kl_along_ones(monkeypatch):
    """loss="aph" on a toy tail (a linear head on the flattened output): the weights are |H 1| averaged over the
    samples and scaled to mean 1, with H = W^T (diag(p) - p p^T) W / T^2 the Hessian of the KL at the float output."""
    torch.manual_seed(0)
    z = torch.randn(5, 3, 4)
    head = torch.randn(4 * 3, 6)
    engine = Reconstructor.__new__(Reconstructor)  # only the weights: no model needed
    engine.cfg, engine.device, engine.model = ReconConfig(loss="aph", batch_size=2), "cpu", nn.Identity()
    engine.tail = lambda rest: (lambda h: h.flatten(1) @ head)
    weights = engine.output_weights([], z)
    p = (z.flatten(1) @ head / KL_TEMPERATURE).softmax(-1)
    curvature = torch.stack([head @ (torch.diag(pi) - torch.outer(pi, pi)) @ head.T for pi in p]) / KL_TEMPERATURE**2
    expected = (curvature @ torch.ones(12)).abs().mean(0).reshape(3, 4)
    torch.testing.assert_close(weights, (expected / expected.mean()).expand_as(z))
    monkeypatch.setattr(engine_module, "APH_SAMPLES", 2)  # averaged over the first samples, one weight for all
    first = (curvature[:2] @ torch.ones(12)).abs().mean(0).reshape(3, 4)
    torch.testing.assert_close(engine.output_weights([], z), (first / first.mean()).expand_as(z))


def test_aph_loss_reconstructs_through_a_model_tail(images):
    _, report = run("pfcr", images, ReconConfig(samples=16, iters=20, batch_size=8, lr_rounding=5e-2, loss="aph"))
    improved = [r["after"] < r["before"] for r in report.losses]
    assert sum(improved) >= 0.8 * len(improved), report.losses


def test_fisher_loss_reconstructs_and_is_refused_where_undefined(images):
    _, report = run("brecq", images, ReconConfig(samples=16, iters=20, batch_size=8, lr_rounding=5e-2, loss="fisher"))
    improved = [r["after"] < r["before"] for r in report.losses]
    assert sum(improved) >= 0.8 * len(improved), report.losses
    with pytest.raises(VitqError, match="loss 'fisher'.*layers"):
        run("adaround", images, ReconConfig(iters=1, loss="fisher"))
    with pytest.raises(VitqError, match="loss must be one of"):
        ReconConfig(loss="l1")
    qmodel = tiny_wrapped(MSE_W3A4, images)
    headless = dataclasses.replace(partition_for(qmodel, NAME), head=None)  # as the hybrid families' partitions are
    with pytest.raises(VitqError, match="needs the partition's classifier head.*families that take it: swin, vit"):
        check_plan(qmodel, headless, "pfcr", schedule("pfcr"), ReconConfig(loss="fisher"))


def test_low_rank_fisher_matches_its_definition_and_grows_one_rank_per_refresh():
    """fisher_dplr on a toy tail (a linear head on the flattened output): the gradient rows are the mean |dKL/dz|,
    the rank-1 low-rank part is (g . |e|)^2 / |d|^2, and after a refresh the loss starts at the relative MSE."""
    torch.manual_seed(0)
    head = torch.nn.Linear(6, 4)
    y = torch.randn(10, 2, 3)
    out_q = y + 0.1 * torch.randn_like(y)
    tail = lambda z: head(z.flatten(1))  # noqa: E731
    with torch.no_grad():
        logits = tail(y)
    fisher = LowRankFisher(tail, logits, rank=2, iters=10, batch_size=4, device="cpu")
    assert fisher.due(0) and not fisher.due(3) and fisher.due(5)
    fisher.refresh(out_q, y, contextlib.nullcontext)
    z = out_q.clone().requires_grad_(True)
    kl = F.kl_div(F.log_softmax(tail(z) / KL_TEMPERATURE, -1), F.log_softmax(logits / KL_TEMPERATURE, -1),
                  log_target=True, reduction="sum")
    (grad,) = torch.autograd.grad(kl, z)
    g, d = grad.abs().flatten(1).mean(0), (out_q - y).abs().flatten(1).mean(0)
    torch.testing.assert_close(fisher.grads[0], g)
    out = y[:3] + 0.2
    e = (out - y[:3]).abs().flatten(1)
    relative = e.pow(2).mean() / y[:3].pow(2).mean()
    assert float(fisher.error(out, y[:3])) == pytest.approx(float(relative))  # both parts at their reference value
    torch.testing.assert_close(fisher.scale, (((e @ g) ** 2 / d.dot(d)).mean(), (e.pow(2) * g).mean(), relative))
    assert float(fisher.error(2 * out - y[:3], y[:3])) == pytest.approx(4 * float(relative), rel=1e-5)  # 2x error: x4
    fisher.refresh(out_q * 1.1, y, contextlib.nullcontext)
    assert len(fisher.grads) == 2 and fisher.inverse.shape == (2, 2) and not fisher.due(5)


@pytest.mark.parametrize("method", ["pfcr", "brecq"])
def test_fisher_dplr_loss_brings_the_prediction_closer_to_float(method, images):
    """The DPLR objective weighs what reaches the logits, not the relative MSE the report shows: judged by the
    KL of the quantized model's prediction to the float one, which reconstruction must lower."""
    qmodel = tiny_wrapped(MSE_W3A4, images, head_gain=4.0)

    def kl() -> float:
        with torch.no_grad():
            with quantization_disabled(qmodel):
                fp = qmodel(images)
            return float(F.kl_div(F.log_softmax(qmodel(images), -1), F.log_softmax(fp, -1), log_target=True,
                                  reduction="batchmean"))

    before = kl()
    report = recon(qmodel, method, images, ReconConfig(samples=16, iters=30, batch_size=8, lr_rounding=5e-2,
                                                       loss="fisher_dplr"))
    assert report.losses and kl() < 0.8 * before


def test_fisher_dplr_is_refused_for_layers_and_needs_a_rank(images):
    with pytest.raises(VitqError, match="loss 'fisher_dplr'.*layers"):
        run("adaround", images, ReconConfig(iters=1, loss="fisher_dplr"))
    with pytest.raises(VitqError, match="fisher_rank must be positive"):
        ReconConfig(fisher_rank=0)


def test_model_level_fits_logits_with_activation_steps_only(images):
    cfg = ReconConfig(samples=16, iters=10, batch_size=8, lr_rounding=5e-2, lr_act=1e-2, pos="joint")
    torch.manual_seed(0)
    plain, _ = run("pfcr", images, cfg, head_gain=100.0)
    torch.manual_seed(0)
    qmodel, report = run("pfcr", images, ReconConfig(**{**cfg.to_dict(), "model_iters": 30}), head_gain=100.0)
    assert report.levels == ["fine", "1-block", "model"]
    (row,) = [r for r in report.losses if r["level"] == "model"]
    assert row["unit"] == "model" and row["after"] < 0.9 * row["before"], row
    state, before = qmodel.state_dict(), plain.state_dict()
    changed = {k for k in state if not torch.equal(state[k], before[k])}
    # the stem runs before the cached unit input and no weight rounding is learned at this level
    assert not any(k.startswith("patch_embed.") or k.endswith("weight_quant.rounding") for k in changed), changed
    assert "head.input_quant.scale" in changed and any(k.startswith("blocks.") for k in changed), changed


def test_model_level_compute_and_headless_partitions(images):
    from dataclasses import replace

    from vitq.recon.schedules import MODEL

    cfg = ReconConfig(iters=10, coarsest=2, model_iters=7)
    assert schedule("pfcr").levels(cfg, 4) == [0, 1, 2, MODEL]
    assert [schedule("pfcr").iters(cfg, 4, g) for g in (0, MODEL)] == [10, 7]
    assert schedule("brecq").iters(cfg, 4, 1) == 3 * 10 + 7  # one whole-model step ~ one step per block
    qmodel = tiny_wrapped(MSE_W3A4.with_(w_bits=4), images)
    headless = replace(partition_for(qmodel, NAME), head=None)  # e.g. the hybrid families: no model level
    assert Reconstructor(qmodel, headless, schedule("pfcr"), cfg, "cpu", progress=False).levels == [0, 1, 2]
    assert Reconstructor(qmodel, headless, schedule("brecq"), cfg, "cpu", progress=False).level_iters == [30]
    with pytest.raises(VitqError, match="model_iters >= 0"):
        ReconConfig(model_iters=-1)


def test_model_level_learns_bias_offsets_only_when_asked(images):
    settings = {"recon_preset": "fast", "samples": 16, "iters": 4, "model_iters": 10}
    recipe = make_recipe("W3A4", "pfcr", {**settings, "lr_bias": 1e-2})
    assert recipe.bias_offsets
    for off in ({"model_iters": 10, "lr_bias": 0.0}, {"model_iters": 0, "lr_bias": 0.0}):
        assert not make_recipe("W3A4", "pfcr", off).bias_offsets
    for baseline in ("brecq", "adaround"):  # they never reach the model level
        assert not make_recipe("W3A4", baseline, settings).bias_offsets
    qmodel = tiny_wrapped(recipe.format, images, head_gain=100.0, bias_offsets=True)
    recon(qmodel, "pfcr", images, recipe.recon)
    deltas = {n: m.bias_delta for n, m in qmodel.named_modules() if getattr(m, "bias_delta", None) is not None}
    assert "head" in deltas and all(not d.requires_grad for d in deltas.values())
    assert sum(bool(d.abs().max() > 0) for d in deltas.values()) >= len(deltas) - 1  # the stem's stays zero
    assert deltas["patch_embed.proj"].abs().max() == 0


def test_layerwise_targets_include_the_activation_a_layer_feeds(images):
    qmodel = tiny_wrapped(make_recipe("W4A4", "adaround").format, images)
    mlp = qmodel.blocks[0].mlp
    assert activation_after(qmodel, "blocks.0.mlp.fc1") is mlp.act
    assert activation_after(qmodel, "blocks.0.mlp.fc2") is None
    assert activation_after(qmodel, "blocks.0.attn.qkv") is None

