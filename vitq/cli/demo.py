"""`vitq demo`: the whole flow on the bundled DeiT-Tiny and images, accuracy and latency against fp32."""
from __future__ import annotations

from pathlib import Path

import click

from vitq.cli.options import batch_option, check_results_file, limit_option, results_option, seed_everything
from vitq.errors import VitqError


@click.command("demo")
@click.option("--bits", "bits_spec", default="W8A8,W6A6,W4A4", show_default=True, help="Comma-separated WxAy list.")
@click.option("--method", default="percentile", show_default=True,
              help="A calibration or baseline method (`vitq list`); reconstruction takes longer than a demo should.")
@limit_option
@batch_option
@results_option
def demo_cmd(bits_spec: str, method: str, limit: int | None, batch_size: int, results_file: Path | None) -> None:
    """Quantize the bundled DeiT-Tiny with the bundled images and print accuracy against fp32, then the W8A8
    model's onnxruntime accuracy and latency beside fp32 and onnxruntime's quantize_static."""
    from vitq.methods import get_method
    from vitq.recipe import make_recipe

    check_results_file(results_file)
    if get_method(method).reconstructs:
        raise VitqError(f"the demo runs calibration and baseline methods, not reconstruction ({method!r}); "
                        "use `vitq quantize --preset w4a4-pfcr-fast`")
    bits_list = [bits.strip().upper() for bits in bits_spec.split(",") if bits.strip()]
    if not bits_list:
        raise VitqError(f"--bits lists no bit-widths, got {bits_spec!r} (e.g. W8A8,W4A4)")
    if len(set(bits_list)) != len(bits_list):
        raise VitqError(f"--bits names a bit-width more than once: {bits_spec!r}")
    recipes = [make_recipe(bits, method) for bits in bits_list]

    from calib.loaders import images_only, load_splits
    from calib.transforms import eval_transform
    from vitq.assets import DEMO_MODEL, demo_checkpoint, demo_images
    from vitq.models.loading import create_float_model
    from vitq.pipeline.bench import deployment_table
    from vitq.pipeline.workflow import accuracy_table, quantize_and_evaluate
    from vitq.results import write_results

    seed_everything(0)
    model = create_float_model(DEMO_MODEL, checkpoint=demo_checkpoint())
    calib, evaluation = load_splits(demo_images(), eval_transform(model), limit, batch_size)
    click.echo(f"{DEMO_MODEL}: {sum(len(y) for _, y in calib)} calibration / "
               f"{sum(len(y) for _, y in evaluation)} evaluation images (bundled, disjoint classes)")
    records, deployed = [], None
    for recipe in recipes:
        qm, run = quantize_and_evaluate(model, DEMO_MODEL, recipe, calib, evaluation, dataset="bundled imagenet-sample")
        records.append(run.record())
        if deployed is None and recipe.bits == "W8A8":
            deployed = qm
        click.echo(f"  {recipe.bits} {method}: top-1 {run.quantized.top1:.2f} (fp32 {run.fp32.top1:.2f}), "
                   f"agreement {run.quantized.agreement:.1f} %")
    click.echo("")
    click.echo(accuracy_table(records))
    click.echo(f"left in float: {', '.join(records[0]['float_layers']) or 'nothing'} "
               "(LayerNorm, softmax and GELU compute in float by design)")
    if results_file:
        write_results(results_file, records)
    if deployed is not None:
        click.echo("\nW8A8 in onnxruntime (CPU, 1 thread, batch 1): fp32 vs onnxruntime quantize_static vs vitq QDQ export")
        click.echo(deployment_table(deployed, images_only(calib), evaluation)[0])
