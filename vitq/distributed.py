"""Data parallelism under torchrun: which images a rank owns, and the few collectives that make N
ranks compute what one process computes.

``torchrun --nproc-per-node N -m vitq quantize|eval ...`` starts N copies of a command; each reads
``RANK`` / ``WORLD_SIZE`` from the environment, joins one process group (NCCL on CUDA, gloo on CPU)
and works on its shard of the images. Everything here is a no-op in a single process, so the
library runs the same code either way:

* shards: contiguous, in dataset order, the last one takes the remainder (:func:`shard_plan`);
* observers: min/max by all-reduce, the percentile observer's kept tails and the MSE observer's
  samples gathered (``Observer.merge``), so every rank computes the scales of the union;
* sums over images (bias correction, scale-search losses, reconstruction norms and losses,
  evaluation tallies) by all-reduce (:func:`sum_over_ranks`);
* reconstruction gradients by all-reduce every step (:func:`reduce_gradients`), so all ranks hold
  identical parameters, which :func:`check_identical` verifies at the end.

A rank that fails prints its own one-line error and exits non-zero; torchrun then stops the others,
and every collective has a timeout (``VITQ_DIST_TIMEOUT`` seconds, default 600) so a rank left
waiting on a lost peer ends instead of hanging.
"""
from __future__ import annotations

import datetime
import hashlib
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from vitq.errors import VitqError

DEFAULT_TIMEOUT_S = 600


def launched() -> bool:
    """Started by torchrun (or another launcher that sets WORLD_SIZE) with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0 (or a single process): the one that prints, draws progress bars and writes files."""
    return rank() == 0


def timeout_seconds() -> int:
    raw = os.environ.get("VITQ_DIST_TIMEOUT", str(DEFAULT_TIMEOUT_S))
    try:
        value = int(raw)
    except ValueError:
        raise VitqError(f"VITQ_DIST_TIMEOUT must be a whole number of seconds, got {raw!r}") from None
    if value <= 0:
        raise VitqError(f"VITQ_DIST_TIMEOUT must be positive, got {value}")
    return value


def local_device(device: str) -> str:
    """Under torchrun, ``cuda`` means this rank's GPU (``cuda:LOCAL_RANK``)."""
    if launched() and device == "cuda":
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


@contextmanager
def process_group(device: str) -> Iterator[None]:
    """Join the job's process group for the duration of a command (nothing without torchrun)."""
    if not launched() or dist.is_initialized():
        yield
        return
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(torch.device(device))
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_seconds()))
    try:
        yield
    finally:
        dist.destroy_process_group()


def shard_plan(n: int, world: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of each rank's contiguous share of ``n`` items: ``n // world`` each, the last
    rank also takes the remainder. Refuses a plan that leaves a rank without an item."""
    if n < world:
        raise VitqError(f"{n} images cannot be shared by {world} processes (each needs at least one); "
                        "use fewer processes or more images")
    base = n // world
    return [(r * base, n if r == world - 1 else (r + 1) * base) for r in range(world)]


def my_shard(n: int) -> range:
    start, stop = shard_plan(n, world_size())[rank()]
    return range(start, stop)


def shard_record(n: int) -> dict[str, Any]:
    """What a record keeps of the split: one entry per rank."""
    return {"world_size": world_size(), "shards": [list(s) for s in shard_plan(n, world_size())]}


def sum_over_ranks(*values: float) -> list[float]:
    """Each value summed over the ranks (float64)."""
    if not active():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return t.cpu().tolist()


def mean_over_ranks(value: float, n: int) -> float:
    """A mean over this rank's ``n`` samples -> the mean over every rank's samples (itself in one process)."""
    if not active():
        return value
    total, count = sum_over_ranks(value * n, n)
    return total / count


def sample_mean(t: torch.Tensor) -> torch.Tensor:
    """The mean of ``t`` over its first (sample) dimension and every rank's samples, keeping that dimension."""
    if not active():
        return t.mean(0, keepdim=True)
    return summed(t.sum(0, keepdim=True)) / sum_over_ranks(len(t))[0]


def summed(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed elementwise over the ranks (accumulated in float64, returned in ``t``'s dtype)."""
    if not active():
        return t
    total = t.detach().to(_comm_device(), torch.float64)
    dist.all_reduce(total)
    return total.to(t.device, t.dtype)


def reduce_min_max(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if not active():
        return lo, hi
    lo, hi = lo.to(_comm_device()).clone(), hi.to(_comm_device()).clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    return lo, hi


def gather(obj: Any) -> list[Any]:
    """``obj`` from every rank, in rank order (``[obj]`` in a single process)."""
    if not active():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def from_main(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def reduce_gradients(params: Sequence[torch.Tensor]) -> None:
    """Sum each parameter's gradient over the ranks (each rank weights its loss by its share of the batch)."""
    if not active():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])  # one collective per step, not one per tensor
    dist.all_reduce(flat)
    for g, part in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(part.view_as(g))


def check_identical(model: nn.Module, what: str) -> None:
    """Fail when the ranks' copies of ``model`` differ in any bit (they must: every rank applies the same
    merged statistics and the same summed gradients); names the first tensors that differ."""
    if not active():
        return
    digests = {name: hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
               for name, t in model.state_dict().items()}
    every = gather(digests)
    differ = [name for name in digests if any(d.get(name) != digests[name] for d in every)]
    if differ:
        raise RuntimeError(f"after {what} the ranks hold different values of {differ[:5]} ({len(differ)} tensors)")


def _comm_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
