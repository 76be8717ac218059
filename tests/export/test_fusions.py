"""The SiLU rewrite: ``Mul(x, Sigmoid(x))`` becomes onnxruntime's ``QuickGelu`` with the same values; a Sigmoid that
feeds anything else is left alone; the standard-ops export keeps the pair."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import timm
import torch
from onnx import TensorProto, helper

from vitq.export.fusions import CONTRIB_DOMAIN, fuse_silu
from vitq.export.onnx_export import ExportOptions, export_onnx
from vitq.pipeline.quantize import quantize
from vitq.recipe import make_recipe


def silu_graph(extra_reader: bool) -> onnx.ModelProto:
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["s", "x"], ["y"])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])]
    if extra_reader:
        nodes.append(helper.make_node("Neg", ["s"], ["z"]))
        outputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 8]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])], outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["y"], {"x": x})[0]


def test_silu_pair_becomes_one_quickgelu_with_the_same_values():
    x = np.linspace(-6, 6, 16, dtype=np.float32).reshape(2, 8)
    model = silu_graph(extra_reader=False)
    expected = run(model, x)
    assert fuse_silu(model) == 1
    assert [n.op_type for n in model.graph.node] == ["QuickGelu"] and model.graph.node[0].domain == CONTRIB_DOMAIN
    np.testing.assert_allclose(run(model, x), expected, rtol=1e-6, atol=1e-6)


def test_a_sigmoid_read_elsewhere_is_left_alone():
    model = silu_graph(extra_reader=True)
    assert fuse_silu(model) == 0
    assert [n.op_type for n in model.graph.node] == ["Sigmoid", "Mul", "Neg"]
    assert all(o.domain != CONTRIB_DOMAIN for o in model.opset_import)


def test_mobilevit_export_writes_quickgelu_unless_standard_ops_are_asked_for(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("mobilevit_xxs", num_classes=10).eval()
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, 64, 64)}
    images = torch.randn(8, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    qmodel = quantize(model, "mobilevit_xxs", [images], make_recipe("W8A8", "minmax", {"conv_layout": "integer"}),
                      progress=False).model
    ops = {}
    for name, options in (("contrib", ExportOptions()), ("standard", ExportOptions(contrib_ops=False))):
        path = export_onnx(qmodel, tmp_path / f"{name}.onnx", options).path
        graph = onnx.load(str(path)).graph
        ops[name] = [n.op_type for n in graph.node]
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        ops[f"{name}_out"] = session.run(None, {session.get_inputs()[0].name: images[:2].numpy()})[0]
    assert ops["contrib"].count("QuickGelu") > 10 and "Sigmoid" not in ops["contrib"]
    assert "QuickGelu" not in ops["standard"] and ops["standard"].count("Sigmoid") == ops["contrib"].count("QuickGelu")
    np.testing.assert_allclose(ops["contrib_out"], ops["standard_out"], rtol=1e-4, atol=1e-4)
