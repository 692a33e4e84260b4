"""Tables as text: Markdown, HTML and CSV files, with per-column number formats."""

from __future__ import annotations

import html
import numbers
import os
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from masc_fast._io import atomic_write_text

__all__ = ["TABLE_FORMATS", "format_cell", "to_markdown", "to_html_table", "write_table"]

#: Number formats of the report's columns (SPEC §9.3: accuracies to 4 decimals, gains to 2).
TABLE_FORMATS: dict[str, str] = {
    "p": "{:.1f}",
    "gain_pct": "{:+.2f}",
    "wrong_corrected_pct": "{:.2f}",
    "correct_broken_pct": "{:.2f}",
    "n_seeds": "{:.0f}",
}
_DEFAULT_FLOAT = "{:.4f}"


def format_cell(value, column: str, formats: Mapping[str, object] | None = None) -> str:
    """One cell as text: NaN/None as ``""``, floats by the column's format (default 4 decimals)."""
    formats = TABLE_FORMATS if formats is None else formats
    if value is None or value is pd.NA or (isinstance(value, numbers.Number) and pd.isna(value)):
        return ""
    spec = formats.get(column)
    if callable(spec):
        return str(spec(value))
    if isinstance(value, bool) or not isinstance(value, numbers.Number):
        return str(value)
    if spec is not None:
        return spec.format(value)
    if isinstance(value, numbers.Integral):
        return str(value)
    return _DEFAULT_FLOAT.format(value)


def _is_numeric(column: pd.Series) -> bool:
    return column.dtype.kind in "biuf"


def _cells(frame: pd.DataFrame, formats) -> list[list[str]]:
    return [
        [format_cell(value, name, formats) for name, value in zip(frame.columns, row)]
        for row in frame.itertuples(index=False, name=None)
    ]


def to_markdown(frame: pd.DataFrame, *, formats: Mapping[str, object] | None = None) -> str:
    """A DataFrame as a GitHub-flavoured Markdown table (numbers right-aligned).

    Parameters
    ----------
    frame : pandas.DataFrame
        Any frame; its index is not written.
    formats : mapping of column name to format string or callable, optional
        ``"{:.2f}"``-style strings or functions of the value; default :data:`TABLE_FORMATS`,
        other float columns with 4 decimals. NaN cells are left empty.

    Returns
    -------
    str
        Header, alignment row and one line per row, ending in a newline.

    Raises
    ------
    TypeError
        If ``frame`` is not a DataFrame.

    Example
    -------
    >>> print(to_markdown(pd.DataFrame({"layer": ["fc1"], "accuracy": [0.62]})), end="")
    | layer | accuracy |
    | --- | ---: |
    | fc1 | 0.6200 |
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"to_markdown needs a pandas DataFrame, got {type(frame).__name__}")

    def line(cells) -> str:
        # A "|" inside a cell would end it early.
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    align = ["---:" if _is_numeric(frame[name]) else "---" for name in frame.columns]
    lines = [line([str(name) for name in frame.columns]), "| " + " | ".join(align) + " |"]
    lines += [line(cells) for cells in _cells(frame, formats)]
    return "\n".join(lines) + "\n"


def to_html_table(frame: pd.DataFrame, *, formats: Mapping[str, object] | None = None) -> str:
    """A DataFrame as an HTML ``<table>`` (escaped text, numeric columns class ``num``)."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"to_html_table needs a pandas DataFrame, got {type(frame).__name__}")
    numeric = [_is_numeric(frame[name]) for name in frame.columns]

    def cell(tag: str, text: str, is_number: bool) -> str:
        css = ' class="num"' if is_number else ""
        return f"<{tag}{css}>{html.escape(text)}</{tag}>"

    head = "".join(cell("th", str(name), num) for name, num in zip(frame.columns, numeric))
    body = "\n".join(
        "<tr>" + "".join(cell("td", text, num) for text, num in zip(cells, numeric)) + "</tr>"
        for cells in _cells(frame, formats)
    )
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def write_table(
    frame: pd.DataFrame,
    folder: str | os.PathLike,
    name: str,
    *,
    formats: Mapping[str, object] | None = None,
) -> tuple[Path, Path]:
    """Write ``folder/name.md`` (formatted) and ``folder/name.csv`` (full precision), atomically.

    Parameters
    ----------
    frame : pandas.DataFrame
    folder : path
        Created if needed.
    name : str
        File stem, e.g. ``"table1"``.
    formats : mapping, optional
        Number formats of the Markdown file (see :func:`to_markdown`).

    Returns
    -------
    (pathlib.Path, pathlib.Path)
        The Markdown and CSV files.

    Example
    -------
    >>> write_table(table1(results), "report/tables", "table1")  # doctest: +SKIP
    """
    folder = Path(folder)
    markdown = atomic_write_text(folder / f"{name}.md", to_markdown(frame, formats=formats))
    csv = atomic_write_text(folder / f"{name}.csv", frame.to_csv(index=False))
    return markdown, csv
