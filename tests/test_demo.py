"""`masc-fast demo` end to end, as the README runs it (full grid, log in a file), and the report
rendered from its results."""

from __future__ import annotations

import re
import subprocess
import sys

import pandas as pd
import pytest

from masc_fast.cli import main
from masc_fast.pipeline.results_table import RESULT_COLUMNS, load_results

pytestmark = pytest.mark.slow  # trains six small MLPs: about a minute on two CPU cores

_CLI = "import sys; from masc_fast.cli import main; sys.exit(main())"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """(output folder, log text) of `masc-fast demo --output OUT > log 2>&1`."""
    out = tmp_path_factory.mktemp("demo")
    log = out / "demo.log"
    with log.open("w") as stream:
        done = subprocess.run(
            [sys.executable, "-c", _CLI, "demo", "--output", str(out / "masc_demo")],
            stdout=stream,
            stderr=subprocess.STDOUT,
            timeout=900,
        )
    text = log.read_text()
    assert done.returncode == 0, text[-3000:]
    return out / "masc_demo", text


def _images(html_path):
    html = html_path.read_text()
    return re.findall(r'<img[^>]+src="([^"]+)"', html), html


def test_demo_log_in_a_file_is_a_few_whole_lines(demo):
    _, log = demo
    assert "\r" not in log, "a progress bar redrew itself in the log"
    assert len(log.encode()) < 10_000, log
    assert len(log.splitlines()) < 60, log
    assert "MASC on digits (best layer by test accuracy" in log


def test_demo_tells_the_papers_story(demo):
    summary = pd.read_csv(demo[0] / "summary.csv")
    assert list(summary["p"]) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert (summary["epochs"] <= 30).all()
    assert (summary["model_train"] >= 0.95).all()  # every model memorised its labels
    assert summary["model_test"].is_monotonic_decreasing  # and generalises worse as p grows
    assert summary["model_test"].iloc[-1] < 0.2
    # from p = 0.4 a layer's corrupted-label subspaces beat the model (at p = 1 both are chance)
    memorising = summary[summary["p"].between(0.4, 0.8)]
    assert (memorising["masc_corrupted"] > memorising["model_test"]).all(), memorising
    # and the true-label subspaces of every model classify the test set well
    assert (summary["masc_true"] > 0.9).all(), summary


def test_demo_writes_the_tidy_table(demo):
    out, _ = demo
    summary = pd.read_csv(out / "summary.csv")
    table = load_results(out)
    assert list(table.columns[: len(RESULT_COLUMNS)]) == list(RESULT_COLUMNS)
    assert set(table["experiment"]) == {"exp1", "exp2"}
    assert set(table["model"]) == {"mlp-small"}
    assert set(table["p"]) == set(summary["p"])
    exp1 = table[(table["experiment"] == "exp1") & (table["metric"] == "accuracy")]
    best = exp1[(exp1["p"] == 0.8) & (exp1["split"] == "test")]["value"].max()
    assert summary.loc[summary["p"] == 0.8, "masc_corrupted"].item() == pytest.approx(best)


def test_demo_report_has_every_figure_it_references(demo):
    out, _ = demo
    images, html = _images(out / "report" / "index.html")
    assert "Table 1" in html
    assert any("figure2" in src or "fig2" in src or "figure-2" in src for src in images), images
    for src in images:
        path = out / "report" / src
        assert path.is_file() and path.stat().st_size > 0, src
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        pdf = path.with_suffix(".pdf")
        assert pdf.is_file() and pdf.read_bytes()[:5] == b"%PDF-"


def test_report_command_renders_the_demo_results_again(demo, tmp_path):
    out, _ = demo
    assert main(["report", "--results", str(out), "--out", str(tmp_path / "rep")]) == 0
    images, _ = _images(tmp_path / "rep" / "index.html")
    first, _ = _images(out / "report" / "index.html")
    assert sorted(images) == sorted(first) and images
    for src in images:
        assert (tmp_path / "rep" / src).stat().st_size > 0
