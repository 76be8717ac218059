import pytest
import timm
import torch

from vitq.errors import VitqError
from vitq.models import create_float_model, family_for


def test_unknown_model_name():
    with pytest.raises(VitqError, match="unknown model 'deit_tinyy'"):
        create_float_model("deit_tinyy")


def test_model_without_family():
    with pytest.raises(VitqError, match="no supported family"):
        family_for("resnet18")


def test_missing_checkpoint(tmp_path):
    with pytest.raises(VitqError, match="not found"):
        create_float_model("deit_tiny_patch16_224", checkpoint=tmp_path / "nope.pth")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_corrupt_checkpoint(tmp_path, suffix):
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(VitqError, match="cannot read checkpoint"):
        create_float_model("deit_tiny_patch16_224", checkpoint=bad)


def test_checkpoint_for_another_architecture(tmp_path):
    path = tmp_path / "vit_small.pth"
    torch.save(timm.create_model("vit_small_patch16_224").state_dict(), path)
    with pytest.raises(VitqError, match="does not fit deit_tiny_patch16_224: .*shape mismatches"):
        create_float_model("deit_tiny_patch16_224", checkpoint=path)


def test_nested_and_prefixed_state_dict(tmp_path):
    sd = timm.create_model("deit_tiny_patch16_224").state_dict()
    path = tmp_path / "nested.pth"
    torch.save({"model": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, path)
    model = create_float_model("deit_tiny_patch16_224", checkpoint=path)
    torch.testing.assert_close(model.head.weight, sd["head.weight"])
