"""An opt-in model change before quantization: every transformer MLP's GELU becomes a ReLU, and each MLP
is refitted in float so that its block reproduces the original model's residual stream.

Why: the input of an MLP's second Linear is the hidden activation, the widest and most heavy-tailed
activation a ViT quantizes. After GELU it has a short negative tail that an asymmetric 3-4-bit grid spends
levels on; after a ReLU it is exactly non-negative and mostly zero, so every level of an unsigned grid
covers real values, and onnxruntime has no float Erf left to run (APHQ-ViT and GLF-Q report this MLP
reconstruction among their low-bit gains). The swap alone costs accuracy, so each changed MLP is fitted
(fc1 and fc2, Adam on random token batches) to map the changed model's residual stream entering it to
the *original* model's stream after it, walking the blocks in order so that each fit also absorbs what the
earlier changes left over. The changed model is another float model: vitq reports its own float accuracy
beside the original fp32 one and measures every drop against the original.

The families whose partition marks token-wise MLP branches (``Atom.mlp``: ViT/DeiT and Swin) take it.
A checkpoint of a changed model carries ``relu_mlp`` in its model spec, so it rebuilds with ReLUs.
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm import tqdm

from vitq import distributed
from vitq.errors import VitqError
from vitq.models.families import family_for, mlp_branches
from vitq.models.loading import changed_spec
from vitq.models.units import Atom
from vitq.quant.hooks import run_until

# Fit settings. DeiT-Tiny, 125 calibration images, float top-1 of the changed model on the 875 evaluation
# images (fp32 78.17): 300 steps at 1e-3 kept the most (relu_mlp_fit_deit_tiny.json); 1e-4 under-fits and
# 600 steps at 2e-3 fit the calibration tokens closer but generalize worse
FIT_STEPS = 300  # Adam steps per MLP
FIT_TOKENS = 2048  # tokens per step, drawn from every calibration image's tokens
FIT_LR = 1e-3  # peak learning rate, cosine-decayed to 0 over the steps
FORWARD_BATCH = 32  # images per forward pass when walking the blocks


@dataclass
class ReluMlpReport:
    """How well each changed MLP's block reproduces the original residual stream on the calibration images:
    relative squared error of the block output (error / variance of the original branch output) with the
    ReLU swapped in, before and after the fit."""

    steps: int
    lr: float
    mlps: list[dict[str, float | str]] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict:
        before = [m["before"] for m in self.mlps]
        after = [m["after"] for m in self.mlps]
        return {"mlps": len(self.mlps), "mean_rel_error_before": round(sum(before) / len(before), 5),
                "mean_rel_error_after": round(sum(after) / len(after), 5), "seconds": round(self.seconds, 1),
                "steps": self.steps, "tokens_per_step": FIT_TOKENS, "lr": self.lr, "per_mlp": self.mlps}


def use_relu(model: nn.Module, model_name: str) -> list[Atom]:
    """Swap the activation of every MLP branch for a ReLU, in place (no refit); returns the branches."""
    atoms = mlp_branches(model, model_name, "relu_mlp")
    for atom in atoms:
        atom.mlp.act = nn.ReLU()
    return atoms


@torch.no_grad()
def _run(fn, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([fn(x[i:i + FORWARD_BATCH]) for i in range(0, len(x), FORWARD_BATCH)])


def _fit(atom: Atom, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, steps: int, lr: float) -> None:
    """Adam on ``atom.mlp``'s parameters: ``atom(x) -> y`` on random token batches (the branch is token-wise)."""
    params = list(atom.mlp.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr)
    tokens_x, tokens_y = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * step / steps))
        pick = torch.randint(0, len(tokens_x), (min(FIT_TOKENS, len(tokens_x)),), generator=gen)
        loss = (atom(tokens_x[pick]) - tokens_y[pick]).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    for p in params:
        p.requires_grad_(False)


def relu_mlp_model(model: nn.Module, model_name: str, images: Sequence[torch.Tensor], seed: int = 0, progress: bool = True,
                   steps: int = FIT_STEPS, lr: float = FIT_LR) -> tuple[nn.Module, ReluMlpReport]:
    """A copy of the float ``model`` with ReLU MLPs, each refitted on ``images`` (the calibration images) to
    the original model's block outputs (``steps`` Adam steps per MLP, peak learning rate ``lr``); ``model`` is
    left as it was."""
    if distributed.active():
        raise VitqError("relu_mlp fits the MLPs in one process; run it without torchrun and quantize the result")
    start = time.perf_counter()
    family = family_for(model_name)
    model = model.eval()
    changed = copy.deepcopy(model)
    count = len(use_relu(changed, model_name))
    changed_spec(changed, model, model_name, relu_mlp=True)
    original = family.partition(model)
    flags = [p.requires_grad for p in changed.parameters()]
    for p in changed.parameters():
        p.requires_grad_(False)
    got: list[torch.Tensor] = []
    batches = torch.cat(list(images))
    run_until(model, model.get_submodule(original.entry), (batches[i:i + FORWARD_BATCH] for i in range(0, len(batches), FORWARD_BATCH)),
              lambda args: got.append(original.pack_entry(args).detach().clone()))
    x_fp = torch.cat(got)  # the stem is unchanged: both models' first block sees the same input
    x_new = x_fp.clone()
    gen = torch.Generator().manual_seed(seed)
    report = ReluMlpReport(steps, lr)
    bar = tqdm(total=count, desc="relu mlp fit", unit="mlp", disable=not progress, leave=False)
    try:
        for old, new in zip(original.atoms, family.partition(changed).atoms):
            y_fp = _run(old, x_fp)
            if new.mlp is None:
                x_new, x_fp = _run(new, x_new), y_fp
                continue
            branch_var = float((y_fp - x_fp).var()) or 1.0  # relative errors: against the original branch's own scale
            before = float((_run(new, x_new) - y_fp).pow(2).mean()) / branch_var
            _fit(new, x_new, y_fp, gen, steps, lr)
            x_new, x_fp = _run(new, x_new), y_fp
            report.mlps.append({"name": new.name, "before": round(before, 5),
                                "after": round(float((x_new - y_fp).pow(2).mean()) / branch_var, 5)})
            bar.update()
    finally:
        bar.close()
        for p, flag in zip(changed.parameters(), flags):
            p.requires_grad_(flag)
    report.seconds = time.perf_counter() - start
    return changed, report
