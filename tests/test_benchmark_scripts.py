"""The benchmark scripts load against the current API and document every option (their sweeps run for hours,
so tests only import them; run one with the smallest settings, e.g. --eval-limit 8, to check it end to end)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(path: Path):
    spec = importlib.util.spec_from_file_location(f"benchmark_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses in a script look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", sorted(BENCHMARKS.glob("*.py")), ids=lambda p: p.name)
def test_script_imports_and_every_option_has_help(path):
    main = load_script(path).main
    if not isinstance(main, click.Command):
        return  # a script without options (hybrid_summary.py)
    undocumented = [p.name for p in main.params if isinstance(p, click.Option) and not p.help]
    assert not undocumented, f"{path.name}: options without help text: {undocumented}"
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0, result.output
    assert "python benchmarks/" in (load_script(path).__doc__ or ""), f"{path.name}: no example command in the docstring"


@pytest.mark.parametrize("args,message", [(["--set", "bogus=1"], "unknown setting bogus"),
                                          (["--bits", "W9A9"], "bit-width must be an integer in 2..8")])
def test_hybrid_table_rejects_a_bad_setting_in_one_line_before_loading_images(args, message, tmp_path):
    root = BENCHMARKS.parent
    out = tmp_path / "t.json"
    result = CliRunner().invoke(load_script(BENCHMARKS / "hybrid_table.py").main, [
        "--checkpoint", str(root / "assets/cifar10/mobilevit_xxs.safetensors"), "--data", str(tmp_path),
        "--methods", "pfcr", "--out", str(out), *args])
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_lowbit_export_seeds_redraw_the_reconstruction_and_the_rotations():
    script = load_script(BENCHMARKS / "bench_export_lowbit.py")
    rotated = script.recipes_for("W4A4", "percentile", {"rotate": True}, [0, 1])
    assert [(r.rotation_seed, r.seed) for r in rotated] == [(0, 0), (1, 1)]
    assert [r.seed for r in script.recipes_for("W4A4", "percentile", {}, [0, 1])] == [None]  # nothing random: one run
    pinned = script.recipes_for("W4A4", "pfcr", {"rotate": True, "rotation_seed": 0}, [0, 1])
    assert [(r.rotation_seed, r.seed) for r in pinned] == [(0, 0), (0, 1)]
