"""benchmarks/train_cifar10.py: a run stopped and resumed ends bit-identical to an uninterrupted one, a state
of another schedule is refused, and the published checkpoint loads in vitq with its record."""
from __future__ import annotations

import json
import os
import subprocess

import pytest
import timm
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from tests.fake_data import write_cifar_archive
from tests.test_benchmark_scripts import BENCHMARKS, load_script
from vitq.errors import VitqError
from vitq.models.loading import create_float_model


@pytest.fixture(scope="module")
def train():
    return load_script(BENCHMARKS / "train_cifar10.py").main


@pytest.fixture
def data(tmp_path):
    write_cifar_archive(tmp_path / "data", "train", 48)
    write_cifar_archive(tmp_path / "data", "test", 8)
    return tmp_path / "data"


def run(train, tmp_path, data, name: str, *extra: str):
    args = ["--model", "mobilevit_xxs", "--data", str(data), "--epochs", "2", "--batch-size", "16",
            "--cache-dir", str(tmp_path / "cache"), "--out-dir", str(tmp_path / name), "--state", str(tmp_path / f"{name}.pt"),
            "--out", str(tmp_path / f"{name}.json"), *extra]
    result = CliRunner().invoke(train, args)
    assert result.exit_code == 0, result.output
    return result


def test_stopped_and_resumed_run_ends_bit_identical_to_an_uninterrupted_one(train, tmp_path, data):
    run(train, tmp_path, data, "whole")
    first = run(train, tmp_path, data, "split", "--max-steps", "4")  # 6 steps in all: stops inside epoch 2
    assert "stopped by --max-steps 4 at step 4/6" in first.output
    assert (tmp_path / "split.pt").exists() and not (tmp_path / "split").exists()
    second = run(train, tmp_path, data, "split")
    assert "resuming" in second.output and not (tmp_path / "split.pt").exists()

    whole, split = (load_file(str(tmp_path / n / "mobilevit_xxs.safetensors")) for n in ("whole", "split"))
    assert whole.keys() == split.keys()
    assert all(torch.equal(whole[k], split[k]) for k in whole)
    record = json.loads((tmp_path / "split.json").read_text())["records"][0]
    assert record["runs"] == 2 and record["train_steps"] == 6 and record["epochs_total"] == 2.0
    assert record["n_images"] == 8 and record["runtime"] == "torch"
    model = create_float_model("mobilevit_xxs", checkpoint=tmp_path / "split" / "mobilevit_xxs.safetensors")
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 10)


def test_init_adds_the_earlier_epochs_and_another_schedule_state_is_refused(train, tmp_path, data):
    run(train, tmp_path, data, "first")
    ckpt = tmp_path / "first" / "mobilevit_xxs.safetensors"
    run(train, tmp_path, data, "second", "--init", str(ckpt), "--max-steps", "1")
    result = CliRunner().invoke(train, ["--model", "mobilevit_xxs", "--data", str(data), "--epochs", "3",
                                        "--batch-size", "16", "--cache-dir", str(tmp_path / "cache"),
                                        "--state", str(tmp_path / "second.pt"), "--init", str(ckpt)])
    assert result.exit_code != 0 and "holds the state of another schedule" in result.output
    run(train, tmp_path, data, "second", "--init", str(ckpt))
    record = json.loads((tmp_path / "second.json").read_text())["records"][0]
    assert record["epochs_completed"] == 2.0 and record["epochs_total"] == 4.0 and record["init"].endswith("mobilevit_xxs.safetensors")


def test_gpu_script_trains_every_listed_model_and_publishes_within_its_time_box(tmp_path, data):
    """benchmarks/gpu_train_all.sh on the CPU with a time box so small that --fit-minutes cuts each schedule to
    its timing steps: every model publishes a checkpoint that vitq loads, and a record."""
    models = ("mobilevit_xxs", "deit_tiny_patch16_224")
    imagenet = timm.create_model("deit_tiny_patch16_224")  # what DeiT is fine-tuned from
    save_file({k: v.contiguous() for k, v in imagenet.state_dict().items()}, str(data / "deit_tiny_patch16_224.safetensors"))
    env = {**os.environ, "DATA": str(data), "DEVICE": "cpu", "MINUTES": "0.0001", "BATCH": "16",
           "MODELS": " ".join(models), "CKPT_DIR": str(tmp_path / "ckpt"), "RESULTS_DIR": str(tmp_path / "results"),
           "STATE_DIR": str(tmp_path / "state"), "LOG_DIR": str(tmp_path / "logs"), "CACHE_DIR": str(tmp_path / "cache"),
           "EXTRA": "--threads 1"}
    result = subprocess.run(["bash", str(BENCHMARKS / "gpu_train_all.sh")], env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in models:
        log = (tmp_path / "logs" / f"{name}.log").read_text()
        assert "--fit-minutes 0.0001" in log and "schedule cut to" in log
        record = json.loads((tmp_path / "results" / f"train_cifar10_{name}.json").read_text())["records"][0]
        assert record["train_steps"] == 21 and record["device"] == "cpu"
        assert (record["transfer"] is not None) == name.startswith("deit")
        create_float_model(name, checkpoint=tmp_path / "ckpt" / f"{name}.safetensors")
    assert not list((tmp_path / "state").iterdir())  # finished runs leave no state behind


def test_gpu_script_names_a_missing_archive(tmp_path):
    result = subprocess.run(["bash", str(BENCHMARKS / "gpu_train_all.sh")], env={**os.environ, "DATA": str(tmp_path)},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "cifar10-train.tar.gz is missing" in result.stderr


def test_gpu_script_names_missing_deit_weights(tmp_path, data):
    result = subprocess.run(["bash", str(BENCHMARKS / "gpu_train_all.sh")], env={**os.environ, "DATA": str(data)},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "deit_tiny_patch16_224.safetensors is missing" in result.stderr


def test_an_init_checkpoint_of_another_model_is_a_one_line_error(train, tmp_path, data, cifar_checkpoint):
    other = cifar_checkpoint(tmp_path / "mvit2.safetensors", "mobilevitv2_050")
    result = CliRunner().invoke(train, ["--model", "mobilevit_xxs", "--data", str(data), "--cache-dir", str(tmp_path / "c"),
                                        "--init", str(other), "--state", str(tmp_path / "s.pt")])
    assert result.exit_code == 1 and "does not fit mobilevit_xxs" in result.output, result.output


def test_fit_minutes_on_a_resumed_run_cuts_what_is_left(train, tmp_path, data):
    """A resumed run with --fit-minutes times this run's step rate and cuts the remaining schedule to the new time
    box (a tiny one here: the total becomes where the timing ends), never the steps already done."""
    run(train, tmp_path, data, "refit", "--epochs", "10", "--max-steps", "2")  # 30 steps in all, stops at 2
    resumed = run(train, tmp_path, data, "refit", "--epochs", "10", "--fit-minutes", "0.00001")
    assert "resuming" in resumed.output and "schedule cut to 23 steps" in resumed.output
    record = json.loads((tmp_path / "refit.json").read_text())["records"][0]
    assert record["train_steps"] == 23 and record["runs"] == 2


@pytest.fixture(scope="module")
def transfer_weights():
    return load_script(BENCHMARKS / "train_cifar10.py").transfer_weights


def test_transfer_loads_imagenet_weights_with_resampled_position_embeddings(transfer_weights, tmp_path):
    """ImageNet-shaped DeiT weights (224 px, 1000 classes) go into the 64 px CIFAR model: every block weight as
    stored, the 14x14 position table resampled to 4x4, only the classifier left at its fresh init."""
    imagenet = timm.create_model("deit_tiny_patch16_224", depth=2)
    save_file({k: v.contiguous() for k, v in imagenet.state_dict().items()}, str(tmp_path / "in1k.safetensors"))
    net = timm.create_model("deit_tiny_patch16_224", depth=2, img_size=64, num_classes=10)
    assert transfer_weights(net, tmp_path / "in1k.safetensors") == ["head.bias", "head.weight"]
    assert torch.equal(net.blocks[1].mlp.fc2.weight, imagenet.blocks[1].mlp.fc2.weight)
    assert net.pos_embed.shape == (1, 17, 192) and torch.equal(net.pos_embed[:, 0], imagenet.pos_embed[:, 0])


def test_transfer_weights_of_another_architecture_is_an_error(transfer_weights, tmp_path):
    other = timm.create_model("deit_tiny_patch16_224", depth=3)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(tmp_path / "deeper.safetensors"))
    net = timm.create_model("deit_tiny_patch16_224", depth=2, img_size=64, num_classes=10)
    with pytest.raises(VitqError, match="not weights of VisionTransformer"):
        transfer_weights(net, tmp_path / "deeper.safetensors")
