"""Build the model files a benchmark compares from one wrapped model: fp32 (plain and
transformer-optimized), onnxruntime's ``quantize_static`` and weight-only ``MatMulNBits``, NNCF's ``quantize`` and
Intel Neural Compressor's static quantizer on the same fp32 graph and calibration images, and vitq's QDQ exports
(names in ``vitq.bench.variants``).

Every variant comes from the same wrapped model, so all share weights, input size and graph
structure; only the quantization differs.
"""
from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quant_pre_process, quantize_static
from onnxruntime.transformers.optimizer import optimize_model
from torch import nn

from vitq.bench.variants import (
    DEFAULT_VARIANTS,
    FP32,
    FP32_OPT,
    INC,
    NNCF,
    ORT_NBITS,
    ORT_STATIC,
    VITQ_DQ_CONV,
    VITQ_INT4W,
    VITQ_S8S8,
    VITQ_STANDARD,
    VITQ_U8S8,
    Variant,
    check_installed,
)
from vitq.export.onnx_export import INPUT_NAME, ExportOptions, export_float, export_onnx
from vitq.files import atomic_write, in_scratch_dir

log = logging.getLogger(__name__)

CALIB_BATCH = 8
MAX_INTERMEDIATE_OUTPUTS = 4  # onnxruntime calibrator memory bound (CalibMaxIntermediateOutputs)


class _Images(CalibrationDataReader):
    """Feeds calibration images to onnxruntime's calibrator in small batches."""

    def __init__(self, images: Sequence[torch.Tensor]) -> None:
        x = torch.cat(list(images)).numpy().astype(np.float32)
        n = max(1, len(x) // CALIB_BATCH)
        if n > 1 and n % MAX_INTERMEDIATE_OUTPUTS == 0:
            # onnxruntime 1.32 flushes every MAX_INTERMEDIATE_OUTPUTS batches and then raises "No data is
            # collected" when the last flush left nothing: keep the batch count off that multiple
            n -= 1
        self.batches = np.array_split(x, n)
        self.rewind()

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: batch}

    def rewind(self) -> None:
        """Start over (Intel Neural Compressor reads the images more than once)."""
        self._batches: Iterator[np.ndarray] = iter(self.batches)


def transformer_optimized(fp32: Path, out: Path, shape: tuple[int, int] = (0, 0)) -> Path:
    """onnxruntime.transformers' ViT fusions (SkipLayerNorm, BiasGelu, Attention where matched); ``shape`` =
    (attention heads, hidden size) as the model family declares it, (0, 0) lets onnxruntime infer them."""
    heads, hidden = shape
    optimized = optimize_model(str(fp32), model_type="vit", num_heads=heads, hidden_size=hidden)
    return atomic_write(out, lambda tmp: optimized.save_model_to_file(str(tmp)))


def ort_quantize_static(fp32: Path, out: Path, calib_images: Sequence[torch.Tensor]) -> Path:
    """onnxruntime's recommended static flow: ``quant_pre_process`` then ``quantize_static`` (QDQ,
    per-channel int8 weights, uint8 activations, MinMax over the same calibration images, all ops)."""
    def write(tmp: Path) -> None:
        pre = tmp.with_suffix(".pre.onnx")
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # onnxruntime's quantizer warns per LayerNorm weight on the root logger
        try:
            try:
                with in_scratch_dir():
                    # on failure ORT dumps sym_shape_infer_temp.onnx + external data into the working directory
                    quant_pre_process(str(Path(fp32).resolve()), str(pre.resolve()))
            except Exception:  # noqa: BLE001 - ORT's symbolic shape inference gives up on some graphs
                log.warning("quant_pre_process: symbolic shape inference failed; retrying without it")
                quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
            quantize_static(str(pre), str(tmp), _Images(calib_images), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            extra_options={"CalibMaxIntermediateOutputs": MAX_INTERMEDIATE_OUTPUTS})
        finally:
            root.setLevel(level)
            pre.unlink(missing_ok=True)
    return atomic_write(out, write)


def nncf_quantize(fp32: Path, out: Path, calib_images: Sequence[torch.Tensor], transformer: bool) -> Path:
    """NNCF's post-training quantization of the fp32 graph (``nncf.quantize``, ONNX backend) on the same
    calibration images, one image per calibration step; ``model_type=TRANSFORMER`` (NNCF's preset for attention
    models: mixed symmetric/asymmetric, LayerNorm/Softmax/GELU left float) for a plain transformer."""
    import nncf

    images = [x[None] for x in torch.cat(list(calib_images)).numpy().astype(np.float32)]
    dataset = nncf.Dataset(images, lambda x: {INPUT_NAME: x})
    quantized = nncf.quantize(onnx.load(str(fp32)), dataset, subset_size=len(images),
                              model_type=nncf.ModelType.TRANSFORMER if transformer else None)
    return atomic_write(out, lambda tmp: onnx.save(quantized, str(tmp)))


NBITS_BLOCK = 32  # weights per int4 scale


def ort_matmul_nbits(fp32: Path, out: Path) -> Path:
    """onnxruntime's weight-only 4-bit quantization of the fp32 graph: every MatMul with a constant weight becomes
    ``MatMulNBits`` (symmetric int4, one scale per ``NBITS_BLOCK`` weights, ``accuracy_level=4``: the activations are
    quantized to int8 on the fly inside the kernel, onnxruntime's integer path on x86). No calibration."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)  # a line per node
    quantizer = MatMulNBitsQuantizer(onnx.load(str(fp32)), bits=4, block_size=NBITS_BLOCK, is_symmetric=True,
                                     accuracy_level=4)
    quantizer.process()
    return atomic_write(out, lambda tmp: quantizer.model.save_model_to_file(str(tmp)))


def inc_quantize(fp32: Path, out: Path, calib_images: Sequence[torch.Tensor]) -> Path:
    """Intel Neural Compressor's ONNX static quantization (``onnx_neural_compressor.quantization.quantize`` with
    ``StaticQuantConfig``) of the fp32 graph: QDQ, per-channel int8 weights, uint8 activations, MinMax over the same
    calibration images; its own pre-pass runs onnxruntime's basic graph optimizations first."""
    from onnx_neural_compressor.quantization import config, quantize

    logging.getLogger("onnx_neural_compressor").setLevel(logging.WARNING)  # it logs an op table per model at INFO
    reader = _Images(calib_images)
    settings = config.StaticQuantConfig(calibration_data_reader=reader, quant_format=QuantFormat.QDQ, per_channel=True,
                                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                        calibration_sampling_size=len(reader.batches))

    def write(tmp: Path) -> None:
        with tempfile.TemporaryDirectory(prefix="vitq-inc.") as scratch:
            # it writes the weights as external data beside its output; one self-contained file is what the
            # size column and the other variants mean
            quantize(str(fp32), f"{scratch}/model.onnx", settings)
            onnx.save(onnx.load(f"{scratch}/model.onnx"), str(tmp))
    return atomic_write(out, write)


def build_variants(qmodel: nn.Module, calib_images: Sequence[torch.Tensor], workdir: Path,
                   names: Sequence[str] = DEFAULT_VARIANTS, stem: str = "model", transformer_shape: tuple[int, int] = (0, 0),
                   progress: Callable[[str], None] = lambda _: None, transformer: bool = True) -> dict[str, Variant]:
    """Write every requested variant under ``workdir``; fp32 is always built (the others derive from it).
    ``transformer_shape``: (heads, hidden size) for the fp32-opt fusions (``Family.transformer_shape``);
    ``transformer``: a plain transformer (not a hybrid), for NNCF's model type."""
    check_installed(names)
    workdir.mkdir(parents=True, exist_ok=True)
    fp32 = workdir / f"{stem}-fp32.onnx"
    progress("export fp32")
    export_float(qmodel, fp32)
    out = {FP32: Variant(FP32, fp32, "float32, exported from the same model with quantizers off")}
    builders: dict[str, tuple[str, Callable[[Path], Path]]] = {
        FP32_OPT: ("float32 + onnxruntime.transformers ViT fusions", lambda p: transformer_optimized(fp32, p, transformer_shape)),
        ORT_STATIC: ("onnxruntime quantize_static: QDQ, per-channel, U8S8, MinMax, all ops",
                     lambda p: ort_quantize_static(fp32, p, calib_images)),
        VITQ_U8S8: ("vitq QDQ export, learned scales, uint8 activations x int8 weights (U8S8)",
                    lambda p: export_onnx(qmodel, p).path),
        VITQ_S8S8: ("vitq QDQ export, activations shifted to int8 (S8S8), same values",
                    lambda p: export_onnx(qmodel, p, ExportOptions(activation_type="int8")).path),
        VITQ_INT4W: ("vitq QDQ export, <= 4-bit weights packed as int4 (opset 21), uint8 activations",
                     lambda p: export_onnx(qmodel, p, ExportOptions(weight_container="int4")).path),
        NNCF: ("NNCF quantize on the fp32 graph: QDQ, per-channel weights, same calibration images"
               + (", model_type transformer" if transformer else ""),
               lambda p: nncf_quantize(fp32, p, calib_images, transformer)),
        ORT_NBITS: (f"onnxruntime MatMulNBits on the fp32 graph: weight-only int4, block {NBITS_BLOCK}, symmetric, "
                    "int8 compute (accuracy_level 4), no calibration", lambda p: ort_matmul_nbits(fp32, p)),
        INC: ("Intel Neural Compressor static quantization of the fp32 graph: QDQ, per-channel, U8S8, MinMax, same "
              "calibration images", lambda p: inc_quantize(fp32, p, calib_images)),
        VITQ_DQ_CONV: ("vitq QDQ export, conv weights as int8 codes + DequantizeLinear also where the conv runs in float",
                       lambda p: export_onnx(qmodel, p, ExportOptions(float_conv_weights=False)).path),
        VITQ_STANDARD: ("vitq QDQ export with standard ONNX ops only (SiLU as Sigmoid + Mul, no com.microsoft QuickGelu)",
                        lambda p: export_onnx(qmodel, p, ExportOptions(contrib_ops=False)).path),
    }
    for name in names:
        if name == FP32:
            continue
        description, build = builders[name]
        progress(f"build {name}")
        out[name] = Variant(name, build(workdir / f"{stem}-{name}.onnx"), description)
    return out
