"""One report from the tidy results table: tables, figures and an HTML page that shows them.

Layout of ``out_dir``::

    index.html            the page (inline CSS; references the PNGs below)
    tables/table1.{md,csv}  Table 1: best layer, corrupted subspaces (exp1) vs the model
    tables/table5.{md,csv}  Table 5: best layer, true subspaces (exp2) vs the model
    tables/table{6,7,8}.{md,csv}  relabel analysis of the retraining runs (when present)
    tables/seeds.csv      every measurement: mean, min, max and n_seeds over seeds
    figures/<model>-<dataset>-<figure>.{png,pdf}

Every file is written atomically. A figure whose rows are absent is not drawn; the page lists
it with the rows it needs.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pandas as pd

from masc_fast._io import atomic_write_text
from masc_fast.pipeline.report._plot import save_png_pdf
from masc_fast.pipeline.report._rows import (
    RETRAIN_EXPERIMENTS,
    model_datasets,
    paper_rows,
    unregularized_rows,
)
from masc_fast.pipeline.report.aggregate import aggregate_seeds
from masc_fast.pipeline.report.figures import baselines_figure, figure2, figure3, sensitivity_figure
from masc_fast.pipeline.report.figures_arpit import (
    csr_figure,
    learnability_figure,
    regularization_figure,
    sensitivity_figure_arpit,
)
from masc_fast.pipeline.report.figures_dynamics import dynamics_figure
from masc_fast.pipeline.report.figures_runs import (
    RELABEL_FIGURES,
    components_figure,
    relabel_figure,
    retrain_figure,
    times_figure,
)
from masc_fast.pipeline.report.figures_zhang import (
    zhang_error_figure,
    zhang_fit_figure,
    zhang_loss_figure,
)
from masc_fast.pipeline.report.formatting import to_html_table, write_table
from masc_fast.pipeline.report.html import FigureEntry, Section, render_page
from masc_fast.pipeline.report.tables import relabel_tables, table1, table5
from masc_fast.pipeline.results_table import load_results, tidy_rows

__all__ = ["FIGURES", "FigureSpec", "build_report", "figure_specs"]

logger = logging.getLogger(__name__)

_BEST_EMPTY = {
    "Table 1": "No rows: needs exp1 MASC test accuracy (corrupted subspaces) at p > 0.",
    "Table 5": "No rows: needs exp2 MASC test accuracy (true subspaces) at p > 0.",
}
_RELABEL_CAPTIONS = {
    "table6": "relative reduction in wrong labels, a fraction",
    "table7": "% of wrong labels corrected",
    "table8": "% of correct labels broken",
}


@dataclass(frozen=True)
class FigureSpec:
    """A figure of the report: file stem, title, caption, the rows it needs and how to draw it.

    ``draw(results, model=..., dataset=...)`` returns a matplotlib figure or ``None``.
    ``randomized``: it reads the randomization tests too; the paper's figures read
    :func:`~masc_fast.pipeline.report._rows.paper_rows` only. ``regularized``: it reads the
    regularised runs too (else :func:`~masc_fast.pipeline.report._rows.unregularized_rows`).
    """

    name: str
    title: str
    caption: str
    needs: str
    draw: Callable
    randomized: bool = False
    regularized: bool = False


def _retrain_specs(experiment: str) -> list[FigureSpec]:
    suffix = "" if experiment == "retrain" else f"-{experiment.split('-', 1)[1]}"
    epochs = "up to 30 epochs, early stopping" if experiment == "retrain" else "10 epochs"
    specs = [
        FigureSpec(
            f"figure4{suffix}",
            f"Figure 4 ({experiment})",
            f"Accuracy on the 80 % test split before (epoch 0) and after retraining on MASC "
            f"relabels ({epochs}); bars: mean over seeds, error bars: min–max.",
            f"experiment '{experiment}', metric 'accuracy', split 'test80', labels 'true' "
            f"with an 'epoch' column",
            partial(retrain_figure, experiment=experiment),
        )
    ]
    for metric, (number, label) in RELABEL_FIGURES.items():
        specs.append(
            FigureSpec(
                f"{metric}{suffix}",
                f"{number.replace('Fig.', 'Figure')} ({experiment})",
                f"{label[0].upper()}{label[1:]} per corruption degree, for corrupted- and "
                f"true-subspace relabels; mean over seeds, error bars: min–max.",
                f"experiment '{experiment}', metric '{metric}'",
                partial(relabel_figure, metric=metric, experiment=experiment),
            )
        )
    return specs


#: The report's figures in page order (the 10-epoch retraining ones join when it has rows).
FIGURES: tuple[FigureSpec, ...] = (
    FigureSpec(
        "figure2",
        "Figure 2",
        "MASC accuracy per layer with subspaces from the corrupted labels (exp1): train vs "
        "corrupted labels, train vs true labels, test; the model's train and test accuracy as "
        "lines; mean over seeds, shaded: min–max.",
        "experiment 'exp1', subspaces 'corrupted', metric 'accuracy'",
        figure2,
    ),
    FigureSpec(
        "figure3",
        "Figure 3",
        "MASC test accuracy per layer with subspaces from the true labels (exp2) next to the "
        "corrupted-label subspaces (exp1); mean over seeds, shaded: min–max.",
        "experiment 'exp2', subspaces 'true', metric 'accuracy', split 'test', labels 'true'",
        figure3,
    ),
    FigureSpec(
        "arpit-learnability",
        "Per-example learnability (Arpit et al.)",
        "Misclassification rate of each measured training example after the first epoch, over "
        "seeds, sorted: real data has examples every seed learns first, noise does not.",
        "experiment 'memorization', metric 'correct_after_epoch1'",
        learnability_figure,
        randomized=True,
    ),
    FigureSpec(
        "arpit-sensitivity",
        "Loss-sensitivity (Arpit et al.)",
        "Left: Gini coefficient of ḡ_x = ‖∂L/∂x‖₁ over the measured examples per epoch (mean "
        "over seeds, shaded: min–max); right: ḡ_x averaged over training, sorted, per setting.",
        "experiment 'memorization', metric 'loss_sensitivity_gini'",
        sensitivity_figure_arpit,
        randomized=True,
    ),
    FigureSpec(
        "arpit-csr",
        "Critical sample ratio (Arpit et al.)",
        "Fraction of the measured examples with an input in the ℓ∞ box of radius csr_radius "
        "that changes the prediction, per epoch; mean over seeds, shaded: min–max.",
        "experiment 'memorization', metric 'critical_sample_ratio'",
        csr_figure,
        randomized=True,
    ),
    FigureSpec(
        "arpit-regularization",
        "Regularisers under label noise (Arpit et al.)",
        "Test accuracy when training stopped against the label corruption, a line per "
        "regularisation (dropout, input Gaussian noise, weight decay; 'none' unregularised); "
        "mean over seeds, error bars: min–max.",
        "experiment 'learning-curves', metric 'test_error' with a 'regularization' column",
        regularization_figure,
        randomized=True,
        regularized=True,
    ),
    FigureSpec(
        "dynamics",
        "MASC across training",
        "MASC test accuracy per layer at every saved checkpoint (solid: subspaces from the "
        "corrupted labels, dashed: from the true labels) against its epoch, with the model's own "
        "accuracy on its training labels and on the test set in black; mean over seeds, "
        "shaded: min–max.",
        "experiment 'dynamics', metric 'accuracy', split 'test', labels 'true'",
        dynamics_figure,
    ),
    *_retrain_specs("retrain"),
    FigureSpec(
        "zhang1a",
        "Zhang et al. Figure 1a",
        "Average training loss against optimiser steps for each randomization of the labels "
        "or the inputs (windows of a quarter epoch); mean over seeds, shaded: min–max.",
        "experiment 'learning-curves', metric 'train_loss' with a 'step' column",
        zhang_loss_figure,
        randomized=True,
    ),
    FigureSpec(
        "zhang1b",
        "Zhang et al. Figure 1b",
        "Optimiser steps until the running training accuracy reached the recipe's target "
        "(100 % for Zhang's networks), relative to the runs on true labels, against the label "
        "corruption; mean over seeds, error bars: min–max.",
        "experiment 'learning-curves', metric 'steps_to_fit'",
        zhang_fit_figure,
        randomized=True,
    ),
    FigureSpec(
        "zhang1c",
        "Zhang et al. Figure 1c",
        "Test error when training stopped against the label corruption; mean over seeds, "
        "error bars: min–max.",
        "experiment 'learning-curves', metric 'test_error'",
        zhang_error_figure,
        randomized=True,
    ),
    FigureSpec(
        "sensitivity",
        "Threshold sensitivity",
        "MASC test accuracy per layer (exp1, corrupted subspaces) for each explained-variance "
        "threshold t; '1 PC' = one component per class.",
        "exp1 test accuracy at two or more thresholds (column 'variance')",
        sensitivity_figure,
    ),
    FigureSpec(
        "baselines",
        "Baseline probes",
        "Test accuracy per layer of MASC (exp1 / exp2) and of the baseline probes trained on "
        "the corrupted or the true labels.",
        "experiment 'baselines', metric 'accuracy', split 'test', labels 'true', column 'probe'",
        baselines_figure,
    ),
    FigureSpec(
        "components",
        "Components per class",
        "Distribution over classes and seeds of the number of components r_k per layer (t = 0.99).",
        "metric 'class_components' with a 'class' column",
        components_figure,
    ),
    FigureSpec(
        "times",
        "Build and inference time",
        "Seconds per layer to fit the subspaces and to score a split (log scale); mean over "
        "seeds, shaded: min–max.",
        "metric 'build_seconds' or 'inference_seconds' (positive) from a MASC probe",
        times_figure,
    ),
)


def figure_specs(results: pd.DataFrame) -> list[FigureSpec]:
    """:data:`FIGURES`, plus the 10-epoch retraining figures when ``results`` has such rows."""
    specs = list(FIGURES)
    if (results["experiment"] == "retrain-10").any():
        at = next(i for i, spec in enumerate(specs) if spec.name == "sensitivity")
        specs[at:at] = _retrain_specs("retrain-10")
    return specs


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("._") or "x"


def _seed_summary(results: pd.DataFrame) -> pd.DataFrame:
    """Every measurement over seeds; per-epoch retraining and memorisation rows keep their
    epoch."""
    rows = results.drop_duplicates([name for name in results.columns if name != "value"])
    retrain = rows["experiment"].isin((*RETRAIN_EXPERIMENTS, "memorization"))  # per epoch
    parts = [aggregate_seeds(rows[~retrain]), aggregate_seeds(rows[retrain], ignore=("n",))]
    return pd.concat([part for part in parts if len(part)], ignore_index=True)


def _rows_of(frame: pd.DataFrame, model: str, dataset: str) -> pd.DataFrame:
    return frame[(frame["model"] == model) & (frame["dataset"] == dataset)]


def _table_html(frame: pd.DataFrame, empty: str) -> str:
    if frame.empty:
        return f'<p class="note">{empty}</p>'
    return to_html_table(frame)


def _summary(results: pd.DataFrame, source: str | None) -> list[str]:
    experiments = ", ".join(dict.fromkeys(results["experiment"])) or "none"
    seeds = ", ".join(str(seed) for seed in sorted(results["seed"].unique())) or "none"
    where = f" from {source}" if source else ""
    return [
        f"{len(results)} result rows{where}; experiments: {experiments}; seeds: {seeds}.",
        "Values are means over seeds; shaded bands and error bars span the min–max range over "
        "seeds. Runs with distinct seeds are independent (seeded label noise, initial weights "
        "and shuffles). Best layer = max over layers of the mean over seeds; gain % = "
        "100·(MASC / model − 1).",
    ]


def build_report(
    results: pd.DataFrame | str | os.PathLike,
    out_dir: str | os.PathLike = "report",
    *,
    title: str = "masc_fast report",
) -> Path:
    """Write the report (tables, figures, ``index.html``) for a tidy results table.

    Parameters
    ----------
    results : pandas.DataFrame or path
        The tidy table, or anything :func:`masc_fast.pipeline.results_table.load_results` reads (a table
        file, a results folder, a sweep's out folder).
    out_dir : path, default "report"
        Created if needed; files of an earlier report are replaced, not removed.
    title : str
        Page title.

    Returns
    -------
    pathlib.Path
        ``out_dir/index.html``.

    Raises
    ------
    ValueError, TypeError
        If the rows do not fit the results schema (the message names the column).
    FileNotFoundError
        If ``results`` is a path that holds no table.

    Example
    -------
    >>> build_report("runs/paper-mlp", "report")  # doctest: +SKIP
    PosixPath('report/index.html')
    """
    source = None
    if not isinstance(results, pd.DataFrame):
        source = str(results)
        results = load_results(results)
    results = tidy_rows(results)
    out_dir = Path(out_dir)
    tables_dir, figures_dir = out_dir / "tables", out_dir / "figures"

    paper = paper_rows(results)
    best = {"Table 1": table1(paper), "Table 5": table5(paper)}
    relabel = relabel_tables(paper)
    links = []
    for name, frame in [("table1", best["Table 1"]), ("table5", best["Table 5"]), *relabel.items()]:
        if name in relabel and frame.empty:
            continue
        write_table(frame, tables_dir, name)
        links += [(f"{name}.md", f"tables/{name}.md"), (f"{name}.csv", f"tables/{name}.csv")]
    try:
        atomic_write_text(tables_dir / "seeds.csv", _seed_summary(results).to_csv(index=False))
        links.append(("seeds.csv", "tables/seeds.csv"))
    except ValueError as error:  # rows of one seed that clash; the tables above still stand
        logger.warning("tables/seeds.csv not written: %s", error)

    sections = []
    specs = figure_specs(results)
    for model, dataset in model_datasets(results):
        section = Section(_slug(f"{model}-{dataset}"), f"{model} / {dataset}")
        for caption, frame in best.items():
            section.tables.append(
                (caption, _table_html(_rows_of(frame, model, dataset), _BEST_EMPTY[caption]))
            )
        for name, frame in relabel.items():
            mine = _rows_of(frame, model, dataset)
            if len(mine):
                caption = f"Table {name[-1]} ({_RELABEL_CAPTIONS[name]})"
                section.tables.append((caption, to_html_table(mine)))
        every = _rows_of(results, model, dataset)
        views = {
            (True, True): every,
            (True, False): unregularized_rows(every),
            (False, False): _rows_of(paper, model, dataset),
        }
        for spec in specs:
            rows = views[(spec.randomized, spec.regularized)]
            figure = spec.draw(rows, model=model, dataset=dataset)
            if figure is None:
                section.skipped.append((spec.title, f"no rows with {spec.needs}"))
                continue
            stem = _slug(f"{model}-{dataset}-{spec.name}")
            png, pdf = save_png_pdf(figure, figures_dir, stem)
            section.figures.append(
                FigureEntry(spec.title, spec.caption, f"figures/{png.name}", f"figures/{pdf.name}")
            )
        logger.info(
            "%s/%s: %d figures, %d skipped",
            model,
            dataset,
            len(section.figures),
            len(section.skipped),
        )
        sections.append(section)

    page = render_page(
        title=title,
        summary=_summary(results, source),
        links=links,
        sections=sections,
    )
    return atomic_write_text(out_dir / "index.html", page)
