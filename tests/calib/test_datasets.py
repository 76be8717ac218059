import io

import pytest
import torch
from PIL import Image

from calib.datasets import open_split, scan
from calib.errors import DataError
from calib.loaders import load_batches
from tests.fake_data import write_cifar_archive


def to_tensor(img):
    return torch.zeros(1)


def write_jpeg(path, color=(120, 30, 200)):
    Image.new("RGB", (40, 30), color).save(path, format="JPEG")


def test_bundled_wnid_split_is_disjoint_and_by_class(sample_images):
    kind, samples = scan(sample_images)
    assert kind == "wnid-folder" and len(samples) == 375
    calib = open_split(sample_images, "calibration", to_tensor)
    evaluation = open_split(sample_images, "evaluation", to_tensor)
    calib_labels = {s.label for s in calib.samples}
    eval_labels = {s.label for s in evaluation.samples}
    assert len(calib) == 125 and len(evaluation) == 250
    assert all(label % 8 == 0 for label in calib_labels)
    assert not calib_labels & eval_labels
    assert {s.source for s in calib.samples}.isdisjoint(s.source for s in evaluation.samples)


def test_limit_is_deterministic_and_spread(sample_images):
    a = open_split(sample_images, "evaluation", to_tensor, limit=10)
    b = open_split(sample_images, "evaluation", to_tensor, limit=10)
    assert [s.source for s in a.samples] == [s.source for s in b.samples] and len(a) == 10
    assert a.samples[-1].label > 900


def test_class_folder_split(tmp_path):
    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        for i in range(10):
            write_jpeg(tmp_path / c / f"{i:02d}.jpg")
    calib = open_split(tmp_path, "calibration", to_tensor)
    evaluation = open_split(tmp_path, "evaluation", to_tensor)
    assert len(calib) == 4 and len(evaluation) == 16  # images 0 and 8 of each class calibrate
    assert sorted({s.label for s in calib.samples}) == [0, 1]
    x, y = evaluation[0]
    assert y == 0


def test_cifar_archives_calibrate_on_train_evaluate_on_test(tmp_path):
    train = write_cifar_archive(tmp_path, "train", 6)
    write_cifar_archive(tmp_path, "test", 4)
    calib = open_split(train, "calibration", lambda im: torch.tensor(im.size))
    evaluation = open_split(train, "evaluation", lambda im: torch.tensor(im.size))
    assert len(calib) == 6 and len(evaluation) == 4
    assert {s.label for s in evaluation.samples} == {3, 8}  # cat, ship
    x, _ = evaluation[0]
    assert x.tolist() == [32, 32]
    batches = load_batches(evaluation, batch_size=3, progress=False)
    assert [len(b[1]) for b in batches] == [3, 1]


def test_missing_empty_and_non_image_folders(tmp_path):
    with pytest.raises(DataError, match="not found"):
        open_split(tmp_path / "nope", "calibration", to_tensor)
    with pytest.raises(DataError, match="no images found"):
        open_split(tmp_path, "calibration", to_tensor)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="no images found"):
        open_split(tmp_path, "calibration", to_tensor)


def test_undecodable_image_is_reported(tmp_path):
    (tmp_path / "n01440764_tench.JPEG").write_bytes(b"garbage")
    ds = open_split(tmp_path, "calibration", to_tensor)
    with pytest.raises(DataError, match="cannot decode image"):
        ds[0]


def test_wrongly_named_file_in_wnid_folder(tmp_path):
    write_jpeg(tmp_path / "holiday.jpg")
    with pytest.raises(DataError, match="not named <wnid>_<name>"):
        open_split(tmp_path, "calibration", to_tensor)


def test_evaluation_split_with_zero_images(tmp_path):
    write_jpeg(tmp_path / "n01440764_tench.JPEG")  # class 0 -> calibration only
    with pytest.raises(DataError, match="evaluation split .* has zero images"):
        open_split(tmp_path, "evaluation", to_tensor)


def test_image_over_the_pixel_limit_is_refused_before_decoding(tmp_path, monkeypatch):
    from calib.datasets import MAX_PIXELS_ENV, decode_image

    pillow_limit = Image.MAX_IMAGE_PIXELS
    buf = io.BytesIO()
    Image.new("RGB", (40, 30)).save(buf, format="JPEG")
    assert decode_image(buf.getvalue(), "a.jpg").size == (40, 30)
    monkeypatch.setenv(MAX_PIXELS_ENV, "1000")
    with pytest.raises(DataError, match=r"image a.jpg is 40x30 = 1,200 pixels, over the limit of 1,000 .*VITQ_MAX_IMAGE_PIXELS"):
        decode_image(buf.getvalue(), "a.jpg")
    monkeypatch.setenv(MAX_PIXELS_ENV, "1200")
    assert decode_image(buf.getvalue(), "a.jpg").size == (40, 30)
    monkeypatch.setenv(MAX_PIXELS_ENV, "-5")
    with pytest.raises(DataError, match="must be a positive whole number"):
        decode_image(buf.getvalue(), "a.jpg")
    assert Image.MAX_IMAGE_PIXELS == pillow_limit  # Pillow's own setting is left as it was


def test_truncated_cifar_archive_is_a_data_error(tmp_path):
    train = write_cifar_archive(tmp_path, "train", 6)
    raw = train.read_bytes()
    train.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="cifar10-train.tar.gz: the file is truncated"):
        open_split(train, "calibration", to_tensor)


def test_datasets_know_their_label_space(tmp_path, sample_images):
    assert open_split(sample_images, "evaluation", None, limit=2).num_classes == 1000
    train = write_cifar_archive(tmp_path, "train", 2)
    write_cifar_archive(tmp_path, "test", 2)
    evaluation = open_split(train, "evaluation", None)
    assert (evaluation.kind, evaluation.num_classes) == ("cifar10", 10)
    image, label = evaluation[0]  # no transform yet: a PIL image
    assert image.size == (32, 32) and label in (3, 8)
