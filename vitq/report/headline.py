"""The README's curated headline tables, each computed from named result files (no number typed by hand).

* :func:`vit_accuracy`: DeiT-Tiny, method x bit-width at one reconstruction budget, seeds averaged
  (the records behind docs/reconstruction.md "The method x bit-width table at one budget").
* :func:`deployment`: DeiT-Tiny fp32 vs int8 in onnxruntime on the CPU: latency, speedup, size, accuracy.
* :func:`hybrid_summary`: hybrid ViTs (Q-HyViT) on CIFAR-10, family x bits x method, drop vs fp32
  (also docs/qhyvit_results.md through benchmarks/hybrid_summary.py) and :func:`hybrid_speed`.
* :func:`demo`: what ``vitq demo`` prints, from ``demo_deit_tiny.json``.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

from vitq.errors import VitqError
from vitq.report.records import Results, labelled_model
from vitq.report.tables import markdown_table

Record = dict[str, Any]

# (file, methods taken from it or None for all): the same selection as the matrix command in docs/reconstruction.md.
# final_table_w*.json hold the first AdaRound runs (layer target W x); the act_target files replace them.
CALIBRATION = ("percentile", "mse", "minmax")
VIT_ACCURACY_SOURCES: tuple[tuple[str, tuple[str, ...] | None], ...] = (
    ("final_table_w6a6.json", (*CALIBRATION, "pfcr", "brecq")),
    ("final_table_w4a4.json", (*CALIBRATION, "pfcr", "brecq")),
    ("final_table_w4a4_seed1.json", None),
    ("final_table_w4a4_seed2_pfcr.json", None),
    ("final_table_w4a4_seed2_brecq.json", None),
    ("final_table_w3a3.json", (*CALIBRATION, "pfcr", "brecq")),
    ("final_table_w3a3_seed1.json", None),
    ("recon_model_level_bias_1e-4_w3a3_pfcr_seed1.json", None),  # PFCR W3A3 seed 1 at the same settings (session 8)
    ("final_table_adaround_act_target.json", None),
    ("final_table_adaround_act_target_w6a6.json", None),
)
VIT_METHODS = (("pfcr", "PFCR (vitq)"), ("brecq", "BRECQ"), ("adaround", "AdaRound"), ("percentile", "percentile calibration only"))
VIT_BITS = ("W6A6", "W4A4", "W3A3")

DEPLOYMENT_FILE = "bench_deit_tiny_cpu.json"
DEPLOYMENT_VARIANTS = ("fp32", "fp32-opt", "ort-quantize-static", "vitq-int8", "vitq-int8-s8s8")
DEMO_FILE = "demo_deit_tiny.json"

HYBRID_PREFIX = "hybrid_cifar10_"
HYBRID_SPEED_PREFIX = "bench_hybrid_integer_"
HYBRID_HIGH_RES_SUFFIX = "_256px.json"
# speed only, at a resolution the model cannot be re-timed at from its CIFAR-10 checkpoint (random weights):
# bench_speed_integer_<model>_224px.json
HYBRID_SPEED_ONLY_PREFIX, HYBRID_SPEED_ONLY_SUFFIX = "bench_speed_integer_", "_224px.json"
HYBRID_METHODS = ("minmax", "easyquant", "fqvit", "ptq4vit", "qhyvit")
HYBRID_BASELINES = ("easyquant", "fqvit", "ptq4vit")
HYBRID_GOALS = {"W8A8": 0.5, "W6A6": 2.0}


def records_of(results: Results, name: str) -> list[Record]:
    """The records of the results file ``name`` (a file name under benchmarks/results/)."""
    for file, _, records in results:
        if file == name:
            return records
    raise VitqError(f"results file {name} not found; the README's headline tables are generated from it")


def files_matching(results: Results, prefix: str) -> list[tuple[str, list[Record]]]:
    """(file name, records) of every results file whose name starts with ``prefix``, sorted by name."""
    return [(file, records) for file, _, records in results if file.startswith(prefix)]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _bits_key(bits: str) -> int:
    return -int(bits[1:].split("A")[0])


# ---- ViT accuracy -------------------------------------------------------------------------------------------


def vit_accuracy_records(results: Results) -> list[Record]:
    """The records of the one-budget method x bit-width table (every seed)."""
    out = []
    for name, methods in VIT_ACCURACY_SOURCES:
        out += [r for r in records_of(results, name) if methods is None or r["method"] in methods]
    return out


def vit_accuracy_cells(records: list[Record]) -> dict[tuple[str, str], dict[str, Any]]:
    """(method, bits) -> mean top-1 / drop over the seed runs, each run's top-1, n images, fp32 top-1."""
    runs: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for r in records:
        runs[(r["method"], r["bits"])].append(r)
    return {key: {"top1": _mean([r["top1"] for r in rs]), "drop": _mean([r["drop"] for r in rs]),
                  "runs": [r["top1"] for r in rs], "n_images": rs[0]["n_images"], "fp32_top1": rs[0]["fp32_top1"]}
            for key, rs in runs.items()}


def vit_accuracy(results: Results) -> str:
    """Markdown: one row per method, one column per bit-width, 'mean top-1 (drop)' and the seed count."""
    cells = vit_accuracy_cells(vit_accuracy_records(results))
    rows = []
    for method, label in VIT_METHODS:
        row: dict[str, Any] = {"method": label}
        for bits in VIT_BITS:
            c = cells.get((method, bits))
            seeds = f", {len(c['runs'])} seeds" if c and len(c["runs"]) > 1 else ""
            row[bits] = f"**{c['top1']:.2f}** (drop {c['drop']:.2f}{seeds})" if c else "-"
        rows.append(row)
    fp32 = {(c["fp32_top1"], c["n_images"]) for c in cells.values()}
    (fp32_top1, n_images), = fp32  # one model, one evaluation set
    table = markdown_table(rows, [("method", "DeiT-Tiny, ImageNet sample"), *((b, f"{b} top-1 (drop)") for b in VIT_BITS)])
    return (f"{table}\n\nfp32 top-1 {fp32_top1:.2f} on {n_images} evaluation images (one per class, disjoint from the "
            "125 calibration images); mean over seed runs where there are several. One budget for every method: 125 "
            "calibration samples, PFCR fine -> block x 90 iterations + 300 whole-model steps, BRECQ / AdaRound the "
            "same optimizer compute, on one CPU core. Records: "
            + ", ".join(f"`{name}`" for name, _ in VIT_ACCURACY_SOURCES) + ".")


# ---- deployment ---------------------------------------------------------------------------------------------


def deployment_rows(results: Results) -> list[Record]:
    """One row per variant: 1-thread latency at batch 1 and 32, speedups, size, onnxruntime top-1 and agreement."""
    records = records_of(results, DEPLOYMENT_FILE)
    speed = {(r["variant"], r["batch"]): r for r in records if "latency_ms_median" in r and r["threads"] == 1}
    accuracy = {r["method"]: r for r in records if "top1" in r}
    rows = []
    for variant in DEPLOYMENT_VARIANTS:
        if (variant, 1) not in speed:
            continue
        b1, b32, acc = speed[(variant, 1)], speed.get((variant, 32), {}), accuracy.get(variant, {})
        rows.append({"variant": f"`{variant}`", "ms1": b1["latency_ms_median"], "x1": f"{b1['speedup']:.2f}x",
                     "ms32": b32.get("latency_ms_median"), "x32": f"{b32['speedup']:.2f}x" if b32 else None,
                     "size_mb": b1["size_mb"], "top1": acc.get("top1"), "agreement": acc.get("agreement")})
    return rows


def deployment(results: Results) -> str:
    records = records_of(results, DEPLOYMENT_FILE)
    acc = next(r for r in records if "top1" in r)
    table = markdown_table(deployment_rows(results), [
        ("variant", "DeiT-Tiny W8A8, onnxruntime CPU"), ("ms1", "ms, batch 1"), ("x1", "speedup"), ("ms32", "ms, batch 32"),
        ("x32", "speedup"), ("size_mb", "MB"), ("top1", "top-1"), ("agreement", "agree fp32 %")])
    return (f"{table}\n\nMedian latency at 1 thread, runs interleaved across variants; speedup against the fastest fp32 "
            f"graph at the same batch. Top-1 in onnxruntime on {acc['n_images']} ImageNet-sample images. "
            f"`vitq-int8` is vitq's percentile W8A8 QDQ export (U8S8), `-s8s8` the same with signed activations, "
            f"`ort-quantize-static` onnxruntime's own quantizer on the same calibration images. Record: `{DEPLOYMENT_FILE}`.")


# ---- hybrids ------------------------------------------------------------------------------------------------


def hybrid_records(results: Results) -> list[Record]:
    """The hybrid CIFAR-10 table records; where several files measured the same model, bits and method (one
    method re-run after its defaults changed), the record of the newest file."""
    files = sorted(((provenance.get("timestamp", ""), records) for file, provenance, records in results
                    if file.startswith(HYBRID_PREFIX)), key=lambda pair: pair[0])
    latest = {(r["model"], r["bits"], r["method"]): r for _, records in files for r in records}
    return list(latest.values())


def hybrid_summary(records: list[Record]) -> str:
    """Markdown: per model and bit-width the drop of every method, the best published baseline, the goal; W6A6 gain."""
    rows: dict[tuple[str, str], dict[str, Record]] = defaultdict(dict)
    fp32: dict[str, tuple[float, bool, int]] = {}
    for r in records:
        rows[(r["model"], r["bits"])][r["method"]] = r
        fp32[r["model"]] = (r["fp32_top1"], r.get("under_trained", False), r["n_images"])
    lines = ["| model | fp32 top-1 | bits | " + " | ".join(HYBRID_METHODS) + " | best baseline | qhyvit goal |",
             "|---|---|---|" + "---|" * len(HYBRID_METHODS) + "---|---|"]
    gains, agree_gains = [], []
    for (model, bits), by_method in sorted(rows.items(), key=lambda kv: (kv[0][0], _bits_key(kv[0][1]))):
        top1, under, n = fp32[model]
        label = f"{model} (under-trained)" if under else model
        drops = {m: by_method[m]["drop"] for m in HYBRID_METHODS if m in by_method}
        base = [drops[m] for m in HYBRID_BASELINES if m in drops]
        best = min(base) if base else None
        goal = ""
        if "qhyvit" in drops and bits in HYBRID_GOALS:
            goal = "met" if drops["qhyvit"] <= HYBRID_GOALS[bits] else f"missed (> {HYBRID_GOALS[bits]})"
        if bits == "W6A6" and best is not None and "qhyvit" in drops:
            gains.append(best - drops["qhyvit"])
            agree_gains.append(by_method["qhyvit"]["agreement"] - max(by_method[m]["agreement"] for m in HYBRID_BASELINES
                                                                        if m in by_method))
        cells = " | ".join(f"{drops[m]:.2f}" if m in drops else "" for m in HYBRID_METHODS)
        best_cell = f"{best:.2f}" if best is not None else ""
        lines.append(f"| {label} | {top1:.2f} ({n} img) | {bits} | {cells} | {best_cell} | {goal} |")
    if gains:
        lines += ["", f"W6A6, over {len(gains)} models: Q-HyViT's top-1 drop is {_mean(gains):.2f} points lower "
                  f"than the best baseline's on average, and its top-1 agreement with fp32 is "
                  f"{_mean(agree_gains):.2f} points higher than the best baseline's (negative = behind)."]
    return "\n".join(lines)


def _speedups(records: list[Record]) -> dict[tuple[str, int], float]:
    """(variant, batch) -> speedup against the faster fp32 graph, at 1 thread."""
    return {(r["variant"], r["batch"]): r["speedup"] for r in records if "latency_ms_median" in r and r["threads"] == 1}


def _pair(speedups: dict[tuple[str, int], float], variant: str) -> str | None:
    """'1.05x / 0.94x' at batch 1 / 32, or None where the variant was not timed."""
    if (variant, 1) not in speedups:
        return None
    return " / ".join(f"{speedups[(variant, b)]:.2f}x" for b in (1, 32) if (variant, b) in speedups)


def hybrid_speed_rows(results: Results) -> list[Record]:
    """Per hybrid model, the Q-HyViT W8A8 deployment export (``w8a8-qhyvit-ort``) against fp32 and the peers in the same
    run: speedups at 64 px (the trained resolution, with accuracy) and at 256 px (speed only, ``..._256px.json``), or
    at 224 px from a speed-only run on random weights (``bench_speed_integer_<model>_224px.json``), which also gives a
    row of its own to a model with no trained checkpoint."""
    files = dict(files_matching(results, HYBRID_SPEED_PREFIX))
    speed_only = {file[len(HYBRID_SPEED_ONLY_PREFIX):-len(HYBRID_SPEED_ONLY_SUFFIX)]: records
                  for file, records in files_matching(results, HYBRID_SPEED_ONLY_PREFIX)
                  if file.endswith(HYBRID_SPEED_ONLY_SUFFIX)}
    rows = []
    for file, records in files.items():
        if file.endswith(HYBRID_HIGH_RES_SUFFIX):
            continue
        at_64 = _speedups(records)
        acc = {r["method"]: r for r in records if "top1" in r}
        int8 = acc.get("vitq-int8", {})
        model = file[len(HYBRID_SPEED_PREFIX):-len(".json")]
        high_res = files.get(file.replace(".json", HYBRID_HIGH_RES_SUFFIX))
        rows.append({"model": labelled_model(int8), "int8_64": _pair(at_64, "vitq-int8"),
                     "int8_high": _high_res(high_res, "256") if high_res else _high_res(speed_only.pop(model, None), "224"),
                     "static_64": _pair(at_64, "ort-quantize-static"), "nncf_64": _pair(at_64, "nncf"),
                     "top1": int8.get("top1"), "torch_top1": int8.get("torch_top1"), "fp32_top1": int8.get("fp32_top1"),
                     "agreement": int8.get("agreement"), "n_images": int8.get("n_images"), "file": f"`{file}`"})
    for model, records in speed_only.items():
        rows.append({"model": f"{model} (speed only)", "int8_high": _high_res(records, "224"),
                     "file": f"`{HYBRID_SPEED_ONLY_PREFIX}{model}{HYBRID_SPEED_ONLY_SUFFIX}`"})
    return rows


def _high_res(records: list[Record] | None, px: str) -> str | None:
    """vitq's speedups at 224/256 px with the resolution and, in brackets, quantize_static's and NNCF's."""
    if not records:
        return None
    speedups = _speedups(records)
    pairs = ((label, _pair(speedups, v)) for v, label in (("ort-quantize-static", "quantize_static"), ("nncf", "NNCF")))
    peers = ", ".join(f"{label} {pair}" for label, pair in pairs if pair)
    return f"{_pair(speedups, 'vitq-int8')} ({px} px" + (f"; {peers})" if peers else ")")


def hybrid_speed(results: Results) -> str:
    return markdown_table(hybrid_speed_rows(results), [
        ("model", "W8A8, onnxruntime CPU"), ("int8_64", "vitq 64 px b1 / b32"),
        ("int8_high", "vitq 224-256 px b1 / b32 (peers)"), ("static_64", "quantize_static 64 px"), ("nncf_64", "NNCF 64 px"),
        ("top1", "top-1 ORT"), ("torch_top1", "torch"), ("fp32_top1", "fp32"), ("agreement", "agree fp32 %"),
        ("file", "record")])


def hybrids(results: Results) -> str:
    n_images = "/".join(str(n) for n in sorted({r["n_images"] for r in hybrid_speed_rows(results) if r.get("n_images")}))
    return (f"{hybrid_summary(hybrid_records(results))}\n\nTop-1 drop vs fp32 in points on all CIFAR-10 test images "
            "(lower is better); the W8A8 / W6A6 goals are 0.5 / 2 points. Records: `hybrid_cifar10_*.json`. Deployment: the "
            "`w8a8-qhyvit-ort` export (integer convs where they pay, per-tensor activations) in onnxruntime, speedup against "
            "the faster fp32 graph at 1 thread, batch 1 / 32, the peers quantizing the same fp32 graph in the same run; "
            f"accuracy on {n_images} test images:\n\n" + hybrid_speed(results))


# ---- demo ---------------------------------------------------------------------------------------------------


def demo_rows(results: Results) -> list[Record]:
    return sorted(records_of(results, DEMO_FILE), key=lambda r: _bits_key(r["bits"]))


def demo(results: Results) -> str:
    rows = demo_rows(results)
    table = markdown_table([{**r, "top1": f"{r['top1']:.1f}", "fp32_top1": f"{r['fp32_top1']:.1f}", "drop": f"{r['drop']:.1f}",
                             "agreement": f"{r['agreement']:.1f}"} for r in rows],
                           [("bits", "`vitq demo`"), ("method", "method"), ("top1", "top-1"), ("fp32_top1", "fp32"), ("drop", "drop"),
                            ("agreement", "agree fp32 %"), ("n_images", "images")])
    return f"{table}\n\nRecord: `{DEMO_FILE}` (bundled images; the numbers `vitq demo` prints)."
