"""`vitq` command line: every command parses its options, calls the Python API and prints.

Every user mistake surfaces as ``Error: <one line>`` with exit status 1 (2 for a malformed command
line, click's usage errors) and no traceback, no partial output files; Ctrl-C prints ``Interrupted``
and exits 130. Commands check their outputs and option values before loading a model or decoding an
image. Commands import torch, timm and onnx inside their bodies, so ``vitq --help`` and ``vitq list``
answer without loading them.
"""
from __future__ import annotations

import logging
import os
import sys

import click

from vitq.cli.bench import bench_cmd
from vitq.cli.demo import demo_cmd
from vitq.cli.evaluate import eval_cmd
from vitq.cli.export import export_cmd
from vitq.cli.listing import list_cmd
from vitq.cli.quantize import quantize_cmd
from vitq.cli.report import report_cmd
from vitq.errors import EXIT_INTERRUPTED, USER_ERRORS

DISTRIBUTED_COMMANDS = ("quantize", "eval")  # the commands that shard their images under torchrun


def rank_label() -> str:
    """``"rank N: "`` in a job of several processes (torchrun sets RANK and WORLD_SIZE), else ``""``."""
    return f"rank {os.environ.get('RANK', '0')}: " if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""


class VitqGroup(click.Group):
    """Turns user errors (``vitq.errors.USER_ERRORS``) into click's one-line ``Error:`` and exit status 1,
    and Ctrl-C into one ``Interrupted`` line and exit status 130 (temporary files are gone by then).
    Under torchrun each rank's error names the rank, and a command that cannot shard is refused."""

    def resolve_command(self, ctx: click.Context, args: list[str]):
        name, command, rest = super().resolve_command(ctx, args)
        if rank_label() and command is not None and command.name not in DISTRIBUTED_COMMANDS:
            raise click.UsageError(f"vitq {command.name} runs in one process; launch it without torchrun "
                                   f"(under torchrun: {', '.join(DISTRIBUTED_COMMANDS)})")
        return name, command, rest

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except USER_ERRORS as e:
            raise click.ClickException(rank_label() + (" ".join(str(e).split()) or type(e).__name__)) from None
        except KeyboardInterrupt:
            click.echo("Interrupted", err=True)
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None


@click.group(cls=VitqGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="-v for info, -vv for debug logging.")
@click.option("--torch-threads", type=click.IntRange(min=1), default=None,
              help="CPU threads torch uses in this process (default: OMP_NUM_THREADS, else every core); "
                   "on a machine shared with other jobs, their sum should not exceed the cores.")
def main(verbose: int, torch_threads: int | None) -> None:
    """vitq: post-training quantization of vision transformers, ONNX QDQ export and benchmarking.

    Typical flow: vitq quantize -> vitq eval -> vitq export -> vitq bench (vitq demo runs it all on
    the bundled DeiT-Tiny). vitq list shows the model families, methods and recipe presets."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    if rank_label() and os.environ.get("RANK", "0") != "0":
        level = logging.ERROR  # one rank reports; the others speak only when they fail
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if torch_threads is not None:
        set_torch_threads(torch_threads)


def set_torch_threads(n: int) -> None:
    """Before torch loads (the commands import it lazily) OMP_NUM_THREADS is enough; a process that has
    torch loaded already (the Python API, tests) is told directly."""
    os.environ["OMP_NUM_THREADS"] = str(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)


for command in (quantize_cmd, eval_cmd, export_cmd, bench_cmd, demo_cmd, report_cmd, list_cmd):
    main.add_command(command)
