"""Time two or more ONNX files of the same model against each other: batch-1 runs alternating file by file in one
process, repeated, so background load hits every file alike. For A/B decisions between exports (one layout option
on or off, vitq's file against a peer's) that `vitq bench` cannot make because it builds its variants from one model.

    python benchmarks/onnx_ab.py A.onnx B.onnx --model deit_tiny_patch16_224 --out benchmarks/results/X.json

Speedup is against the first file. Each file's optimized-graph op counts are recorded beside its latency.
"""
from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from vitq.bench.measure import interleaved_latency
from vitq.bench.runner import optimized_op_counts
from vitq.export.runtime import open_session, session_options
from vitq.results import write_results


def real_image(path: Path, size: int) -> np.ndarray:
    """One image as a (1, 3, size, size) ImageNet-normalised float32 batch (bilinear resize, no crop)."""
    from PIL import Image
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    rgb = np.asarray(Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0
    mean, std = np.array(IMAGENET_DEFAULT_MEAN, np.float32), np.array(IMAGENET_DEFAULT_STD, np.float32)
    return ((rgb - mean) / std).transpose(2, 0, 1)[None].copy()


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model", required=True, help="The timm name the files export (for the records).")
@click.option("--image", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Time on this image (default: uniform noise).")
@click.option("--size", type=click.IntRange(min=8), default=224, show_default=True, help="Input resolution (px).")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="onnxruntime intra-op threads.")
@click.option("--runs", type=click.IntRange(min=1), default=60, show_default=True, help="Timed runs per file per repeat.")
@click.option("--repeats", type=click.IntRange(min=1), default=2, show_default=True,
              help="Independent rounds (fresh sessions), each reported.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Results file (JSON).")
def main(files: tuple[Path, ...], model: str, image: Path | None, size: int, threads: int, runs: int, repeats: int,
         out: Path) -> None:
    if len(files) < 2:
        raise click.UsageError("give at least two ONNX files to compare")
    x = real_image(image, size) if image else np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    ops = {str(f): optimized_op_counts(f) for f in files}
    records = []
    for repeat in range(repeats):
        sessions = {str(f): open_session(f, session_options(threads=threads)) for f in files}
        latency = interleaved_latency(sessions, x, runs, desc=f"round {repeat + 1}/{repeats}")
        base = latency[str(files[0])].median_ms
        for f in files:
            lat = latency[str(f)]
            records.append({**lat.file_record(model, f.name, f, base, threads, ops[str(f)]), "file": str(f), "repeat": repeat})
            click.echo(f"round {repeat + 1}  {f.name:40s} {lat.median_ms:8.2f} ms  {base / lat.median_ms:.3f}x")
    write_results(out, records, settings={"runs": runs, "repeats": repeats, "size": size,
                                          "input": str(image) if image else "uniform noise"})
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
