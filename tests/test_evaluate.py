"""Paired evaluation: agreement, KL and the standard error of the top-1 drop."""
from __future__ import annotations

import math

import torch
from torch import nn

from vitq.evaluate import evaluate, paired_drop_se


def one_hot_logits(classes: list[int], n_classes: int = 10) -> torch.Tensor:
    return torch.eye(n_classes)[classes] * 5.0


def test_drop_se_counts_only_the_images_one_model_gets_right():
    assert paired_drop_se(875, 0, 0) == 0.0
    assert math.isclose(paired_drop_se(100, 10, 4), math.sqrt(14 - 36 / 100))
    labels = torch.arange(10)
    reference = labels.clone()
    reference[6:] = 0  # right on images 0-5
    model = labels.clone()
    model[:3] = 9  # right on images 3-9: the reference alone on 0-2, the model alone on 6-9
    batches = [(torch.zeros(10, 1), labels)]
    cached = {"fp32": [one_hot_logits(reference.tolist())], "q": [one_hot_logits(model.tolist())]}
    results = evaluate({"fp32": nn.Identity(), "q": nn.Identity()}, batches, progress=False, cached=cached)
    assert results["fp32"].drop_se == 0.0
    q = results["q"]
    assert (q.top1, q.agreement) == (70.0, 30.0)
    assert math.isclose(q.drop_se, paired_drop_se(10, 3, 4)) and q.to_dict()["drop_se"] == q.drop_se
