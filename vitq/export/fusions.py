"""Graph rewrites that give onnxruntime one fused node where its own fusion cannot find the pattern in a QDQ graph.

SiLU (``x * sigmoid(x)``, MobileViT's activation) exports as ``Sigmoid`` + ``Mul`` reading the same tensor. In the fp32
graph onnxruntime fuses the pair into its ``QuickGelu`` kernel. Behind an integer conv the tensor is a
``DequantizeLinear`` output, and onnxruntime first gives each of its two readers its own DequantizeLinear copy (one
DQ per QDQ node unit), after which the pair no longer reads one tensor and runs unfused: Sigmoid, Mul and two DQs.
Writing the pair as ``com.microsoft.QuickGelu(alpha=1)`` up front leaves one reader. The values are the same; the
graph then needs onnxruntime (``ExportOptions.contrib_ops``). ONNX's own ``Swish`` (opset 24) was measured slower
than the unfused pair in onnxruntime 1.32 (docs/deployment.md, "SiLU behind an integer conv").
"""
from __future__ import annotations

import onnx
from onnx import helper

CONTRIB_DOMAIN = "com.microsoft"


def fuse_silu(model: onnx.ModelProto) -> int:
    """Rewrite every ``Mul(x, Sigmoid(x))`` whose Sigmoid output has no other reader as ``QuickGelu(x, alpha=1)``,
    in place; returns how many. Adds the ``com.microsoft`` opset import when it rewrote any."""
    graph = model.graph
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    for output in graph.output:
        readers[output.name] = readers.get(output.name, 0) + 1
    sigmoids = {n.output[0]: n for n in graph.node if n.op_type == "Sigmoid"}
    fused: set[str] = set()
    nodes = []
    for node in graph.node:
        pair = _silu_input(node, sigmoids, readers)
        if pair is None:
            nodes.append(node)
            continue
        gate, x = pair
        fused.add(gate)
        nodes.append(helper.make_node("QuickGelu", [x], [node.output[0]], name=f"{node.name}/silu", domain=CONTRIB_DOMAIN,
                                      alpha=1.0))
    if not fused:
        return 0
    del graph.node[:]
    graph.node.extend(n for n in nodes if not (n.op_type == "Sigmoid" and n.output[0] in fused))
    if not any(o.domain == CONTRIB_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(CONTRIB_DOMAIN, 1))
    return len(fused)


def _silu_input(node: onnx.NodeProto, sigmoids: dict[str, onnx.NodeProto], readers: dict[str, int]) -> tuple[str, str] | None:
    """(sigmoid output, x) when ``node`` is ``Mul(x, Sigmoid(x))`` in either order and the Sigmoid has no other reader."""
    if node.op_type != "Mul" or len(node.input) != 2:
        return None
    for gate, x in ((node.input[0], node.input[1]), (node.input[1], node.input[0])):
        sigmoid = sigmoids.get(gate)
        if sigmoid is not None and sigmoid.input[0] == x and readers[gate] == 1:
            return gate, x
    return None
