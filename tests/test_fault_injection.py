"""Fault injection: the CLI fed bad input, one case at a time.

Every case must end with the expected exit status (1 for bad input, 2 for a malformed command line),
no traceback, exactly one ``Error: ...`` line carrying the expected text, and the output folder exactly
as it was (no output, no ``.*.tmp`` left, inputs untouched). Errors must come before heavy work, so the
inputs are tiny: a DeiT-Tiny at 32 px (4 patches) and 32 px CIFAR-style images.
"""
from __future__ import annotations

import io
import json
import logging
import os
import pickle
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import timm
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import save_file

from tests.fake_data import write_cifar_archive
from vitq.cli import main
from vitq.models.loading import CHECKPOINT_META_KEY

MODEL = "deit_tiny_patch16_224"
TINY = {"img_size": 32}  # 4 patches: every model-loading case stays fast
DATA_CONFIG = {"input_size": [3, 32, 32], "crop_pct": 1.0}


def _spec_checkpoint(path: Path, mutate: Callable[[dict], None] | None = None, **kwargs) -> Path:
    kwargs = {**TINY, **kwargs}
    state = timm.create_model(MODEL, **kwargs).state_dict()
    if mutate:
        mutate(state)
    spec = {"model": MODEL, "kwargs": kwargs, "data_config": DATA_CONFIG}
    save_file(state, str(path), metadata={CHECKPOINT_META_KEY: json.dumps(spec)})
    return path


def _bomb_jpeg(side: int = 20000) -> bytes:
    """A 16x16 JPEG whose header claims side x side pixels (Pillow reads the size from the header)."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 7] = side.to_bytes(2, "big")
    data[sof + 7:sof + 9] = side.to_bytes(2, "big")
    return bytes(data)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def ns(tmp_path_factory) -> SimpleNamespace:
    """Every input the cases use, made once: checkpoints, data, a quantized checkpoint."""
    d = tmp_path_factory.mktemp("inputs")
    n = SimpleNamespace(dir=d)
    n.tiny = _spec_checkpoint(d / "tiny.safetensors")

    def nan_qkv(state):
        state["blocks.3.attn.qkv.weight"][0, 0] = float("nan")

    def overflow(state):
        state["patch_embed.proj.weight"].fill_(1e38)  # finite, but the first matmul overflows to Inf

    n.nan = _spec_checkpoint(d / "nan.safetensors", nan_qkv)
    n.overflow = _spec_checkpoint(d / "overflow.safetensors", overflow)
    n.ten_class = d / "ten_class.pth"  # a plain state dict: no spec, so vitq builds timm's 1000-class head
    torch.save(timm.create_model(MODEL, num_classes=10).state_dict(), n.ten_class)
    n.random = d / "random.pth"
    n.random.write_bytes(random.Random(0).randbytes(4096))  # fixed: some random bytes happen to parse as a pickle GLOBAL
    n.pickle = d / "pickled.pth"
    torch.save({"weights": {"w": torch.zeros(2)}, "opt": SimpleNamespace(lr=0.1)}, n.pickle)
    n.empty = d / "empty.pth"
    n.empty.write_bytes(b"")
    n.truncated = d / "truncated.pth"
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(1000)}, buf)
    n.truncated.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    n.zeros = d / "zeros.safetensors"
    n.zeros.write_bytes(b"\x00" * 64)
    n.not_tensors = d / "not_tensors.pth"
    torch.save({"lr": 0.1, "epoch": 3}, n.not_tensors)
    n.train = write_cifar_archive(d / "cifar", "train", 4)
    n.test = write_cifar_archive(d / "cifar", "test", 4)
    n.cut_train = write_cifar_archive(d / "cut", "train", 4)
    write_cifar_archive(d / "cut", "test", 4)
    raw = n.cut_train.read_bytes()
    n.cut_train.write_bytes(raw[: len(raw) // 2])
    n.not_gzip = d / "notgz" / "cifar10-train.tar.gz"
    n.not_gzip.parent.mkdir()
    n.not_gzip.write_bytes(b"definitely not gzip" * 20)
    n.bomb = d / "bomb"
    n.bomb.mkdir()
    (n.bomb / "n01440764_tench.JPEG").write_bytes(_bomb_jpeg())
    n.small = d / "small"  # one calibration image (class 0) and one evaluation image (class 1)
    n.small.mkdir()
    Image.new("RGB", (40, 30), (120, 30, 200)).save(n.small / "n01440764_tench.JPEG")
    Image.new("RGB", (40, 30), (20, 130, 200)).save(n.small / "n01443537_goldfish.JPEG")
    n.junk = d / "junk"
    n.junk.mkdir()
    (n.junk / "n01440764_tench.JPEG").write_text("not an image")
    n.empty_dir = d / "empty_dir"
    n.empty_dir.mkdir()
    n.misnamed = d / "misnamed"
    n.misnamed.mkdir()
    Image.new("RGB", (40, 30)).save(n.misnamed / "holiday.jpg")
    n.calib_only = d / "calib_only"
    n.calib_only.mkdir()
    Image.new("RGB", (40, 30)).save(n.calib_only / "n01440764_tench.JPEG")
    n.notes = d / "notes.txt"
    n.notes.write_text("hello")
    n.bad_yaml = d / "bad.yaml"
    n.bad_yaml.write_text("method: [\n")

    n.qckpt = d / "q.pt"
    collect = _Collect()
    logging.getLogger("vitq").addHandler(collect)
    try:
        result = CliRunner().invoke(main, ["quantize", MODEL, str(n.qckpt), "--checkpoint", str(n.tiny), "--data", str(n.train),
                                           "--method", "minmax", "--set", 'overrides={"blocks.*.mlpp.fc2.input_quant": {"bits": 6}}'])
    finally:
        logging.getLogger("vitq").removeHandler(collect)
    assert result.exit_code == 0, result.output
    n.quantize_warnings = collect.messages
    n.payload = torch.load(n.qckpt, map_location="cpu", weights_only=True)
    return n


def tampered(n: SimpleNamespace, name: str, change: Callable[[dict], None]) -> Path:
    """A copy of the quantized checkpoint with ``change`` applied to its payload (state dict copied too)."""
    payload = {**n.payload, "state_dict": {k: v.clone() for k, v in n.payload["state_dict"].items()}}
    change(payload)
    path = n.dir / f"tampered_{name}.pt"
    torch.save(payload, path)
    return path


def _first(payload: dict, suffix: str) -> str:
    return next(k for k in payload["state_dict"] if k.endswith(suffix))


def _set_tensor(suffix: str, value: float) -> Callable[[dict], None]:
    def change(payload: dict) -> None:
        key = _first(payload, suffix)
        payload["state_dict"][key] = torch.full_like(payload["state_dict"][key], value)
    return change


def _uncalibrated(payload: dict) -> None:
    payload["state_dict"][_first(payload, "blocks.0.attn.qkv.input_quant.initialized")] = torch.tensor(False)


def _drop_key(payload: dict) -> None:
    del payload["state_dict"][_first(payload, "blocks.2.mlp.fc1.weight_quant.scale")]


def _extra_key(payload: dict) -> None:
    payload["state_dict"]["blocks.0.extra"] = torch.zeros(1)


def _bad_recipe_bits(payload: dict) -> None:
    payload["recipe"] = {**payload["recipe"], "bits": "W9A9", "format": {}}


def _zero_point(payload: dict) -> None:
    key = _first(payload, "blocks.1.attn.proj.input_quant.zero_point")
    payload["state_dict"][key] = torch.full_like(payload["state_dict"][key], 1e4)


@dataclass(frozen=True)
class Case:
    """``args(n, out, monkeypatch)`` gives the command line (it may create files in ``out`` first)."""

    id: str
    args: Callable[..., list[str]]
    expected: str
    code: int = 1
    skip: str | None = None


def q(*extra) -> Callable[..., list[str]]:
    """``vitq quantize MODEL OUT/o.pt`` with the tiny checkpoint and data, then ``extra``."""
    return lambda n, out, mp: ["quantize", MODEL, str(out / "o.pt"), "--checkpoint", str(n.tiny), "--data", str(n.train),
                               *[e(n, out) if callable(e) else e for e in extra]]


def qc(checkpoint: str, *extra) -> Callable[..., list[str]]:
    """``vitq quantize MODEL OUT/o.pt --checkpoint <n.checkpoint>`` (one of the bad float checkpoints), then ``extra``."""
    return lambda n, out, mp: ["quantize", MODEL, str(out / "o.pt"), "--checkpoint", str(getattr(n, checkpoint)),
                               *[e(n, out) if callable(e) else e for e in extra]]


def ev(path: Callable, *extra) -> Callable[..., list[str]]:
    """``vitq eval QCKPT --data <4 CIFAR test images>`` for the checkpoint ``path(n)``."""
    return lambda n, out, mp: ["eval", str(path(n)), "--data", str(n.test), *extra]


def tamper(name: str, change: Callable[[dict], None]) -> Callable[..., list[str]]:
    return ev(lambda n: tampered(n, name, change))


def _same_as_input(n, out, mp):
    shutil_copy(n.tiny, out / "w.pt")  # a float checkpoint named like an output
    return ["quantize", MODEL, str(out / "w.pt"), "--checkpoint", str(out / "w.pt"), "--data", str(n.train)]


def shutil_copy(src: Path, dst: Path) -> None:
    dst.write_bytes(src.read_bytes())


def _recipe_as_output(n, out, mp):
    (out / "r.pt").write_text('{"method": "minmax", "bits": "W8A8"}')
    return ["quantize", MODEL, str(out / "r.pt"), "--recipe", str(out / "r.pt")]


def _parent_is_file(n, out, mp):
    (out / "afile").write_text("x")
    return ["quantize", MODEL, str(out / "afile" / "o.pt"), "--checkpoint", str(n.tiny)]


def _read_only(n, out, mp):
    if os.geteuid() == 0:  # root writes anywhere a mode allows: use a folder nobody can create files in
        return ["quantize", MODEL, "/proc/vitq-fault-injection/o.pt"]
    ro = out / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    return ["quantize", MODEL, str(ro / "o.pt")]


def _eval_results_parent_file(n, out, mp):
    (out / "afile").write_text("x")
    return ["eval", str(n.qckpt), "--results-file", str(out / "afile" / "r.json")]


def _bench_same_reports(n, out, mp):
    return ["bench", str(n.qckpt), "--results-file", str(out / "r.json"), "--markdown", str(out / "r.json")]


def _bench_workdir_file(n, out, mp):
    (out / "afile").write_text("x")
    return ["bench", str(n.qckpt), "--workdir", str(out / "afile" / "work")]


def _pixels_env(value: str, data: str) -> Callable[..., list[str]]:
    def args(n, out, mp):
        mp.setenv("VITQ_MAX_IMAGE_PIXELS", value)
        return ["quantize", MODEL, str(out / "o.pt"), "--checkpoint", str(n.tiny), "--data", str(getattr(n, data))]
    return args


def _unsaved(nan_scale: bool) -> Callable[..., list[str]]:
    """quantize whose method 'returns' uncalibrated quantizers, or calibrated ones with a NaN scale."""
    def args(n, out, mp):
        import vitq.pipeline.quantize as pq
        from vitq.models.wrap import iter_quantizers, wrap_model

        def broken(model, model_name, batches, recipe, **kwargs):
            qmodel = wrap_model(model, model_name, recipe.format)
            if nan_scale:
                for _, quantizer in iter_quantizers(qmodel):
                    quantizer.initialized.fill_(True)
                qmodel.blocks[5].attn.proj.input_quant.scale.data.fill_(float("nan"))
            return pq.QuantizedModel(qmodel, model_name, recipe)

        mp.setattr(pq, "quantize", broken)
        return q()(n, out, mp)
    return args


CASES = [
    # outputs, checked before anything loads
    Case("quantize-output-is-the-checkpoint", _same_as_input, "would overwrite the input"),
    Case("quantize-output-is-the-recipe", _recipe_as_output, "would overwrite the input"),
    Case("quantize-output-is-the-data", lambda n, out, mp: ["quantize", MODEL, str(n.train), "--data", str(n.train)],
         "would overwrite the input"),
    Case("quantize-output-suffix", lambda n, out, mp: ["quantize", MODEL, str(out / "o.onnx")], "output must end in .pt"),
    Case("quantize-output-parent-is-a-file", _parent_is_file, "is a file, not a folder"),
    Case("quantize-output-read-only-folder", _read_only, "is not writable"),
    Case("eval-results-is-the-checkpoint", lambda n, out, mp: ["eval", str(n.qckpt), "--results-file", str(n.qckpt)],
         "would overwrite the input"),
    Case("eval-results-suffix", lambda n, out, mp: ["eval", str(n.qckpt), "--results-file", str(out / "r.txt")],
         "results file must end in .json"),
    Case("eval-results-parent-is-a-file", _eval_results_parent_file, "is a file, not a folder"),
    Case("export-output-is-the-checkpoint", lambda n, out, mp: ["export", str(n.qckpt), str(n.qckpt)], "would overwrite the input"),
    Case("export-output-suffix", lambda n, out, mp: ["export", str(n.qckpt), str(out / "m.pt")], "output must end in .onnx"),
    Case("bench-results-is-the-checkpoint", lambda n, out, mp: ["bench", str(n.qckpt), "--results-file", str(n.qckpt)],
         "would overwrite the input"),
    Case("bench-results-and-markdown-same-file", _bench_same_reports, "are the same file"),
    Case("bench-workdir-under-a-file", _bench_workdir_file, "is a file, not a folder"),
    Case("demo-results-suffix", lambda n, out, mp: ["demo", "--results-file", str(out / "r.csv")], "results file must end in .json"),
    # numbers and lists, checked when the command line is parsed (2: click's usage error) or before work (1)
    Case("export-min-agreement-over-100", lambda n, out, mp: ["export", str(n.qckpt), str(out / "m.onnx"), "--min-agreement", "150"],
         "Invalid value for '--min-agreement'", code=2),
    Case("export-parity-images-negative", lambda n, out, mp: ["export", str(n.qckpt), str(out / "m.onnx"), "--parity-images", "-1"],
         "Invalid value for '--parity-images'", code=2),
    Case("quantize-seed-negative", lambda n, out, mp: ["quantize", MODEL, str(out / "o.pt"), "--seed", "-1"],
         "Invalid value for '--seed'", code=2),
    Case("quantize-calib-size-zero", lambda n, out, mp: ["quantize", MODEL, str(out / "o.pt"), "--calib-size", "0"],
         "Invalid value for '--calib-size'", code=2),
    Case("eval-limit-zero", lambda n, out, mp: ["eval", str(n.qckpt), "--limit", "0"], "Invalid value for '--limit'", code=2),
    Case("bench-runs-zero", lambda n, out, mp: ["bench", str(n.qckpt), "--runs", "0"], "Invalid value for '--runs'", code=2),
    Case("bench-unknown-target", lambda n, out, mp: ["bench", str(n.qckpt), "--target", "tpu"], "unknown bench target 'tpu'"),
    Case("bench-unknown-variant", lambda n, out, mp: ["bench", str(n.qckpt), "--variants", "fp32,fp64"], "unknown --variants 'fp64'"),
    Case("bench-empty-variant-list", lambda n, out, mp: ["bench", str(n.qckpt), "--variants", ","], "--variants lists nothing"),
    Case("bench-threads-zero", lambda n, out, mp: ["bench", str(n.qckpt), "--threads", "0"], "--threads must be positive"),
    Case("bench-batch-not-a-number", lambda n, out, mp: ["bench", str(n.qckpt), "--batch", "1,x"], "--batch must be comma-separated"),
    Case("demo-bits-out-of-range", lambda n, out, mp: ["demo", "--bits", "W8A8,W9A9"], "weight bit-width must be an integer in 2..8"),
    Case("demo-bits-empty", lambda n, out, mp: ["demo", "--bits", ","], "--bits lists no bit-widths"),
    Case("demo-reconstruction-method", lambda n, out, mp: ["demo", "--method", "pfcr"], "not reconstruction"),
    Case("demo-unknown-method", lambda n, out, mp: ["demo", "--method", "magic"], "unknown method 'magic'"),
    Case("quantize-device-unknown", q("--device", "tpu"), "device must be cpu or cuda[:N]"),
    Case("quantize-device-malformed-cuda", q("--device", "cuda:x"), "device must be cpu or cuda[:N]"),
    Case("quantize-device-cuda-without-gpu", q("--device", "cuda"), "no CUDA GPU is available",
         skip="a CUDA GPU is present" if torch.cuda.is_available() else None),
    # recipes (existing checks in tests/test_cli.py, moved here)
    Case("quantize-bits-too-wide", q("--bits", "W9A8"), "weight bit-width must be an integer in 2..8"),
    Case("quantize-bits-too-narrow", q("--bits", "W4A1"), "activation bit-width must be an integer in 2..8"),
    Case("quantize-bits-malformed", q("--bits", "four"), "bits must look like W4A4"),
    Case("quantize-override-not-json", q("--set", "overrides=blocks.*"), "overrides must be a JSON object"),
    Case("quantize-override-unknown-key", q("--set", 'overrides={"*": {"bitz": 8}}'), "unknown keys"),
    Case("quantize-override-bits", q("--set", 'overrides={"*": {"bits": 9}}'), "bits must be an integer in 2..8"),
    Case("quantize-setting-not-applicable", q("--method", "percentile", "--set", "iters=90"), "setting iters does not apply to percentile"),
    Case("quantize-setting-unknown", q("--set", "iterz=3"), "unknown setting iterz"),
    Case("quantize-setting-without-value", q("--set", "iters"), "--set takes KEY=VALUE"),
    Case("quantize-unknown-preset", q("--preset", "w5a5"), "unknown recipe preset 'w5a5'"),
    Case("quantize-preset-and-recipe", q("--preset", "w8a8", "--recipe", lambda n, out: str(n.bad_yaml)), "either --preset or --recipe"),
    Case("quantize-recipe-missing", q("--recipe", lambda n, out: str(n.dir / "none.yaml")), "recipe file not found"),
    Case("quantize-recipe-unparsable", q("--recipe", lambda n, out: str(n.bad_yaml)), "cannot parse recipe file"),
    # models and float checkpoints
    Case("quantize-unknown-model", lambda n, out, mp: ["quantize", "deit_tinny", str(out / "o.pt")], "unknown model 'deit_tinny'"),
    Case("quantize-model-without-family", lambda n, out, mp: ["quantize", "resnet18", str(out / "o.pt")], "no supported family"),
    Case("quantize-checkpoint-missing", lambda n, out, mp: ["quantize", MODEL, str(out / "o.pt"), "--checkpoint", str(n.dir / "no.pth")],
         "checkpoint not found"),
    Case("quantize-checkpoint-and-pretrained", q("--pretrained"), "either --checkpoint or --pretrained"),
    Case("quantize-checkpoint-for-another-model", lambda n, out, mp: ["quantize", "deit_small_patch16_224", str(out / "o.pt"),
                                                                      "--checkpoint", str(n.tiny), "--data", str(n.train)],
         "trained for deit_tiny_patch16_224, not deit_small_patch16_224"),
    *(Case(f"quantize-checkpoint-{name}", qc(attr, *extra), expected) for name, attr, extra, expected in (
        ("zeros-safetensors", "zeros", (), "not a safetensors file"),
        ("random-bytes", "random", (), "not a PyTorch or safetensors weights file"),
        ("pickled-objects", "pickle", (),
         "not a plain tensor file: it holds pickled Python objects (GLOBAL types.SimpleNamespace), and vitq never unpickles code"),
        ("empty", "empty", (), "the file is empty"),
        ("truncated", "truncated", (), "truncated or damaged PyTorch file"),
        ("not-tensors", "not_tensors", (), "does not contain a state dict of tensors"),
        ("ten-classes", "ten_class", (),
         "the checkpoint's classifier has 10 classes, the model 1000: vitq builds timm's default head unless a .safetensors"),
        ("nan-weight", "nan", ("--data", lambda n, out: str(n.train)), "tensor blocks.3.attn.qkv.weight has 1 NaN/Inf value(s)"),
    )),
    # calibration and saving
    Case("quantize-activations-overflow", lambda n, out, mp: ["quantize", MODEL, str(out / "o.pt"), "--checkpoint", str(n.overflow),
                                                              "--data", str(n.train), "--method", "minmax"],
         "calibration batch 0: quantizer blocks.0."),
    Case("quantize-refuses-uncalibrated-save", _unsaved(nan_scale=False), "not saving"),
    Case("quantize-refuses-nan-scale-save", _unsaved(nan_scale=True), "tensor blocks.5.attn.proj.input_quant.scale has 1 NaN/Inf"),
    # data
    Case("data-missing", q("--data", lambda n, out: str(n.dir / "nowhere")), "data path not found"),
    Case("data-empty-folder", q("--data", lambda n, out: str(n.empty_dir)), "no images found"),
    Case("data-not-an-image", q("--data", lambda n, out: str(n.junk)), "cannot decode image"),
    Case("data-misnamed-wnid-file", q("--data", lambda n, out: str(n.misnamed)), "not named <wnid>_<name>"),
    Case("data-file-not-an-archive", q("--data", lambda n, out: str(n.notes)), "is a file but not a CIFAR-10 tar archive"),
    Case("data-cifar-truncated", q("--data", lambda n, out: str(n.cut_train)), "the file is truncated"),
    Case("data-cifar-not-gzip", q("--data", lambda n, out: str(n.not_gzip)), "cannot read CIFAR archive"),
    Case("data-decompression-bomb", q("--data", lambda n, out: str(n.bomb)),
         "is 20000x20000 = 400,000,000 pixels, over the limit of 178,956,970 (a decompression-bomb guard; set VITQ_MAX_IMAGE_PIXELS"),
    Case("data-over-lowered-pixel-limit", _pixels_env("100", "small"), "is 40x30 = 1,200 pixels, over the limit of 100"),
    Case("data-pixel-limit-malformed", _pixels_env("lots", "small"), "VITQ_MAX_IMAGE_PIXELS must be a positive whole number"),
    Case("eval-split-with-zero-images", lambda n, out, mp: ["eval", str(n.qckpt), "--data", str(n.calib_only)], "zero images"),
    # quantized checkpoints, plain and tampered
    Case("eval-checkpoint-missing", lambda n, out, mp: ["eval", str(n.dir / "none.pt")], "quantized checkpoint not found"),
    Case("eval-checkpoint-is-a-folder", lambda n, out, mp: ["eval", str(n.dir)], "is not a file"),
    Case("eval-not-a-vitq-checkpoint", ev(lambda n: n.ten_class), "not a vitq quantized checkpoint"),
    Case("eval-random-bytes", ev(lambda n: n.random), "not a PyTorch or safetensors weights file"),
    Case("eval-pickled-objects", ev(lambda n: n.pickle), "vitq never unpickles code"),
    Case("export-random-bytes", lambda n, out, mp: ["export", str(n.random), str(out / "m.onnx")],
         "not a PyTorch or safetensors weights file"),
    Case("eval-tampered-recipe-string", tamper("recipe_str", lambda p: p.update(recipe="W8A8 minmax")),
         "damaged vitq checkpoint: its recipe is a string, not an object"),
    Case("eval-tampered-recipe-bits", tamper("recipe_bits", _bad_recipe_bits), "damaged vitq checkpoint: invalid recipe: weight bit-width"),
    Case("eval-tampered-no-model-name", tamper("no_model", lambda p: p.pop("model_name")),
         "damaged vitq checkpoint: no 'model_name' entry"),
    Case("eval-tampered-unknown-model-name", tamper("model_x", lambda p: (p.update(model_name="deit_tinny"), p.update(spec=None))),
         "damaged vitq checkpoint: unknown model 'deit_tinny'"),
    Case("eval-tampered-version", tamper("version", lambda p: p.update(version=99)), "damaged vitq checkpoint: version 99"),
    Case("eval-tampered-state-dict-type", tamper("sd_list", lambda p: p.update(state_dict=[1, 2])),
         "damaged vitq checkpoint: 'state_dict' is a list, not an object"),
    Case("eval-tampered-uncalibrated", tamper("uncal", _uncalibrated),
         "damaged vitq checkpoint: quantizer blocks.0.attn.qkv.input_quant is enabled but not calibrated"),
    Case("eval-tampered-missing-key", tamper("missing", _drop_key),
         "damaged vitq checkpoint: its state dict does not fit deit_tiny_patch16_224 W8A8: 1 missing key (e.g. blocks.2.mlp.fc1"),
    Case("eval-tampered-unexpected-key", tamper("extra", _extra_key), "1 unexpected key (e.g. blocks.0.extra)"),
    Case("eval-tampered-nan-scale", tamper("nan", _set_tensor("blocks.4.attn.qkv.input_quant.scale", float("nan"))),
         "damaged vitq checkpoint: tensor blocks.4.attn.qkv.input_quant.scale has 1 NaN/Inf value(s)"),
    Case("eval-tampered-zero-scale", tamper("zero", _set_tensor("blocks.4.attn.qkv.input_quant.scale", 0.0)),
         "damaged vitq checkpoint: quantizer blocks.4.attn.qkv.input_quant has a scale <= 0"),
    Case("eval-tampered-zero-point", tamper("zp", _zero_point), "has a zero-point outside its grid 0..255"),
]


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_cases_are_many_and_distinct():
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_error_line(case, ns, tmp_path, monkeypatch):
    if case.skip:
        pytest.skip(case.skip)
    out = tmp_path / "out"
    out.mkdir()
    args = case.args(ns, out, monkeypatch)
    before = _snapshot(out)
    inputs_before = _snapshot(ns.dir)
    try:
        result = CliRunner().invoke(main, args)
    finally:
        for p in out.rglob("*"):  # a read-only folder would keep pytest from cleaning up
            if p.is_dir():
                p.chmod(0o755)
    assert result.exit_code == case.code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.output
    assert case.expected in errors[0], errors[0]
    after = _snapshot(out)
    new = [name for name in after if name not in before]
    assert not [n for n in new if n.endswith((".pt", ".onnx", ".ort", ".json", ".md", ".tmp"))], new
    assert after == before, f"the output folder changed: {sorted(set(after.items()) ^ set(before.items()))}"
    assert not list(out.rglob(".*.tmp")) and not list(ns.dir.rglob(".*.tmp")) and not list(ns.dir.rglob(".vitq-*"))
    assert _snapshot(ns.dir) == inputs_before, "an input changed"


def test_ctrl_c_is_one_line_and_exit_130(ns, tmp_path, monkeypatch):
    import vitq.models.loading as loading

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(loading, "create_float_model", interrupted)
    result = CliRunner().invoke(main, ["quantize", MODEL, str(tmp_path / "o.pt"), "--checkpoint", str(ns.tiny), "--data", str(ns.train)])
    assert result.exit_code == 130, result.output
    assert result.output.strip().splitlines()[-1] == "Interrupted" and "Error" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_interrupted_write_leaves_no_temporary_file(tmp_path):
    from vitq.files import atomic_write

    def write_then_interrupt(tmp: Path) -> None:
        tmp.write_bytes(b"half a checkpoint")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "o.pt", write_then_interrupt)
    assert list(tmp_path.iterdir()) == []


def test_override_matching_no_quantizer_is_a_warning(ns):
    assert ns.qckpt.is_file()  # the run went through: a warning, not an error
    assert any("override 'blocks.*.mlpp.fc2.input_quant' matches no quantizer of deit_tiny_patch16_224" in m
               and "closest: blocks." in m for m in ns.quantize_warnings), ns.quantize_warnings


def test_labels_of_another_label_space_are_a_warning(ns, caplog):
    """CIFAR-10 labels for the 1000-class tiny model: evaluation runs, with a warning."""
    with caplog.at_level(logging.WARNING, logger="vitq"):
        result = CliRunner().invoke(main, ["eval", str(ns.qckpt), "--data", str(ns.test), "--limit", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert any("cifar10 labels index 10 classes but deit_tiny_patch16_224 has 1000" in r.getMessage() for r in caplog.records)


def test_labels_beyond_the_classifier_are_a_warning(caplog):
    from calib.datasets import ImageDataset, Sample
    from vitq.cli.options import warn_label_space

    dataset = ImageDataset([Sample("a.jpg", 3, False), Sample("b.jpg", 917, False)], None, kind="wnid-folder", num_classes=1000)
    with caplog.at_level(logging.WARNING, logger="vitq"):
        warn_label_space(SimpleNamespace(num_classes=10), "mobilevit_xxs", dataset, Path("imagenet-sample"))
        warn_label_space(SimpleNamespace(num_classes=1000), MODEL, dataset, Path("imagenet-sample"))
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "labels go up to 917 but mobilevit_xxs has 10 classes" in messages[0]


def test_save_refuses_non_finite_and_load_refuses_pickles(ns, tmp_path):
    """The API under the CLI: save_quantized never writes a NaN checkpoint; nothing is unpickled."""
    from vitq.errors import VitqError
    from vitq.pipeline.checkpoint import load_quantized, save_quantized

    qm = load_quantized(ns.qckpt)
    qm.model.blocks[0].mlp.fc2.weight.data[0, 0] = float("inf")
    with pytest.raises(VitqError, match="not saving .*tensor blocks.0.mlp.fc2.weight has 1 NaN/Inf value"):
        save_quantized(tmp_path / "bad.pt", qm)
    assert list(tmp_path.iterdir()) == []
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"format": "vitq-quantized", "x": sys.exit}, protocol=2))
    with pytest.raises(VitqError, match="cannot read quantized checkpoint"):
        load_quantized(evil)
