"""`vitq list`: model families, methods, recipe presets, reconstruction presets and bench targets."""
from __future__ import annotations

import click


@click.command("list")
def list_cmd() -> None:
    """List supported model families, methods, recipe presets and bench targets."""
    from vitq.bench.targets import TARGETS
    from vitq.methods import METHODS
    from vitq.models.families import FAMILIES
    from vitq.recipe import RECIPE_PRESETS
    from vitq.recon.config import RECON_PRESETS

    click.echo("model families:")
    for name in FAMILIES.names():
        family = FAMILIES.get(name)
        click.echo(f"  {name:<18} {', '.join(family.patterns):<28} {family.summary}")
    click.echo("methods (--method):")
    for kind in ("calibration", "baseline", "reconstruction"):
        for name in METHODS.names():
            if METHODS.get(name).kind == kind:
                click.echo(f"  {name:<18} {METHODS.get(name).summary}")
    click.echo("recipe presets (--preset):")
    for name, preset in RECIPE_PRESETS.items():
        extra = ", ".join(f"{k}={v}" for k, v in preset.get("settings", {}).items())
        click.echo(f"  {name:<18} {preset['bits']} {preset['method']}{f' ({extra})' if extra else ''}: {preset['summary']}")
    click.echo(f"reconstruction presets (--set recon_preset=...): {', '.join(RECON_PRESETS)}")
    click.echo(f"bench targets (vitq bench --target): {', '.join(TARGETS.names())}")
