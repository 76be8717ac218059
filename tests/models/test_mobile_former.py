"""Mobile-Former: shapes, paper sizes (params and MAdds), trainability, module names vitq relies on."""
from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

import vitq.models.mobile_former  # noqa: F401  (registers mobile_former_* with timm)
from vitq.calibration import quantization_disabled
from vitq.errors import VitqError
from vitq.models.mobile_former import MobileFormerBlock
from vitq.models.wrap import wrap_model
from vitq.quant.config import QuantConfig
from vitq.quant.modules import MatMul, QuantMatMul

# Paper (Chen et al., CVPR 2022), ImageNet table: name -> (params in M, MAdds in M at 224 px).
PAPER = {
    "mobile_former_26m": (3.2, 26), "mobile_former_52m": (3.5, 52), "mobile_former_96m": (4.6, 96),
    "mobile_former_151m": (7.6, 151), "mobile_former_214m": (9.4, 214), "mobile_former_294m": (11.4, 294),
    "mobile_former_508m": (14.0, 508),
}


def multiply_adds(model: nn.Module, size: int) -> int:
    """Multiply-adds of convs, linears and attention matmuls (what the paper counts), via forward hooks."""
    total = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            total += out.numel() * module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        elif isinstance(module, nn.Linear):
            total += out.numel() * module.in_features
        else:
            total += out.numel() * inputs[0].shape[-1]

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear, MatMul))]
    with torch.no_grad():
        model(torch.randn(1, 3, size, size))
    for h in handles:
        h.remove()
    return total


def test_registered_with_timm_and_data_config():
    assert timm.list_models("mobile_former*") == sorted(PAPER, key=lambda n: PAPER[n][1])
    model = timm.create_model("mobile_former_26m", num_classes=10)
    assert model.num_classes == 10 and model.pretrained_cfg["architecture"] == "mobile_former_26m"
    cfg = timm.data.resolve_model_data_config(model)
    assert cfg["input_size"] == (3, 224, 224) and cfg["interpolation"] == "bicubic" and cfg["crop_pct"] == 0.875
    assert cfg["mean"] == timm.data.IMAGENET_DEFAULT_MEAN and cfg["std"] == timm.data.IMAGENET_DEFAULT_STD


@pytest.mark.parametrize("size", [64, 224])
def test_output_shapes(size):
    model = timm.create_model("mobile_former_52m", num_classes=10).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        feats, tokens = model.forward_features(x)
        assert feats.shape == (2, 96, size // 32, size // 32) and tokens.shape == (2, 3, 128)
        assert model.forward_head((feats, tokens), pre_logits=True).shape == (2, 1024)
        assert model(x).shape == (2, 10)


def test_reset_classifier():
    model = timm.create_model("mobile_former_26m").eval()
    model.reset_classifier(7)
    assert model.num_classes == 7 and model.get_classifier().out_features == 7
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 7)
    model.reset_classifier(0)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1024)


@pytest.mark.parametrize("name", list(PAPER))
def test_params_and_madds_match_paper(name):
    params, madds = PAPER[name]
    model = timm.create_model(name).eval()
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(params, rel=0.10)
    assert multiply_adds(model, 224) / 1e6 == pytest.approx(madds, rel=0.15)


def test_trains_on_a_fixed_batch():
    model = timm.create_model("mobile_former_26m", num_classes=10).train()
    x, y = torch.randn(4, 3, 64, 64), torch.arange(4)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(5):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0], losses


def test_module_names_for_quantization():
    model = timm.create_model("mobile_former_294m")
    modules = dict(model.named_modules())
    assert isinstance(modules["stem.conv"], nn.Conv2d) and isinstance(modules["head.fc"], nn.Linear)
    assert model.pretrained_cfg["first_conv"] == "stem.conv" and model.pretrained_cfg["classifier"] == "head.fc"
    assert model.tokens.shape == (6, 192)
    mf_blocks = [i for i, b in enumerate(model.blocks) if isinstance(b, MobileFormerBlock)]
    assert mf_blocks == list(range(1, 12))  # bneck-lite, then 11 Mobile-Former blocks (paper Table 1)
    for i in mf_blocks:
        for part in ("mobile_to_former", "former", "mobile", "former_to_mobile"):
            assert f"blocks.{i}.{part}" in modules
    matmuls = [m for m in model.modules() if isinstance(m, MatMul)]
    # two per attention: three attentions per block plus the final tokens-from-map bridge
    assert len(matmuls) == 2 * (3 * len(mf_blocks) + 1)
    assert sum(m.probabilities for m in matmuls) == len(matmuls) // 2
    # every BatchNorm2d directly follows the Conv2d it normalizes, so BN can be folded
    ordered = list(model.modules())
    for prev, mod in zip(ordered, ordered[1:]):
        if isinstance(mod, nn.BatchNorm2d):
            assert isinstance(prev, nn.Conv2d) and prev.out_channels == mod.num_features


def test_wrap_model_quantizes_every_attention_matmul():
    model = timm.create_model("mobile_former_26m", num_classes=10).eval()
    n_matmul = sum(isinstance(m, MatMul) for m in model.modules())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        q = wrap_model(model, "mobile_former_26m", QuantConfig())
        assert sum(isinstance(m, QuantMatMul) for m in q.modules()) == n_matmul
        with quantization_disabled(q):
            torch.testing.assert_close(q(x), ref)


def test_pretrained_raises_clear_error():
    with pytest.raises(VitqError, match="no pretrained weights"):
        timm.create_model("mobile_former_26m", pretrained=True)
