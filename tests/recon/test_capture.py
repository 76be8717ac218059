"""Captured activations are copies: an in-place op later in the forward must not rewrite them."""
from __future__ import annotations

import torch
from torch import nn

from vitq.baselines.search import capture_layer
from vitq.calibration import calibrate
from vitq.models.wrap import wrap_model
from vitq.quant.config import QuantConfig
from vitq.recon.cache import capture_io


class ConvInplaceAct(nn.Module):
    """conv -> SiLU(inplace=True) (like timm's ConvNormAct after BatchNorm folding) -> pooled logits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x)).mean(dim=(2, 3))


def test_recon_capture_io_keeps_the_pre_activation_output():
    model = ConvInplaceAct().eval()
    x = torch.randn(4, 3, 8, 8)
    ins, outs = capture_io(model, model.conv, x, 2, "cpu")
    torch.testing.assert_close(outs, model.conv(x))
    torch.testing.assert_close(ins, x)
    ins, outs = capture_io(model, model.conv, x, 2, "cpu", output_of=model.act)  # AdaRound's act(W x) target
    torch.testing.assert_close(outs, torch.nn.functional.silu(model.conv(x)))
    torch.testing.assert_close(ins, x)


def test_baseline_search_targets_and_gradients_are_pre_activation():
    model = wrap_model(ConvInplaceAct(), "mobilevit_xxs", QuantConfig())
    batches = [torch.randn(4, 3, 8, 8)]
    calibrate(model, batches, progress=False)
    data = capture_layer(model, model.conv, batches, "cpu", with_grad=True)
    with torch.no_grad():
        expected = torch.nn.functional.conv2d(batches[0], model.conv.weight, model.conv.bias, padding=1)
    torch.testing.assert_close(data.targets[0], expected)
    assert data.grads is not None and data.grads[0].shape == expected.shape
