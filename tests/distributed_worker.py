"""One rank of the 2-process gloo jobs in tests/test_distributed.py (launched by torch.distributed.run).

    python -m torch.distributed.run --nproc-per-node 2 tests/distributed_worker.py library OUT_DIR
    python -m torch.distributed.run --nproc-per-node 2 tests/distributed_worker.py fail OUT_DIR

``library``: a tiny random DeiT quantized (min-max, percentile), evaluated and reconstructed (PFCR) on
this rank's shard; each rank saves what it got to OUT_DIR/<what>_rank<r>.pt for the test to compare with
one process. ``fail``: rank 1 runs a CLI command that fails on bad input while rank 0 waits in a
collective; the job must end with rank 1's one-line error.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from vitq import distributed

N_IMAGES, BATCH, N_CLASSES = 16, 8, 10


def tiny_model() -> torch.nn.Module:
    import timm

    torch.manual_seed(0)
    return timm.create_model("deit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                             num_classes=N_CLASSES).eval()


def data() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every image of the job, in batches of BATCH (each rank's shard is whole batches of it)."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(N_IMAGES, 3, 32, 32, generator=gen)
    y = torch.randint(N_CLASSES, (N_IMAGES,), generator=gen)
    return [(x[i:i + BATCH], y[i:i + BATCH]) for i in range(0, N_IMAGES, BATCH)]


def shard(batches: list) -> list:
    """This rank's batches (the shard plan of the images, in whole batches)."""
    images = distributed.my_shard(N_IMAGES)
    return [b for i, b in enumerate(batches) if i * BATCH in images]


def quantized(bits: str, method: str, batches: list, **settings: object):
    from vitq.pipeline.quantize import quantize
    from vitq.recipe import make_recipe

    return quantize(tiny_model(), "deit_tiny_patch16_224", [x for x, _ in batches], make_recipe(bits, method, settings, seed=0),
                    progress=False)


RECON = {"recon_preset": "ci", "samples": N_IMAGES, "iters": 8, "model_iters": 4, "batch_size": 8}


def library(out: Path) -> None:
    from vitq.calibration import FloatView
    from vitq.evaluate import evaluate

    mine = shard(data())
    r = distributed.rank()
    for method in ("minmax", "percentile"):
        torch.save(quantized("W8A8", method, mine).model.state_dict(), out / f"calib_{method}_rank{r}.pt")
    model = quantized("W8A8", "minmax", mine).model
    results = evaluate({"fp32": FloatView(model), "quant": model}, mine, progress=False)
    torch.save({k: v.to_dict() for k, v in results.items()}, out / f"eval_rank{r}.pt")
    qm = quantized("W4A4", "pfcr", mine, **RECON)
    torch.save({"state": qm.model.state_dict(), "losses": qm.recon_losses}, out / f"recon_rank{r}.pt")


def fail(out: Path) -> None:
    from vitq.cli import main

    if distributed.rank() == 1:
        main(["quantize", "no_such_model_name", str(out / "q.pt")])
    distributed.sum_over_ranks(1.0)  # rank 0 waits here for a peer that is gone


if __name__ == "__main__":
    mode, out_dir = sys.argv[1], Path(sys.argv[2])
    torch.set_num_threads(1)
    with distributed.process_group("cpu"):
        {"library": library, "fail": fail}[mode](out_dir)
