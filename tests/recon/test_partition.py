"""Units partition a model exactly: chaining them reproduces the entry module's output, and the
partition's head maps that output to the model's logits."""
from __future__ import annotations

import pytest
import timm
import torch

from vitq.calibration import quantization_disabled
from vitq.models.families import partition_for
from vitq.models.wrap import wrap_model
from vitq.quant.config import QuantConfig
from vitq.recon.cache import capture_input

CASES = [
    ("vit_base_patch16_224", {"img_size": 64}, (1, 3, 64, 64), 12, 0),
    # 128 px with 4x4 windows keeps every stage's grid divisible by the window and the test fast
    ("swin_tiny_patch4_window7_224", {"img_size": 128, "window_size": 4}, (1, 3, 128, 128), 12, 3),
]


@pytest.mark.parametrize(("name", "kwargs", "shape", "blocks", "merges"), CASES)
def test_units_chain_to_the_model_output(name, kwargs, shape, blocks, merges):
    model = timm.create_model(name, exportable=True, **kwargs).eval()
    qmodel = wrap_model(model, name, QuantConfig())
    part = partition_for(qmodel, name)
    assert part.num_blocks == blocks
    assert len(part.atoms) == 2 * blocks + merges
    x = torch.randn(shape)
    with quantization_disabled(qmodel), torch.no_grad():
        entry = qmodel.get_submodule(part.entry)
        inp = capture_input(qmodel, entry, x, 1, "cpu", part.pack_entry)
        reference = entry(inp)
        for granularity in (0, 1, 2, 4):
            out = inp
            for unit in part.units(granularity):
                out = unit(out)
            torch.testing.assert_close(out, reference)
        torch.testing.assert_close(part.head(qmodel, reference), qmodel(x))  # the Fisher loss's head


def test_swin_patch_merging_joins_first_block_of_its_stage():
    model = timm.create_model("swin_tiny_patch4_window7_224", exportable=True, img_size=128, window_size=4).eval()
    part = partition_for(wrap_model(model, "swin_tiny_patch4_window7_224", QuantConfig()), "swin_tiny_patch4_window7_224")
    names = [u.name for u in part.units(0)]
    assert names[:5] == ["layers.0.blocks.0.attn", "layers.0.blocks.0.mlp", "layers.0.blocks.1.attn",
                         "layers.0.blocks.1.mlp", "layers.1.downsample"]
    stage1 = next(u for u in part.units(1) if u.name == "layers.1.blocks.0")
    assert [a.name for a in stage1.atoms][0] == "layers.1.downsample"
    assert [u.name for u in part.units(4)][0] == "layers.0.blocks.0..layers.1.blocks.1"
