"""Quantize-and-evaluate runs shared by the CLI, the demo and the benchmark scripts.

Each run quantizes one config and evaluates it side by side with the fp32 model on the same
batches, producing a result record in the DESIGN.md schema.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from calib.loaders import Batch, images_only
from vitq.api import quantize, recon_summary
from vitq.calibration import FloatView
from vitq.evaluate import EvalResult, evaluate
from vitq.models.wrap import float_layers_left
from vitq.quant.config import QuantConfig


@dataclass
class AccuracyRun:
    model_name: str
    dataset: str
    config: QuantConfig
    quantized: EvalResult
    fp32: EvalResult
    seconds: float
    device: str
    float_layers: list[str]
    recon_losses: dict | None = None

    def record(self) -> dict[str, Any]:
        """The DESIGN.md accuracy record (percent units; drop in points on the same images)."""
        return {
            "model": self.model_name,
            "dataset": self.dataset,
            "n_images": self.quantized.n_images,
            "method": self.config.method,
            "bits": self.config.bits,
            "top1": round(self.quantized.top1, 3),
            "top5": round(self.quantized.top5, 3),
            "fp32_top1": round(self.fp32.top1, 3),
            "fp32_top5": round(self.fp32.top5, 3),
            "drop": round(self.fp32.top1 - self.quantized.top1, 3),
            "agreement": round(self.quantized.agreement, 3),
            "kl": round(self.quantized.kl, 5),
            "device": self.device,
            "seconds": round(self.seconds, 1),
            "float_layers": self.float_layers,
            "config": self.config.to_dict(),
            **({"recon_losses": self.recon_losses} if self.recon_losses else {}),
        }


def quantize_and_evaluate(
    model: nn.Module,
    model_name: str,
    config: QuantConfig,
    calib: list[Batch],
    evaluation: list[Batch],
    dataset: str,
    device: str = "cpu",
    progress: bool = True,
    fp32_logits: list[torch.Tensor] | None = None,
) -> tuple[nn.Module, AccuracyRun]:
    """Quantize ``model`` with ``config`` and evaluate it paired with fp32; ``fp32_logits``
    (``vitq.evaluate.predict`` of the float model on ``evaluation``) skips re-running fp32."""
    start = time.perf_counter()
    qmodel = quantize(model, model_name, images_only(calib), config, device=device, progress=progress)
    seconds = time.perf_counter() - start
    results = evaluate({"fp32": FloatView(qmodel), "quant": qmodel}, evaluation, device=device, progress=progress,
                       cached={"fp32": fp32_logits} if fp32_logits is not None else None)
    run = AccuracyRun(model_name, dataset, config, results["quant"], results["fp32"], seconds, device, float_layers_left(qmodel),
                      recon_summary(qmodel))
    return qmodel, run


def format_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """Plain-text table; ``columns`` are (key, header); floats get 2 decimals."""
    def cell(v: Any) -> str:
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    body = [[cell(r.get(k, "")) for k, _ in columns] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, (_, h) in enumerate(columns)]
    lines = ["  ".join(h.ljust(w) for (_, h), w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths)) for b in body]
    return "\n".join(lines)


ACCURACY_COLUMNS = [
    ("bits", "bits"), ("method", "method"), ("n_images", "images"), ("top1", "top-1"), ("top5", "top-5"),
    ("fp32_top1", "fp32 top-1"), ("drop", "drop"), ("agreement", "agree %"), ("kl", "KL"), ("seconds", "quant s"),
]
