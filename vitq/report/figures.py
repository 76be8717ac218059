"""The README's plots, drawn from the result records with matplotlib's Agg canvas (no display, deterministic).

Fixed size and dpi, no software tag or timestamp in the PNG metadata, fixed fonts and style: the same
records and matplotlib version give the same bytes.
"""
from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from vitq.report.headline import (
    DEPLOYMENT_FILE,
    DEPLOYMENT_VARIANTS,
    VIT_BITS,
    VIT_METHODS,
    records_of,
    vit_accuracy_cells,
    vit_accuracy_records,
)
from vitq.report.records import Results

SIZE, DPI = (7.0, 4.0), 100
STYLE = {"font.family": "DejaVu Sans", "font.size": 9, "axes.grid": True, "grid.alpha": 0.3, "path.simplify": False}


def _figure() -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=SIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def top1_vs_bits(results: Results) -> bytes:
    """DeiT-Tiny top-1 vs bit-width per method (mean over seeds, each seed a dot), fp32 as a dashed line."""
    import matplotlib

    records = vit_accuracy_records(results)
    cells = vit_accuracy_cells(records)
    bits = list(reversed(VIT_BITS))  # fewest bits left
    xs = [int(b[1:].split("A")[0]) for b in bits]
    with matplotlib.rc_context(STYLE):
        fig = _figure()
        ax = fig.add_subplot()
        fp32 = records[0]["fp32_top1"]
        ax.axhline(fp32, color="black", linestyle="--", linewidth=1, label=f"fp32 ({fp32:.2f})")
        for (method, label), marker in zip(VIT_METHODS, "osD^"):
            points = [(x, cells[(method, b)]) for x, b in zip(xs, bits) if (method, b) in cells]
            line, = ax.plot([x for x, _ in points], [c["top1"] for _, c in points], marker=marker, label=label)
            for x, c in points:
                if len(c["runs"]) > 1:
                    ax.scatter([x] * len(c["runs"]), c["runs"], s=10, color=line.get_color(), alpha=0.5, zorder=3)
        ax.set_xticks(xs, [f"W{x}A{x}" for x in xs])
        ax.set_xlabel("weight / activation bits")
        ax.set_ylabel("top-1 %")
        ax.set_ylim(0, 100)
        ax.set_title(f"DeiT-Tiny PTQ on CPU: {records[0]['n_images']} ImageNet-sample images, one budget per method")
        ax.legend(loc="lower right")
        fig.tight_layout()
        return _png(fig)


def latency_int8_vs_fp32(results: Results) -> bytes:
    """Median 1-thread latency per variant at batch 1 and batch 32 (onnxruntime CPU)."""
    import matplotlib

    speed = {(r["variant"], r["batch"]): r["latency_ms_median"] for r in records_of(results, DEPLOYMENT_FILE)
             if "latency_ms_median" in r and r["threads"] == 1}
    variants = [v for v in DEPLOYMENT_VARIANTS if (v, 1) in speed]
    colors = ["tab:gray" if v.startswith("fp32") else "tab:orange" if v.startswith("ort") else "tab:blue" for v in variants]
    with matplotlib.rc_context(STYLE):
        fig = _figure()
        for i, batch in enumerate((1, 32)):
            ax = fig.add_subplot(1, 2, i + 1)
            values = [speed.get((v, batch), 0.0) for v in variants]
            bars = ax.barh(range(len(variants)), values, color=colors)
            ax.bar_label(bars, fmt="%.1f", padding=2, fontsize=8)
            ax.set_yticks(range(len(variants)), variants if i == 0 else [""] * len(variants))
            ax.invert_yaxis()
            ax.set_xlim(0, max(values) * 1.25)
            ax.set_xlabel("median ms (lower is faster)")
            ax.set_title(f"batch {batch}")
        fig.suptitle(f"DeiT-Tiny W8A8 int8 vs fp32, onnxruntime CPU, 1 thread ({DEPLOYMENT_FILE})")
        fig.tight_layout()
        return _png(fig)


# file name under docs/figures/ -> how it is drawn
FIGURES: dict[str, Callable[[Results], bytes]] = {
    "top1_vs_bits.png": top1_vs_bits,
    "latency_int8_vs_fp32.png": latency_int8_vs_fp32,
}
