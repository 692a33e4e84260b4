"""`masc-fast demo` end to end (short schedule), and the report rendered from its results."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from masc_fast.cli import main
from masc_fast.pipeline.results_table import RESULT_COLUMNS, load_results


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    argv = ["demo", "--output", str(out), "--corruptions", "0.0", "0.8", "--max-epochs", "3"]
    assert main([*argv, "--no-progress"]) == 0
    return out


def _images(html_path):
    html = html_path.read_text()
    return re.findall(r'<img[^>]+src="([^"]+)"', html), html


def test_demo_prints_the_summary_and_writes_the_tidy_table(demo_dir, capsys):
    summary = pd.read_csv(demo_dir / "summary.csv")
    assert list(summary["p"]) == [0.0, 0.8]
    assert (summary["epochs"] <= 3).all()
    table = load_results(demo_dir)
    assert list(table.columns[: len(RESULT_COLUMNS)]) == list(RESULT_COLUMNS)
    assert set(table["experiment"]) == {"exp1", "exp2"}
    assert set(table["p"]) == {0.0, 0.8}
    exp1 = table[(table["experiment"] == "exp1") & (table["metric"] == "accuracy")]
    best = exp1[(exp1["p"] == 0.8) & (exp1["split"] == "test")]["value"].max()
    assert summary.loc[1, "masc_corrupted"] == pytest.approx(best)


def test_demo_report_has_every_figure_it_references(demo_dir):
    images, html = _images(demo_dir / "report" / "index.html")
    assert "Table 1" in html
    assert any("figure2" in src or "fig2" in src or "figure-2" in src for src in images), images
    for src in images:
        path = demo_dir / "report" / src
        assert path.is_file() and path.stat().st_size > 0, src
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        pdf = path.with_suffix(".pdf")
        assert pdf.is_file() and pdf.read_bytes()[:5] == b"%PDF-"


def test_report_command_renders_the_demo_results_again(demo_dir, tmp_path):
    assert main(["report", "--results", str(demo_dir), "--out", str(tmp_path / "rep")]) == 0
    images, _ = _images(tmp_path / "rep" / "index.html")
    first, _ = _images(demo_dir / "report" / "index.html")
    assert sorted(images) == sorted(first) and images
    for src in images:
        assert (tmp_path / "rep" / src).stat().st_size > 0
