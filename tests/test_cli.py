"""The CLI end to end through click's runner: happy path and one-line errors for bad input."""
import json

import pytest
from click.testing import CliRunner

from vitq.cli import main

MODEL = "deit_tiny_patch16_224"


@pytest.fixture(scope="module")
def quantized(tmp_path_factory, deit_checkpoint, sample_images):
    out = tmp_path_factory.mktemp("q") / "w8a8.pt"
    result = CliRunner().invoke(main, ["quantize", MODEL, str(out), "--checkpoint", str(deit_checkpoint), "--data",
                                       str(sample_images), "--bits", "W8A8", "--method", "minmax", "--calib-size", "16"])
    assert result.exit_code == 0, result.output
    assert "saved deit_tiny_patch16_224 W8A8 (minmax, 16 calibration images)" in result.output
    return out


def test_quantize_then_eval_json(quantized, sample_images, tmp_path):
    results = tmp_path / "r.json"
    result = CliRunner().invoke(main, ["eval", str(quantized), "--data", str(sample_images), "--limit", "16", "--json",
                                       "--results-file", str(results)])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output[result.output.index("{"):])
    assert record["n_images"] == 16 and record["bits"] == "W8A8" and record["method"] == "minmax"
    assert record["agreement"] >= 75.0  # real weights, 8 bit: almost always the fp32 answer
    assert record["drop"] == pytest.approx(record["fp32_top1"] - record["top1"], abs=0.01)
    assert record["seconds"] > 0 and "recon_losses" not in record  # quantize time comes from the checkpoint
    written = json.loads(results.read_text())
    assert written["records"][0]["top1"] == record["top1"] and written["git_commit"] and written["versions"]["torch"]


def test_percentile_and_weight_observer_options_are_recorded_in_the_checkpoint(tmp_path, deit_checkpoint, sample_images):
    from vitq.pipeline.checkpoint import load_quantized

    out = tmp_path / "p.pt"
    result = CliRunner().invoke(main, ["quantize", MODEL, str(out), "--checkpoint", str(deit_checkpoint), "--data",
                                       str(sample_images), "--method", "percentile", "--set", "percentile=99.5",
                                       "--set", "weight_observer=mse", "--calib-size", "8",
                                       "--set", 'overrides={"blocks.*.mlp.fc2.input_quant": {"bits": 8}}'])
    assert result.exit_code == 0, result.output
    qm = load_quantized(out)
    model, fmt = qm.model, qm.recipe.format
    assert fmt.percentile == 99.5 and fmt.weight_observer == "mse"
    assert "format.percentile" not in qm.recipe.derived and "format.weight_observer" not in qm.recipe.derived
    assert fmt.overrides == {"blocks.*.mlp.fc2.input_quant": {"bits": 8}}
    assert model.blocks[3].mlp.fc2.input_quant.bits == 8
    assert model.blocks[0].attn.qkv.weight_quant.observer_name == "mse"
    assert model.blocks[0].attn.qkv.input_quant.observer_name == "percentile"


def test_eval_table(quantized, sample_images):
    result = CliRunner().invoke(main, ["eval", str(quantized), "--data", str(sample_images), "--limit", "8"])
    assert result.exit_code == 0, result.output
    assert "agree %" in result.output and "left in float:" in result.output


def run_error(args, tmp_path):
    """One ``Error:`` line, no traceback, no output file (tests/test_fault_injection.py drives ~90 such cases)."""
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = [line for line in result.output.strip().splitlines() if line.startswith("Error")]
    assert len(lines) == 1, result.output
    assert not any(p.name.endswith(".pt") for p in tmp_path.iterdir())
    return lines[0]


def test_hybrid_qhyvit_on_cifar_archives(tmp_path, cifar_checkpoint):
    """The Q-HyViT path end to end: a CIFAR-10 checkpoint with its model spec, calibration from the
    train archive, evaluation on the test archive, at the checkpoint's 64 px."""
    from tests.fake_data import write_cifar_archive

    write_cifar_archive(tmp_path, "train", 8)
    test_tar = write_cifar_archive(tmp_path, "test", 6)
    ckpt = cifar_checkpoint(tmp_path / "mvit.safetensors")
    out = tmp_path / "q.pt"
    result = CliRunner().invoke(main, ["quantize", "mobilevit_xxs", str(out), "--checkpoint", str(ckpt), "--data",
                                       str(test_tar), "--bits", "W6A6", "--method", "qhyvit", "--set", "recon_preset=ci",
                                       "--set", "iters=2", "--set", "units=stages.2.0..stages.2.1", "--calib-size", "8",
                                       "--set", "per_channel_activations=false"])
    assert result.exit_code == 0, result.output
    from vitq.pipeline.checkpoint import load_quantized

    assert "relative MSE" in result.output
    qm = load_quantized(out)
    qmodel, losses = qm.model, qm.meta["recon_losses"]
    assert losses["method"] == "qhyvit" and [lv["units"] for lv in losses["levels"]] == [1]  # one bridge unit
    assert qm.recipe.recon.per_channel_activations is False
    assert not any(getattr(q, "per_channel", False) for n, q in qmodel.named_modules() if n.endswith("input_quant"))
    result = CliRunner().invoke(main, ["eval", str(out), "--data", str(test_tar), "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output[result.output.index("{"):])
    assert record["n_images"] == 6 and record["method"] == "qhyvit" and record["bits"] == "W6A6"
    assert record["recon_losses"] == losses

    # timed at a deployment resolution (speed only): the graphs take 96 px inputs, no accuracy is claimed
    result = CliRunner().invoke(main, ["bench", str(out), "--data", str(test_tar), "--input-size", "96", "--calib-size", "8",
                                       "--variants", "fp32,vitq-int8", "--threads", "1", "--batch", "1", "--runs", "1",
                                       "--results-file", str(tmp_path / "bench.json")])
    assert result.exit_code == 0, result.output
    records = json.loads((tmp_path / "bench.json").read_text())["records"]
    assert {r["variant"] for r in records} == {"fp32", "vitq-int8"} and all(r["input_px"] == 96 for r in records)


def test_hybrid_unknown_bridge_unit_lists_units(tmp_path, cifar_checkpoint):
    from tests.fake_data import write_cifar_archive

    data = write_cifar_archive(tmp_path, "train", 4)
    result = CliRunner().invoke(main, ["quantize", "mobilevit_xxs", str(tmp_path / "q.pt"), "--checkpoint",
                                       str(cifar_checkpoint(tmp_path / "m.safetensors")), "--data", str(data),
                                       "--method", "qhyvit", "--set", "units=stages.9"])
    assert result.exit_code == 1 and "unknown unit(s) ['stages.9']" in result.output
    assert "stages.2.0..stages.2.1" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "q.pt").exists()


def test_inapplicable_setting_is_one_line_error_naming_what_applies(tmp_path):
    msg = run_error(["quantize", MODEL, str(tmp_path / "o.pt"), "--method", "percentile", "--set", "iters=90"], tmp_path)
    assert msg.startswith("Error: setting iters does not apply to percentile; percentile (calibration) takes: ")
    assert "softmax_quantizer" in msg and "bias_correction" in msg
    msg = run_error(["quantize", MODEL, str(tmp_path / "o.pt"), "--preset", "w4a4-brecq-fast", "--set", "pos=joint"], tmp_path)
    assert "setting pos does not apply to brecq" in msg and "iters" in msg
    msg = run_error(["quantize", MODEL, str(tmp_path / "o.pt"), "--set", "iterz=3"], tmp_path)
    assert "unknown setting iterz" in msg
    msg = run_error(["quantize", MODEL, str(tmp_path / "o.pt"), "--preset", "w5a5"], tmp_path)
    assert "unknown recipe preset 'w5a5'; choose one of: w8a8" in msg


def test_quantize_help_fits_one_screen_and_every_option_has_help():
    import click

    command = main.get_command(click.Context(main), "quantize")
    options = [p for p in command.params if isinstance(p, click.Option)]
    assert len(options) + 1 <= 15, [o.name for o in options]  # + --help
    for name in main.list_commands(click.Context(main)):
        for param in main.get_command(click.Context(main), name).params:
            assert not isinstance(param, click.Option) or param.help, f"vitq {name} {param.name} has no help"


def test_recipe_file_round_trips_what_a_checkpoint_records(tmp_path, quantized):
    from vitq.pipeline.checkpoint import load_quantized
    from vitq.recipe import load_recipe

    recorded = load_quantized(quantized).recipe
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(recorded.to_dict()))
    assert load_recipe(path) == recorded
    yaml_path = tmp_path / "recipe.yaml"
    yaml_path.write_text("method: pfcr\nbits: W4A4\nrecon:\n  preset: ci\n  iters: 3\n")
    recipe = load_recipe(yaml_path, settings={"samples": 8})
    assert (recipe.method, recipe.bits, recipe.recon.preset, recipe.recon.iters, recipe.recon.samples) == ("pfcr", "W4A4", "ci", 3, 8)
    assert recipe.format.softmax_quantizer == "uniform" and recipe.format.softmax_bits == 8
    assert "format.softmax_bits" in recipe.derived and recipe.format.exports_exactly
    (tmp_path / "bad.yaml").write_text("method: [\n")
    msg = run_error(["quantize", MODEL, str(tmp_path / "o.pt"), "--recipe", str(tmp_path / "bad.yaml")], tmp_path)
    assert "cannot parse recipe file" in msg


def test_torch_threads_option_sets_the_thread_count(monkeypatch):
    import torch

    monkeypatch.setenv("OMP_NUM_THREADS", str(torch.get_num_threads()))
    before = torch.get_num_threads()
    try:
        result = CliRunner().invoke(main, ["--torch-threads", "1", "list"])
        assert result.exit_code == 0, result.output
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert CliRunner().invoke(main, ["--torch-threads", "0", "list"]).exit_code == 2

