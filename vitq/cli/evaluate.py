"""`vitq eval`: a quantized checkpoint against its own fp32 weights on the evaluation split."""
from __future__ import annotations

import json
from pathlib import Path

import click

from vitq.cli.options import (
    batch_option,
    check_device,
    check_input_file,
    check_results_file,
    data_option,
    data_or_demo,
    device_option,
    limit_option,
    rank_shard,
    results_option,
    runs_distributed,
    warn_label_space,
)


@click.command("eval")
@click.argument("qcheckpoint", type=click.Path(path_type=Path))
@data_option
@limit_option
@batch_option
@device_option
@click.option("--json", "as_json", is_flag=True, help="Print the result record as JSON instead of a table.")
@results_option
@runs_distributed
def eval_cmd(qcheckpoint: Path, data: Path | None, limit: int | None, batch_size: int, device: str, as_json: bool,
             results_file: Path | None) -> None:
    """Evaluate a quantized checkpoint against its own fp32 weights on the evaluation split."""
    check_input_file(qcheckpoint, "quantized checkpoint")
    check_results_file(results_file, qcheckpoint, data)
    device = check_device(device)
    from calib.datasets import open_split
    from calib.loaders import load_batches
    from calib.transforms import eval_transform
    from vitq import distributed
    from vitq.pipeline.checkpoint import load_quantized
    from vitq.pipeline.workflow import accuracy_table, evaluate_quantized
    from vitq.results import write_results

    data_path = data_or_demo(data)
    dataset = open_split(data_path, "evaluation", None, limit=limit)  # data errors before the model loads
    qm = load_quantized(qcheckpoint)
    warn_label_space(qm.model, qm.model_name, dataset, data_path)
    dataset.transform = eval_transform(qm.model)
    main = distributed.is_main()
    batches = load_batches(rank_shard(dataset), batch_size, progress=main, desc="load evaluation images")
    record = evaluate_quantized(qm, batches, str(data_path), device, progress=main).record()
    if not main:
        return
    if distributed.active():
        record["distributed"] = distributed.shard_record(len(dataset))
    if results_file:
        write_results(results_file, [record])
    if as_json:
        click.echo(json.dumps(record, indent=2))
    else:
        click.echo(accuracy_table([record]))
        click.echo(f"left in float: {', '.join(record['float_layers']) or 'nothing'}")
