"""Reports from the tidy results table: seeds aggregation, the paper's tables and figures, HTML.

Everything here reads only the table (:func:`masc_fast.pipeline.results_table.load_results`):
:func:`aggregate_seeds` (mean and min–max over seeds), :func:`table1` / :func:`table5` /
:func:`relabel_tables`, the figure functions (each returns ``None`` when its rows are absent)
and :func:`build_report`, which writes all of them and ``index.html`` into one folder.
"""

from masc_fast.pipeline.report._plot import save_png_pdf
from masc_fast.pipeline.report.aggregate import PER_RUN_COLUMNS, STAT_COLUMNS, aggregate_seeds
from masc_fast.pipeline.report.build import FIGURES, FigureSpec, build_report, figure_specs
from masc_fast.pipeline.report.figures import (
    baselines_figure,
    figure2,
    figure3,
    sensitivity_figure,
    threshold_label,
)
from masc_fast.pipeline.report.figures_runs import (
    components_figure,
    relabel_figure,
    retrain_figure,
    times_figure,
)
from masc_fast.pipeline.report.formatting import (
    TABLE_FORMATS,
    to_html_table,
    to_markdown,
    write_table,
)
from masc_fast.pipeline.report.tables import (
    BEST_LAYER_COLUMNS,
    best_layers,
    model_test_accuracy,
    relabel_tables,
    table1,
    table5,
)

__all__ = [
    "BEST_LAYER_COLUMNS",
    "FIGURES",
    "FigureSpec",
    "PER_RUN_COLUMNS",
    "STAT_COLUMNS",
    "TABLE_FORMATS",
    "aggregate_seeds",
    "baselines_figure",
    "best_layers",
    "build_report",
    "components_figure",
    "figure2",
    "figure3",
    "figure_specs",
    "model_test_accuracy",
    "relabel_figure",
    "relabel_tables",
    "retrain_figure",
    "save_png_pdf",
    "sensitivity_figure",
    "table1",
    "table5",
    "threshold_label",
    "times_figure",
    "to_html_table",
    "to_markdown",
    "write_table",
]
