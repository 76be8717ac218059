"""Which single ops onnxruntime CPU runs faster in int8 than in float32: the measurements behind the export's
placement choices (``ExportOptions.float_conv_weights``, docs/deployment.md).

Each case is one Conv or MatMul at a shape MobileViT-XXS has at 256 px (and DeiT-Tiny's patch embedding and
two Linear shapes),
built four ways and timed interleaved round-robin in one process, 1 thread, batch 1:

* ``fp32``: the float op with float weights;
* ``int8``: ``Q -> DQ -> op -> Q -> DQ`` with int8 per-channel weights, which onnxruntime fuses into
  QLinearConv / MatMulIntegerToFloat (a conv needs the quantized output for that);
* ``float-weights``: ``Q -> DQ -> op`` on the dequantized weight stored as a float constant: the
  activation is fake-quantized, the op runs in float;
* ``dq-weights``: ``Q -> DQ -> op`` on ``DQ(int8 weight)``: how a conv without quantized output ran before.

The quantize nodes on the input are in every int8 case, so a fused op's number is an upper bound of its
cost inside a chain of integer ops.

    python benchmarks/ort_op_speed.py --out benchmarks/results/ort_op_speed.json
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from vitq.bench.measure import interleaved_latency
from vitq.bench.runner import optimized_op_counts
from vitq.export.runtime import open_session, session_options
from vitq.results import write_results

OPSET = 17
X_SCALE, Y_SCALE, ZERO = 0.02, 0.05, 128


@dataclass(frozen=True)
class Case:
    """One op: a conv (``kernel``, ``groups``, ``stride``, square input ``size``) or, with ``kernel=0``, a MatMul
    [tokens, cin] x [cin, cout]. A conv with stride = kernel is a ViT's patch embedding (no padding)."""

    cin: int
    cout: int
    kernel: int
    groups: int
    size: int
    lead: int = 1  # leading batch dimension of a MatMul input (MobileViT's patch groups)
    stride: int = 1

    @property
    def name(self) -> str:
        if self.kernel == 0:
            return f"matmul [{self.lead},{self.size},{self.cin}]x[{self.cin},{self.cout}]"
        kind = "depthwise" if self.groups == self.cin and self.groups > 1 else "conv"
        stride = f" s{self.stride}" if self.stride > 1 else ""
        return f"{kind} {self.cin}->{self.cout} k{self.kernel}{stride} {self.size}x{self.size}"

    @property
    def pads(self) -> list[int]:
        return [0 if self.stride == self.kernel else self.kernel // 2] * 4

    @property
    def input_shape(self) -> list[int]:
        return [self.lead, self.size, self.cin] if self.kernel == 0 else [1, self.cin, self.size, self.size]

    @property
    def output_shape(self) -> list[int]:
        out = self.size // self.stride
        return [self.lead, self.size, self.cout] if self.kernel == 0 else [1, self.cout, out, out]


CASES = (
    Case(16, 64, 1, 1, 128), Case(64, 64, 3, 64, 128), Case(3, 16, 3, 1, 256), Case(64, 128, 1, 1, 64),
    Case(128, 128, 3, 128, 64), Case(64, 64, 3, 1, 32), Case(96, 384, 1, 1, 16), Case(320, 320, 3, 320, 8),
    Case(3, 192, 16, 1, 224, stride=16),
    Case(64, 192, 0, 1, 256, lead=4), Case(128, 64, 0, 1, 256, lead=4), Case(80, 160, 0, 1, 64, lead=4),
    Case(192, 768, 0, 1, 197), Case(768, 192, 0, 1, 197),
)
WAYS = ("fp32", "int8", "float-weights", "dq-weights")


def _weights(case: Case, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Float weight, its int8 codes, per-channel scales, the dequantized weight and the channel axis."""
    if case.kernel == 0:
        w, axis = rng.standard_normal((case.cin, case.cout)).astype(np.float32) * 0.1, 1
    else:
        shape = (case.cout, case.cin // case.groups, case.kernel, case.kernel)
        w, axis = rng.standard_normal(shape).astype(np.float32) * 0.1, 0
    reduce = tuple(i for i in range(w.ndim) if i != axis)
    scale = (np.abs(w).max(axis=reduce) / 127).astype(np.float32)
    bshape = [1] * w.ndim
    bshape[axis] = -1
    codes = np.round(w / scale.reshape(bshape)).astype(np.int8)
    return w, codes, scale, codes.astype(np.float32) * scale.reshape(bshape), axis


def qdq(x: str, scale: str, out: str) -> list[onnx.NodeProto]:
    """uint8 QuantizeLinear -> DequantizeLinear of ``x`` (zero-point ``z``)."""
    return [helper.make_node("QuantizeLinear", [x, scale, "z"], [f"{x}.q"]),
            helper.make_node("DequantizeLinear", [f"{x}.q", scale, "z"], [out])]


def build(case: Case, way: str, rng: np.random.Generator) -> onnx.ModelProto:
    """The one-op graph of ``case`` built ``way`` (see the module docstring)."""
    w, codes, scale, dequantized, axis = _weights(case, rng)
    bias = rng.standard_normal(case.cout).astype(np.float32) * 0.1
    inits = [numpy_helper.from_array(bias, "b"), numpy_helper.from_array(np.array(X_SCALE, np.float32), "xs"),
             numpy_helper.from_array(np.array(ZERO, np.uint8), "z"), numpy_helper.from_array(np.array(Y_SCALE, np.float32), "ys")]
    nodes: list[onnx.NodeProto] = []
    x = "x"
    if way != "fp32":
        nodes += qdq("x", "xs", "xd")
        x = "xd"
    if way in ("int8", "dq-weights"):
        inits += [numpy_helper.from_array(codes, "wq"), numpy_helper.from_array(scale, "wscale")]
        nodes.append(helper.make_node("DequantizeLinear", ["wq", "wscale"], ["w"], axis=axis))
    else:
        inits.append(numpy_helper.from_array(w if way == "fp32" else dequantized, "w"))
    out = "y" if way != "int8" else "y_float"
    if case.kernel == 0:
        nodes += [helper.make_node("MatMul", [x, "w"], ["mm"]), helper.make_node("Add", ["mm", "b"], [out])]
    else:
        nodes.append(helper.make_node("Conv", [x, "w", "b"], [out], kernel_shape=[case.kernel] * 2, pads=case.pads,
                                      strides=[case.stride] * 2, group=case.groups))
    if way == "int8":
        nodes += qdq(out, "ys", "y")
    # a symbolic batch dimension, as vitq exports it (a fixed one lets onnxruntime rewrite MatMul + Add to Gemm,
    # which breaks the integer MatMul pattern: ../shared/ORT_NOTES.md, MatMulAddFusion)
    graph = helper.make_graph(nodes, way, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", *case.input_shape[1:]])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", *case.output_shape[1:]])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model)
    return model


@click.command()
@click.option("--rounds", type=click.IntRange(min=1), default=200, show_default=True, help="Timed calls per way.")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Results file (JSON).")
def main(rounds: int, out: str) -> None:
    """Time every case four ways (fp32, int8, float-weights, dq-weights), 1 thread, batch 1."""
    rng = np.random.default_rng(0)
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, case in enumerate(CASES):
            files = {way: Path(tmp) / f"{i}-{way}.onnx" for way in WAYS}
            for way, path in files.items():
                onnx.save(build(case, way, rng), str(path))
            sessions = {way: open_session(path, session_options(threads=1)) for way, path in files.items()}
            x = rng.random(case.input_shape, dtype=np.float32)
            latency = interleaved_latency(sessions, x, rounds, warmup=5, progress=False)
            fp32_ms = latency["fp32"].median_ms
            for way, path in files.items():
                records.append({"model": case.name, "variant": way, "target": "cpu", "threads": 1, "batch": 1,
                                "latency_ms_median": round(latency[way].median_ms, 4), "size_mb": None,
                                "speedup": round(fp32_ms / latency[way].median_ms, 3),
                                "optimized_graph_op_counts": optimized_op_counts(path)})
            click.echo(f"{case.name:40s} " + "  ".join(f"{w} {1000 * latency[w].median_ms:7.1f} us" for w in WAYS))
    write_results(out, records, rounds=rounds)


if __name__ == "__main__":
    main()
