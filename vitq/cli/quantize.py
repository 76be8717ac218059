"""`vitq quantize`: a float model + calibration images + a recipe -> a reloadable quantized checkpoint."""
from __future__ import annotations

from pathlib import Path

import click

from vitq.cli.options import (
    batch_option,
    check_device,
    check_input_file,
    check_output,
    data_option,
    data_or_demo,
    device_option,
    rank_shard,
    runs_distributed,
    seed_everything,
    seed_option,
    warn_unmatched_overrides,
)
from vitq.errors import VitqError


@click.command("quantize")
@click.argument("model_name")
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--preset", default=None, help="A named recipe (`vitq list`), e.g. w4a4-pfcr-fast. Default: w8a8.")
@click.option("--recipe", "recipe_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A recipe file (.json / .yaml), e.g. the `recipe` of a result record.")
@click.option("--bits", default=None, help="WxAy, x and y in 2..8 (over the preset / recipe).")
@click.option("--method", default=None, help="A method from `vitq list` (over the preset / recipe).")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="A recipe setting, repeatable (percentile, calibration, iters, recon_preset, overrides, ...); "
                   "a key the method does not take is an error that lists the keys it takes. Per-quantizer: "
                   "'overrides={\"blocks.*.mlp.fc2.input_quant\": {\"bits\": 8}}'.")
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None, help="Local float weights (.safetensors/.pth).")
@click.option("--pretrained", is_flag=True, help="Download timm hub weights (needs internet).")
@data_option
@click.option("--calib-size", type=click.IntRange(min=1), default=None, help="At most this many calibration images.")
@batch_option
@seed_option
@device_option
@click.option("--resume", is_flag=True,
              help="Continue a killed reconstruction from OUTPUT.resume (same command; another recipe, model or "
                   "calibration set is refused).")
@runs_distributed
def quantize_cmd(model_name: str, output: Path, preset: str | None, recipe_file: Path | None, bits: str | None,
                 method: str | None, settings: tuple[str, ...], checkpoint: Path | None,
                 pretrained: bool, data: Path | None, calib_size: int | None, batch_size: int, seed: int, device: str,
                 resume: bool) -> None:
    """Quantize MODEL_NAME (a timm name) with calibration images and save a reloadable checkpoint to OUTPUT (.pt).

    A reconstruction keeps its state after every finished unit in OUTPUT.resume (removed once OUTPUT is
    saved), so a killed run continues with --resume and ends bit-identical to an uninterrupted one.
    """
    from vitq import distributed
    from vitq.recipe import parse_settings, recipe_from_options

    check_output(output, checkpoint, recipe_file, data, suffix=".pt")
    if resume and distributed.active():
        raise VitqError("--resume runs in one process; run it without torchrun (the state holds one rank's samples)")
    recipe = recipe_from_options(preset, recipe_file, bits, method, parse_settings(settings), seed=seed)
    device = check_device(device)

    from calib.datasets import open_split
    from calib.loaders import images_only, load_batches
    from calib.transforms import eval_transform
    from vitq.models.loading import check_model_name, create_float_model
    from vitq.pipeline.checkpoint import save_quantized
    from vitq.pipeline.quantize import quantize
    from vitq.recon.resume import ResumeFile

    check_model_name(model_name)
    if checkpoint is not None:
        check_input_file(checkpoint, "checkpoint")
    data_path = data_or_demo(data)
    dataset = open_split(data_path, "calibration", None, limit=calib_size)  # data errors before the model loads
    seed_everything(seed)
    model = create_float_model(model_name, checkpoint=checkpoint, pretrained=pretrained)
    dataset.transform = eval_transform(model)
    main = distributed.is_main()
    calib = load_batches(rank_shard(dataset), batch_size, progress=main, desc="load calibration images")
    state = None if distributed.active() else ResumeFile(resume_path(output), resume=resume)
    if resume and not state.path.is_file():
        click.echo(f"warning: --resume: no state at {state.path}; starting from the beginning", err=True)
    qm = quantize(model, model_name, images_only(calib), recipe, device=device, progress=main, inplace=True, state=state)
    if not main:
        return
    warn_unmatched_overrides(recipe, qm.model, model_name)
    save_quantized(output, qm, {"calibration_images": len(dataset), "data": str(data_path), "seed": seed,
                                "float_layers": qm.float_layers,
                                **({"distributed": distributed.shard_record(len(dataset))} if distributed.active() else {})})
    if state is not None:
        state.remove()
    for level in (qm.recon_losses or {}).get("levels", []):
        click.echo(f"{level['level']}: {level['units']} units, relative MSE {level['before']:.4f} -> {level['after']:.4f} "
                   f"(worst {level['worst_unit']} {level['worst_after']:.4f})")
    derived = ", ".join(f"{k.split('.')[-1]}={_value(recipe, k)}" for k in recipe.derived)
    click.echo(f"saved {model_name} {recipe.bits} ({recipe.method}, {len(dataset)} calibration images) to {output}")
    if derived:
        click.echo(f"derived: {derived}")


def resume_path(output: Path) -> Path:
    """Where the reconstruction state of a run writing ``output`` lives."""
    return output.with_name(output.name + ".resume")


def _value(recipe, key: str) -> object:
    section, _, name = key.rpartition(".")
    owner = {"": recipe, "format": recipe.format, "recon": recipe.recon}[section]
    return getattr(owner, name)
