"""`vitq report`: regenerate every published table and figure from the result records."""
from __future__ import annotations

import click

from vitq.errors import VitqError


@click.command("report")
@click.option("--check", is_flag=True, help="Change nothing; fail if the README, docs/results.md or a figure is stale.")
def report_cmd(check: bool) -> None:
    """Rewrite the README's generated tables, docs/results.md and docs/figures/*.png from benchmarks/results/*.json."""
    from vitq.report import check_all, update_all

    if check:
        stale = check_all()
        if stale:
            raise VitqError(f"stale generated output: {', '.join(stale)} (run `vitq report`)")
        click.echo("generated tables and figures match the records")
        return
    for path in update_all():
        click.echo(f"wrote {path}")
