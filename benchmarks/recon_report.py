"""Markdown tables for docs/reconstruction.md from the recon result records.

    python benchmarks/recon_report.py benchmarks/results/recon_table*.json
    python benchmarks/recon_report.py --matrix benchmarks/results/final_table_*.json   # method x bit-width
    python benchmarks/recon_report.py --matrix a.json:pfcr,brecq b.json   # only pfcr and brecq from a.json

``--matrix`` is the issue-shaped summary: one row per method, one column per bit-width, repeated
runs of a cell (other seeds) averaged, with every seed's top-1 listed so the noise stays visible.
Reads records of both forms: ``recipe`` (the resolved reconstruction settings in ``recipe["recon"]``)
and the older ``config`` with a top-level ``recon`` (``vitq.report.records.legacy_config``).
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from vitq.methods import METHODS, get_method
from vitq.quant.config import parse_bits
from vitq.recon.schedules import Schedule
from vitq.report.records import legacy_config

COLUMNS = ("bits", "method", "init", "pos", "samples/iters/coarsest, lr_rounding", "softmax", "ln_reparam", "n_images", "top1",
           "fp32_top1", "drop", "agreement", "kl", "final_rel_mse", "seconds", "device", "peak_rss_mb")


def schedule(method: str) -> Schedule | None:
    """The reconstruction schedule of a registered method (records also name fp32 and export variants)."""
    return get_method(method).schedule if method in METHODS else None


def row(record: dict) -> list[str]:
    config, recon = legacy_config(record)  # recon: the resolved reconstruction settings, {} for none
    sched = schedule(record["method"])

    def applies(key: str) -> bool:
        return sched is not None and key not in sched.inapplicable()

    # POS stages and reopening exist only where the schedule has them; the others run one joint stage
    pos = recon.get("pos", "-") if applies("pos") else ("joint" if recon else "-")
    if recon and recon.get("anneal", "level") != "level":
        pos = f"{pos}, {recon['anneal']} anneal"
    if recon.get("reopen") and applies("reopen"):
        pos = f"{pos}, reopen {recon['reopen']}"
    if recon and recon.get("loss", "mse") != "mse":
        pos = f"{pos}, loss {recon['loss']}"
    budget = "-"
    if recon:
        samples = f"{recon['samples']} aug" if recon.get("augment") else str(recon["samples"])
        budget = f"{samples}/{recon['iters']}/{recon['coarsest']}, lr {recon['lr_rounding']}"
        model_iters = recon.get("model_iters", 0)
        if model_iters and sched is not None and sched.progressive:  # a model level after the block levels
            budget += f" + model {model_iters}" + (f" (bias lr {recon['lr_bias']})" if recon.get("lr_bias") else "")
        elif model_iters:  # baselines get the model level's compute as iterations per unit
            budget += f" + {model_iters} per unit"
        if recon.get("seed", 0):
            budget += f" seed {recon['seed']}"
    init = "-"  # the calibration a reconstruction started from
    if recon:
        init = config.get("init_method", "mse")
        if init == "percentile":
            init += f" {config['percentile']}"
    observers = [f"{pattern}: {opts['observer']}" for pattern, opts in config.get("overrides", {}).items()
                 if "observer" in opts]
    observers += [f"{pattern}: {opts['bits']}-bit" for pattern, opts in config.get("overrides", {}).items()
                  if "bits" in opts]
    if config.get("weight_observer"):
        observers.append(f"weights: {config['weight_observer']}")
    if observers:
        init += f" ({', '.join(observers)})"
    # mean relative MSE of the last level's units (records written since recon_losses existed)
    final = (record.get("recon_losses", {}).get("levels") or [{"after": "-"}])[-1]["after"]
    values = {"peak_rss_mb": "-", **record, "final_rel_mse": final, "init": init, "pos": pos, "samples/iters/coarsest, lr_rounding": budget,
              "softmax": config.get("softmax_quantizer", "uniform"),
              "ln_reparam": config.get("ln_reparam", False)}
    return [(f"{values[c]:.4f}" if c == "final_rel_mse" else f"{values[c]:.2f}") if isinstance(values[c], float)
            else str(values[c]) for c in COLUMNS]


def cell(runs: list[dict]) -> str:
    """'top-1 (each run) / drop / agreement / KL / seconds on device' of one method at one bit-width, averaged."""
    def mean(key: str) -> float:
        return sum(r[key] for r in runs) / len(runs)
    top1 = ", ".join(f"{r['top1']:.2f}" for r in runs)
    return (f"{top1} / drop {mean('drop'):.2f} / agree {mean('agreement'):.1f} / KL {mean('kl'):.2f}"
            f" / {mean('seconds'):.0f} s on {'+'.join(sorted({r['device'] for r in runs}))}")


def matrix(records: list[dict]) -> None:
    bits = sorted({r["bits"] for r in records}, key=lambda b: -parse_bits(b)[0])
    methods = list(dict.fromkeys(r["method"] for r in records))
    click.echo("| method | " + " | ".join(bits) + " |")
    click.echo("|---|" + "---|" * len(bits))
    for method in methods:
        cells = [[r for r in records if r["method"] == method and r["bits"] == b] for b in bits]
        click.echo(f"| {method} | " + " | ".join(cell(runs) if runs else "-" for runs in cells) + " |")


def load(spec: str) -> list[dict]:
    """The records of ``FILE`` or, for ``FILE:METHOD,...``, only those of the listed methods."""
    path, _, methods = spec.partition(":")
    if not Path(path).is_file():
        raise click.ClickException(f"no such results file: {path}")
    records = json.loads(Path(path).read_text())["records"]
    if not methods:
        return records
    wanted, present = methods.split(","), {r["method"] for r in records}
    if missing := [m for m in wanted if m not in present]:
        raise click.ClickException(f"{path} has no records of {', '.join(missing)}; its methods: {', '.join(sorted(present))}")
    return [r for r in records if r["method"] in wanted]


@click.command()
@click.argument("specs", nargs=-1, required=True, metavar="FILE[:METHOD,...]...")
@click.option("--matrix", "matrix_view", is_flag=True, help="One row per method, one column per bit-width, seeds averaged.")
def main(specs: tuple[str, ...], matrix_view: bool) -> None:
    """Markdown tables of the recon result records in FILE (only METHOD's records, when given)."""
    records = [r for spec in specs for r in load(spec)]
    if matrix_view:
        matrix(records)
        return
    records.sort(key=lambda r: (r["bits"], r["method"]))
    click.echo("| " + " | ".join(COLUMNS) + " |")
    click.echo("|" + "---|" * len(COLUMNS))
    for r in records:
        click.echo("| " + " | ".join(row(r)) + " |")


if __name__ == "__main__":
    main()
