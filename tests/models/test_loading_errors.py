import pytest
import timm
import torch

from vitq.errors import VitqError
from vitq.models.families import family_for
from vitq.models.loading import create_float_model


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


def test_checkpoint_spec_rebuilds_model_and_resolution(tmp_path, cifar_checkpoint):
    path = cifar_checkpoint(tmp_path / "effv2.safetensors", "efficientformerv2_s0", img_size=64)
    model = create_float_model("efficientformerv2_s0", checkpoint=path)
    assert model.num_classes == 10
    assert timm.data.resolve_model_data_config(model)["input_size"] == (3, 64, 64)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_checkpoint_classifier_size_mismatch_is_explained(tmp_path, cifar_checkpoint):
    path = cifar_checkpoint(tmp_path / "mvit.safetensors")
    with pytest.raises(VitqError, match="10-class classifier, but 100 classes were requested"):
        create_float_model("mobilevit_xxs", checkpoint=path, num_classes=100)
    plain = tmp_path / "plain.pth"
    torch.save(timm.create_model("mobilevit_xxs", num_classes=10).state_dict(), plain)
    with pytest.raises(VitqError, match="classifier has 10 classes, the model 1000"):
        create_float_model("mobilevit_xxs", checkpoint=plain)


def test_checkpoint_for_another_model_name(tmp_path, cifar_checkpoint):
    path = cifar_checkpoint(tmp_path / "mvit.safetensors")
    with pytest.raises(VitqError, match="trained for mobilevit_xxs, not mobilevitv2_050"):
        create_float_model("mobilevitv2_050", checkpoint=path)


def test_non_finite_weights_name_the_tensor(tmp_path):
    sd = timm.create_model("deit_tiny_patch16_224").state_dict()
    sd["blocks.3.attn.qkv.weight"][1, 2] = float("inf")
    path = tmp_path / "inf.pth"
    torch.save(sd, path)
    with pytest.raises(VitqError, match=r"checkpoint .*inf.pth: tensor blocks.3.attn.qkv.weight has 1 NaN/Inf value\(s\)"):
        create_float_model("deit_tiny_patch16_224", checkpoint=path)


def test_pickled_objects_and_random_bytes_are_explained(tmp_path):
    import argparse
    import random

    pickled = tmp_path / "full_model.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "args": argparse.Namespace(lr=0.1)}, pickled)
    with pytest.raises(VitqError, match="not a plain tensor file: .*argparse.Namespace.*vitq never unpickles code") as e:
        create_float_model("deit_tiny_patch16_224", checkpoint=pickled)
    assert "weights_only" not in str(e.value)
    noise = tmp_path / "noise.pth"
    noise.write_bytes(random.Random(1).randbytes(512))
    with pytest.raises(VitqError, match="noise.pth: not a PyTorch or safetensors weights file$"):
        create_float_model("deit_tiny_patch16_224", checkpoint=noise)


def test_classifier_hint_names_no_missing_option(tmp_path):
    plain = tmp_path / "ten.pth"
    torch.save(timm.create_model("deit_tiny_patch16_224", num_classes=10).state_dict(), plain)
    with pytest.raises(VitqError) as e:
        create_float_model("deit_tiny_patch16_224", checkpoint=plain)
    assert "set num_classes" not in str(e.value) and "'vitq.model'" in str(e.value) and '"num_classes": 10' in str(e.value)
