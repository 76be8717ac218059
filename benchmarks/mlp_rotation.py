"""Online MLP rotation (``rotate_mlp``) by block size: torch accuracy at low bits and onnxruntime latency of the W8A8
export, against no rotation, in one run.

    python benchmarks/mlp_rotation.py --data ../shared/data/imagenet-sample --blocks 0,16,64,256 \\
        --bits W4A4,W3A3 --set rotate=true --out benchmarks/results/mlp_rotation_deit_tiny.json

Block 0 is the model without the rotation. Every other block size ``B`` puts a Hadamard rotation in blocks of ``B``
channels in front of each ``fc2`` (``vitq.models.rotation.rotate_mlp_hidden`` with ``limit=B``) before the recipe
(``make_recipe(bits, --method, --set ...)``) quantizes the model. Accuracy: the torch model on the evaluation images.
Speed: each block size's W8A8 export and the fp32 graph timed round-robin at batch 1 (``--threads``), so the rotation's
cost in onnxruntime is read beside the int8 speedup it eats into.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import click
import numpy as np
import torch

from calib.loaders import images_only, load_splits
from calib.transforms import eval_transform
from vitq.assets import DEMO_MODEL, demo_checkpoint, demo_images
from vitq.bench.measure import interleaved_latency
from vitq.bench.runner import optimized_op_counts
from vitq.evaluate import evaluate, predict
from vitq.export.onnx_export import export_float, export_onnx
from vitq.export.runtime import open_session, session_options
from vitq.models.loading import create_float_model
from vitq.models.rotation import rotate_mlp_hidden
from vitq.pipeline.quantize import quantize
from vitq.recipe import make_recipe, parse_settings
from vitq.report.records import RESULTS_DIR
from vitq.results import write_results


@click.command()
@click.option("--data", type=click.Path(path_type=Path), default=None, help="Image folder; default: bundled sample.")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help=f"{DEMO_MODEL} float weights; default: the bundled ones.")
@click.option("--blocks", default="0,16,64,256", show_default=True, help="Comma-separated block sizes (0 = no rotation).")
@click.option("--bits", "bits_spec", default="W4A4,W3A3", show_default=True, help="Bit-widths for accuracy (torch); empty: latency only.")
@click.option("--method", default="percentile", show_default=True, help="Method of every recipe (`vitq list`).")
@click.option("--set", "pairs", multiple=True, help="Recipe setting KEY=VALUE for every recipe, e.g. rotate=true.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="onnxruntime intra-op threads.")
@click.option("--runs", type=click.IntRange(min=1), default=60, show_default=True, help="Timed batch-1 runs per file.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=RESULTS_DIR / "mlp_rotation_deit_tiny.json",
              show_default=True, help="Results file (JSON).")
def main(data: Path | None, checkpoint: Path | None, blocks: str, bits_spec: str, method: str, pairs: tuple[str, ...],
         threads: int, runs: int, out: Path) -> None:
    """Accuracy and onnxruntime cost of the online MLP rotation, by block size."""
    logging.basicConfig(level=logging.WARNING)
    settings = parse_settings(pairs)
    if "rotate_mlp" in settings:
        raise click.UsageError("the block sizes decide the MLP rotation here; leave rotate_mlp out of --set")
    model = create_float_model(DEMO_MODEL, checkpoint=checkpoint or demo_checkpoint())
    data = data or demo_images()
    calib, evaluation = load_splits(data, eval_transform(model), None)
    images = images_only(calib)
    with torch.no_grad():
        fp32_logits = predict(model, evaluation)
    records, files = [], {}
    with tempfile.TemporaryDirectory(prefix="vitq-mlprot-") as tmp:
        files["fp32"] = export_float(model, Path(tmp) / "fp32.onnx")
        for block in (int(b) for b in blocks.split(",")):
            changed = rotate_mlp_hidden(model, DEMO_MODEL, limit=block, probe=images[0][:4])[0] if block else model
            for bits in [*(b for b in bits_spec.split(",") if b), "W8A8"]:
                recipe = make_recipe(bits, method, settings)
                torch.manual_seed(0)
                qmodel = quantize(changed, DEMO_MODEL, images, recipe, progress=False).model
                if bits == "W8A8":
                    files[f"vitq-int8 block={block}"] = export_onnx(qmodel, Path(tmp) / f"w8a8_b{block}.onnx").path
                    continue
                result = evaluate({"fp32": model, "q": qmodel}, evaluation, progress=False, cached={"fp32": fp32_logits})
                q = result["q"]
                records.append({"model": DEMO_MODEL, "dataset": str(data), "n_images": q.n_images, "bits": bits,
                                "method": recipe.method, "runtime": "torch", "mlp_rotation_block": block,
                                "top1": round(q.top1, 3), "fp32_top1": round(result["fp32"].top1, 3),
                                "drop": round(result["fp32"].top1 - q.top1, 3), "agreement": round(q.agreement, 3),
                                "kl": round(q.kl, 4), "recipe": recipe.to_dict()})
                click.echo(f"block {block:4d} {bits}: top-1 {q.top1:.2f} agreement {q.agreement:.2f} KL {q.kl:.3f}")
                write_results(out, records)
        x = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
        sessions = {name: open_session(path, session_options(threads=threads)) for name, path in files.items()}
        latency = interleaved_latency(sessions, x, runs)
        base = latency["fp32"].median_ms
        for name, path in files.items():
            lat = latency[name]
            records.append(lat.file_record(DEMO_MODEL, name, path, base, threads, optimized_op_counts(path)))
            click.echo(f"{name:24s} {lat.median_ms:8.2f} ms  {base / lat.median_ms:.3f}x of fp32")
    write_results(out, records, settings={"runs": runs, "input": "uniform noise, 224 px"})
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
