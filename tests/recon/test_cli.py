"""`vitq quantize --method pfcr ...` writes a checkpoint that reloads; bad units fail in one line."""
from __future__ import annotations

from click.testing import CliRunner

from vitq.api import load_quantized
from vitq.cli import main


def quantize_args(deit_checkpoint, tmp_path, units: str) -> list[str]:
    return ["quantize", "deit_tiny_patch16_224", str(tmp_path / "q.pt"), "--checkpoint", str(deit_checkpoint),
            "--bits", "W4A4", "--method", "pfcr", "--recon-preset", "ci", "--iters", "2", "--recon-units", units,
            "--calib-size", "4", "--batch-size", "4"]


def test_quantize_pfcr_reloads(deit_checkpoint, tmp_path):
    args = [*quantize_args(deit_checkpoint, tmp_path, "blocks.0.attn,blocks.11,model"), "--lr-rounding", "0.1",
            "--model-iters", "2", "--lr-bias", "1e-4"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    _, header = load_quantized(tmp_path / "q.pt")
    assert header["config"].method == "pfcr"
    assert header["config"].recon == {"preset": "ci", "seed": 0, "iters": 2, "lr_rounding": 0.1, "model_iters": 2, "lr_bias": 1e-4,
                                      "units": ["blocks.0.attn", "blocks.11", "model"]}
    assert [lv["level"] for lv in header["meta"]["recon_losses"]["levels"]] == ["fine", "1-block", "model"]


def test_unknown_unit_is_one_line_error(deit_checkpoint, tmp_path):
    result = CliRunner().invoke(main, quantize_args(deit_checkpoint, tmp_path, "blocks.12"))
    assert result.exit_code == 1
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: schedule names unknown unit(s) ['blocks.12']; units of this model and schedule: blocks.0.attn")
    assert "Traceback" not in result.output
    assert not (tmp_path / "q.pt").exists()
