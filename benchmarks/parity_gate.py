"""Measure what the parity gate decides on (writes benchmarks/results/parity_gate_deit_tiny.json).

For quantized DeiT-Tiny checkpoints (from `vitq quantize`) on the bundled evaluation images: ORT vs torch
float64 top-1 flips and torch float32's own flips at 64 images and at all of them, the per-QuantizeLinear
integer-code agreement (codes more than one step from the float64 reference), and what a real export bug
looks like (one node's scale off by 50x, in the ONNX file and in the torch reference as in
tests/export/test_export.py).

    vitq quantize deit_tiny_patch16_224 q8.pt --checkpoint assets/deit_tiny_patch16_224.safetensors --bits W8A8
    vitq quantize deit_tiny_patch16_224 q4.pt --checkpoint assets/deit_tiny_patch16_224.safetensors \
        --bits W4A4 --method pfcr --set recon_preset=ci
    nice python benchmarks/parity_gate.py q8.pt q4.pt --out benchmarks/results/parity_gate_deit_tiny.json
"""
from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import onnx
import torch
from onnx import numpy_helper

from calib.datasets import open_split
from calib.loaders import load_batches
from calib.transforms import eval_transform
from vitq.assets import demo_checkpoint, demo_images
from vitq.export.markers import export_reference
from vitq.export.onnx_export import ExportOptions, export_onnx
from vitq.export.options import FALSE_ALARM, MAX_CODES_OFF, MAX_HISTOGRAM_SHIFT, MIN_AGREEMENT
from vitq.export.parity import FLOAT32_NOISE_FACTOR, ParityReport, compare
from vitq.export.runtime import open_session, run
from vitq.models.loading import create_float_model
from vitq.pipeline.checkpoint import load_quantized
from vitq.results import write_results

BUG_FACTOR = 50.0


def node_table(report: ParityReport) -> list[dict]:
    return [{"node": n.node, "codes": n.codes, "off_percent": round(n.off_percent, 5), "differ_percent": round(100 * n.differ / n.codes, 4),
             "max_steps": n.max_steps, "float32_off_percent": round(n.float32_off_percent, 5),
             "float32_differ_percent": round(100 * n.float32_differ / n.codes, 4), "mean_steps": round(n.mean_steps, 5),
             "float32_mean_steps": round(n.float32_mean_steps, 5), "histogram_shift_percent": round(n.shift_percent, 4),
             "float32_histogram_shift_percent": round(n.float32_shift_percent, 4), "codes_off": n.codes_off(),
             "histogram_shifted": n.histogram_shifted(), "diverged": n.diverged()} for n in report.nodes]


def gate_fields(report: ParityReport) -> dict:
    first = report.first_diverging_node()
    return {"flips": report.flips, "float32_flips": report.float32_flips, "noise_flip_rate": round(report.noise_flip_rate(), 5),
            "allowed_flips": report.allowed_flips(), "flips_pass": report.flips_pass(), "codes_pass": report.codes_pass(),
            "parity_passed": report.passes(), "first_diverging_node": first.node if first else None,
            "worst_code_off_percent": round(max((n.off_percent for n in report.nodes), default=0.0), 5),
            "agreement_with_torch_float64": round(report.exact_agreement, 3),
            "torch_float32_vs_float64": round(report.float32_agreement, 3),
            "agreement_with_torch": round(report.agreement, 3), "max_abs_logit_error": round(report.max_abs_logit_error, 5),
            "mean_abs_logit_error": round(report.mean_abs_logit_error, 6), "code_images": report.code_images}


def scale_node(path: Path, out: Path, site: str, factor: float) -> None:
    """Copy of the ONNX file with the scale of ``site``'s QuantizeLinear (and its DequantizeLinear) times ``factor``."""
    model = onnx.load(str(path))
    node = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.name == f"{site}/QuantizeLinear")
    init = next(t for t in model.graph.initializer if t.name == node.input[1])
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(factor), init.name))
    onnx.save(model, str(out))


@torch.no_grad()
def float_predictions(batches) -> np.ndarray:
    model = create_float_model("deit_tiny_patch16_224", checkpoint=demo_checkpoint()).eval()
    return np.concatenate([model(x).argmax(1).numpy() for x, _ in batches])


@dataclass
class Subject:
    """One checkpoint on the evaluation images, with what every record of it shares."""

    name: str
    qm: object
    batches: list
    labels: np.ndarray
    fp32_pred: np.ndarray
    container: str

    def record(self, case: str, report: ParityReport, path: Path, n: int) -> dict:
        session = open_session(path)
        pred = np.concatenate([run(session, x.numpy()).argmax(1) for x, _ in self.batches])[:n]
        labels, fp32_pred = self.labels[:n], self.fp32_pred[:n]
        top1, fp32_top1 = 100.0 * float((pred == labels).mean()), 100.0 * float((fp32_pred == labels).mean())
        click.echo(f"{self.name} {case} n={n}: {report.summary()}")
        return {"model": self.qm.model_name, "dataset": "assets/imagenet-sample (evaluation split)", "n_images": n,
                "method": self.qm.recipe.method, "bits": self.qm.recipe.bits, "case": case, "container": self.container,
                "top1": round(top1, 3), "fp32_top1": round(fp32_top1, 3), "drop": round(fp32_top1 - top1, 3),
                "agreement": round(100.0 * float((pred == fp32_pred).mean()), 3), "torch_top1": report.torch_top1,
                **gate_fields(report)}


@click.command()
@click.argument("checkpoints", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Results file (JSON).")
@click.option("--small", default=64, show_default=True, help="The export command's default parity sample.")
@click.option("--bug-sites", default="head.input_quant,blocks.6.mlp.fc1.input_quant", show_default=True,
              help="Comma-separated quantizers whose exported scale is multiplied by 50 (the simulated export bug).")
def main(checkpoints: tuple[Path, ...], out: Path, small: int, bug_sites: str) -> None:
    """Per node and per sample size, what the parity gate sees on real exports and on a broken one."""
    torch.set_num_threads(2)
    records, nodes = [], {}
    fp32_pred = None
    for ckpt in checkpoints:
        qm = load_quantized(ckpt)
        batches = load_batches(open_split(demo_images(), "evaluation", eval_transform(qm.model)), 32, progress=False)
        fp32_pred = float_predictions(batches) if fp32_pred is None else fp32_pred
        container = "int4" if qm.recipe.format.w_bits <= 4 else "int8"
        subject = Subject(ckpt.name, qm, batches, np.concatenate([y.numpy() for _, y in batches]), fp32_pred, container)
        bits = qm.recipe.bits
        reference = export_reference(qm.model)
        with tempfile.TemporaryDirectory() as tmp:
            exported = export_onnx(qm.model, Path(tmp) / "m.onnx", ExportOptions(container))
            for n in (small, len(subject.labels)):
                report = compare(exported.path, reference, _take(batches, n), code_images=n)
                records.append(subject.record("export", report, exported.path, n))
                nodes[f"{bits}_n{n}"] = node_table(report)
            small_batches = _take(batches, small)
            for site in [s.strip() for s in bug_sites.split(",") if s.strip()]:
                bad = Path(tmp) / "bad.onnx"
                scale_node(exported.path, bad, site, BUG_FACTOR)
                report = compare(bad, reference, small_batches, code_images=small)
                records.append(subject.record(f"bug: onnx {site} scale x{BUG_FACTOR:g}", report, bad, small))
                nodes[f"{bits}_bug_onnx_{site}"] = node_table(report)
            broken = copy.deepcopy(reference)
            broken.head.input_quant.scale.data *= BUG_FACTOR
            report = compare(exported.path, broken, small_batches, code_images=small)
            records.append(subject.record(f"bug: torch reference head.input_quant scale x{BUG_FACTOR:g} (test_export.py)", report,
                                          exported.path, small))
            nodes[f"{bits}_bug_reference_head"] = node_table(report)
    write_results(out, records, gate={"min_agreement": MIN_AGREEMENT, "false_alarm": FALSE_ALARM, "max_codes_off_percent": MAX_CODES_OFF,
                                        "max_histogram_shift_percent": MAX_HISTOGRAM_SHIFT, "float32_noise_factor": FLOAT32_NOISE_FACTOR},
                  checkpoints=[str(c) for c in checkpoints], per_node_codes=nodes)
    click.echo(f"wrote {out}")


def _take(batches, n: int):
    out, left = [], n
    for x, y in batches:
        if left <= 0:
            break
        out.append((x[:left], y[:left]))
        left -= len(x[:left])
    return out


if __name__ == "__main__":
    main()
