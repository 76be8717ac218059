"""Quantize-and-evaluate runs shared by the CLI, the demo and the benchmark scripts.

Each run quantizes one recipe and evaluates it side by side with the fp32 model on the same
batches, producing a result record in the DESIGN.md schema (``text_table`` prints them).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from calib.loaders import Batch, images_only
from vitq.calibration import FloatView
from vitq.evaluate import EvalResult, evaluate
from vitq.pipeline.quantize import QuantizedModel, quantize
from vitq.recipe import Recipe
from vitq.report.tables import text_table


@dataclass
class AccuracyRun:
    """A quantized model evaluated beside the fp32 model on the same images. For a recipe that changes the
    float model (``relu_mlp``), ``fp32`` is the original model when the run had it, and ``changed_fp32``
    the changed float model the quantizers sit on."""

    model_name: str
    dataset: str
    recipe: Recipe
    quantized: EvalResult
    fp32: EvalResult
    seconds: float
    device: str
    float_layers: list[str]
    recon_losses: dict | None = None
    changed_fp32: EvalResult | None = None

    @classmethod
    def of(cls, qm: QuantizedModel, dataset: str, results: dict[str, EvalResult], device: str) -> AccuracyRun:
        """From ``evaluate({"fp32": ..., "quant": ...[, "changed_fp32": ...]})`` of ``qm``."""
        return cls(qm.model_name, dataset, qm.recipe, results["quant"], results["fp32"], qm.seconds, device, qm.float_layers,
                   qm.recon_losses, results.get("changed_fp32"))

    def float_reference(self) -> dict[str, Any]:
        """Which float model ``fp32_top1`` and ``drop`` refer to, for a recipe that changed the model."""
        if not self.recipe.relu_mlp:
            return {}
        if self.changed_fp32 is None:
            return {"float_reference": "changed (relu_mlp): the original model was not evaluated"}
        return {"float_reference": "original", "changed_fp32_top1": round(self.changed_fp32.top1, 3),
                "changed_fp32_agreement": round(self.changed_fp32.agreement, 3)}

    def record(self) -> dict[str, Any]:
        """The DESIGN.md accuracy record (percent units; drop in points on the same images)."""
        return {
            "model": self.model_name,
            "dataset": self.dataset,
            "n_images": self.quantized.n_images,
            "method": self.recipe.method,
            "bits": self.recipe.bits,
            "top1": round(self.quantized.top1, 3),
            "top5": round(self.quantized.top5, 3),
            "fp32_top1": round(self.fp32.top1, 3),
            "fp32_top5": round(self.fp32.top5, 3),
            "drop": round(self.fp32.top1 - self.quantized.top1, 3),
            "drop_se": round(self.quantized.drop_se, 3),
            "agreement": round(self.quantized.agreement, 3),
            "kl": round(self.quantized.kl, 5),
            "runtime": "torch",  # fake-quant in torch; exported-model accuracy comes from onnxruntime (vitq bench)
            "device": self.device,
            "seconds": round(self.seconds, 1),
            "float_layers": self.float_layers,
            "recipe": self.recipe.to_dict(),
            **self.float_reference(),
            **({"recon_losses": self.recon_losses} if self.recon_losses else {}),
        }


def evaluate_quantized(qm: QuantizedModel, evaluation: list[Batch], dataset: str, device: str = "cpu", progress: bool = True,
                       fp32_logits: list[torch.Tensor] | None = None, original: nn.Module | None = None) -> AccuracyRun:
    """``qm`` and its own fp32 weights (quantizers off) on the same batches; ``fp32_logits``
    (``vitq.evaluate.predict`` of the float model on ``evaluation``) skips re-running fp32. For a model the
    recipe changed (``relu_mlp``), ``original`` (the float model before the change) is the fp32 reference and
    the changed float model is evaluated beside it."""
    models = {"fp32": FloatView(qm.model), "quant": qm.model}
    if qm.recipe.relu_mlp and original is not None:
        models = {"fp32": original, "quant": qm.model, "changed_fp32": FloatView(qm.model)}
    results = evaluate(models, evaluation, device=device, progress=progress,
                       cached={"fp32": fp32_logits} if fp32_logits is not None else None)
    return AccuracyRun.of(qm, dataset, results, device)


def quantize_and_evaluate(
    model: nn.Module,
    model_name: str,
    recipe: Recipe,
    calib: list[Batch],
    evaluation: list[Batch],
    dataset: str,
    device: str = "cpu",
    progress: bool = True,
    fp32_logits: list[torch.Tensor] | None = None,
) -> tuple[QuantizedModel, AccuracyRun]:
    """Quantize ``model`` with ``recipe`` and evaluate it paired with fp32 (:func:`evaluate_quantized`)."""
    qm = quantize(model, model_name, images_only(calib), recipe, device=device, progress=progress)
    return qm, evaluate_quantized(qm, evaluation, dataset, device, progress, fp32_logits, original=model)


ACCURACY_COLUMNS = [
    ("bits", "bits"), ("method", "method"), ("n_images", "images"), ("top1", "top-1"), ("top5", "top-5"),
    ("fp32_top1", "fp32 top-1"), ("drop", "drop"), ("agreement", "agree %"), ("kl", "KL"), ("seconds", "quant s"),
]


def accuracy_table(records: list[dict[str, Any]]) -> str:
    return text_table(records, ACCURACY_COLUMNS)
