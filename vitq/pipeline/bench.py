"""Benchmark a quantized model: build its ONNX variants, check the vitq exports' parity against the
torch fake-quant model, then hand the files to ``vitq.bench.benchmark``; and the demo's one table."""
from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from calib.loaders import Batch
from vitq.bench.runner import BenchConfig, BenchReport, benchmark, check_variants, say_progress
from vitq.bench.variants import FP32, FP32_OPT, ORT_STATIC, VITQ_INT4W, VITQ_U8S8, VITQ_VARIANTS
from vitq.errors import VitqError
from vitq.export.markers import export_reference, fallback_quantizers, fallback_warning
from vitq.export.parity import ParityReport, compare, torch_logits
from vitq.models.families import family_for
from vitq.pipeline.quantize import QuantizedModel
from vitq.pipeline.variants import build_variants
from vitq.report.tables import text_table

log = logging.getLogger(__name__)

DEMO_VARIANTS = (FP32, FP32_OPT, ORT_STATIC, VITQ_U8S8)
DEMO_COLUMNS = [
    ("variant", "variant"), ("top1", "top-1"), ("agreement", "agree fp32 %"), ("agreement_with_torch", "agree torch %"),
    ("latency_ms_median", "ms (1 thread)"), ("speedup", "speedup"), ("size_mb", "MB"),
]


def bench_quantized(qm: QuantizedModel, calib_images: Sequence[torch.Tensor], eval_batches: Sequence[Batch], workdir: Path,
                    config: BenchConfig | None = None, dataset: str = "", progress: bool = True) -> BenchReport:
    """fp32, onnxruntime ``quantize_static`` and vitq's exports of ``qm`` side by side (``config``); the
    files stay in ``workdir``."""
    config = config or BenchConfig()
    check_variants(config, eval_batches)
    if VITQ_INT4W in config.variants and qm.recipe.format.w_bits > 4:
        raise VitqError(f"variant {VITQ_INT4W} packs weights of <= 4 bits; {qm.model_name} is {qm.recipe.bits}")
    say = say_progress(progress)
    fallbacks = fallback_quantizers(qm.model)
    if fallbacks and any(name in config.variants for name in VITQ_VARIANTS):
        log.warning(fallback_warning(fallbacks))
    family = family_for(qm.model_name)
    variants = build_variants(qm.model, calib_images, workdir, config.variants, stem=qm.model_name,
                              transformer_shape=family.transformer_shape(qm.model), progress=say, transformer=not family.hybrid)
    parity: dict[str, ParityReport] = {}
    if config.accuracy and any(name in variants for name in VITQ_VARIANTS):
        say("torch fake-quant reference logits")
        reference = export_reference(qm.model)
        logits = torch_logits(reference, eval_batches)
        for name in VITQ_VARIANTS:
            if name in variants:
                say(f"parity {name} vs torch fake-quant")
                parity[name] = compare(variants[name].path, reference, eval_batches, logits)
    return benchmark(variants, eval_batches, config, model=qm.model_name, bits=qm.recipe.bits, dataset=dataset, parity=parity,
                     progress=progress, fallbacks=fallbacks)


def at_resolution(qm: QuantizedModel, size: int) -> None:
    """Make ``qm``'s exports take ``size`` x ``size`` px inputs (for timing at the resolution a model is deployed at;
    speed does not depend on the weights). A model that cannot run at ``size`` (position tables or attention biases
    sized for its trained resolution) is a clear error."""
    cfg = dict(getattr(qm.model, "pretrained_cfg", None) or {})
    channels = tuple(cfg.get("input_size", (3, 224, 224)))[0]
    try:
        with torch.no_grad():
            qm.model.eval()(torch.zeros(1, channels, size, size))
    except Exception as e:  # noqa: BLE001 - any failure means the model cannot take this resolution
        trained = cfg.get("input_size", ("?", "?", "?"))[-1]
        reason = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise VitqError(f"{qm.model_name} cannot run at {size} px (trained at {trained} px): {reason}") from None
    qm.model.pretrained_cfg = {**cfg, "input_size": (channels, size, size)}


def deployment_rows(report: BenchReport) -> list[dict]:
    """One row per variant: its accuracy record joined with its batch-1 latency record."""
    accuracy = {r["method"]: r for r in report.accuracy_records()}
    return [{**accuracy[r["variant"]], **r} for r in report.speed_records() if r["batch"] == 1]


def deployment_table(qm: QuantizedModel, calib_images: Sequence[torch.Tensor], eval_batches: Sequence[Batch],
                     runs: int = 30, dataset: str = "bundled imagenet-sample") -> tuple[str, BenchReport]:
    """fp32 vs onnxruntime quantize_static vs vitq W8A8 in onnxruntime: accuracy and 1-thread batch-1 latency."""
    config = BenchConfig(target="cpu", threads=(1,), batches=(1,), runs=runs, variants=DEMO_VARIANTS, profile_runs=5)
    with tempfile.TemporaryDirectory(prefix="vitq-demo-") as tmp:
        report = bench_quantized(qm, calib_images, eval_batches, Path(tmp), config, dataset=dataset)
    return text_table(deployment_rows(report), DEMO_COLUMNS), report
