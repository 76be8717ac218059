"""Rewrite an exported float graph with markers into a QDQ graph carrying vitq's learned parameters.

Each ``vitq::QuantMarker`` becomes:

* weight: integer initializer (the quantizer's own codes, so learned rounding survives) ->
  DequantizeLinear (per-channel ``axis``). A Transpose the exporter put between weight and MatMul
  is folded into the stored codes, so ORT sees the ``DQ -> MatMul`` pattern it fuses.
* activation: QuantizeLinear -> DequantizeLinear with the learned scale and zero-point. Grids
  narrower than their 8-bit container (3..7 bits) get a Clip to the grid's float range first,
  which reproduces ``clamp(round(x / s) + zp, qmin, qmax)`` exactly while keeping the 8-bit Q/DQ
  pair that ORT fuses into integer kernels.
* per-channel activation (Q-HyViT's layout search may choose it): onnxruntime has no integer
  kernel for per-channel activation scales, and its DQ -> MatMul fusion (MatMulIntegerToFloat)
  rejects them at run time, so these are written as the same arithmetic in float
  (Div, Round, Add, Clip, Sub, Mul); the consumer then runs in float on dequantized int8 weights.
* weight of a 3x3 (or larger) convolution onnxruntime runs in float: with ``float_conv_weights`` the
  dequantized values themselves, as a float32 constant. ORT fuses ``DQ -> Conv -> Q`` into QLinearConv only
  when the conv's output is quantized, and measured here its depthwise integer kernel is slower than the
  float one; behind a runtime DequantizeLinear such a conv cannot be pre-packed and runs 1.1-6x slower.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from vitq.errors import VitqError
from vitq.export.markers import MARKER_DOMAIN, MARKER_OP, Site
from vitq.export.options import ACTIVATION_TYPES, WEIGHT_CONTAINERS, ExportOptions

INT4_OPSET = 21


@dataclass(frozen=True)
class Container:
    """An ONNX integer type that holds a quantizer's grid."""

    dtype: int
    np_dtype: type
    qmin: int
    qmax: int

    @property
    def name(self) -> str:
        return TensorProto.DataType.Name(self.dtype).lower()


CONTAINERS = {
    "uint8": Container(TensorProto.UINT8, np.uint8, 0, 255),
    "int8": Container(TensorProto.INT8, np.int8, -128, 127),
    "int4": Container(TensorProto.INT4, np.int8, -8, 7),
    "uint4": Container(TensorProto.UINT4, np.uint8, 0, 15),
}


def container_for(site: Site, weight_container: str, activation_type: str) -> tuple[Container, int]:
    """The container holding ``site``'s grid and the code offset (the grid is shifted by it).

    int4/uint4 only for weights when asked. Every 8-bit activation grid goes into ``activation_type``: an unsigned
    grid is shifted by -128 (zero-point too) for ``int8``, a signed one (a symmetric layout Q-HyViT chose) by +128 for
    ``uint8``. The values are the same, and one activation type throughout is what onnxruntime's integer kernels
    need: QLinearConv takes its input and output in the same type, so a mixed pair stays a float conv.
    """
    qp = site.qparams
    offset = 0
    if not site.is_weight and qp.qmin >= 0 and activation_type == "int8":
        offset = -128
    elif not site.is_weight and qp.qmin < 0 and activation_type == "uint8" and qp.qmax + 128 <= 255:
        offset = 128
    signed = qp.qmin + offset < 0
    names = ["int8" if signed else "uint8"]
    if site.is_weight and weight_container == "int4":
        names.insert(0, "int4" if signed else "uint4")
    for name in names:
        c = CONTAINERS[name]
        if c.qmin <= qp.qmin + offset and qp.qmax + offset <= c.qmax:
            return c, offset
    raise VitqError(f"quantizer {site.name}: grid [{qp.qmin}, {qp.qmax}] fits no ONNX integer type")


def pack_4bit(codes: np.ndarray) -> bytes:
    """Two 4-bit codes per byte, first element in the low nibble (ONNX int4/uint4 raw layout)."""
    nibbles = codes.astype(np.int64).ravel() & 0x0F
    if nibbles.size % 2:
        nibbles = np.append(nibbles, 0)
    return (nibbles[0::2] | (nibbles[1::2] << 4)).astype(np.uint8).tobytes()


class QDQRewriter:
    """Replaces markers in one graph; keeps node order so the graph stays topologically sorted."""

    def __init__(self, model: onnx.ModelProto, sites: list[Site], options: ExportOptions) -> None:
        weight_container, activation_type = options.weight_container, options.activation_type
        if weight_container not in WEIGHT_CONTAINERS:
            raise VitqError(f"weight container must be one of {WEIGHT_CONTAINERS}, got {weight_container!r}")
        if activation_type not in ACTIVATION_TYPES:
            raise VitqError(f"activation type must be one of {ACTIVATION_TYPES}, got {activation_type!r}")
        self.activation_type = activation_type
        self.model = model
        self.graph = model.graph
        self.sites = sites
        self.weight_container = weight_container
        self.float_conv_weights = options.float_conv_weights
        self.initializers = {t.name: t for t in self.graph.initializer}
        self.new_initializers: list[TensorProto] = []
        self.folded: set[str] = set()  # outputs of Transposes folded into weight codes
        self.uses_int4 = False

    def consumers(self, tensor: str) -> list[onnx.NodeProto]:
        return [n for n in self.graph.node if tensor in n.input]

    def _const(self, name: str, array: np.ndarray, dtype: int | None = None) -> str:
        if dtype in (TensorProto.INT4, TensorProto.UINT4):
            tensor = helper.make_tensor(name, dtype, array.shape, pack_4bit(array), raw=True)
        else:
            tensor = numpy_helper.from_array(array, name)
        self.new_initializers.append(tensor)
        return name

    def _qparams(self, site: Site, container: Container, channels: int | None, offset: int = 0) -> tuple[str, str]:
        qp = site.qparams
        scale = qp.scale.float().numpy().astype(np.float32)
        zp = qp.zero_point.numpy() + offset
        if qp.axis is None:
            scale, zp = scale.reshape(()), zp.reshape(())
        elif channels is not None and scale.size != channels:
            raise VitqError(f"quantizer {site.name}: {scale.size} scales for {channels} channels")
        if zp.min() < container.qmin or zp.max() > container.qmax:
            raise VitqError(f"quantizer {site.name}: zero-point outside {container.name}")
        return (self._const(f"{site.name}.scale", scale),
                self._const(f"{site.name}.zero_point", zp.astype(container.np_dtype), container.dtype))

    def _fold_transpose(self, output: str, codes: np.ndarray, axis: int | None) -> tuple[str, np.ndarray, int | None]:
        """Absorb ``Transpose(weight)`` into the stored codes (the exporter's Linear -> MatMul(x, W^T))."""
        users = self.consumers(output)
        if len(users) != 1 or users[0].op_type != "Transpose":
            return output, codes, axis
        transpose = users[0]
        perm = next((list(a.ints) for a in transpose.attribute if a.name == "perm"), list(range(codes.ndim))[::-1])
        self.folded.add(transpose.output[0])
        return transpose.output[0], codes.transpose(perm), (perm.index(axis) if axis is not None else None)

    def _site_of(self, node: onnx.NodeProto) -> Site | None:
        if node.domain != MARKER_DOMAIN or node.op_type != MARKER_OP:
            return None
        return self.sites[next(a.i for a in node.attribute if a.name == "index")]

    def float_weight_pays(self, marker: onnx.NodeProto) -> bool:
        """Whether the weight behind ``marker`` is better stored as float32 values: it feeds a Conv with a spatial
        kernel (3x3, depthwise included) that onnxruntime runs in float, because the conv's output is not one
        per-tensor activation quantizer (no ``DQ -> Conv -> Q`` pattern) or because it is grouped, whose integer
        kernel measured slower than float. A 1x1 conv behind DequantizeLinear runs as fast as with float weights
        (``benchmarks/results/ort_op_speed.json``), so it keeps its int8 codes; so does a ViT's patch embedding
        (stride = kernel), where float weights gain 0.15 ms, 1 % of DeiT-Tiny, for 0.44 MB, 7 % of its file."""
        users = self.consumers(marker.output[0])
        if len(users) != 1 or users[0].op_type != "Conv":
            return False
        conv = users[0]
        attrs = {a.name: a for a in conv.attribute}
        groups = attrs["group"].i if "group" in attrs else 1
        kernel = list(attrs["kernel_shape"].ints) if "kernel_shape" in attrs else list(self.initializers[conv.input[1]].dims[2:])
        strides = list(attrs["strides"].ints) if "strides" in attrs else [1] * len(kernel)
        if all(k == 1 for k in kernel) or kernel == strides:
            return False  # 1x1 (as fast behind DQ), or a patchifying conv (float weights gain too little for their size)
        outputs = self.consumers(conv.output[0])
        quantized = self._site_of(outputs[0]) if len(outputs) == 1 else None
        integer = quantized is not None and quantized.qparams.axis is None
        return groups != 1 or not integer

    def float_weight(self, site: Site, marker: onnx.NodeProto) -> list[onnx.NodeProto]:
        """The dequantized weight, ``(codes - zp) * scale`` in float32 as DequantizeLinear computes it."""
        qp = site.qparams
        codes = site.codes.numpy().astype(np.int64)
        shape = () if qp.axis is None else [-1 if i == qp.axis else 1 for i in range(codes.ndim)]
        zp = qp.zero_point.numpy().astype(np.int64).reshape(shape)
        scale = qp.scale.float().numpy().astype(np.float32).reshape(shape)
        self._const(marker.output[0], (codes - zp).astype(np.float32) * scale)
        return []

    def weight_nodes(self, site: Site, marker: onnx.NodeProto) -> list[onnx.NodeProto]:
        if self.float_conv_weights and self.float_weight_pays(marker):
            return self.float_weight(site, marker)
        container, _ = container_for(site, self.weight_container, self.activation_type)
        self.uses_int4 |= container.dtype in (TensorProto.INT4, TensorProto.UINT4)
        output, codes, axis = self._fold_transpose(marker.output[0], site.codes.numpy(), site.qparams.axis)
        channels = codes.shape[axis] if axis is not None else None
        scale, zp = self._qparams(site, container, channels)
        q = self._const(f"{site.name}.codes", codes.astype(container.np_dtype), container.dtype)
        attrs = {"axis": axis} if axis is not None else {}
        return [helper.make_node("DequantizeLinear", [q, scale, zp], [output], name=f"{site.name}/DequantizeLinear", **attrs)]

    def per_channel_activation_nodes(self, site: Site, marker: onnx.NodeProto) -> list[onnx.NodeProto]:
        """``(clamp(round(x / s) + zp, qmin, qmax) - zp) * s`` with per-channel s, zp (see module docstring)."""
        qp = site.qparams
        if qp.axis not in (1, -1):
            raise VitqError(f"quantizer {site.name}: per-channel activations along axis {qp.axis} cannot be exported")
        shape = (1, -1, 1, 1) if qp.axis == 1 else (-1,)  # axis 1: NCHW conv input; -1: Linear / token input
        scale = self._const(f"{site.name}.scale", qp.scale.float().numpy().astype(np.float32).reshape(shape))
        zp = self._const(f"{site.name}.zero_point", qp.zero_point.float().numpy().astype(np.float32).reshape(shape))
        lo = self._const(f"{site.name}.qmin", np.array(qp.qmin, dtype=np.float32))
        hi = self._const(f"{site.name}.qmax", np.array(qp.qmax, dtype=np.float32))
        steps = [("Div", [marker.input[0], scale]), ("Round", []), ("Add", [zp]), ("Clip", [lo, hi]), ("Sub", [zp]),
                 ("Mul", [scale])]
        nodes, x = [], marker.input[0]
        for i, (op, extra) in enumerate(steps):
            inputs = extra if op == "Div" else [x, *extra]
            out = marker.output[0] if i == len(steps) - 1 else f"{site.name}.{op.lower()}"
            nodes.append(helper.make_node(op, inputs, [out], name=f"{site.name}/{op}"))
            x = out
        return nodes

    def activation_nodes(self, site: Site, marker: onnx.NodeProto) -> list[onnx.NodeProto]:
        qp = site.qparams
        if qp.axis is not None:
            return self.per_channel_activation_nodes(site, marker)
        container, offset = container_for(site, self.weight_container, self.activation_type)
        scale, zp = self._qparams(site, container, None, offset)
        nodes = []
        x = marker.input[0]
        if (qp.qmin + offset, qp.qmax + offset) != (container.qmin, container.qmax):
            s = np.float32(qp.scale.item())
            z = int(qp.zero_point.item())
            lo = self._const(f"{site.name}.clip_min", np.array(np.float32(qp.qmin - z) * s, dtype=np.float32))
            hi = self._const(f"{site.name}.clip_max", np.array(np.float32(qp.qmax - z) * s, dtype=np.float32))
            nodes.append(helper.make_node("Clip", [x, lo, hi], [f"{site.name}.clipped"], name=f"{site.name}/Clip"))
            x = f"{site.name}.clipped"
        q_out = f"{site.name}.quantized"
        nodes.append(helper.make_node("QuantizeLinear", [x, scale, zp], [q_out], name=f"{site.name}/QuantizeLinear"))
        nodes.append(helper.make_node("DequantizeLinear", [q_out, scale, zp], [marker.output[0]],
                                      name=f"{site.name}/DequantizeLinear"))
        return nodes

    def _unalias_weights(self) -> None:
        """Point weight markers at the initializer itself where the exporter shared equal initializers through an
        Identity (its deduplication pass does this for bit-equal weights, e.g. zero-initialised convs of a random
        model), so each weight keeps its own codes; the Identity nodes left unused are dropped."""
        aliases = {n.output[0]: n.input[0] for n in self.graph.node
                   if n.op_type == "Identity" and n.input[0] in self.initializers}
        for node in self.graph.node:
            if node.domain == MARKER_DOMAIN and node.input and node.input[0] in aliases:
                node.input[0] = aliases[node.input[0]]
        used = {i for n in self.graph.node for i in n.input} | {o.name for o in self.graph.output}
        dropped = [n for n in self.graph.node if n.op_type == "Identity" and n.output[0] in aliases and n.output[0] not in used]
        for node in dropped:
            self.graph.node.remove(node)

    def run(self) -> onnx.ModelProto:
        self._unalias_weights()
        rewritten: list[onnx.NodeProto] = []
        seen = 0
        for node in list(self.graph.node):
            if node.domain != MARKER_DOMAIN or node.op_type != MARKER_OP:
                rewritten.append(node)
                continue
            site = self._site_of(node)
            seen += 1
            if site.is_weight:
                if node.input[0] not in self.initializers:
                    raise VitqError(f"weight of {site.name} is not a constant in the exported graph")
                rewritten += self.weight_nodes(site, node)
            else:
                rewritten += self.activation_nodes(site, node)
        if seen != len(self.sites):
            raise VitqError(f"{len(self.sites) - seen} quantizers did not reach the exported graph (unused modules?)")
        del self.graph.node[:]
        self.graph.node.extend(n for n in rewritten if not (n.op_type == "Transpose" and n.output[0] in self.folded))
        self._drop_unused_initializers()
        self.graph.initializer.extend(self.new_initializers)
        kept = [o for o in self.model.opset_import if o.domain != MARKER_DOMAIN]
        del self.model.opset_import[:]
        self.model.opset_import.extend(kept)
        return self.model

    def _drop_unused_initializers(self) -> None:
        used = {i for n in self.graph.node for i in n.input} | {o.name for o in self.graph.output}
        keep = [t for t in self.graph.initializer if t.name in used]
        del self.graph.initializer[:]
        self.graph.initializer.extend(keep)
        value_info = [v for v in self.graph.value_info if v.name in used]
        del self.graph.value_info[:]
        self.graph.value_info.extend(value_info)


def insert_qdq(model: onnx.ModelProto, sites: list[Site], options: ExportOptions = ExportOptions()) -> tuple[onnx.ModelProto, bool]:
    """Rewrite ``model`` in place; returns it and whether int4 types (opset 21) are used."""
    rewriter = QDQRewriter(model, sites, options)
    return rewriter.run(), rewriter.uses_int4
