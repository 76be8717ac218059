"""QDQ export of tiny random ViTs: checker, exact scales, parity, bad input."""
from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import timm
import torch
from onnx import numpy_helper

from tests.export.conftest import TINY, images, quantized_tiny_vit, tiny_vit
from vitq.errors import VitqError
from vitq.export.markers import export_reference, fallback_warning
from vitq.export.onnx_export import ExportOptions, export_onnx
from vitq.export.options import MIN_AGREEMENT
from vitq.export.parity import NodeCodes, ParityError, ParityReport, allowed_flips, check_parity, compare
from vitq.export.runtime import open_session, run
from vitq.models.wrap import wrap_model
from vitq.pipeline.quantize import quantize
from vitq.quant.config import QuantConfig
from vitq.recipe import make_recipe


def test_w8a8_export_passes_checker_and_parity(tiny_w8a8, tmp_path):
    exported = export_onnx(tiny_w8a8, tmp_path / "m.onnx")
    model = onnx.load(str(exported.path))
    onnx.checker.check_model(model, full_check=True)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") == sum(1 for s in exported.sites if not s.is_weight)
    assert ops.count("DequantizeLinear") == len(exported.sites)  # the patch-embedding conv keeps int8 codes too
    assert "Softmax" in ops and not any(n.domain == "vitq" for n in model.graph.node)
    report = check_parity(exported.path, export_reference(tiny_w8a8), [images(16, seed=7)])
    assert report.agreement >= 99.5 and report.max_abs_logit_error < 1e-2
    assert report.exact_agreement >= 99.5 and report.float32_agreement == 100.0


def test_scales_and_weight_codes_are_exact(tiny_w8a8, tmp_path):
    exported = export_onnx(tiny_w8a8, tmp_path / "m.onnx")
    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(exported.path)).graph.initializer}
    qkv = tiny_w8a8.blocks[0].attn.qkv
    codes = inits["blocks.0.attn.qkv.weight_quant.codes"]  # stored transposed for MatMul(x, W^T)
    np.testing.assert_array_equal(codes.T, qkv.weight_quant.to_int(qkv.weight).numpy())
    np.testing.assert_array_equal(inits["blocks.0.attn.qkv.weight_quant.scale"], qkv.weight_quant.scale.detach().numpy())
    assert inits["blocks.0.attn.qkv.input_quant.scale"] == np.float32(qkv.input_quant.scale.item())
    assert inits["blocks.0.attn.qkv.input_quant.zero_point"].dtype == np.uint8


@pytest.mark.parametrize("bits,container", [("W4A4", "int4"), ("W6A6", "int8"), ("W3A3", "int8")])
def test_low_bit_exports_pass_parity(bits, container, tmp_path):
    w, a = int(bits[1]), int(bits[3])
    qmodel = quantized_tiny_vit(make_recipe(f"W{w}A{a}", "minmax"))
    exported = export_onnx(qmodel, tmp_path / "m.onnx", ExportOptions(weight_container=container))
    model = onnx.load(str(exported.path))
    onnx.checker.check_model(model, full_check=True)
    assert exported.opset == (21 if container == "int4" else 20)
    assert any(n.op_type == "Clip" for n in model.graph.node)  # narrow activation grids are clamped
    report = compare(exported.path, export_reference(qmodel), [images(16, seed=7)])
    assert report.agreement >= 99.5
    if container == "int4":  # packed two codes per byte: smaller than the int8 container
        assert exported.size_mb < export_onnx(qmodel, tmp_path / "int8.onnx").size_mb


def test_s8s8_shift_computes_the_same_values(tiny_w8a8, tmp_path):
    u8 = export_onnx(tiny_w8a8, tmp_path / "u8.onnx")
    s8 = export_onnx(tiny_w8a8, tmp_path / "s8.onnx", ExportOptions(activation_type="int8"))
    ref = export_reference(tiny_w8a8)
    a, b = compare(u8.path, ref, [images(8)]), compare(s8.path, ref, [images(8)])
    assert a.agreement == b.agreement == 100.0


def test_log2_softmax_quantizer_exports_with_uniform_fallback_and_says_so(tmp_path):
    recipe = make_recipe("W8A8", "minmax", {"softmax_quantizer": "log2"})
    qmodel = quantized_tiny_vit(recipe)
    exported = export_onnx(qmodel, tmp_path / "m.onnx")
    report = compare(exported.path, export_reference(qmodel), [images(16, seed=7)])
    assert report.agreement >= 99.5
    assert not recipe.format.exports_exactly
    assert exported.fallbacks == [f"blocks.{i}.attn.av_matmul.a_quant" for i in range(TINY["depth"])]
    assert "have no QDQ form" in fallback_warning(exported.fallbacks)


def test_8_bit_uniform_softmax_keeps_a_4_bit_model_exact_in_onnx(tmp_path):
    """softmax_bits=8 (uniform): the export needs no fallback, so the ONNX file is compared with the torch model
    itself, not with a stand-in, and the attention probabilities alone are 8-bit."""
    recipe = make_recipe("W4A4", "minmax", {"softmax_bits": 8})
    qmodel = quantized_tiny_vit(recipe)
    assert recipe.format.exports_exactly
    bits = {n: m.bits for n, m in qmodel.named_modules() if n.endswith("_quant") and hasattr(m, "bits")}
    assert bits["blocks.0.attn.av_matmul.a_quant"] == 8 and bits["blocks.0.attn.qk_matmul.a_quant"] == 4
    exported = export_onnx(qmodel, tmp_path / "m.onnx")
    assert exported.fallbacks == []
    report = check_parity(exported.path, qmodel, [images(16, seed=7)])
    assert report.passes() and report.agreement >= 99.5


def test_softmax_bits_outside_2_to_8_is_a_clear_error():
    with pytest.raises(VitqError, match="softmax_bits must be an integer in 2..8"):
        make_recipe("W4A4", "minmax", {"softmax_bits": 16})


def test_bit_equal_weights_each_keep_their_own_codes(tmp_path):
    """torch.onnx shares bit-equal initializers through Identity nodes (zero-initialised convs of a random hybrid
    model do this); the export still finds each weight and passes parity."""
    model = tiny_vit()
    with torch.no_grad():
        for block in model.blocks:
            block.mlp.fc2.weight.zero_()
    qmodel = quantize(model, "vit_tiny_patch16_224", [images(16)], make_recipe("W8A8", "minmax"), progress=False).model
    exported = export_onnx(qmodel, tmp_path / "m.onnx")
    inits = {t.name for t in onnx.load(str(exported.path)).graph.initializer}
    assert {f"blocks.{i}.mlp.fc2.weight_quant.codes" for i in range(TINY["depth"])} <= inits
    assert check_parity(exported.path, export_reference(qmodel), [images(16, seed=7)]).passes()


def test_uncalibrated_model_is_a_clear_error_and_leaves_no_file(tmp_path):
    qmodel = wrap_model(tiny_vit(), "vit_tiny_patch16_224", QuantConfig())
    with pytest.raises(VitqError, match="never calibrated"):
        export_onnx(qmodel, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_float_model_is_not_exportable(tmp_path):
    with pytest.raises(VitqError, match="no enabled quantizers"):
        export_onnx(tiny_vit(), tmp_path / "m.onnx")


def test_parity_passes_with_every_node_s_codes_compared(tiny_w8a8, tmp_path):
    exported = export_onnx(tiny_w8a8, tmp_path / "m.onnx")
    report = check_parity(exported.path, export_reference(tiny_w8a8), [images(16, seed=7)])
    assert report.code_images == 16 and len(report.nodes) == sum(1 for s in exported.sites if not s.is_weight)
    assert report.passes() and report.first_diverging_node() is None
    assert all(n.off == 0 and n.float32_off == 0 for n in report.nodes)  # a stable model: no code more than a step off
    assert "0 top-1 flips" in report.summary() and "more than 1 step off" in report.summary()


def test_a_wrong_scale_fails_and_names_the_node(tiny_w8a8, tmp_path):
    """The torch reference's head input scale off by 50x (as if the export had it wrong): the default gate fails,
    names head.input_quant and says what to do, in one line."""
    exported = export_onnx(tiny_w8a8, tmp_path / "m.onnx")
    broken = copy.deepcopy(tiny_w8a8)
    broken.head.input_quant.scale.data *= 50.0  # torch now disagrees from the head's input on
    with pytest.raises(ParityError, match=r"codes diverge beyond float32 rounding noise at head\.input_quant/QuantizeLinear") as info:
        check_parity(exported.path, export_reference(broken), [images(32, seed=3)])
    message = str(info.value)
    assert "\n" not in message and "report it" in message


def test_a_wrong_scale_in_the_onnx_file_fails_at_that_node(tiny_w8a8, tmp_path):
    exported = export_onnx(tiny_w8a8, tmp_path / "m.onnx")
    model = onnx.load(str(exported.path))
    node = next(n for n in model.graph.node if n.name == "blocks.1.mlp.fc1.input_quant/QuantizeLinear")
    scale = next(t for t in model.graph.initializer if t.name == node.input[1])
    scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * np.float32(50.0), scale.name))
    onnx.save(model, str(tmp_path / "bad.onnx"))
    report = compare(tmp_path / "bad.onnx", export_reference(tiny_w8a8), [images(32, seed=3)], code_images=32)
    assert not report.passes() and report.first_diverging_node().node == node.name
    assert report.first_diverging_node().off_percent > 50.0
    assert all(not n.diverged() for n in report.nodes[:[n.node for n in report.nodes].index(node.name)])


def test_flip_bound_is_binomial():
    # Binomial(64, 1 %): P(X > 4) < 1e-3 <= P(X > 3)
    assert allowed_flips(64, 0.01) == 4 and allowed_flips(64, 0.0) == 0 and allowed_flips(0, 0.5) == 0
    assert allowed_flips(250, 0.016) == 11 and allowed_flips(875, 0.0183) == 30
    assert allowed_flips(64, 1.0) == 64
    assert [allowed_flips(n, 0.01) for n in (16, 64, 256, 1024)] == sorted(allowed_flips(n, 0.01) for n in (16, 64, 256, 1024))


def _report(n: int, flips: int, float32_flips: int, nodes: list[NodeCodes] | None = None) -> ParityReport:
    return ParityReport(n, agreement=100.0 * (n - flips) / n, exact_agreement=100.0 * (n - flips) / n,
                        float32_agreement=100.0 * (n - float32_flips) / n, max_abs_logit_error=0.1, mean_abs_logit_error=0.01,
                        ort_top1=None, torch_top1=None, nodes=nodes or [])


def test_flip_gate_depends_on_the_number_of_images_and_the_reference_s_own_noise():
    # the issue: 1 flip in 64 images (98.44 %) is rounding noise, not a failed export
    assert _report(64, 1, 0).passes() and _report(64, 4, 0).passes() and not _report(64, 5, 0).passes()
    assert _report(64, 1, 0).required_agreement() == pytest.approx(100.0 * 60 / 64)
    # torch float32 itself flips 12 of 64 (a W4A4 model on a knife's edge): ORT may flip as many, and some more
    assert _report(64, 15, 12).passes() and not _report(64, 32, 12).passes()
    # a broken export flips most images: fails at any n
    assert not any(_report(n, n // 2, 1).passes() for n in (16, 64, 250, 875))
    # the old fixed bar would have failed 1 in 64; the floor stays documented in options
    assert _report(64, 1, 1).noise_flip_rate() == pytest.approx(max(1.0 - MIN_AGREEMENT / 100, 1 / 64))
    assert _report(875, 0, 0, None).flips == 0 and ParityReport(875, 98.0, 98.0, 99.0, 0.1, 0.01, None, None).flips == 18


def _node(off: int, float32_off: int, codes: int = 100_000) -> NodeCodes:
    return NodeCodes("blocks.3.mlp.fc1.input_quant/QuantizeLinear", codes, off, off, 9, float32_off, float32_off)


def test_code_gate_follows_the_float32_noise_at_the_same_node():
    assert not _node(50, 0).diverged() and not _node(200, 0).diverged()  # a few codes off where float32 is exact: noise
    assert not _node(30_000, 20_000).diverged()  # deep nodes: float32 itself has 20 % off, ORT 30 % is noise
    assert _node(95_000, 25_000).diverged()  # a 50x scale: ~95 % off, far beyond
    report = _report(64, 1, 1, [_node(0, 0), _node(95_000, 25_000)])
    assert not report.passes() and report.flips_pass() and report.first_diverging_node() is report.nodes[1]
    assert "codes diverge beyond float32 rounding noise at blocks.3.mlp.fc1.input_quant/QuantizeLinear" in report.failure()


def test_failure_says_what_to_run_next():
    assert _report(64, 1, 0).failure() is None
    message = _report(64, 10, 0).failure()
    assert "10 of 64 images" in message and "--parity-images 256" in message and "\n" not in message


def test_per_channel_activation_exports_as_float_fake_quant(tmp_path):
    """Q-HyViT can choose per-channel activation scales; ORT has no kernel for them, so they become
    float Div/Round/Add/Clip/Sub/Mul that must match torch and must not be fused into an integer MatMul."""
    from vitq.calibration import calibrate
    from vitq.models.wrap import iter_quantizers
    from vitq.quant.layout import Layout, relayout
    from vitq.quant.modules import set_child

    qmodel = quantized_tiny_vit(make_recipe("W8A8", "minmax"))
    for name, q in list(iter_quantizers(qmodel)):
        if name.endswith("mlp.fc1.input_quant"):
            set_child(qmodel, name, relayout(q, Layout(False, TINY["embed_dim"], -1)))
    calibrate(qmodel, [images(16)], progress=False)
    exported = export_onnx(qmodel, tmp_path / "m.onnx")
    ops = [n.op_type for n in onnx.load(str(exported.path)).graph.node]
    assert ops.count("Round") == 2  # one per block
    assert ops.count("QuantizeLinear") == sum(1 for s in exported.sites if not s.is_weight) - 2
    report = check_parity(exported.path, export_reference(qmodel), [images(16, seed=7)])
    assert report.agreement >= 99.5 and report.max_abs_logit_error < 1e-2


@pytest.mark.parametrize("activation_type", ["uint8", "int8"])
def test_symmetric_activations_share_the_one_activation_type(activation_type, tmp_path):
    """A symmetric layout (Q-HyViT's choice) is a signed grid; it is written in the same container as every other
    activation, shifted by 128 for uint8, so integer kernels see one type; the values and the parity gate hold."""
    from vitq.calibration import calibrate
    from vitq.models.wrap import iter_quantizers
    from vitq.quant.layout import Layout, relayout
    from vitq.quant.modules import set_child

    qmodel = quantized_tiny_vit(make_recipe("W8A8", "minmax"))
    for name, q in list(iter_quantizers(qmodel)):
        if name.endswith("attn.proj.input_quant"):
            set_child(qmodel, name, relayout(q, Layout(symmetric=True)))
    calibrate(qmodel, [images(16)], progress=False)
    exported = export_onnx(qmodel, tmp_path / "s.onnx", ExportOptions(activation_type=activation_type))
    graph = onnx.load(str(exported.path)).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    zps = {n.name: inits[n.input[2]] for n in graph.node if n.op_type == "QuantizeLinear"}
    assert {z.dtype for z in zps.values()} == {np.dtype(activation_type)}
    proj = [z for name, z in zps.items() if "attn.proj.input_quant" in name]
    assert proj and all(int(z) == (128 if activation_type == "uint8" else 0) for z in proj)
    report = check_parity(exported.path, export_reference(qmodel), [images(16, seed=7)])
    assert report.passes()


def test_convs_onnxruntime_runs_in_float_get_float_weights_with_the_same_numbers(tmp_path):
    """MobileViT's convs have no quantized output, so onnxruntime runs them in float: the 3x3 and depthwise ones get
    their dequantized weights as float constants (pre-packable), the 1x1 ones keep int8 codes; both files compute the
    same logits, and the float-weight one only differs in how the weights are stored."""
    torch.manual_seed(0)
    model = timm.create_model("mobilevit_xxs", num_classes=10).eval()
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, 64, 64)}
    batches = [torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))]
    qmodel = quantize(model, "mobilevit_xxs", batches, make_recipe("W8A8", "minmax"), progress=False).model
    floated = export_onnx(qmodel, tmp_path / "f.onnx")
    coded = export_onnx(qmodel, tmp_path / "c.onnx", ExportOptions(float_conv_weights=False))
    graph = onnx.load(str(floated.path)).graph
    inits = {t.name: t for t in graph.initializer}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    spatial = [n for n in convs if list(next(a.ints for a in n.attribute if a.name == "kernel_shape")) != [1, 1]]
    assert spatial and len(spatial) < len(convs)
    for conv in convs:
        weight_is_float = conv.input[1] in inits and inits[conv.input[1]].data_type == onnx.TensorProto.FLOAT
        assert weight_is_float == (conv in spatial), conv.name
    coded_graph = onnx.load(str(coded.path)).graph
    assert all(n.input[1] not in {t.name for t in coded_graph.initializer} for n in coded_graph.node if n.op_type == "Conv")
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(2)).numpy()
    a = run(open_session(floated.path), x)
    b = run(open_session(coded.path), x)
    # float weights are pre-packed, DequantizeLinear outputs are not: the conv kernels may sum in another order, and
    # one activation code one step off downstream moves a logit by ~1e-3 (seen with 1 torch thread at calibration)
    np.testing.assert_allclose(a, b, rtol=0, atol=2e-3)
    assert (a.argmax(1) == b.argmax(1)).all()
    report = check_parity(floated.path, export_reference(qmodel), [torch.from_numpy(x)])
    assert report.agreement == 100.0


def _mobilevit_w8a8(conv_layout: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model("mobilevit_xxs", num_classes=10).eval()
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, 64, 64)}
    batches = [torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))]
    recipe = make_recipe("W8A8", "minmax", {"conv_layout": conv_layout})
    return quantize(model, "mobilevit_xxs", batches, recipe, progress=False).model


def test_integer_conv_layout_runs_integer_convs_in_onnxruntime_and_matches_torch(tmp_path):
    """``conv_layout=integer`` quantizes the outputs of the convs whose integer kernel pays: onnxruntime fuses each into
    QLinearConv, and the file passes the code-level parity gate, because torch rounds those convs' biases to the
    accumulator grid as the integer kernel does. Depthwise convs and the stem run in float with no Q/DQ on their
    input."""
    from vitq.bench.runner import optimized_op_counts

    qmodel = _mobilevit_w8a8("integer")
    exported = export_onnx(qmodel, tmp_path / "i.onnx")
    integer_convs = sum(1 for m in qmodel.modules() if getattr(m, "output_quant", None) is not None)
    ops = optimized_op_counts(exported.path)
    assert integer_convs > 10 and ops.get("QLinearConv", 0) == integer_convs
    x = torch.randn(8, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    report = check_parity(exported.path, export_reference(qmodel), [x])
    assert report.codes_pass() and not any(n.diverged() for n in report.nodes)
    inputs = {n.node.rsplit("/", 1)[0] for n in report.nodes}
    assert "stem.conv.input_quant" not in inputs and "stages.1.0.conv2_kxk.conv.input_quant" not in inputs
    inputs_layout = export_onnx(_mobilevit_w8a8("inputs"), tmp_path / "p.onnx")
    assert ops.get("QLinearConv", 0) > optimized_op_counts(inputs_layout.path).get("QLinearConv", 0)
