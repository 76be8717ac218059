"""Baselines as vitq methods: implied config, registry, save/load, ONNX export fallback, CLI."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from click.testing import CliRunner

from tests.baselines.conftest import calibrated
from tests.export.conftest import images, quantized_tiny_vit
from vitq.baselines import fqvit, ptq4vit
from vitq.baselines.search import SearchSettings
from vitq.cli import main
from vitq.errors import VitqError
from vitq.export.markers import export_reference
from vitq.export.onnx_export import export_onnx
from vitq.export.parity import compare
from vitq.methods import get_method, method_names
from vitq.models.wrap import iter_quantizers
from vitq.pipeline.checkpoint import load_quantized, save_quantized
from vitq.pipeline.quantize import QuantizedModel
from vitq.quant.config import QuantConfig
from vitq.quant.quantizer import UniformQuantizer
from vitq.recipe import Recipe, make_recipe


def test_every_baseline_is_a_registered_method_with_a_refinement_from_minmax():
    assert method_names("baseline") == ["easyquant", "fqvit", "ptq4vit"]
    for name in method_names("baseline"):
        method = get_method(name)
        assert method.refine is not None and method.calibration == "minmax" and not method.reconstructs
    assert make_recipe("W8A8", "ptq4vit").recon is None


def test_methods_imply_their_quantizers_unless_set_explicitly():
    fq, ptq, eq = (make_recipe("W8A8", m) for m in ("fqvit", "ptq4vit", "easyquant"))
    assert (fq.format.softmax_quantizer, fq.format.ln_power_of_two, fq.format.post_act_quantizer) == ("log2", True, "uniform")
    assert (ptq.format.softmax_quantizer, ptq.format.post_act_quantizer, ptq.format.ln_power_of_two) == (
        "twin_uniform", "twin_uniform", False)
    assert (eq.format.softmax_quantizer, eq.format.post_act_quantizer) == ("uniform", "uniform")
    assert fq.derived["format.softmax_quantizer"] == "defines fqvit"
    assert make_recipe("W8A8", "fqvit", {"softmax_quantizer": "log_sqrt2"}).format.softmax_quantizer == "log_sqrt2"
    assert Recipe.from_dict(fq.to_dict()) == fq
    with pytest.raises(VitqError, match="post_act_quantizer"):
        QuantConfig(post_act_quantizer="log2")
    with pytest.raises(VitqError, match="setting calibration does not apply to fqvit"):
        make_recipe("W8A8", "fqvit", {"calibration": "mse"})


@pytest.mark.parametrize("method", ["ptq4vit", "fqvit"])
def test_save_load_rebuilds_the_same_quantizers(method, tmp_path):
    qmodel, batches = calibrated("mobilevit", method)
    recipe = make_recipe("W4A4", method)
    if method == "ptq4vit":
        ptq4vit.refine(qmodel, batches, progress=False, settings=SearchSettings(n_candidates=2, rounds=1))
    else:
        fqvit.refine(qmodel, batches, progress=False)
    reloaded = load_quantized(save_quantized(tmp_path / "q.pt", QuantizedModel(qmodel, "mobilevit_xxs", recipe)))
    loaded = reloaded.model
    assert reloaded.recipe == recipe
    assert {n: type(q) for n, q in iter_quantizers(loaded)} == {n: type(q) for n, q in iter_quantizers(qmodel)}
    with torch.no_grad():
        torch.testing.assert_close(loaded(batches[0]), qmodel.eval()(batches[0]))


def test_twin_uniform_exports_with_documented_uniform_fallback(tmp_path):
    qmodel = quantized_tiny_vit(replace(make_recipe("W8A8", "ptq4vit"), method="minmax"))
    ref = export_reference(qmodel)
    fallback = ref.blocks[0].mlp.fc2.input_quant
    assert isinstance(fallback, UniformQuantizer) and fallback.bits == 8
    lo, hi = qmodel.blocks[0].mlp.fc2.input_quant.value_range()
    step, zp = float(fallback.scale.detach()), float(fallback.zero_point)
    assert (fallback.grid.qmin - zp) * step == pytest.approx(lo, abs=step)  # covers both twin ranges
    assert (fallback.grid.qmax - zp) * step == pytest.approx(hi, abs=step)
    exported = export_onnx(qmodel, tmp_path / "m.onnx")
    assert compare(exported.path, ref, [images(16, seed=7)]).agreement >= 99.5


def test_cli_quantize_with_a_baseline_method(tmp_path, deit_checkpoint, sample_images):
    out = tmp_path / "fq.pt"
    result = CliRunner().invoke(main, ["quantize", "deit_tiny_patch16_224", str(out), "--checkpoint", str(deit_checkpoint),
                                       "--data", str(sample_images), "--bits", "W8A8", "--method", "fqvit",
                                       "--calib-size", "4"])
    assert result.exit_code == 0, result.output
    recipe = load_quantized(out).recipe
    assert recipe.method == "fqvit" and recipe.format.softmax_quantizer == "log2"
    listed = CliRunner().invoke(main, ["list"]).output
    assert all(m in listed for m in ("easyquant", "fqvit", "ptq4vit"))
