"""Second-order output weighting for a residual-stream unit: FIMA-Q's diagonal-plus-low-rank Fisher (``fisher_dplr``)
and APHQ-ViT's average perturbation Hessian (``aph``, :func:`perturbation_curvature`).

A unit's output error matters as far as it changes the prediction. The diagonal Fisher of ``loss="fisher"`` is
taken at the float model, where the gradient of any divergence from the float prediction is zero, so it uses
pseudo-labels instead. FIMA-Q (CVPR 2025) takes the gradient where it is not zero: of the KL divergence between
the float prediction and the prediction made from the *quantized* unit output, pushed through the float rest of
the model and the classifier head (both at temperature ``KL_TEMPERATURE``). With ``g`` the mean absolute
gradient over the samples and ``d`` the mean absolute output error at that moment, the quadratic form is
approximated by

* a diagonal part: ``mean(e^2 * g)`` over the elements of the error ``e``, and
* a low-rank part built from ``rank`` such pairs (refreshed evenly over the unit's iterations, as the rounding
  moves): with ``G`` (rank x N) the gradients and ``D`` the errors, ``a = G |e|`` per sample and
  ``a^T (D D^T)^-1 a``, which for rank 1 is the squared first-order term ``(g . |e|)^2 / |d|^2``.

Each part is divided by its own value on the first batch after a refresh, so the two weigh alike whatever their
scale (FIMA-Q's ``p1 = p2``), and their mean is scaled to that batch's relative MSE: the objective changes which
errors count, not how much the reconstruction weighs against the rounding regularizer, so ``round_weight`` means
what it means with ``loss="mse"``. Used by PFCR at every block level and by BRECQ, so the two compare with the
same loss.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from vitq import distributed

KL_TEMPERATURE = 20.0  # FIMA-Q's default: softened logits, so every class's shift, not only the top one, counts


class LowRankFisher:
    """The ``fisher_dplr`` objective of one unit: refreshed ``rank`` times during its optimization."""

    def __init__(self, tail: Callable[[torch.Tensor], torch.Tensor], logits_fp: torch.Tensor, rank: int, iters: int,
                 batch_size: int, device: str) -> None:
        self.tail, self.logits_fp, self.rank, self.device = tail, logits_fp, rank, device
        self.every, self.batch_size = max(1, iters // rank), batch_size
        self.grads: list[torch.Tensor] = []  # rank rows of mean |gradient|, flattened unit output
        self.errors: list[torch.Tensor] = []  # the mean |output error| at each refresh
        self.inverse = torch.empty(0)
        self.scale: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def due(self, step: int) -> bool:
        """Whether the curvature is refreshed before optimization step ``step`` of the unit."""
        return step % self.every == 0 and len(self.grads) < self.rank

    def refresh(self, out_q: torch.Tensor, y: torch.Tensor, tail_mode: Callable) -> None:
        """Add one rank from the unit's current quantized outputs ``out_q`` for all samples (float target ``y``);
        ``tail_mode`` is the context that runs the tail in float."""
        grad = torch.zeros(out_q[0].numel())
        with tail_mode(), torch.enable_grad():
            for i in range(0, len(out_q), self.batch_size):
                z = out_q[i:i + self.batch_size].to(self.device).requires_grad_(True)
                log_q = F.log_softmax(self.tail(z) / KL_TEMPERATURE, -1)
                log_fp = F.log_softmax(self.logits_fp[i:i + self.batch_size].to(self.device) / KL_TEMPERATURE, -1)
                loss = F.kl_div(log_q, log_fp, log_target=True, reduction="sum")
                (g,) = torch.autograd.grad(loss, z)
                grad += g.abs().sum(0).flatten().cpu()
        n = distributed.sum_over_ranks(len(out_q))[0]  # under torchrun: the mean over every rank's samples
        self.grads.append(distributed.summed(grad) / n)
        self.errors.append(distributed.summed((out_q - y).abs().flatten(1).sum(0)) / n)
        d = torch.stack(self.errors)
        self.inverse = torch.linalg.pinv(d @ d.T)
        self.scale = None  # the next error() sets each part's reference value

    def error(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The weighted error of a batch: the mean of the low-rank and the diagonal part, each relative to its
        value on the first batch after the last refresh, times that batch's relative MSE."""
        g = torch.stack(self.grads).to(out.device)
        e = (out - y).abs().flatten(1)
        a = e @ g.T
        low = ((a @ self.inverse.to(out.device)) * a).sum(1).mean()
        diag = (e.pow(2) * g.mean(0)).mean()
        if self.scale is None:  # one reference for every rank, so the ranks optimize the same objective
            relative = e.pow(2).mean() / y.pow(2).mean().clamp_min(1e-12)
            self.scale = tuple(torch.tensor(distributed.mean_over_ranks(float(v.detach()), len(out))).clamp_min(1e-30)
                               for v in (low, diag, relative))
        return self.scale[2] * (low / self.scale[0] + diag / self.scale[1]) / 2


def squared_gradient(tail: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor) -> torch.Tensor:
    """The squared gradient w.r.t. ``z`` (a unit's float output, requiring grad) of the cross-entropy of the
    prediction ``tail`` makes from ``z`` against its own top class: BRECQ's diagonal Fisher, with pseudo-labels so
    calibration needs no labels (``loss="fisher"``)."""
    logits = tail(z)
    loss = F.cross_entropy(logits, logits.detach().argmax(-1), reduction="sum")
    (grad,) = torch.autograd.grad(loss, z)
    return grad.pow(2)


def perturbation_curvature(tail: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor) -> torch.Tensor:
    """``|H 1|`` per element of ``z`` (a unit's float output, requiring grad), where ``H`` is the Hessian w.r.t. ``z``
    of the KL between the float prediction and the one ``tail`` makes from ``z``, both softened by
    ``KL_TEMPERATURE``: how much a small uniform perturbation of the output moves the loss gradient (APHQ-ViT).
    At ``z`` itself the KL and its gradient are zero but its curvature is not; APHQ takes the difference of two
    gradients at ``z +- eps``, here the Hessian-vector product is exact (double backward)."""
    logits = tail(z) / KL_TEMPERATURE
    kl = F.kl_div(logits.log_softmax(-1), logits.detach().softmax(-1), reduction="sum")
    (grad,) = torch.autograd.grad(kl, z, create_graph=True)
    (hessian_ones,) = torch.autograd.grad(grad.sum(), z)
    return hessian_ones.abs()
