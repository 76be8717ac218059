"""DeiT-Tiny exported at several bit-widths: accuracy of the torch model that was measured and of the exported
file in onnxruntime, side by side (one record each, ``runtime`` torch / onnxruntime), parity and file sizes (int8
container vs packed int4 weights).

    python benchmarks/bench_export_lowbit.py --data ../shared/data/imagenet-sample \\
        --checkpoint ../shared/data/weights/deit_tiny_patch16_224.safetensors --bits W8A8,W6A6,W4A4 \\
        --method percentile --out benchmarks/results/bench_export_parity.json

Each bit-width is quantized with ``make_recipe(bits, --method, --set ...)`` (once per ``--seeds`` entry) and
exported twice: with packed int4 weights where a weight's grid fits 4 bits (the exporter keeps the others int8)
and with every weight in an int8 container. Parity is measured on the packed file against the export reference
(the torch model with any non-QDQ quantizer replaced by its 8-bit fallback); ``exported_as_measured`` says
whether that reference is the measured model itself, and ``torch_top1`` is always the measured model's.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import click
import torch

from calib.loaders import images_only, load_splits
from calib.transforms import eval_transform
from vitq.assets import DEMO_MODEL, demo_checkpoint, demo_images
from vitq.calibration import FloatView
from vitq.evaluate import evaluate
from vitq.export.markers import export_reference
from vitq.export.onnx_export import ExportOptions, export_float, export_onnx
from vitq.export.parity import compare, torch_logits
from vitq.export.qdq import INT4_OPSET
from vitq.models.loading import create_float_model
from vitq.pipeline.quantize import quantize
from vitq.recipe import Recipe, parse_settings, seeded_recipes
from vitq.report.records import RESULTS_DIR
from vitq.report.tables import text_table
from vitq.results import write_results

COLUMNS = [("bits", "bits"), ("seed", "seed"), ("softmax_quantizer", "softmax q"), ("softmax_bits", "softmax bits"),
           ("runtime", "runtime"), ("top1", "top-1"), ("exported_as_measured", "as measured"),
           ("fp32_top1", "fp32 top-1"), ("agreement_with_torch", "agree torch %"),
           ("agreement_with_torch_float64", "agree torch64 %"), ("torch_float32_vs_float64", "torch32 vs 64 %"),
           ("agreement", "agree fp32 %"),
           ("max_abs_logit_error", "max logit err"), ("size_mb", "MB"), ("size_mb_int8_container", "MB int8"),
           ("size_ratio_vs_fp32", "x fp32")]


@click.command()
@click.option("--data", type=click.Path(path_type=Path), default=None, help="Image folder; default: bundled sample.")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help=f"{DEMO_MODEL} float weights; default: the bundled ones.")
@click.option("--bits", "bits_spec", default="W8A8,W6A6,W4A4", show_default=True, help="Comma-separated WxAy.")
@click.option("--method", default="mse", show_default=True, help="Method of every recipe (`vitq list`).")
@click.option("--set", "pairs", multiple=True, help="Recipe setting KEY=VALUE for every recipe, e.g. softmax_quantizer=log2.")
@click.option("--seeds", default="0", show_default=True,
              help="Comma-separated seeds, one run each: of the reconstruction and the rotations, where the recipe has them.")
@click.option("--eval-limit", type=int, default=None, help="Evaluate on this many evaluation images (default: the whole split).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=RESULTS_DIR / "bench_export_parity.json",
              show_default=True, help="Results file (JSON).")
def main(data: Path | None, checkpoint: Path | None, bits_spec: str, method: str, pairs: tuple[str, ...], seeds: str,
         eval_limit: int | None, out: Path) -> None:
    """Export DeiT-Tiny at every bit-width: torch and onnxruntime accuracy, parity and file sizes."""
    logging.basicConfig(level=logging.WARNING)
    recipes = recipes_for(bits_spec, method, parse_settings(pairs), [int(s) for s in seeds.split(",")])
    model = create_float_model(DEMO_MODEL, checkpoint=checkpoint or demo_checkpoint())
    data = data or demo_images()
    calib, evaluation = load_splits(data, eval_transform(model), eval_limit)
    records = []
    with tempfile.TemporaryDirectory(prefix="vitq-lowbit-") as tmp:
        for recipe in recipes:
            torch.manual_seed(0)
            qm = quantize(model, DEMO_MODEL, images_only(calib), recipe)
            qmodel = qm.model
            fp32_size = export_float(qmodel, Path(tmp) / "fp32.onnx").stat().st_size / 1e6
            packed = export_onnx(qmodel, Path(tmp) / f"{recipe.bits}.onnx", ExportOptions(weight_container="int4"))
            int8_size = export_onnx(qmodel, Path(tmp) / f"{recipe.bits}-int8.onnx").size_mb
            parity = compare(packed.path, export_reference(qmodel), evaluation)
            # the fp32 reference is the model before any recipe change (relu_mlp), run once for ORT's and torch's agreement
            reference = model if recipe.relu_mlp else FloatView(qmodel)
            fp32 = torch_logits(reference, evaluation)
            ort_vs_fp32 = compare(packed.path, reference, evaluation, fp32)  # its torch_top1 is fp32's top-1
            models = {"fp32": reference, "torch": qmodel, **({"changed": FloatView(qmodel)} if recipe.relu_mlp else {})}
            measured = evaluate(models, evaluation, progress=False, cached={"fp32": [torch.from_numpy(a) for a in fp32.float32]})
            changed = {"changed_fp32_top1": round(measured["changed"].top1, 3), "changed_fp32_agreement":
                       round(measured["changed"].agreement, 3), "relu_mlp": qm.meta["relu_mlp"]} if recipe.relu_mlp else {}
            measured = measured["torch"]
            common = {"model": DEMO_MODEL, "dataset": str(data), "n_images": parity.n_images, "bits": recipe.bits,
                      "seed": recipe.seed, "softmax_quantizer": recipe.format.softmax_quantizer,
                      "softmax_bits": recipe.format.softmax_bits or recipe.format.a_bits,
                      "exported_as_measured": not packed.fallbacks, "export_fallbacks": len(packed.fallbacks),
                      "fp32_top1": round(ort_vs_fp32.torch_top1, 3), "recipe": recipe.to_dict(), **changed}
            records.append({**common, "method": recipe.method, "runtime": "torch", "top1": round(measured.top1, 3),
                            "top5": round(measured.top5, 3), "drop": round(ort_vs_fp32.torch_top1 - measured.top1, 3),
                            "drop_se": round(measured.drop_se, 3),
                            "agreement": round(measured.agreement, 3), "kl": round(measured.kl, 4)})
            records.append({
                **common, "method": f"{recipe.method}+onnx-export", "runtime": "onnxruntime",
                "top1": round(parity.ort_top1, 3), "torch_top1": round(measured.top1, 3),
                "export_reference_top1": round(parity.torch_top1, 3),
                "drop": round(ort_vs_fp32.torch_top1 - parity.ort_top1, 3), "drop_se": round(ort_vs_fp32.drop_se, 3),
                "agreement": round(ort_vs_fp32.agreement, 3),
                "agreement_with_torch": round(parity.agreement, 3),
                "agreement_with_torch_float64": round(parity.exact_agreement, 3),
                "torch_float32_vs_float64": round(parity.float32_agreement, 3), "parity_passed": parity.passes(),
                "max_abs_logit_error": round(parity.max_abs_logit_error, 4),
                "mean_abs_logit_error": round(parity.mean_abs_logit_error, 5),
                # the exporter moves to the int4 opset only when some weight went into an int4 container
                "weight_container": "int4" if packed.opset == INT4_OPSET else "int8",
                "opset": packed.opset, "size_mb": round(packed.size_mb, 3), "size_mb_int8_container": round(int8_size, 3),
                "size_mb_fp32": round(fp32_size, 3), "size_ratio_vs_fp32": round(packed.size_mb / fp32_size, 3),
            })
            write_results(out, records)
            click.echo(text_table(records[-2:], COLUMNS))
    click.echo(text_table(records, COLUMNS))


def recipes_for(bits_spec: str, method: str, settings: dict, seeds: list[int]) -> list[Recipe]:
    """One recipe per bit-width and seed. A seed re-draws what is random in the run (``Recipe.seed``): a
    reconstruction's samples and batches, and the rotations (whose seed follows the run's unless ``rotation_seed`` is
    set); a recipe with neither runs once."""
    return [recipe for bits in bits_spec.split(",") for recipe in seeded_recipes(bits, method, settings, seeds)]


if __name__ == "__main__":
    main()
