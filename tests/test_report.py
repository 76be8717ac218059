"""The README's results section is generated from benchmarks/results/ and must stay in sync."""
from pathlib import Path

from vitq.report import load_results, readme_block, render

ROOT = Path(__file__).resolve().parents[1]


def test_readme_results_match_records():
    generated = render(load_results())
    assert readme_block(ROOT / "README.md") == generated, "run `vitq report --update-readme README.md`"


def test_every_results_file_has_provenance_and_records():
    results = load_results()
    assert results, "no results files"
    for name, prov, records in results:
        assert records, name
        for key in ("command", "git_commit", "timestamp", "machine", "versions"):
            assert key in prov, f"{name} lacks {key}"


def test_setting_tells_apart_records_that_differ_only_in_overrides():
    from vitq.report import setting

    base = {"method": "percentile", "config": {"percentile": 99.9, "softmax_quantizer": "log2"}}
    mixed = {**base, "config": {**base["config"], "overrides": {"blocks.*.mlp.fc2.input_quant": {"bits": 8}},
                                "post_act_quantizer": "twin_uniform"}}
    assert setting(base) == "softmax=log2, percentile=99.9"
    assert setting(mixed) == ('softmax=log2, percentile=99.9, post-act=twin_uniform, '
                              'blocks.*.mlp.fc2.input_quant: {"bits": 8}')
