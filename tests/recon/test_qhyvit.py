"""Q-HyViT on the reconstruction engine: bridge partitions of the hybrid families, the per-layer
layout search, and checkpoints that rebuild the chosen layouts."""
from __future__ import annotations

import timm
import torch
from torch import nn

from vitq.models.families import partition_for
from vitq.models.loading import create_float_model
from vitq.models.mobile_former import pack_map_tokens
from vitq.models.wrap import iter_quantizers
from vitq.pipeline.checkpoint import load_quantized, save_quantized
from vitq.pipeline.quantize import quantize
from vitq.quant.layout import Layout, layout_of
from vitq.quant.modules import QuantLinear
from vitq.quant.quantizer import UniformQuantizer
from vitq.recipe import make_recipe
from vitq.recon.layouts import select_layouts


def bridge_unit_names(model_name: str, **kwargs) -> list[str]:
    model = timm.create_model(model_name, num_classes=10, **kwargs)
    return [u.name for u in partition_for(model, model_name).bridge_units()]


def test_mobilevit_bridges_join_the_block_that_feeds_them():
    names = bridge_unit_names("mobilevit_xxs")
    assert names == ["stages.0.0", "stages.1.0", "stages.1.1", "stages.1.2", "stages.2.0..stages.2.1",
                     "stages.3.0..stages.3.1", "stages.4.0..stages.4.1"]


def test_efficientformer_flat_bridge_spans_the_4d_to_3d_switch():
    names = bridge_unit_names("efficientformer_l1")
    assert "stages.3.blocks.2..stages.3.blocks.4" in names  # MetaBlock2d + Flat + MetaBlock1d
    assert names[-1] == "stages.3.blocks.2..stages.3.blocks.4"


def test_efficientformerv2_bridges_are_first_attention_blocks():
    names = bridge_unit_names("efficientformerv2_s0", img_size=64)
    assert "stages.2.blocks.3..stages.2.blocks.4" in names
    assert "stages.3.blocks.1..stages.3.blocks.2" in names


def test_mobile_former_blocks_run_on_packed_map_and_tokens():
    torch.manual_seed(0)
    model = timm.create_model("mobile_former_26m", num_classes=10).eval()
    partition = partition_for(model, "mobile_former_26m")
    assert [a.bridge for a in partition.atoms] == [False] + [True] * (len(partition.atoms) - 1)
    x = model.stem(torch.randn(2, 3, 64, 64))
    tokens = model.tokens.unsqueeze(0).expand(2, -1, -1)
    with torch.no_grad():
        z = partition.pack_entry((x, tokens))
        for atom in partition.atoms:
            z = atom.module(z)
        torch.testing.assert_close(z, pack_map_tokens(*model.blocks(x, tokens)))


def test_layout_search_picks_per_channel_for_an_outlier_channel():
    """One input channel 200x larger than the rest: a per-tensor 4-bit grid zeroes all the others."""
    torch.manual_seed(0)
    linear = nn.Linear(16, 8)
    layer = QuantLinear(linear, UniformQuantizer(4, symmetric=False), UniformQuantizer(8, symmetric=True, channels=8))
    layer.weight_quant.enabled = False
    x = torch.randn(64, 16)
    x[:, 3] *= 200
    layer.input_quant.start_observing()
    layer(x)
    layer.input_quant.stop_observing()
    y = linear(x).detach()
    chosen = select_layouts([layer], layer, x, y, "cpu")
    assert layout_of(layer.input_quant).channels == 16
    assert list(chosen.values()) == [layout_of(layer.input_quant).describe()]
    select_layouts([layer], layer, x, y, "cpu", per_channel=False)  # deployment mode: per-tensor only
    assert layout_of(layer.input_quant).channels is None


def test_qhyvit_checkpoint_rebuilds_chosen_layouts(tmp_path):
    name = "mobilevit_xxs"
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10).eval()
    unit = "stages.2.0..stages.2.1"
    recipe = make_recipe("W4A4", "qhyvit", {"calibration": "minmax", "recon_preset": "ci", "samples": 8, "iters": 2, "units": [unit]})
    images = [torch.randn(8, 3, 64, 64)]
    qm = quantize(model, name, images, recipe, progress=False)
    qmodel = qm.model
    changed = [n for n, q in iter_quantizers(qmodel)
               if isinstance(q, UniformQuantizer) and layout_of(q) != Layout(symmetric=False) and "input_quant" in n
               and n.startswith("stages.2.")]
    assert changed, "the search should move at least one activation quantizer of the bridge unit off asym/tensor"
    loaded = load_quantized(save_quantized(tmp_path / "q.pt", qm)).model
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), qmodel.eval()(x))


def test_checkpoint_of_a_spec_built_model_reloads_at_its_resolution(tmp_path, cifar_checkpoint):
    """efficientformerv2 at 64 px needs img_size=64 at construction: the quantized checkpoint keeps the spec."""
    name = "efficientformerv2_s0"
    model = create_float_model(name, checkpoint=cifar_checkpoint(tmp_path / "f.safetensors", name, img_size=64))
    qm = quantize(model, name, [torch.randn(4, 3, 64, 64)], make_recipe("W8A8", "minmax"), progress=False)
    loaded = load_quantized(save_quantized(tmp_path / "q.pt", qm)).model
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), qm.model.eval()(x))


def test_layout_search_keeps_integer_convs_per_tensor():
    """onnxruntime's integer conv takes per-tensor scales only: under ``conv_layout=integer`` the search may flip the
    scheme of an integer conv's input and output quantizers but never makes them per-channel; a Linear still can."""
    from vitq.models.wrap import wrap_model
    from vitq.quant.config import QuantConfig
    from vitq.quant.modules import QuantConv2d
    from vitq.recon.layouts import activation_sites

    q = wrap_model(nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.Flatten(), nn.Linear(32 * 16, 4)), "mobilevit_xxs",
                   QuantConfig(conv_layout="integer"))
    sites = {(type(owner), attr): channels for owner, attr, channels, _ in activation_sites([q])}
    assert sites == {(QuantConv2d, "input_quant"): None, (QuantConv2d, "output_quant"): None, (QuantLinear, "input_quant"): 512}
