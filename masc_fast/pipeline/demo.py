"""The offline demo: the paper's pipeline in miniature on scikit-learn's digits, in a minute.

For each corruption degree p, train an MLP (by default ``"mlp-small"``, 64 → 512 → 512 → 10;
``"mlp"`` is the paper's shape) on the digits training split with labels shuffled to degree p
(:func:`masc_fast.pipeline.runs.train.train_run`, the offline recipe), until it fits the
corrupted labels or hits an epoch cap, then run exp1 and exp2
(:func:`masc_fast.pipeline.experiments.run_experiment`: every layer probed with MASC on the
corrupted and on the true training labels). Writes the runs, the tidy results table and the
report (:func:`masc_fast.pipeline.report.build_report`), and returns a Table-1-style summary.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from masc_fast._io import atomic_write_text
from masc_fast.pipeline.experiments import ProbeSettings, run_experiment
from masc_fast.pipeline.results_table import rebuild_table, write_cell
from masc_fast.pipeline.runs.config import RunConfig
from masc_fast.pipeline.runs.train import train_run
from masc_fast.pipeline.sweeps.cells import run_name

__all__ = ["DemoConfig", "run_demo"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoConfig:
    """The demo's model, grid and schedule.

    Training uses the offline recipe of :func:`masc_fast.pipeline.runs.recipes.training_recipe`
    (Adam, batch 32, shuffled; lr 2e-3 for ``"mlp-small"``, 1e-3 for ``"mlp"``), which fits
    96-100 % of the corrupted digits labels within ``max_epochs`` = 30 epochs; the authors'
    MLP schedule (SGD, lr 1e-3) would need hundreds. ``threads``: torch's intra-op threads
    while the demo runs (``None`` leaves torch's setting); one, because a 512-wide layer at
    batch 32 is too small to gain from a second thread and a busy second core makes two
    threads wait on each other (measured in the README's demo section).
    """

    model: str = "mlp-small"
    corruptions: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    max_epochs: int = 30
    variance: float = 0.99
    seed: int = 0
    threads: int | None = 1


@contextmanager
def _torch_threads(threads: int | None):
    """torch's intra-op thread count set to ``threads`` inside the block, restored after."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _run_p(p: float, config: DemoConfig, output_dir: Path, progress: bool) -> pd.DataFrame:
    """Train (or resume) the digits MLP at ``p`` and return its exp1 and exp2 rows."""
    run_dir = output_dir / "runs" / run_name(config.model, "digits", p, config.seed)
    run = RunConfig(config.model, "digits", p=p, seed=config.seed, max_epochs=config.max_epochs)
    train_run(run, run_dir, resume=(run_dir / "config.json").exists(), progress=progress)
    settings = ProbeSettings(variance=config.variance, progress=progress)
    return pd.concat(
        [run_experiment(run_dir, name, settings=settings) for name in ("exp1", "exp2")],
        ignore_index=True,
    )


def _summary_row(p: float, rows: pd.DataFrame, epochs: int) -> dict:
    model = rows[rows["metric"] == "model_accuracy"]
    model_test = float(model[model["split"] == "test"]["value"].iloc[0])
    model_train = model[(model["split"] == "train") & (model["labels"] == "corrupted")]
    row = {
        "p": p,
        "epochs": epochs,
        "model_train": float(model_train["value"].iloc[0]),
        "model_test": model_test,
    }
    test = rows[(rows["metric"] == "accuracy") & (rows["split"] == "test")]
    for fitted_on in ("corrupted", "true"):
        candidates = test[test["subspaces"] == fitted_on]
        best = candidates.loc[candidates["value"].idxmax()]  # first layer on ties
        row[f"masc_{fitted_on}"] = float(best["value"])
        row[f"layer_{fitted_on}"] = best["layer"]
        row[f"gain_{fitted_on}_%"] = 100 * (float(best["value"]) / model_test - 1)
    return row


def run_demo(
    output_dir: str | Path = "masc_demo",
    *,
    config: DemoConfig = DemoConfig(),
    progress: bool = True,
) -> pd.DataFrame:
    """Run the demo; returns the summary table and writes outputs under ``output_dir``.

    Files: ``runs/`` (one training run per p), ``results/results.csv`` (the tidy table, one
    cell per p), ``summary.csv`` (Table-1 style) and ``report/index.html`` with its tables
    and figures (Figure 2 and 3 among them). All written atomically; run again, the demo resumes
    unfinished training runs and reuses finished runs and their cached probes.
    """
    from masc_fast.pipeline.report import build_report

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    summary_rows = []
    with _torch_threads(config.threads):
        for p in config.corruptions:
            rows = _run_p(p, config, output_dir, progress)
            cell = f"{config.model}-digits-p{p:g}-s{config.seed}"
            write_cell(output_dir / "results", cell, rows)
            epochs = int(rows[rows["experiment"] == "exp1"]["epoch"].iloc[0])
            summary_rows.append(_summary_row(p, rows, epochs))
            logger.info("p=%.1f done after %.1f s", p, time.perf_counter() - started)
        table = rebuild_table(output_dir / "results")
        summary = pd.DataFrame(summary_rows)
        atomic_write_text(output_dir / "summary.csv", summary.to_csv(index=False))
        build_report(
            table, output_dir / "report", title="MASC on a digits MLP trained with shuffled labels"
        )
    return summary


def format_summary(summary: pd.DataFrame) -> str:
    """Table-1-style text: model test accuracy, best MASC layer and accuracy, gain."""
    shown = pd.DataFrame(
        {
            "p": summary["p"].map("{:.1f}".format),
            "epochs": summary["epochs"],
            "model train": summary["model_train"].map("{:.4f}".format),
            "model test": summary["model_test"].map("{:.4f}".format),
            "MASC corrupted (layer)": [
                f"{a:.4f} ({layer})"
                for a, layer in zip(summary["masc_corrupted"], summary["layer_corrupted"])
            ],
            "gain %": summary["gain_corrupted_%"].map("{:+.2f}".format),
            "MASC true (layer)": [
                f"{a:.4f} ({layer})"
                for a, layer in zip(summary["masc_true"], summary["layer_true"])
            ],
            "gain % (true)": summary["gain_true_%"].map("{:+.2f}".format),
        }
    )
    return shown.to_string(index=False)
