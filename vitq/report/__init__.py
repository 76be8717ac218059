"""Reports generated from the result records under benchmarks/results/ (``vitq report``).

* :mod:`vitq.report.tables`: the one table renderer (``text_table``, ``markdown_table``).
* :mod:`vitq.report.records`: loading records, the ``setting`` label, the per-file dump (docs/results.md).
* :mod:`vitq.report.headline`: the README's curated headline tables.
* :mod:`vitq.report.figures`: the README's plots (docs/figures/*.png).
* :mod:`vitq.report.readme`: the README's generated blocks; ``update_all`` / ``check_all`` over every generated file.
"""
from vitq.report.headline import hybrid_summary
from vitq.report.readme import (
    BLOCKS,
    FIGURES_DIR,
    README,
    RESULTS_MD,
    check_all,
    readme_block,
    update_all,
    update_readme,
)
from vitq.report.records import RESULTS_DIR, UNDER_TRAINED_BELOW, labelled_model, load_results, render, setting
from vitq.report.tables import markdown_table, text_table

__all__ = [
    "BLOCKS", "FIGURES_DIR", "README", "RESULTS_DIR", "RESULTS_MD", "UNDER_TRAINED_BELOW", "check_all", "hybrid_summary",
    "labelled_model", "load_results", "markdown_table", "readme_block", "render", "setting", "text_table", "update_all",
    "update_readme",
]
