"""The ReLU-MLP model change: GELU -> ReLU in every transformer MLP, each MLP refitted to the original block
outputs; the changed model rebuilds from its spec, the recipe records it, drops stay measured against the
original model, and a family without transformer MLPs is a clear error."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from vitq.errors import VitqError
from vitq.models.loading import create_float_model, model_spec
from vitq.models.relu_mlp import relu_mlp_model, use_relu
from vitq.pipeline.checkpoint import load_quantized, save_quantized
from vitq.pipeline.workflow import quantize_and_evaluate
from vitq.recipe import Recipe, make_recipe

NAME = "deit_tiny_patch16_224"
TINY = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2, "num_classes": 10}


def tiny_model() -> nn.Module:
    model = create_float_model(NAME, spec={"model": NAME, "kwargs": TINY})
    model.head.weight.data.mul_(20.0)  # logits far from uniform, so agreement means something
    return model


def images(n: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_the_fit_brings_every_changed_block_closer_to_the_original():
    model = tiny_model()
    changed, report = relu_mlp_model(model, NAME, [images()], progress=False)
    assert all(isinstance(b.mlp.act, nn.ReLU) for b in changed.blocks)
    assert all(isinstance(b.mlp.act, nn.GELU) for b in model.blocks), "the original model must stay as it was"
    assert [m["name"] for m in report.mlps] == ["blocks.0.mlp", "blocks.1.mlp"]
    assert all(m["after"] < m["before"] for m in report.mlps), report.mlps
    # the refit model tracks the original better than the bare swap, on images it was not fitted on
    swapped = create_float_model(NAME, spec=model_spec(model))
    swapped.load_state_dict(model.state_dict())
    use_relu(swapped, NAME)
    with torch.no_grad():
        x = images(seed=2)
        ref = model(x)
        assert (changed(x) - ref).pow(2).mean() < (swapped(x) - ref).pow(2).mean()


def test_a_changed_model_rebuilds_from_its_spec():
    model = tiny_model()
    changed, _ = relu_mlp_model(model, NAME, [images()], progress=False)
    spec = model_spec(changed)
    assert spec["relu_mlp"] is True and spec["kwargs"] == TINY and model_spec(model).get("relu_mlp") is None
    rebuilt = create_float_model(NAME, spec=spec)
    rebuilt.load_state_dict(changed.state_dict())
    x = images(4, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), changed(x))


def test_recipe_records_the_change_and_refuses_a_non_boolean():
    recipe = make_recipe("W4A4", "pfcr", {"relu_mlp": True})
    assert recipe.relu_mlp and Recipe.from_dict(recipe.to_dict()).relu_mlp
    assert not make_recipe("W8A8").relu_mlp
    with pytest.raises(VitqError, match="relu_mlp must be true or false"):
        make_recipe("W8A8", "percentile", {"relu_mlp": "yes"})


def test_a_family_without_transformer_mlps_is_refused_naming_those_that_take_it():
    import timm

    model = timm.create_model("mobilevit_xxs", num_classes=10).eval()
    with pytest.raises(VitqError, match=r"families that take it: .*vit"):
        relu_mlp_model(model, "mobilevit_xxs", [torch.randn(2, 3, 64, 64)], progress=False)


def test_quantized_changed_model_is_measured_against_the_original_and_reloads(tmp_path):
    model = tiny_model()
    calib = [(images(), torch.zeros(16, dtype=torch.long))]
    evaluation = [(images(seed=4), torch.randint(0, 10, (16,), generator=torch.Generator().manual_seed(0)))]
    qm, run = quantize_and_evaluate(model, NAME, make_recipe("W8A8", "percentile", {"relu_mlp": True}), calib, evaluation,
                                    "random", progress=False)
    record = run.record()
    assert record["float_reference"] == "original" and "changed_fp32_top1" in record
    assert record["recipe"]["relu_mlp"] is True and qm.meta["relu_mlp"]["mlps"] == 2
    # the fp32 column is the original GELU model: its agreement with itself is 100 %, the changed float model's is not
    assert run.fp32.agreement == 100.0 and run.changed_fp32 is not None
    path = save_quantized(tmp_path / "q.pt", qm)
    loaded = load_quantized(path)
    assert all(isinstance(b.mlp.act, nn.ReLU) for b in loaded.model.blocks)
    x = images(4, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), qm.model(x))


def test_a_plan_the_model_cannot_take_fails_before_the_fit(monkeypatch):
    import vitq.pipeline.quantize as pipeline

    def must_not_fit(*_args, **_kwargs):
        raise AssertionError("the MLP fit ran before the reconstruction plan was checked")

    monkeypatch.setattr(pipeline, "relu_mlp_model", must_not_fit)
    recipe = make_recipe("W4A4", "pfcr", {"relu_mlp": True, "units": ["blocks.9"], "recon_preset": "ci"})
    with pytest.raises(VitqError, match="unknown unit"):
        pipeline.quantize(tiny_model(), NAME, [images()], recipe, progress=False)
