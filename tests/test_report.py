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


def test_recon_report_matrix_averages_seeds_and_lists_each(tmp_path):
    import json
    import subprocess
    import sys

    def record(method: str, bits: str, top1: float) -> dict:
        return {"method": method, "bits": bits, "top1": top1, "drop": 78.0 - top1, "agreement": top1 + 5,
                "kl": 0.5, "seconds": 100.0, "device": "cpu"}
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"records": [record("pfcr", "W4A4", 70.0), record("pfcr", "W4A4", 72.0),
                                            record("brecq", "W3A3", 40.0)]}))
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "recon_report.py"), "--matrix", str(path)],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0] == "| method | W4A4 | W3A3 |"
    assert out[2].startswith("| pfcr | 70.00, 72.00 / drop 7.00 / agree 76.0 / KL 0.50 / 100 s on cpu | - |")
    assert out[3] == "| brecq | - | 40.00 / drop 38.00 / agree 45.0 / KL 0.50 / 100 s on cpu |"
    only = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "recon_report.py"), "--matrix", f"{path}:brecq"],
                          capture_output=True, text=True, check=True).stdout.splitlines()
    assert [line.split(" |")[0] for line in only[2:]] == ["| brecq"]
    wrong = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "recon_report.py"), "--matrix", f"{path}:pfrc"],
                           capture_output=True, text=True)
    assert wrong.returncode == 1 and "has no records of pfrc; its methods: brecq, pfcr" in wrong.stderr
