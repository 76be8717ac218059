"""`vitq export`: a quantized checkpoint -> ONNX with QuantizeLinear/DequantizeLinear carrying the learned
scales, written only if onnxruntime matches torch (parity); ``--float`` writes the fp32 graph instead."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import click

from vitq.cli.options import check_input_file, check_output, data_option, data_or_demo
from vitq.export.options import ACTIVATION_TYPES, MIN_AGREEMENT, WEIGHT_CONTAINERS


@click.command("export")
@click.argument("qcheckpoint", type=click.Path(path_type=Path))
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--weight-container", type=click.Choice(WEIGHT_CONTAINERS), default=None,
              help="Integer type of stored weights. Default int8: the container onnxruntime CPU runs fastest; "
                   "int4 packs <= 4-bit weights (opset 21): smallest file, float MatMuls.")
@click.option("--activation-type", type=click.Choice(ACTIVATION_TYPES), default="uint8", show_default=True,
              help="uint8 gives U8S8 kernels; int8 shifts the same grid for S8S8 kernels.")
@click.option("--int8-conv-weights", is_flag=True,
              help="Store every conv weight as int8 codes + DequantizeLinear: smallest file. By default a 3x3 (or "
                   "larger) conv that onnxruntime runs in float (depthwise, or output not quantized) gets its dequantized "
                   "float32 weight, which runs 1.1-6x faster there (same numbers).")
@click.option("--standard-ops", is_flag=True,
              help="Standard ONNX ops only, for runtimes other than onnxruntime. By default SiLU is written as "
                   "onnxruntime's com.microsoft.QuickGelu, which onnxruntime cannot fuse by itself behind a quantized conv.")
@data_option
@click.option("--parity-images", type=click.IntRange(min=0), default=64, show_default=True,
              help="Evaluation images for the parity check; 0 skips it.")
@click.option("--min-agreement", type=click.FloatRange(0.0, 100.0), default=MIN_AGREEMENT, show_default=True,
              help="Required top-1 agreement (%) of onnxruntime with torch fake-quant run in float64; lowered to torch "
                   "float32's own agreement with float64 less 0.5 when the model is that sensitive to rounding noise.")
@click.option("--ort", "ort_format", is_flag=True, help="Also write an ORT-format .ort next to OUTPUT (mobile).")
@click.option("--float", "as_float", is_flag=True,
              help="Write the fp32 graph of the same model (quantizers off) instead: the reference to deploy against.")
def export_cmd(qcheckpoint: Path, output: Path, weight_container: str | None, activation_type: str, int8_conv_weights: bool,
               standard_ops: bool, data: Path | None,
               parity_images: int, min_agreement: float, ort_format: bool, as_float: bool) -> None:
    """Export QCHECKPOINT (from `vitq quantize`) to OUTPUT (.onnx)."""
    check_output(output, qcheckpoint, data, suffix=".onnx")
    if ort_format:
        check_output(output.with_suffix(".ort"), qcheckpoint, data, what="ORT-format output")
    check_input_file(qcheckpoint, "quantized checkpoint")
    from calib.datasets import open_split
    from calib.loaders import load_batches
    from calib.transforms import eval_transform
    from vitq.export.markers import export_reference, fallback_warning
    from vitq.export.onnx_export import ExportOptions, export_float, export_onnx
    from vitq.export.ort_format import convert_to_ort
    from vitq.export.parity import check_parity
    from vitq.pipeline.checkpoint import load_quantized

    parity_data = None
    if parity_images and not as_float:  # data errors before the model loads
        parity_data = open_split(data_or_demo(data), "evaluation", None, limit=parity_images)
    qm = load_quantized(qcheckpoint)
    if as_float:
        export_float(qm.model, output)
        click.echo(f"exported {qm.model_name} fp32 ({output.stat().st_size / 1e6:.2f} MB) to {output}")
    else:
        container = weight_container or "int8"
        output.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=output.parent, prefix=".vitq-export-") as tmp:
            options = ExportOptions(container, activation_type, not int8_conv_weights, not standard_ops)
            exported = export_onnx(qm.model, Path(tmp) / output.name, options)
            click.echo(f"exported {qm.model_name} {qm.recipe.bits}: {len(exported.sites)} quantized tensors, "
                       f"opset {exported.opset}, {exported.size_mb:.2f} MB ({container} weights, {activation_type} activations)")
            if exported.fallbacks:
                click.echo(fallback_warning(exported.fallbacks), err=True)
            if parity_data is not None:
                parity_data.transform = eval_transform(qm.model)
                report = check_parity(exported.path, export_reference(qm.model),
                                      load_batches(parity_data, 32, desc="load parity images"), min_agreement)
                click.echo(report.summary())
            os.replace(exported.path, output)
        click.echo(f"wrote {output}")
    if ort_format:
        click.echo(f"wrote {convert_to_ort(output)}")
