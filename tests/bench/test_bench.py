"""Bench harness on a tiny random ViT (few runs: checks plumbing and records, not speed) and target errors."""
from __future__ import annotations

import copy
import json

import pytest
import torch
from click.testing import CliRunner

from tests.export.conftest import images
from vitq.bench.measure import Latency
from vitq.bench.runner import BenchConfig
from vitq.bench.targets import resolve_target
from vitq.bench.variants import DEFAULT_VARIANTS
from vitq.cli import main
from vitq.errors import VitqError
from vitq.export.onnx_export import export_onnx
from vitq.export.ort_format import convert_to_ort
from vitq.export.runtime import open_session
from vitq.pipeline.bench import at_resolution, bench_quantized, deployment_rows
from vitq.pipeline.quantize import QuantizedModel
from vitq.recipe import make_recipe
from vitq.results import write_results

SPEED_KEYS = {"model", "variant", "target", "threads", "batch", "latency_ms_median", "latency_ms_p90", "throughput_ips",
              "size_mb", "speedup"}
ACCURACY_KEYS = {"model", "dataset", "n_images", "method", "bits", "top1", "fp32_top1", "drop", "agreement"}


def labelled(n: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(images(n, seed), torch.arange(n) % 10)]


@pytest.fixture(scope="module")
def report(tiny_w8a8, tmp_path_factory):
    config = BenchConfig(target="cpu", threads=(1,), batches=(1, 4), runs=3, large_batch_runs=2, profile_runs=2)
    qm = QuantizedModel(tiny_w8a8, "vit_tiny_patch16_224", make_recipe("W8A8", "minmax"))
    return bench_quantized(qm, [images(16)], labelled(16, 5), tmp_path_factory.mktemp("bench"), config, dataset="random",
                           progress=False)


def test_all_variants_side_by_side_with_schema_records(report, tmp_path):
    speed = report.speed_records()
    assert {r["variant"] for r in speed} == set(DEFAULT_VARIANTS)
    assert {(r["threads"], r["batch"]) for r in speed} == {(1, 1), (1, 4)}
    assert all(SPEED_KEYS <= r.keys() for r in speed)
    assert max(r["speedup"] for r in speed if r["variant"].startswith("fp32")) == pytest.approx(1.0)
    acc = report.accuracy_records()
    assert all(ACCURACY_KEYS <= r.keys() for r in acc)
    vitq = next(r for r in acc if r["method"] == "vitq-int8")
    assert vitq["agreement_with_torch"] >= 99.5 and vitq["n_images"] == 16
    assert vitq["exported_as_measured"] and vitq["export_fallbacks"] == 0  # W8A8 uniform: no fallback
    path = write_results(tmp_path / "bench.json", report.records(), **report.extra())
    assert json.loads(path.read_text())["optimized_graph_op_counts"]["vitq-int8"]
    assert len(deployment_rows(report)) == len(DEFAULT_VARIANTS)


def test_vitq_graph_runs_integer_matmuls(report):
    ops = report.op_counts["vitq-int8"]
    assert ops.get("MatMulIntegerToFloat", 0) + ops.get("QLinearMatMul", 0) >= 8  # 2 blocks x (4 linears + 2 attention matmuls)


def test_unknown_target_is_a_clear_error():
    with pytest.raises(VitqError, match="unknown bench target 'tpu'; choose one of: cpu, cuda, mobile, tensorrt"):
        resolve_target("tpu")
    result = CliRunner().invoke(main, ["bench", "missing.pt", "--target", "tpu"])
    assert result.exit_code == 1 and "Error: unknown bench target" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("target", ["cuda", "tensorrt"])
def test_gpu_targets_without_gpu_are_a_clear_error(target):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("a GPU build of onnxruntime is installed")
    result = CliRunner().invoke(main, ["bench", "missing.pt", "--target", target])
    assert result.exit_code == 1 and "onnxruntime-gpu" in result.output and "Traceback" not in result.output


def test_mobile_target_says_xnnpack_is_missing_and_converts_to_ort(tiny_w8a8, tmp_path):
    target = resolve_target("mobile")
    assert target.threads == 1 and target.sequential and target.ort_format
    if "XnnpackExecutionProvider" not in target.providers:
        assert any("XnnpackExecutionProvider is not in this onnxruntime build" in n for n in target.notes)
    ort_path = convert_to_ort(export_onnx(tiny_w8a8, tmp_path / "m.onnx").path)
    assert ort_path.suffix == ".ort" and open_session(ort_path).get_inputs()[0].name == "input"


def test_export_cli_bad_input(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["export", str(tmp_path / "missing.pt"), str(tmp_path / "out.onnx")])
    assert result.exit_code == 1 and "not found" in result.output
    result = runner.invoke(main, ["export", str(tmp_path / "missing.pt"), str(tmp_path / "out.txt")])
    assert result.exit_code == 1 and "must end in .onnx" in result.output
    assert list(tmp_path.iterdir()) == []


def test_quantize_static_reader_avoids_empty_final_flush():
    """256 images = 32 batches of 8, a multiple of the calibrator's flush size: onnxruntime then fails
    with 'No data is collected'; the reader must hand over a batch count off that multiple."""
    import torch

    from vitq.export.onnx_export import INPUT_NAME
    from vitq.pipeline.variants import MAX_INTERMEDIATE_OUTPUTS, _Images

    reader = _Images([torch.zeros(256, 3, 4, 4)])
    batches = list(iter(reader.get_next, None))
    assert sum(len(b[INPUT_NAME]) for b in batches) == 256
    assert len(batches) % MAX_INTERMEDIATE_OUTPUTS != 0


def test_int4_weight_variant_needs_low_bit_weights(tiny_w8a8, tmp_path):
    config = BenchConfig(target="cpu", threads=(1,), batches=(1,), runs=1, variants=("fp32", "vitq-int4w"))
    qm = QuantizedModel(tiny_w8a8, "vit_tiny_patch16_224", make_recipe("W8A8", "minmax"))
    with pytest.raises(VitqError, match="variant vitq-int4w packs weights of <= 4 bits; vit_tiny_patch16_224 is W8A8"):
        bench_quantized(qm, [images(4)], labelled(4, 5), tmp_path, config, progress=False)


def test_a_resolution_the_model_cannot_take_is_a_clear_error(tiny_w8a8):
    """The tiny ViT's position table is sized for 32 px: timing it at 64 px is refused, naming both sizes."""
    qm = QuantizedModel(copy.deepcopy(tiny_w8a8), "vit_tiny_patch16_224", make_recipe("W8A8", "minmax"))
    qm.model.pretrained_cfg = {"input_size": (3, 32, 32)}
    with pytest.raises(VitqError, match="vit_tiny_patch16_224 cannot run at 64 px \\(trained at 32 px\\): "):
        at_resolution(qm, 64)
    at_resolution(qm, 32)
    assert qm.model.pretrained_cfg["input_size"] == (3, 32, 32)


@pytest.mark.parametrize(("variant", "module", "install"), [("nncf", "nncf", r"pip install 'vitq\[peers\]'"),
                                                         ("inc", "onnx_neural_compressor", "pip install --no-deps onnx-neural"),
                                                         ("ort-matmulnbits", "onnx_ir", r"pip install 'vitq\[peers\]'")])
def test_peer_variant_without_its_package_is_a_clear_error_before_any_work(tiny_w8a8, tmp_path, monkeypatch, variant,
                                                                             module, install):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == module else real(name, *a))
    config = BenchConfig(target="cpu", threads=(1,), batches=(1,), runs=1, variants=("fp32", variant))
    qm = QuantizedModel(tiny_w8a8, "vit_tiny_patch16_224", make_recipe("W8A8", "minmax"))
    with pytest.raises(VitqError, match=rf"variant {variant} needs the {module} package, which is not installed: {install}"):
        bench_quantized(qm, [images(4)], labelled(4, 5), tmp_path, config, progress=False)
    assert not list(tmp_path.iterdir()), "nothing may be built before the error"
    result = CliRunner().invoke(main, ["bench", str(tmp_path / "missing.pt"), "--variants", f"fp32,{variant}"])
    assert result.exit_code == 1 and f"variant {variant} needs the {module} package" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("variant", "module"), [("nncf", "nncf"), ("inc", "onnx_neural_compressor"),
                                                 ("ort-matmulnbits", "onnx_ir")])
def test_peer_variant_quantizes_the_same_fp32_graph(tiny_w8a8, tmp_path, variant, module):
    """Where the peer's package is installed, its variant is a quantized graph of the same model that runs."""
    pytest.importorskip(module)
    import onnx

    from vitq.pipeline.variants import build_variants

    built = build_variants(tiny_w8a8, [images(8)], tmp_path, ("fp32", variant), transformer=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([built["fp32"].path.name, built[variant].path.name]), \
        "one self-contained file per variant"
    ops = {n.op_type for n in onnx.load(str(built[variant].path)).graph.node}
    expected = {"MatMulNBits"} if variant == "ort-matmulnbits" else {"QuantizeLinear", "DequantizeLinear", "MatMul"}
    assert expected <= ops
    out = open_session(built[variant].path).run(None, {"input": images(2).numpy()})[0]
    assert out.shape == (2, 10)


def test_a_timed_file_record_names_its_runtime_and_speedup(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"x" * 2000)
    record = Latency(median_ms=2.0, p90_ms=3.0, batch=1).file_record("m", "v", path, 5.0, 1, {"MatMul": 2})
    assert record["runtime"] == "onnxruntime" and record["speedup"] == 2.5 and record["size_mb"] == 0.002
    assert record["optimized_graph_op_counts"] == {"MatMul": 2} and record["batch"] == 1
