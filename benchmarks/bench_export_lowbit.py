"""Regenerate benchmarks/results/bench_export_parity.json: DeiT-Tiny exported at several bit-widths,
onnxruntime vs torch fake-quant parity and file sizes (int8 container vs packed int4 weights).

    python benchmarks/bench_export_lowbit.py --data ../shared/data/imagenet-sample \
        --checkpoint ../shared/data/weights/deit_tiny_patch16_224.safetensors --bits W8A8,W6A6,W4A4
"""
from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path

import torch

from calib import eval_transform, images_only, load_splits
from vitq.api import quantize
from vitq.calibration import FloatView
from vitq.export.markers import export_reference
from vitq.export.onnx_export import ExportOptions, export_float, export_onnx
from vitq.export.parity import compare
from vitq.models.loading import create_float_model
from vitq.quant.config import QuantConfig, parse_bits
from vitq.results import write_results
from vitq.workflow import format_table

MODEL = "deit_tiny_patch16_224"
COLUMNS = [("bits", "bits"), ("softmax_quantizer", "softmax q"), ("top1", "ORT top-1"), ("torch_top1", "torch top-1"),
           ("fp32_top1", "fp32 top-1"), ("agreement_with_torch", "agree torch %"),
           ("agreement_with_torch_float64", "agree torch64 %"), ("torch_float32_vs_float64", "torch32 vs 64 %"),
           ("agreement", "agree fp32 %"),
           ("max_abs_logit_error", "max logit err"), ("size_mb", "MB"), ("size_mb_int8_container", "MB int8"),
           ("size_ratio_vs_fp32", "x fp32")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("../shared/data/imagenet-sample"))
    p.add_argument("--checkpoint", type=Path, default=Path("assets/deit_tiny_patch16_224.safetensors"))
    p.add_argument("--bits", default="W8A8,W6A6,W4A4")
    p.add_argument("--method", default="mse")
    p.add_argument("--softmax-quantizer", default=None, help="Default: the library's (QuantConfig).")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/bench_export_parity.json"))
    args = p.parse_args()
    torch.manual_seed(0)
    model = create_float_model(MODEL, checkpoint=args.checkpoint)
    transform = eval_transform(model)
    calib, evaluation = load_splits(args.data, transform, args.limit)
    records = []
    with tempfile.TemporaryDirectory(prefix="vitq-lowbit-") as tmp:
        for spec in args.bits.split(","):
            w, a = parse_bits(spec)
            config = QuantConfig(w_bits=w, a_bits=a, method=args.method, softmax_quantizer=args.softmax_quantizer)
            qmodel = quantize(model, MODEL, images_only(calib), config)
            fp32_size = export_float(qmodel, Path(tmp) / "fp32.onnx").stat().st_size / 1e6
            container = "int4" if w <= 4 else "int8"
            exported = export_onnx(qmodel, Path(tmp) / f"{spec}.onnx", ExportOptions(weight_container=container))
            int8_size = export_onnx(qmodel, Path(tmp) / f"{spec}-int8.onnx").size_mb
            parity = compare(exported.path, export_reference(qmodel), evaluation)
            ort_vs_fp32 = compare(exported.path, FloatView(qmodel), evaluation)  # its torch_top1 is fp32's top-1
            records.append({
                "model": MODEL, "dataset": str(args.data), "n_images": parity.n_images, "method": f"{args.method}+onnx-export",
                "bits": config.bits, "softmax_quantizer": config.softmax_quantizer, "runtime": "onnxruntime",
                "top1": round(parity.ort_top1, 3), "torch_top1": round(parity.torch_top1, 3), "fp32_top1": round(ort_vs_fp32.torch_top1, 3),
                "drop": round(ort_vs_fp32.torch_top1 - parity.ort_top1, 3), "agreement": round(ort_vs_fp32.agreement, 3),
                "agreement_with_torch": round(parity.agreement, 3),
                "agreement_with_torch_float64": round(parity.exact_agreement, 3),
                "torch_float32_vs_float64": round(parity.float32_agreement, 3), "parity_passed": parity.passes(),
                "max_abs_logit_error": round(parity.max_abs_logit_error, 4),
                "mean_abs_logit_error": round(parity.mean_abs_logit_error, 5), "weight_container": container,
                "opset": exported.opset, "size_mb": round(exported.size_mb, 3), "size_mb_int8_container": round(int8_size, 3),
                "size_mb_fp32": round(fp32_size, 3), "size_ratio_vs_fp32": round(exported.size_mb / fp32_size, 3),
                "config": config.to_dict(),
            })
            print(format_table(records[-1:], COLUMNS), flush=True)
    print(format_table(records, COLUMNS))
    write_results(args.out, records, command=" ".join(shlex.quote(x) for x in ["python", *sys.argv]))


if __name__ == "__main__":
    main()
