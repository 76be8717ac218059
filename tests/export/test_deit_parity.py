"""Real DeiT-Tiny (bundled weights and images) W8A8: onnxruntime vs torch fake-quant on 32 images."""
from __future__ import annotations

import pytest

from calib.datasets import open_split
from calib.loaders import images_only, load_batches
from calib.transforms import eval_transform
from vitq.assets import DEMO_MODEL, demo_checkpoint, demo_images
from vitq.export.markers import export_reference
from vitq.export.onnx_export import export_onnx
from vitq.export.parity import compare
from vitq.models.loading import create_float_model
from vitq.pipeline.quantize import quantize
from vitq.recipe import make_recipe


@pytest.mark.slow
def test_deit_tiny_w8a8_onnxruntime_matches_torch(tmp_path):
    model = create_float_model(DEMO_MODEL, checkpoint=demo_checkpoint())
    transform = eval_transform(model)
    calib = load_batches(open_split(demo_images(), "calibration", transform, limit=32), 32, progress=False)
    qmodel = quantize(model, DEMO_MODEL, images_only(calib), make_recipe("W8A8", "minmax"), progress=False).model
    exported = export_onnx(qmodel, tmp_path / "deit.onnx")
    fp32_mb = 4 * sum(p.numel() for p in model.parameters()) / 1e6
    assert exported.size_mb <= 0.3 * fp32_mb
    evaluation = load_batches(open_split(demo_images(), "evaluation", transform, limit=32), 32, progress=False)
    report = compare(exported.path, export_reference(qmodel), evaluation)
    # Float rounding noise flips a few integer codes and the flips compound over 12 blocks
    # (docs/deployment.md, "Parity"): a few near-tie images may change class, an export bug changes
    # most of them. Measured here: 30 of 32 agree, mean logit error 0.06.
    assert report.agreement >= 90.0
    assert report.mean_abs_logit_error < 0.1
    assert abs(report.ort_top1 - report.torch_top1) <= 6.3
    differ = report.n_images * (100.0 - report.agreement) / 100.0  # only images the two classify apart move the drop
    assert 0.0 <= report.drop_se <= 100.0 * differ ** 0.5 / report.n_images + 1e-9
