"""Tests of masc_fast.pipeline.report: seeds aggregation, Tables 1/5/6-8, figures and the HTML report."""

from __future__ import annotations

import argparse
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from masc_fast.pipeline.report import (
    aggregate_seeds,
    baselines_figure,
    build_report,
    components_figure,
    figure2,
    figure3,
    relabel_figure,
    relabel_tables,
    retrain_figure,
    sensitivity_figure,
    table1,
    table5,
    threshold_label,
    times_figure,
    to_markdown,
    write_table,
)
from masc_fast.pipeline.results_table import tidy_rows

PROBES = ("logistic_regression", "ncm", "knn", "lda", "qda")


def _row(**fields) -> dict:
    base = dict(model="mlp", dataset="digits", subspaces="", split="test", labels="true")
    base.update(fields)
    return base


# --------------------------------------------------------------------------- hand-made fixture


def _hand_table() -> pd.DataFrame:
    """2 seeds, 2 layers (input, fc1), p in {0.0, 0.2, 0.4}; values chosen for hand arithmetic."""
    rows = []
    # exp1 MASC test accuracy, corrupted subspaces, threshold 0.99: seed 0, seed 1.
    exp1 = {
        0.0: {"input": (0.90, 0.92), "fc1": (0.95, 0.97)},
        0.2: {"input": (0.55, 0.59), "fc1": (0.61, 0.63)},
        0.4: {"input": (0.40, 0.44), "fc1": (0.44, 0.40)},  # a tie of the means
    }
    exp2 = {
        0.2: {"input": (0.70, 0.72), "fc1": (0.66, 0.68)},
        0.4: {"input": (0.50, 0.52), "fc1": (0.60, 0.64)},
    }
    model_test = {0.0: (0.90, 0.90), 0.2: (0.50, 0.50), 0.4: (0.30, 0.34)}
    for p, layers in exp1.items():
        for seed in (0, 1):
            for layer, values in layers.items():
                test = dict(metric="accuracy", subspaces="corrupted", layer=layer, p=p, seed=seed)
                rows.append(_row(experiment="exp1", value=values[seed], variance=0.99, **test))
                # Distractors Table 1 must not read: another threshold, the train split.
                rows.append(_row(experiment="exp1", value=0.99, variance=0.5, **test))
                train = {**test, "split": "train", "labels": "corrupted"}
                rows.append(_row(experiment="exp1", value=0.98, variance=0.99, **train))
            model = dict(metric="model_accuracy", layer="model", p=p, seed=seed, variance=0.99)
            rows.append(_row(experiment="exp1", value=model_test[p][seed], **model))
            rows.append(_row(experiment="exp1", value=0.97, **{**model, "split": "train"}))
    for p, layers in exp2.items():
        for seed in (0, 1):
            for layer, values in layers.items():
                rows.append(
                    _row(
                        experiment="exp2",
                        metric="accuracy",
                        subspaces="true",
                        layer=layer,
                        p=p,
                        seed=seed,
                        value=values[seed],
                        variance=0.99,
                    )
                )
    return tidy_rows(pd.DataFrame(rows))


def test_aggregate_seeds_mean_min_max_and_count():
    table = _hand_table()
    stats = aggregate_seeds(table[table["variance"] == 0.99])
    fc1 = stats[
        (stats["experiment"] == "exp1")
        & (stats["p"] == 0.2)
        & (stats["layer"] == "fc1")
        & (stats["split"] == "test")
    ]
    assert len(fc1) == 1
    # mean of 0.61 and 0.63 = 0.62; range 0.61 .. 0.63; two seeds.
    assert fc1["mean"].iloc[0] == pytest.approx(0.62, abs=1e-12)
    assert fc1["min"].iloc[0] == pytest.approx(0.61, abs=1e-12)
    assert fc1["max"].iloc[0] == pytest.approx(0.63, abs=1e-12)
    assert fc1["n_seeds"].iloc[0] == 2
    assert "seed" not in stats.columns and "value" not in stats.columns


def test_aggregate_seeds_ignores_per_run_epoch():
    rows = pd.DataFrame(
        [
            _row(
                experiment="exp1",
                layer="fc1",
                subspaces="corrupted",
                metric="accuracy",
                p=0.2,
                seed=seed,
                value=value,
                epoch=epoch,
                n=450.0,
            )
            for seed, value, epoch in ((0, 0.5, 12), (1, 0.7, 15), (2, 0.9, 11))
        ]
    )
    stats = aggregate_seeds(tidy_rows(rows))
    assert len(stats) == 1  # the seeds stopped at different epochs but measure one thing
    assert stats["mean"].iloc[0] == pytest.approx((0.5 + 0.7 + 0.9) / 3, abs=1e-12)
    assert stats["n_seeds"].iloc[0] == 3
    kept = aggregate_seeds(tidy_rows(rows), ignore=("n",))
    assert len(kept) == 3 and list(kept["epoch"]) == [12, 15, 11]


def test_aggregate_seeds_rejects_a_seed_twice_in_one_measurement():
    rows = pd.DataFrame(
        [
            _row(
                experiment="retrain",
                layer="fc1",
                subspaces="true",
                metric="accuracy",
                p=0.2,
                seed=0,
                value=value,
                epoch=epoch,
            )
            for value, epoch in ((0.5, 0), (0.6, 1))
        ]
    )
    with pytest.raises(ValueError, match="share seeds.*'experiment': 'retrain'"):
        aggregate_seeds(tidy_rows(rows))


def test_aggregate_seeds_rejects_a_table_without_schema_columns():
    with pytest.raises(ValueError, match="lack the column"):
        aggregate_seeds(pd.DataFrame({"seed": [0], "value": [1.0]}))
    with pytest.raises(TypeError, match="DataFrame"):
        aggregate_seeds([1, 2])


def test_table1_matches_hand_computation():
    table = table1(_hand_table())
    assert list(table["p"]) == [0.2, 0.4]  # p = 0 is not a Table 1 row
    first, second = table.iloc[0], table.iloc[1]
    # p = 0.2: input mean (0.55 + 0.59) / 2 = 0.57, fc1 (0.61 + 0.63) / 2 = 0.62 -> fc1.
    # model (0.50 + 0.50) / 2 = 0.50; gain = 100 * (0.62 / 0.50 - 1) = 24.0.
    assert first["best_layer"] == "fc1"
    assert first["masc_test"] == pytest.approx(0.62, abs=1e-12)
    assert first["model_test"] == pytest.approx(0.50, abs=1e-12)
    assert first["gain_pct"] == pytest.approx(24.0, abs=1e-9)
    assert first["n_seeds"] == 2
    # p = 0.4: input (0.40 + 0.44) / 2 = 0.42 ties fc1 (0.44 + 0.40) / 2 = 0.42: the first
    # layer in probe order (input) wins. model (0.30 + 0.34) / 2 = 0.32;
    # gain = 100 * (0.42 / 0.32 - 1) = 31.25.
    assert second["best_layer"] == "input"
    assert second["masc_test"] == pytest.approx(0.42, abs=1e-12)
    assert second["model_test"] == pytest.approx(0.32, abs=1e-12)
    assert second["gain_pct"] == pytest.approx(31.25, abs=1e-9)


def test_table5_reads_exp2_against_the_exp1_model_accuracy():
    table = table5(_hand_table())
    # p = 0.2: input (0.70 + 0.72) / 2 = 0.71 beats fc1 0.67; gain 100 * (0.71 / 0.50 - 1) = 42.
    # p = 0.4: fc1 (0.60 + 0.64) / 2 = 0.62 beats input 0.51; gain 100 * (0.62 / 0.32 - 1) = 93.75.
    assert list(table["best_layer"]) == ["input", "fc1"]
    assert table["masc_test"].to_numpy() == pytest.approx([0.71, 0.62], abs=1e-12)
    assert table["gain_pct"].to_numpy() == pytest.approx([42.0, 93.75], abs=1e-9)


def test_table1_gain_is_nan_without_model_rows():
    hand = _hand_table()
    table = table1(hand[hand["metric"] != "model_accuracy"])
    assert table["model_test"].isna().all() and table["gain_pct"].isna().all()
    assert list(table["best_layer"]) == ["fc1", "input"]


def test_relabel_tables_mean_over_seeds():
    rows = []
    values = {  # (subspaces, metric) -> seed 0, seed 1
        ("corrupted", "wrong_reduction"): (0.30, 0.50),
        ("corrupted", "wrong_corrected_pct"): (40.0, 60.0),
        ("corrupted", "correct_broken_pct"): (2.0, 4.0),
        ("true", "wrong_reduction"): (0.80, 0.90),
        ("true", "wrong_corrected_pct"): (85.0, 95.0),
        ("true", "correct_broken_pct"): (1.0, 1.0),
    }
    for (subspaces, metric), pair in values.items():
        for seed in (0, 1):
            rows.append(
                _row(
                    experiment="retrain",
                    layer="fc2",
                    subspaces=subspaces,
                    split="train",
                    labels="",
                    metric=metric,
                    p=0.4,
                    seed=seed,
                    value=pair[seed],
                )
            )
    tables = relabel_tables(tidy_rows(pd.DataFrame(rows)))
    assert set(tables) == {"table6", "table7", "table8"}
    six = tables["table6"].set_index("subspaces")
    assert six.loc["corrupted", "mean"] == pytest.approx(0.40, abs=1e-12)  # (0.30 + 0.50) / 2
    assert six.loc["true", "mean"] == pytest.approx(0.85, abs=1e-12)  # (0.80 + 0.90) / 2
    seven = tables["table7"].set_index("subspaces")
    assert seven.loc["corrupted", "mean"] == pytest.approx(50.0, abs=1e-12)
    assert seven.loc["corrupted", "min"] == 40.0 and seven.loc["corrupted", "max"] == 60.0
    eight = tables["table8"].set_index("subspaces")
    assert eight.loc["corrupted", "mean"] == pytest.approx(3.0, abs=1e-12)
    assert (tables["table6"]["n_seeds"] == 2).all()
    assert all(frame.empty for frame in relabel_tables(_hand_table()).values())


def test_to_markdown_formats_columns():
    frame = pd.DataFrame(
        {
            "layer": ["fc1", "a|b"],
            "p": [0.2, 0.4],
            "gain_pct": [24.0, -3.456],
            "masc_test": [0.62, np.nan],
            "n_seeds": [2, 3],
        }
    )
    assert to_markdown(frame) == (
        "| layer | p | gain_pct | masc_test | n_seeds |\n"
        "| --- | ---: | ---: | ---: | ---: |\n"
        "| fc1 | 0.2 | +24.00 | 0.6200 | 2 |\n"
        "| a\\|b | 0.4 | -3.46 |  | 3 |\n"
    )


def test_write_table_writes_markdown_and_csv(tmp_path):
    frame = table1(_hand_table())
    markdown, csv = write_table(frame, tmp_path / "tables", "table1")
    assert markdown.read_text() == to_markdown(frame)
    assert "+24.00" in markdown.read_text()
    back = pd.read_csv(csv)
    assert back["gain_pct"].to_numpy() == pytest.approx(frame["gain_pct"].to_numpy())
    assert not list((tmp_path / "tables").glob(".*"))  # no temporary files left


def test_threshold_label():
    assert threshold_label(1.0) == "1 PC"
    assert threshold_label(3.0) == "3 PCs"
    assert threshold_label(0.99) == "t = 0.99"


# --------------------------------------------------------------------------- synthetic full table

LAYERS = ("input", "fc1", "fc2")


def _memorization(p: float, seed: int) -> dict:
    """The fields of one run's memorization rows."""
    return dict(
        experiment="memorization", layer="model", p=p, seed=seed, split="train", labels="corrupted"
    )


def _full_table(seed: int = 7) -> pd.DataFrame:
    """Rows of every kind the report reads (synthetic values): exp1/exp2 at three thresholds,
    per-class components, times, baselines, retraining (30 and 10 epochs) and relabel rows."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in (0.0, 0.4):
        for run in (0, 1):
            masc = dict(p=p, seed=run, n=450.0)
            for experiment, subspaces in (("exp1", "corrupted"), ("exp2", "true")):
                for variance in (0.5, 0.99, 1.0):
                    for layer in LAYERS:
                        for split, labels in (
                            ("train", "corrupted"),
                            ("train", "true"),
                            ("test", "true"),
                        ):
                            rows.append(
                                _row(
                                    experiment=experiment,
                                    layer=layer,
                                    split=split,
                                    labels=labels,
                                    subspaces=subspaces,
                                    metric="accuracy",
                                    value=rng.uniform(0.3, 0.9),
                                    variance=variance,
                                    epoch=5 + run,
                                    **masc,
                                )
                            )
                for layer in LAYERS:
                    for klass in range(10):
                        rows.append(
                            _row(
                                experiment=experiment,
                                layer=layer,
                                split="train",
                                labels="",
                                subspaces=subspaces,
                                metric="class_components",
                                value=float(rng.integers(1, 30)),
                                variance=0.99,
                                **{"class": klass},
                                p=p,
                                seed=run,
                            )
                        )
                    rows.append(
                        _row(
                            experiment=experiment,
                            layer=layer,
                            split="train",
                            labels="",
                            subspaces=subspaces,
                            metric="build_seconds",
                            p=p,
                            seed=run,
                            value=rng.uniform(0.01, 1.0),
                            variance=0.99,
                        )
                    )
                    for split in ("train", "test"):
                        rows.append(
                            _row(
                                experiment=experiment,
                                layer=layer,
                                split=split,
                                labels="",
                                subspaces=subspaces,
                                metric="inference_seconds",
                                p=p,
                                seed=run,
                                value=rng.uniform(0.001, 0.1),
                                variance=0.99,
                            )
                        )
                for split, labels in (("train", "corrupted"), ("train", "true"), ("test", "true")):
                    rows.append(
                        _row(
                            experiment=experiment,
                            layer="model",
                            split=split,
                            labels=labels,
                            metric="model_accuracy",
                            p=p,
                            seed=run,
                            value=rng.uniform(0.3, 1.0),
                            variance=0.99,
                        )
                    )
            for probe in PROBES:
                for subspaces in ("corrupted", "true"):
                    for layer in LAYERS[1:]:  # baselines skip the input layer
                        rows.append(
                            _row(
                                experiment="baselines",
                                probe=probe,
                                layer=layer,
                                subspaces=subspaces,
                                metric="accuracy",
                                p=p,
                                seed=run,
                                value=rng.uniform(0.2, 0.9),
                            )
                        )
            if p == 0:
                continue
            for experiment, last in (("retrain", 3 + run), ("retrain-10", 10)):
                for subspaces in ("corrupted", "true"):
                    for epoch in range(last + 1):
                        for split, labels in (
                            ("test80", "true"),
                            ("test20", "true"),
                            ("train", "relabel"),
                        ):
                            rows.append(
                                _row(
                                    experiment=experiment,
                                    layer="fc1",
                                    split=split,
                                    labels=labels,
                                    subspaces=subspaces,
                                    metric="accuracy",
                                    p=p,
                                    seed=run,
                                    epoch=epoch,
                                    value=rng.uniform(0.3, 0.9),
                                )
                            )
                    for metric, low, high in (
                        ("wrong_reduction", -0.5, 0.9),
                        ("wrong_corrected_pct", 5, 90),
                        ("correct_broken_pct", 1, 30),
                        ("best_layer_test20", 0.3, 0.9),
                    ):
                        rows.append(
                            _row(
                                experiment=experiment,
                                layer="fc1",
                                split="train",
                                labels="",
                                subspaces=subspaces,
                                metric=metric,
                                p=p,
                                seed=run,
                                value=rng.uniform(low, high),
                            )
                        )
            curves = dict(experiment="learning-curves", layer="model", p=p, seed=run)
            for step in (50, 100, 150):
                rows.append(
                    _row(
                        **curves,
                        split="train",
                        labels="corrupted",
                        metric="train_loss",
                        step=step,
                        value=rng.uniform(0.1, 2.0),
                    )
                )
            rows.append(
                _row(
                    **curves,
                    split="train",
                    labels="corrupted",
                    metric="steps_to_fit",
                    value=float(rng.integers(100, 300)),
                )
            )
            rows.append(_row(**curves, metric="test_error", value=rng.uniform(0.1, 0.9)))
            rows.append(
                _row(
                    **curves,
                    metric="test_error",
                    value=rng.uniform(0.1, 0.9),
                    regularization="dropout=0.5",
                )
            )
            for epoch in (0, 5, 10):
                dynamics = dict(
                    experiment="dynamics",
                    p=p,
                    seed=run,
                    epoch=epoch,
                    checkpoint=f"epoch_{epoch:04d}",
                )
                for layer in LAYERS:
                    for subspaces in ("corrupted", "true"):
                        rows.append(
                            _row(
                                **dynamics,
                                layer=layer,
                                subspaces=subspaces,
                                metric="accuracy",
                                value=rng.uniform(0.3, 0.9),
                            )
                        )
                rows.append(
                    _row(
                        **dynamics,
                        layer="model",
                        metric="model_accuracy",
                        value=rng.uniform(0.3, 0.9),
                    )
                )
                memorization = {**_memorization(p, run), "epoch": epoch}
                for metric in ("critical_sample_ratio", "loss_sensitivity_gini"):
                    rows.append(_row(**memorization, metric=metric, value=rng.uniform()))
            examples = _memorization(p, run)
            for example in range(20):
                rows.append(
                    _row(
                        **examples,
                        metric="correct_after_epoch1",
                        example=example,
                        value=float(rng.uniform() < 0.5),
                    )
                )
                rows.append(
                    _row(
                        **examples,
                        metric="loss_sensitivity",
                        example=example,
                        value=rng.exponential(),
                    )
                )
    return tidy_rows(pd.DataFrame(rows))


EVERY_FIGURE = (
    "figure2",
    "figure3",
    "figure4",
    "wrong_reduction",
    "wrong_corrected_pct",
    "correct_broken_pct",
    "zhang1a",
    "zhang1b",
    "zhang1c",
    "arpit-learnability",
    "arpit-sensitivity",
    "arpit-csr",
    "arpit-regularization",
    "dynamics",
    "figure4-10",
    "wrong_reduction-10",
    "wrong_corrected_pct-10",
    "correct_broken_pct-10",
    "sensitivity",
    "baselines",
    "components",
    "times",
)


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.links = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        elif tag == "a" and not attrs.get("href", "#").startswith("#"):
            self.links.append(attrs["href"])


def _check_page(out: Path) -> tuple[str, _Links]:
    """The page parses, every referenced file exists, every PNG written is referenced."""
    page = (out / "index.html").read_text()
    parser = _Links()
    parser.feed(page)
    for reference in parser.images + parser.links:
        assert (out / reference).is_file(), reference
    written = {f"figures/{path.name}" for path in (out / "figures").glob("*.png")}
    assert set(parser.images) == written
    assert not list(out.rglob(".*"))  # no temporary files left
    return page, parser


def _check_figure_files(out: Path, stems) -> None:
    for stem in stems:
        png, pdf = out / "figures" / f"{stem}.png", out / "figures" / f"{stem}.pdf"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert pdf.read_bytes()[:5] == b"%PDF-", pdf
        assert png.stat().st_size > 1000 and pdf.stat().st_size > 1000


@pytest.mark.slow  # 14 figures, each written as PNG and PDF: ~5-10 s on two busy cores
def test_report_draws_every_figure_type(tmp_path):
    out = tmp_path / "report"
    page_path = build_report(_full_table(), out)
    assert page_path == out / "index.html"
    _check_figure_files(out, [f"mlp-digits-{name}" for name in EVERY_FIGURE])
    page, parser = _check_page(out)
    assert len(parser.images) == len(EVERY_FIGURE)
    assert "Figures skipped" not in page
    for caption in ("Table 1", "Table 5", "Table 6", "Table 7", "Table 8"):
        assert f"<h3>{caption}" in page
    for name in ("table1", "table5", "table6", "table7", "table8"):
        assert (out / "tables" / f"{name}.md").read_text().startswith("| model |")
        assert (out / "tables" / f"{name}.csv").is_file()
    seeds = pd.read_csv(out / "tables" / "seeds.csv")
    # Every synthetic measurement has both seeds, except retraining epoch 4 (seed 0 stops at 3).
    single = seeds[seeds["n_seeds"] == 1]
    assert set(seeds["n_seeds"]) == {1, 2}
    assert set(single["experiment"]) == {"retrain"} and set(single["epoch"]) == {4}


def test_report_from_a_table_without_extra_rows_skips_with_reasons(tmp_path):
    hand = _hand_table()
    out = tmp_path / "report"
    build_report(hand, out)
    # The hand table has two thresholds (0.99 and 0.5), so the sensitivity plot is drawn.
    drawn = ["figure2", "figure3", "sensitivity"]
    _check_figure_files(out, [f"mlp-digits-{name}" for name in drawn])
    page, parser = _check_page(out)
    assert sorted(parser.images) == [f"figures/mlp-digits-{name}.png" for name in drawn]
    assert "Figures skipped" in page
    for title, needs in (
        ("Figure 4 (retrain)", "split 'test80'"),
        ("Figure 28 (retrain)", "metric 'wrong_reduction'"),
        ("Baseline probes", "experiment 'baselines'"),
        ("Components per class", "metric 'class_components'"),
        ("Build and inference time", "metric 'build_seconds'"),
    ):
        assert f"<li><b>{title}</b>: no rows with" in page and needs in page
    assert "retrain-10" not in page  # its figures are listed only when it has rows
    assert not (out / "tables" / "table6.md").exists()


def test_report_with_only_model_rows_draws_nothing(tmp_path):
    hand = _hand_table()
    build_report(hand[hand["metric"] == "model_accuracy"], tmp_path)
    page, parser = _check_page(tmp_path)
    assert parser.images == [] and "No figure has rows" in page
    assert "No rows: needs exp1" in page


def test_figure_functions_return_none_without_their_rows():
    hand = _hand_table()
    exp1_only = hand[hand["experiment"] == "exp1"]
    assert figure3(exp1_only) is None
    assert retrain_figure(hand) is None
    assert relabel_figure(hand, "wrong_reduction") is None
    assert baselines_figure(hand) is None
    assert components_figure(hand) is None
    assert times_figure(hand) is None
    one_threshold = hand[hand["variance"] == 0.99]
    assert sensitivity_figure(one_threshold) is None
    assert figure2(hand[hand["experiment"] == "exp2"]) is None


def test_figure2_draws_one_panel_per_p_and_shades_seed_ranges():
    figure = figure2(_hand_table())
    try:
        axes = [ax for ax in figure.axes if ax.get_title()]
        assert [ax.get_title() for ax in axes] == ["p = 0.0", "p = 0.2", "p = 0.4"]
        panel = axes[1]
        labels = panel.get_xticklabels()
        assert [label.get_text() for label in labels] == ["input", "fc1"]
        test = next(line for line in panel.lines if line.get_label() == "MASC test")
        assert test.get_ydata() == pytest.approx([0.57, 0.62], abs=1e-12)  # seed means
        assert len(panel.collections) >= 1  # the min–max band of two seeds
    finally:
        plt.close(figure)


def test_figures_need_a_model_filter_for_several_model_datasets():
    hand = _hand_table()
    both = pd.concat([hand, hand.assign(model="cnn")], ignore_index=True)
    with pytest.raises(ValueError, match="2 model-datasets"):
        figure2(both)
    figure = figure2(both, model="cnn")
    assert figure is not None
    plt.close(figure)


def test_relabel_figure_rejects_unknown_metric():
    with pytest.raises(ValueError, match="unknown relabel metric 'accuracy'"):
        relabel_figure(_hand_table(), "accuracy")


def test_cli_report_reads_a_csv_table(tmp_path, capsys):
    from masc_fast.cli import report as cli_report

    # The hand table plus baseline rows: their text column `probe` is empty on MASC rows,
    # which a CSV round trip turns from NaN into "".
    full = _full_table()
    baselines = full[(full["experiment"] == "baselines") & (full["p"] == 0.0)]
    table = tmp_path / "results.csv"
    pd.concat([_hand_table(), baselines], ignore_index=True).to_csv(table, index=False)
    parser = argparse.ArgumentParser()
    cli_report.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", "--results", str(tmp_path), "--out", str(tmp_path / "r")])
    assert args.run(args) == 0
    assert "index.html" in capsys.readouterr().out
    drawn = ["figure2", "figure3", "sensitivity", "baselines"]
    _check_figure_files(tmp_path / "r", [f"mlp-digits-{name}" for name in drawn])
    _, links = _check_page(tmp_path / "r")
    assert len(links.images) == len(drawn)
    default = parser.parse_args(["report", "--results", str(table)])
    assert default.out == Path("report")


# --------------------------------------------------------------------------- real digits runs


@pytest.fixture(scope="module")
def digits_results(tmp_path_factory):
    """exp1, exp2, random-init and early-stop rows of 2-epoch digits MLPs, p in {0, 0.4},
    seeds {0, 1} (about two minutes on two CPU cores)."""
    from masc_fast.pipeline.experiments import ProbeSettings, run_experiment
    from masc_fast.pipeline.runs.train import RunConfig, train_run

    folder = tmp_path_factory.mktemp("digits-runs")
    settings = ProbeSettings(progress=False)
    frames = []
    for p in (0.0, 0.4):
        for seed in (0, 1):
            run_dir = folder / f"mlp-digits-p{p:g}-s{seed}"
            train_run(
                RunConfig("mlp", "digits", p=p, seed=seed, max_epochs=2), run_dir, progress=False
            )
            for experiment in ("exp1", "exp2", "random-init", "early-stop"):
                frames.append(run_experiment(run_dir, experiment, settings=settings))
    return pd.concat(frames, ignore_index=True)


def _drawn_from_probe_rows(results: pd.DataFrame) -> list[str]:
    """The figures the rows of run_experiment support (per-class components and per-layer
    times come with the threshold helper's rows; older tables lack them)."""
    names = ["figure2", "figure3"]
    if (results["metric"] == "class_components").any():
        names.append("components")
    if results["metric"].isin(["build_seconds", "inference_seconds"]).any():
        names.append("times")
    return names


@pytest.mark.slow
def test_report_from_digits_runs(digits_results, tmp_path):
    out = tmp_path / "report"
    build_report(digits_results, out)
    drawn = _drawn_from_probe_rows(digits_results)
    _check_figure_files(out, [f"mlp-digits-{name}" for name in drawn])
    page, parser = _check_page(out)
    assert sorted(parser.images) == sorted(f"figures/mlp-digits-{name}.png" for name in drawn)
    assert "<h3>Table 1</h3>" in page and "<h3>Table 5</h3>" in page
    assert "<b>Figure 4 (retrain)</b>: no rows with" in page

    # Table 1 against a direct reading of the rows: the mean over the two seeds per layer.
    table = pd.read_csv(out / "tables" / "table1.csv")
    assert list(table["p"]) == [0.4] and list(table["n_seeds"]) == [2]
    rows = digits_results[(digits_results["experiment"] == "exp1") & (digits_results["p"] == 0.4)]
    test = rows[(rows["metric"] == "accuracy") & (rows["split"] == "test")]
    by_layer = {}
    for layer in ("input", "fc1", "fc2", "fc3", "fc4"):  # the MLP's layers in probe order
        values = test.loc[test["layer"] == layer, "value"].to_numpy()
        assert len(values) == 2
        by_layer[layer] = (values[0] + values[1]) / 2
    best = max(by_layer, key=by_layer.get)  # max() keeps the first of equal values
    model = rows.loc[(rows["metric"] == "model_accuracy") & (rows["split"] == "test"), "value"]
    model_mean = (model.to_numpy()[0] + model.to_numpy()[1]) / 2
    assert table["best_layer"][0] == best
    assert table["masc_test"][0] == pytest.approx(by_layer[best], abs=1e-12)
    assert table["model_test"][0] == pytest.approx(model_mean, abs=1e-12)
    assert table["gain_pct"][0] == pytest.approx(100 * (by_layer[best] / model_mean - 1), abs=1e-9)


@pytest.mark.slow
def test_report_from_digits_runs_with_synthetic_extras(digits_results, tmp_path):
    """Real MASC rows plus synthetic baseline, retraining, learning-curve (and, if the real
    rows lack them,
    per-class component and time) rows: every figure but the threshold sweep's."""
    extras = _full_table()
    real = set(_drawn_from_probe_rows(digits_results))
    extra_experiments = ["baselines", "retrain", "retrain-10", "learning-curves", "dynamics"]
    keep = extras["experiment"].isin([*extra_experiments, "memorization"])
    if "components" not in real:
        keep |= extras["metric"] == "class_components"
    if "times" not in real:
        keep |= extras["metric"].isin(["build_seconds", "inference_seconds"])
    out = tmp_path / "report"
    build_report(pd.concat([digits_results, extras[keep]], ignore_index=True), out)
    expected = [name for name in EVERY_FIGURE if name != "sensitivity"]  # one real threshold
    _check_figure_files(out, [f"mlp-digits-{name}" for name in expected])
    page, parser = _check_page(out)
    assert len(parser.images) == len(expected)
    assert "<b>Threshold sensitivity</b>: no rows with" in page
