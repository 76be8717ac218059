"""`vitq` command line: parses options, calls the Python API, prints tables.

Every user mistake surfaces as ``Error: <one line>`` with exit status 1 (no traceback, no partial
output files).
"""
from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path

import click
import numpy as np
import torch

from calib.datasets import open_split
from calib.loaders import images_only, load_batches, load_splits
from calib.transforms import eval_transform
from vitq.api import load_quantized, quantize, recon_summary, save_quantized
from vitq.assets import DEMO_MODEL, demo_checkpoint, demo_images
from vitq.bench.cli import bench_cmd
from vitq.bench.demo import deployment_table
from vitq.calibration import FloatView
from vitq.errors import VitqError
from vitq.evaluate import evaluate
from vitq.export.cli import export_cmd
from vitq.models.families import FAMILIES
from vitq.models.loading import create_float_model
from vitq.models.wrap import float_layers_left
from vitq.quant.config import (
    CALIBRATION_METHODS,
    FIRST_LAST_POLICIES,
    SOFTMAX_QUANTIZERS,
    QuantConfig,
    methods,
    parse_bits,
    parse_overrides,
)
from vitq.quant.observers import OBSERVERS
from vitq.recon import METHODS as RECON_METHODS
from vitq.recon import POS_VARIANTS, RECON_PRESETS
from vitq.report import RESULTS_DIR, load_results, render
from vitq.report import update_readme as readme_update
from vitq.results import write_results
from vitq.workflow import ACCURACY_COLUMNS, AccuracyRun, format_table, quantize_and_evaluate

log = logging.getLogger("vitq")


class VitqGroup(click.Group):
    """Turns VitqError into click's one-line ``Error:`` and exit status 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except VitqError as e:
            raise click.ClickException(str(e)) from None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def check_device(device: str) -> str:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise VitqError(f"device {device!r} requested but no CUDA GPU is available")
    if not (device == "cpu" or device.startswith("cuda")):
        raise VitqError(f"device must be cpu or cuda[:N], got {device!r}")
    return device


def bits_list(spec: str) -> list[tuple[int, int]]:
    return [parse_bits(s) for s in spec.split(",") if s.strip()]


data_option = click.option("--data", type=click.Path(path_type=Path), default=None,
                           help="Image folder (wnid-named or <class>/<img>) or CIFAR-10 tar. Default: bundled sample.")
seed_option = click.option("--seed", type=int, default=0, show_default=True, help="Seeds torch, numpy and random.")
device_option = click.option("--device", default="cpu", show_default=True, help="cpu or cuda[:N].")
batch_option = click.option("--batch-size", type=int, default=32, show_default=True)
results_option = click.option("--results-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
                              help="Also write result records (JSON, DESIGN.md schema) here.")


@click.group(cls=VitqGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="-v for info, -vv for debug logging.")
def main(verbose: int) -> None:
    """vitq: post-training quantization of vision transformers, ONNX QDQ export and benchmarking."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


@main.command("quantize")
@click.argument("model_name")
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None, help="Local float weights (.safetensors/.pth).")
@click.option("--pretrained", is_flag=True, help="Download timm hub weights (needs internet; never used by tests).")
@data_option
@click.option("--bits", default="W8A8", show_default=True, help="WxAy with x, y in 2..8, e.g. W4A4.")
@click.option("--method", default="percentile", show_default=True,
              help=f"Calibration ({', '.join(CALIBRATION_METHODS)}) or reconstruction ({', '.join(RECON_METHODS.names())}).")
@click.option("--recon-preset", type=click.Choice(list(RECON_PRESETS)), default="fast", show_default=True,
              help="Reconstruction preset: fast (CPU, minutes), full (paper-like, GPU), ci, hybrid (small hybrid models, CPU).")
@click.option("--iters", type=int, default=None, help="Reconstruction iterations per unit and level (overrides the preset).")
@click.option("--coarsest", type=int, default=None, help="PFCR coarsest level in blocks per unit (1, 2, 4, ...).")
@click.option("--pos", type=click.Choice(list(POS_VARIANTS)), default=None, help="PFCR stage regime per level.")
@click.option("--lr-rounding", type=click.FloatRange(min=0.0, min_open=True), default=None,
              help="Adam learning rate of the rounding logits (overrides the preset; 0.1 beat 0.03 for PFCR at "
                   "125 samples x 90 iterations, docs/reconstruction.md).")
@click.option("--model-iters", type=click.IntRange(min=0), default=None,
              help="PFCR: iterations of a last level fitting the whole model's logits (activation step sizes and, "
                   "with --lr-bias, bias offsets; 0 = none; preset fast 100, full 2000).")
@click.option("--lr-bias", type=click.FloatRange(min=0.0), default=None,
              help="PFCR model level: Adam learning rate of the layers' bias offsets (0 = fixed; preset fast 1e-4, "
                   "the best measured, docs/reconstruction.md).")
@click.option("--recon-units", default=None, help="Comma-separated unit names to reconstruct (default: all; the "
                                                   "whole-model level is 'model').")
@click.option("--per-tensor-activations", is_flag=True,
              help="qhyvit: search the scheme only, so every activation stays per-tensor and onnxruntime runs int8 kernels.")
@click.option("--calib-size", type=int, default=None, help="Use at most this many calibration images.")
@click.option("--first-last", type=click.Choice(FIRST_LAST_POLICIES), default="8bit", show_default=True,
              help="Precision of patch embedding and head.")
@click.option("--softmax-quantizer", type=click.Choice(SOFTMAX_QUANTIZERS), default=None,
              help="Quantizer of the attention probabilities. Default: log2 for percentile calibration at 4-bit "
                   "activations, else uniform.")
@click.option("--percentile", type=float, default=None,
              help="Clipping percentile of the percentile observer. Default: 99.999 at 8-bit activations, 99.9 at 4-7, "
                   "99.5 at 2-3.")
@click.option("--init-method", type=click.Choice(["minmax", "percentile", "mse"]), default=None,
              help="Calibration a reconstruction method starts from. Default: percentile (qhyvit: minmax).")
@click.option("--weight-observer", type=click.Choice(OBSERVERS.names()), default=None,
              help="Observer of the weight scales. Default: the calibration method's (percentile: min-max, "
                   "mse at <= 4-bit weights).")
@click.option("--override", "overrides", multiple=True, metavar="PATTERN=JSON",
              help="Per-quantizer setting, repeatable; PATTERN matches quantizer names (fnmatch), JSON keys: enable, "
                   "bits, observer, percentile. E.g. 'blocks.*.mlp.fc2.input_quant={\"bits\": 8}' keeps the MLP's "
                   "GELU output at 8 bits (docs/reconstruction.md, sensitivity).")
@click.option("--bias-correction", is_flag=True,
              help="Cancel each quantized layer's mean output error on the calibration images through its bias "
                   "(folds into the exported bias; helps calibration-only low-bit models).")
@batch_option
@seed_option
@device_option
def quantize_cmd(model_name: str, output: Path, checkpoint: Path | None, pretrained: bool, data: Path | None, bits: str,
                 method: str, recon_preset: str, iters: int | None, coarsest: int | None, pos: str | None, lr_rounding: float | None,
                 model_iters: int | None, lr_bias: float | None, recon_units: str | None, per_tensor_activations: bool,
                 calib_size: int | None, first_last: str,
                 softmax_quantizer: str | None, percentile: float | None, init_method: str | None, weight_observer: str | None,
                 overrides: tuple[str, ...], bias_correction: bool, batch_size: int, seed: int, device: str) -> None:
    """Quantize MODEL_NAME (a timm name) with calibration images and save a reloadable checkpoint to OUTPUT."""
    seed_everything(seed)
    w_bits, a_bits = parse_bits(bits)
    options = {"iters": iters, "coarsest": coarsest, "pos": pos, "lr_rounding": lr_rounding, "model_iters": model_iters,
               "lr_bias": lr_bias, "units": recon_units.split(",") if recon_units else None,
               "per_channel_activations": False if per_tensor_activations else None}
    recon = {"preset": recon_preset, "seed": seed, **{k: v for k, v in options.items() if v is not None}}
    config = QuantConfig(w_bits=w_bits, a_bits=a_bits, method=method, first_last=first_last,
                         softmax_quantizer=softmax_quantizer, percentile=percentile, init_method=init_method,
                         weight_observer=weight_observer, overrides=parse_overrides(overrides), bias_correction=bias_correction,
                         recon=recon if method not in CALIBRATION_METHODS else {})
    device = check_device(device)
    model = create_float_model(model_name, checkpoint=checkpoint, pretrained=pretrained)
    dataset = open_split(data or demo_images(), "calibration", eval_transform(model), limit=calib_size)
    calib = load_batches(dataset, batch_size, desc="load calibration images")
    start = time.perf_counter()
    qmodel = quantize(model, model_name, images_only(calib), config, device=device, inplace=True)
    meta = {"calibration_images": len(dataset), "data": str(data or demo_images()), "seed": seed,
            "float_layers": float_layers_left(qmodel), "seconds": round(time.perf_counter() - start, 1),
            "recon_losses": recon_summary(qmodel)}
    save_quantized(output, qmodel, model_name, config, meta)
    for level in (meta["recon_losses"] or {}).get("levels", []):
        click.echo(f"{level['level']}: {level['units']} units, relative MSE {level['before']:.4f} -> {level['after']:.4f} "
                   f"(worst {level['worst_unit']} {level['worst_after']:.4f})")
    click.echo(f"saved {model_name} {config.bits} ({method}, {len(dataset)} calibration images) to {output}")


@main.command("eval")
@click.argument("qcheckpoint", type=click.Path(path_type=Path))
@data_option
@click.option("--limit", type=int, default=None, help="Evaluate an evenly spaced subset of this many images.")
@batch_option
@device_option
@click.option("--json", "as_json", is_flag=True, help="Print the result record as JSON instead of a table.")
@results_option
def eval_cmd(qcheckpoint: Path, data: Path | None, limit: int | None, batch_size: int, device: str, as_json: bool,
             results_file: Path | None) -> None:
    """Evaluate a quantized checkpoint against its own fp32 weights on the evaluation split."""
    device = check_device(device)
    qmodel, header = load_quantized(qcheckpoint)
    config: QuantConfig = header["config"]
    data_path = data or demo_images()
    dataset = open_split(data_path, "evaluation", eval_transform(qmodel), limit=limit)
    batches = load_batches(dataset, batch_size, desc="load evaluation images")
    results = evaluate({"fp32": FloatView(qmodel), "quant": qmodel}, batches, device=device)
    record = AccuracyRun(header["model_name"], str(data_path), config, results["quant"], results["fp32"],
                         header["meta"].get("seconds", 0.0), device, float_layers_left(qmodel),
                         header["meta"].get("recon_losses")).record()
    if results_file:
        write_results(results_file, [record])
    if as_json:
        click.echo(json.dumps(record, indent=2))
    else:
        click.echo(format_table([record], ACCURACY_COLUMNS))
        click.echo(f"left in float: {', '.join(record['float_layers']) or 'nothing'}")


@main.command("demo")
@click.option("--bits", "bits_spec", default="W8A8,W6A6,W4A4", show_default=True, help="Comma-separated WxAy list.")
@click.option("--method", default="percentile", show_default=True, help=f"One of: {', '.join(CALIBRATION_METHODS)}.")
@click.option("--limit", type=int, default=None, help="Evaluate on this many of the bundled evaluation images.")
@batch_option
@results_option
def demo_cmd(bits_spec: str, method: str, limit: int | None, batch_size: int, results_file: Path | None) -> None:
    """Quantize the bundled DeiT-Tiny with the bundled images and print accuracy against fp32."""
    seed_everything(0)
    configs = [QuantConfig(w_bits=w, a_bits=a, method=method) for w, a in bits_list(bits_spec)]
    model = create_float_model(DEMO_MODEL, checkpoint=demo_checkpoint())
    transform = eval_transform(model)
    calib, evaluation = load_splits(demo_images(), transform, limit, batch_size)
    click.echo(f"{DEMO_MODEL}: {sum(len(y) for _, y in calib)} calibration / "
               f"{sum(len(y) for _, y in evaluation)} evaluation images (bundled, disjoint classes)")
    records, deployed = [], None
    for config in configs:
        qmodel, run = quantize_and_evaluate(model, DEMO_MODEL, config, calib, evaluation, dataset="bundled imagenet-sample")
        records.append(run.record())
        if deployed is None and config.bits == "W8A8":
            deployed = qmodel
        click.echo(f"  {config.bits} {method}: top-1 {run.quantized.top1:.2f} (fp32 {run.fp32.top1:.2f}), "
                   f"agreement {run.quantized.agreement:.1f} %")
    click.echo("")
    click.echo(format_table(records, ACCURACY_COLUMNS))
    click.echo(f"left in float: {', '.join(records[0]['float_layers']) or 'nothing'} "
               "(LayerNorm, softmax and GELU compute in float by design)")
    if results_file:
        write_results(results_file, records)
    if deployed is not None:
        click.echo("\nW8A8 in onnxruntime (CPU, 1 thread, batch 1): fp32 vs onnxruntime quantize_static vs vitq QDQ export")
        click.echo(deployment_table(deployed, DEMO_MODEL, images_only(calib), evaluation)[0])


@main.command("report")
@click.option("--results-dir", type=click.Path(file_okay=False, path_type=Path), default=RESULTS_DIR, show_default=True)
@click.option("--update-readme", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Rewrite the generated results block of this README instead of printing.")
def report_cmd(results_dir: Path, update_readme: Path | None) -> None:
    """Markdown tables of every result record under benchmarks/results/."""
    results = load_results(results_dir)
    if update_readme:
        readme_update(update_readme, results)
        click.echo(f"updated {update_readme} from {len(results)} results files")
    else:
        click.echo(render(results))


@main.command("list")
def list_cmd() -> None:
    """List supported model families, methods and options."""
    for name in FAMILIES.names():
        click.echo(f"family {name}: {', '.join(FAMILIES.get(name).patterns)}")
    click.echo(f"methods: {', '.join(methods())}")
    click.echo(f"first/last policies: {', '.join(FIRST_LAST_POLICIES)}; softmax quantizers: {', '.join(SOFTMAX_QUANTIZERS)}")


main.add_command(export_cmd)
main.add_command(bench_cmd)

if __name__ == "__main__":
    main()
