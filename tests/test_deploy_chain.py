"""The README's deployment chain on the bundled DeiT-Tiny and images, through click's runner:
`vitq quantize` (W8A8, few calibration images) -> `vitq export` (parity gate) -> `vitq bench` (fp32 vs vitq-int8).
Small image counts so that it runs in CI (about a minute on 2 cores)."""
from __future__ import annotations

import json

import onnx
from click.testing import CliRunner

from vitq.cli import main

MODEL = "deit_tiny_patch16_224"


def test_w8a8_quantize_export_bench(tmp_path, deit_checkpoint, sample_images):
    runner = CliRunner()
    qckpt, exported, results = tmp_path / "q8.pt", tmp_path / "q8.onnx", tmp_path / "bench.json"

    result = runner.invoke(main, ["quantize", MODEL, str(qckpt), "--checkpoint", str(deit_checkpoint), "--data", str(sample_images),
                                  "--bits", "W8A8", "--calib-size", "8", "--batch-size", "8"])
    assert result.exit_code == 0, result.output
    assert f"saved {MODEL} W8A8" in result.output

    result = runner.invoke(main, ["export", str(qckpt), str(exported), "--data", str(sample_images), "--parity-images", "16"])
    assert result.exit_code == 0, result.output
    assert "parity on 16 images" in result.output and f"wrote {exported}" in result.output
    assert result.output.index("parity on 16 images") < result.output.index(f"wrote {exported}")
    onnx.checker.check_model(onnx.load(str(exported)))

    result = runner.invoke(main, ["bench", str(qckpt), "--data", str(sample_images), "--limit", "8", "--calib-size", "8",
                                  "--runs", "2", "--large-batch-runs", "1", "--threads", "1", "--batch", "1",
                                  "--variants", "fp32,vitq-int8", "--results-file", str(results)])
    assert result.exit_code == 0, result.output
    records = json.loads(results.read_text())["records"]
    accuracy = {r["method"]: r for r in records if "top1" in r}
    speed = {r["variant"]: r for r in records if "latency_ms_median" in r}
    assert set(accuracy) == set(speed) == {"fp32", "vitq-int8"}
    vitq = accuracy["vitq-int8"]
    assert vitq["n_images"] == 8 and vitq["bits"] == "W8A8"
    assert vitq["parity_passed"] is True
    assert vitq["agreement"] >= 75.0  # 8 bits on real weights: almost always the fp32 answer
    assert speed["vitq-int8"]["size_mb"] < 0.35 * speed["fp32"]["size_mb"]
