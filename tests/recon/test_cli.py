"""`vitq quantize --method pfcr --set ...` writes a checkpoint that reloads; bad units fail in one line."""
from __future__ import annotations

from click.testing import CliRunner

from vitq.cli import main
from vitq.pipeline.checkpoint import load_quantized


def quantize_args(deit_checkpoint, tmp_path, units: str) -> list[str]:
    return ["quantize", "deit_tiny_patch16_224", str(tmp_path / "q.pt"), "--checkpoint", str(deit_checkpoint),
            "--bits", "W4A4", "--method", "pfcr", "--set", "recon_preset=ci", "--set", "iters=2", "--set", f"units={units}",
            "--calib-size", "4", "--batch-size", "4"]


def test_quantize_pfcr_reloads(deit_checkpoint, tmp_path):
    args = [*quantize_args(deit_checkpoint, tmp_path, "blocks.0.attn,blocks.11,model"), "--set", "lr_rounding=0.1",
            "--set", "model_iters=2", "--set", "lr_bias=1e-4"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    recipe = load_quantized(tmp_path / "q.pt").recipe
    assert recipe.method == "pfcr"
    recon = recipe.recon
    assert (recon.preset, recon.seed, recon.iters, recon.lr_rounding, recon.model_iters, recon.lr_bias) == ("ci", 0, 2, 0.1, 2, 1e-4)
    assert recon.units == ("blocks.0.attn", "blocks.11", "model")
    assert [lv["level"] for lv in load_quantized(tmp_path / "q.pt").meta["recon_losses"]["levels"]] == ["fine", "1-block", "model"]


def test_unknown_unit_is_one_line_error(deit_checkpoint, tmp_path):
    result = CliRunner().invoke(main, quantize_args(deit_checkpoint, tmp_path, "blocks.12"))
    assert result.exit_code == 1
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: schedule names unknown unit(s) ['blocks.12']; units of this model and schedule: blocks.0.attn")
    assert "Traceback" not in result.output
    assert not (tmp_path / "q.pt").exists()


def test_quantize_resume_continues_an_interrupted_run_bit_identical(deit_checkpoint, tmp_path, monkeypatch):
    import torch

    from vitq.recon.resume import ResumeFile

    args = quantize_args(deit_checkpoint, tmp_path, "blocks.0.attn,blocks.0.mlp,blocks.1.attn")
    assert CliRunner().invoke(main, args).exit_code == 0
    uninterrupted = torch.load(tmp_path / "q.pt", weights_only=True)["state_dict"]
    (tmp_path / "q.pt").unlink()
    assert not (tmp_path / "q.pt.resume").exists()  # removed once the checkpoint is saved

    real_save = ResumeFile.save

    def interrupt_after_first_unit(self, *a, **kw):
        real_save(self, *a, **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(ResumeFile, "save", interrupt_after_first_unit)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 130 and (tmp_path / "q.pt.resume").is_file() and not (tmp_path / "q.pt").exists()
    monkeypatch.setattr(ResumeFile, "save", real_save)

    other = CliRunner().invoke(main, [*args, "--set", "iters=3", "--resume"])
    assert other.exit_code == 1 and "another model, recipe or calibration set" in other.output.strip().splitlines()[-1]
    result = CliRunner().invoke(main, [*args, "--resume"])
    assert result.exit_code == 0, result.output
    resumed = torch.load(tmp_path / "q.pt", weights_only=True)["state_dict"]
    assert not (tmp_path / "q.pt.resume").exists()
    assert [k for k in uninterrupted if not torch.equal(uninterrupted[k], resumed[k])] == []
