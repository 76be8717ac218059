"""Hybrid ViTs (MobileViT v1/v2, EfficientFormer v1/v2): BatchNorm folding, quantized attention, coverage.

Random init hides bugs: BatchNorm starts as identity, attention biases at 0 and layer scales at
1e-5 (so attention and MLP branches barely reach the output). ``nontrivial`` randomizes all of
them before every comparison, so a wrong fold or attention would change the output.
"""
from dataclasses import dataclass

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.layers import BatchNormAct2d, ConvNormAct
from timm.models import efficientformer, efficientformer_v2
from timm.models.mobilevit import LinearSelfAttention
from torch import nn

from vitq.calibration import calibrate, quantization_disabled
from vitq.models.bn_fold import FoldedNorm, fold_batchnorms
from vitq.models.families import FAMILIES
from vitq.models.wrap import SOFTMAX_ATTENTION_SITES, float_layers_left, iter_quantizers, wrap_model
from vitq.pipeline.checkpoint import load_quantized, save_quantized
from vitq.pipeline.quantize import quantize
from vitq.quant.config import QuantConfig
from vitq.quant.modules import QuantConv2d, QuantLinear, QuantMatMul, QuantMul
from vitq.quant.quantizer import LogQuantizer, UniformQuantizer
from vitq.recipe import make_recipe


@dataclass(frozen=True)
class Case:
    kwargs: dict
    px: int
    linear: int
    conv: int
    attention: int  # attention modules swapped (the family adapters' attention maps)
    matmul: int  # QuantMatMul sites (exact type)
    mul: int  # QuantMul sites
    folded: int  # BatchNorms folded into convs
    left_float: tuple[str, ...]  # BatchNorms that follow no conv


CASES = {
    # 9 timm ViT Attention (qk, av each)
    "mobilevit_xxs": Case({}, 64, linear=37, conv=35, attention=9, matmul=18, mul=0, folded=32, left_float=()),
    # 9 LinearSelfAttention: context = scores @ key (matmul), relu(value) * context (mul)
    "mobilevitv2_050": Case({}, 64, linear=1, conv=64, attention=9, matmul=9, mul=9, folded=25, left_float=()),
    # 1 Attention (fixed 7x7 bias table: 224 px only)
    "efficientformer_l1": Case({}, 224, linear=6, conv=33, attention=1, matmul=2, mul=0, folded=33, left_float=()),
    # 4 Attention2d + 1 Attention2dDownsample; the final norm follows a residual sum, not a conv
    "efficientformerv2_s0": Case({"img_size": 64}, 64, linear=2, conv=83, attention=5, matmul=10, mul=0, folded=74,
                                 left_float=("norm",)),
    # vitq's own model: attention through MatMul modules (2 per cross-attention/MHSA: 2 x (3 x 8 + 1)),
    # conv -> BN pairs in ConvBN/stem Sequentials and the head
    "mobile_former_26m": Case({}, 64, linear=100, conv=31, attention=0, matmul=50, mul=0, folded=31, left_float=()),
}


# every family's attention replacements (what wrap_model swaps, family by family)
ATTENTION_MAP = {k: v for name in FAMILIES.names() for k, v in FAMILIES.get(name).attention().items()}


@torch.no_grad()
def nontrivial(model: nn.Module) -> nn.Module:
    """Random BN statistics/affine, attention biases and layer scales (see module docstring)."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.2)
            module.running_var.uniform_(0.3, 2.0)
            module.weight.uniform_(0.5, 1.5)
            module.bias.normal_(0, 0.2)
        if isinstance(getattr(module, "attention_biases", None), nn.Parameter):
            module.attention_biases.normal_(0, 1.0)
        if isinstance(getattr(module, "gamma", None), nn.Parameter):
            module.gamma.uniform_(0.2, 0.5)
    model.eval()  # not chained: timm's EfficientFormer attentions override train() and return None
    return model


def count(model: nn.Module, cls: type) -> int:
    return sum(type(m) is cls for m in model.modules())


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()


@pytest.mark.parametrize("name", list(CASES))
def test_hybrid_fully_wrapped_exact_in_float_and_close_at_w8a8(name):
    case = CASES[name]
    model = nontrivial(timm.create_model(name, **case.kwargs))
    assert (count(model, nn.Linear), count(model, nn.Conv2d)) == (case.linear, case.conv)
    assert sum(type(m) in ATTENTION_MAP for m in model.modules()) == case.attention
    x = torch.randn(2, 3, case.px, case.px)
    with torch.no_grad():
        ref = model(x)

    q = wrap_model(model, name, QuantConfig(w_bits=8, a_bits=8))
    assert count(q, QuantLinear) == case.linear and count(q, QuantConv2d) == case.conv
    assert not any(type(m) in (nn.Linear, nn.Conv2d) or type(m) in ATTENTION_MAP for m in q.modules())
    assert count(q, QuantMatMul) == case.matmul and count(q, QuantMul) == case.mul
    assert count(q, FoldedNorm) == case.folded
    assert [n for n, m in q.named_modules() if isinstance(m, nn.BatchNorm2d)] == list(case.left_float)
    assert float_layers_left(q) == list(case.left_float)  # every quantizer enabled, only unfoldable BN float
    n_products = case.matmul + case.mul
    assert len(list(iter_quantizers(q))) == 2 * (case.linear + case.conv + n_products)
    with torch.no_grad(), quantization_disabled(q):
        torch.testing.assert_close(q(x), ref, atol=1e-4, rtol=1e-4)

    calibrate(q, [x], progress=False)
    with torch.no_grad():
        out = q(x)
    assert torch.isfinite(out).all() and not torch.allclose(out, ref)
    # W8A8 minmax on the calibration batch itself: measured >= 0.994; a wrongly quantized operand
    # (e.g. a log quantizer on a signed tensor, a swapped scale) drops far below
    assert cosine(out, ref) > 0.98


def _standalone(attn: nn.Module) -> nn.Module:
    """Quantized twin of a float attention module with all quantizers off, built the way wrap_model does."""
    quant_cls = ATTENTION_MAP[type(attn)]
    sites = getattr(quant_cls, "product_sites", SOFTMAX_ATTENTION_SITES)
    products = {site: cls(UniformQuantizer(8, symmetric=False), UniformQuantizer(8, symmetric=False))
                for site, (cls, _) in sites.items()}
    q = quant_cls(attn, **products)
    for _, quantizer in iter_quantizers(q):
        quantizer.enabled = False
    return q


ATTENTIONS = {
    "mobilevitv2": (lambda: LinearSelfAttention(embed_dim=16), (2, 16, 4, 9)),
    "efficientformer": (lambda: efficientformer.Attention(dim=32, key_dim=8, num_heads=2, resolution=4), (2, 16, 32)),
    "attention2d": (lambda: efficientformer_v2.Attention2d(dim=32, key_dim=8, num_heads=2, resolution=4), (2, 32, 4, 4)),
    "attention2d_stride": (lambda: efficientformer_v2.Attention2d(dim=32, key_dim=8, num_heads=2, resolution=6, stride=2),
                           (2, 32, 6, 6)),
    "attention2d_downsample": (lambda: efficientformer_v2.Attention2dDownsample(dim=32, key_dim=8, num_heads=2,
                                                                                resolution=5, out_dim=24), (2, 32, 5, 5)),
}


@pytest.mark.parametrize("kind", list(ATTENTIONS))
def test_quant_attention_matches_float_module_and_keeps_state_dict(kind):
    make, shape = ATTENTIONS[kind]
    attn = nontrivial(make())
    float_state = attn.state_dict()
    x = torch.randn(shape)
    with torch.no_grad():
        ref = attn(x)
    q = _standalone(attn).eval()
    with torch.no_grad():
        torch.testing.assert_close(q(x), ref, atol=1e-5, rtol=1e-5)
    quant_state = {k: v for k, v in q.state_dict().items() if "_quant." not in k}
    assert quant_state.keys() == float_state.keys()
    q.load_state_dict(float_state, strict=False)  # a float checkpoint loads (quantizer entries aside)


def test_softmax_quantizer_goes_to_softmax_outputs_only():
    cfg = QuantConfig(softmax_quantizer="log2")
    v2 = wrap_model(timm.create_model("mobilevitv2_050"), "mobilevitv2_050", cfg)
    attn = v2.stages[2][1].transformer[0].attn
    assert isinstance(attn.context_matmul.a_quant, LogQuantizer)  # context scores: a softmax over patches
    assert isinstance(attn.value_mul.a_quant, UniformQuantizer) and isinstance(attn.value_mul.b_quant, UniformQuantizer)
    ef2 = wrap_model(timm.create_model("efficientformerv2_s0", img_size=64), "efficientformerv2_s0", cfg)
    mixer = ef2.stages[2].blocks[-1].token_mixer
    assert isinstance(mixer.talking_head2.input_quant, LogQuantizer)  # softmax output feeds the talking-heads conv
    assert isinstance(mixer.av_matmul.a_quant, UniformQuantizer)  # signed head mix, not a probability
    assert isinstance(ef2.stages[3].downsample.attn.av_matmul.a_quant, LogQuantizer)


@pytest.mark.parametrize("eps", [1e-5, 0.3])
def test_fold_is_exact_per_channel_with_eps_and_keeps_act(eps):
    """Large eps and variances near it: forgetting eps, the mean, gamma or beta fails the comparison."""
    block = nn.Sequential(
        ConvNormAct(3, 6, 3, bias=False, norm_layer=BatchNormAct2d, act_layer=nn.ReLU),
        efficientformer_v2.ConvNorm(6, 5, kernel_size=3, groups=1, bias=True),
    )
    block[0].bn.eps, block[1].bn.eps = eps, eps
    nontrivial(block)
    with torch.no_grad():
        block[1].bn.running_var.uniform_(0.05, 0.4)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        ref = block(x)
    assert fold_batchnorms(block) == ["0.bn"]  # timm's generic ConvNormAct only; ConvNorm is EfficientFormerV2's
    block[1] = efficientformer_v2.ConvNorm(6, 5, kernel_size=3, groups=1, bias=True)
    block[1].bn.eps = eps
    nontrivial(block[1])
    with torch.no_grad():
        block[1].bn.running_var.uniform_(0.05, 0.4)
        ref = block(x)
    assert fold_batchnorms(block, FAMILIES.get("efficientformerv2").fold_pairs()) == ["1.bn"]
    assert isinstance(block[0].bn, FoldedNorm) and isinstance(block[0].bn.act, nn.ReLU)
    assert block[0].conv.bias is not None  # created, the BN shift lives there now
    with torch.no_grad():
        torch.testing.assert_close(block(x), ref, atol=1e-5, rtol=1e-5)


def test_bn_not_after_conv_stays_float_and_is_reported():
    block = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.BatchNorm2d(4))  # the BN reads the ReLU, not the conv
    assert fold_batchnorms(block) == []
    q = wrap_model(block, "mobilevit_xxs", QuantConfig())
    assert float_layers_left(q) == ["2"]


def test_conv_then_bn_in_a_sequential_folds_exactly():
    block = nontrivial(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()))
    x = torch.randn(2, 3, 8, 8)
    ref = block(x)
    assert fold_batchnorms(block) == ["1"]
    torch.testing.assert_close(block(x), ref, atol=1e-5, rtol=1e-5)


def test_save_load_round_trip_mobilevit_xxs(tmp_path):
    name = "mobilevit_xxs"
    x = torch.randn(1, 3, 64, 64)
    qm = quantize(nontrivial(timm.create_model(name)), name, [x], make_recipe("W8A8", "minmax"), progress=False)
    q = qm.model
    reloaded = load_quantized(save_quantized(tmp_path / "q.pt", qm))
    loaded = reloaded.model
    assert reloaded.model_name == name and count(loaded, FoldedNorm) == CASES[name].folded
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), q(x))
        with quantization_disabled(q), quantization_disabled(loaded):
            torch.testing.assert_close(loaded(x), q(x))  # folded float weights came back too


@pytest.mark.parametrize("name", list(CASES))
def test_integer_conv_layout_quantizes_where_the_integer_kernel_pays(name):
    """``conv_layout=integer``: every conv ``runs_integer`` picks has a quantized input and output, every other conv
    (depthwise, stem, narrow 1x1) computes in float on its quantized weight and is reported as left in float; the float
    model is unchanged and the quantized one stays close to it."""
    case = CASES[name]
    model = nontrivial(timm.create_model(name, **case.kwargs)).eval()
    x = torch.randn(2, 3, case.px, case.px)
    with torch.no_grad():
        ref = model(x)
    q = wrap_model(model, name, QuantConfig(conv_layout="integer"))
    convs = {n: m for n, m in q.named_modules() if isinstance(m, QuantConv2d)}
    integer = {n for n, m in convs.items() if m.output_quant is not None}
    assert len(integer) < len(convs)
    assert integer or all(m.groups > 1 or m.in_channels == 3 for m in convs.values())  # Mobile-Former: grouped or stem
    for n, m in convs.items():
        assert m.weight_quant.enabled
        assert (m.groups == 1) or n not in integer
        assert m.input_quant.enabled == (n in integer), n
    left = set(float_layers_left(q))
    assert {f"{n}.input_quant" for n in set(convs) - integer} <= left
    calibrate(q, [x], progress=False)
    with torch.no_grad(), quantization_disabled(q):
        torch.testing.assert_close(q(x), ref, atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        assert cosine(q(x), ref) > 0.95


def test_integer_conv_bias_sits_on_the_accumulator_grid_only_while_quantizing():
    conv = nn.Conv2d(32, 8, 3, padding=1)
    q = wrap_model(nn.Sequential(conv), "mobilevit_xxs", QuantConfig(conv_layout="integer"))[0]
    assert isinstance(q, QuantConv2d) and q.output_quant is not None
    assert q.accumulator_step() is None  # uncalibrated: not an integer kernel yet
    calibrate(q, [torch.randn(4, 32, 8, 8)], progress=False)
    step = q.accumulator_step()
    assert step is not None and step.shape == (8,)
    torch.testing.assert_close(step, q.input_quant.scale * q.weight_quant.scale)
    codes = q.quantized_bias() / step
    torch.testing.assert_close(codes, codes.round())
    with quantization_disabled(q):
        assert q.quantized_bias() is q.bias
