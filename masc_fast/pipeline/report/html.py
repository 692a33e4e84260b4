"""The report page: one self-contained HTML file (inline CSS) referencing figure files beside it."""

from __future__ import annotations

import html
from dataclasses import dataclass, field

__all__ = ["FigureEntry", "Section", "render_page"]

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 70em; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
h3 { margin-top: 1.4em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; }
th { background: #f2f2f2; } td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #444; }
.note { color: #666; font-size: 0.9em; } .skipped li { color: #555; }
nav ul { columns: 2; }
"""


@dataclass(frozen=True)
class FigureEntry:
    """A drawn figure: title, caption and the PNG / PDF paths relative to the page."""

    title: str
    caption: str
    png: str
    pdf: str


@dataclass
class Section:
    """One model-dataset of the report: its tables, figures and the figures skipped, and why."""

    anchor: str
    heading: str
    tables: list[tuple[str, str]] = field(default_factory=list)  # (caption, table HTML)
    figures: list[FigureEntry] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (title, reason)


def _escape(text: str) -> str:
    """Text content: &, < and > escaped."""
    return html.escape(str(text), quote=False)


def _attribute(text: str) -> str:
    """An attribute value (always written in double quotes)."""
    return html.escape(str(text), quote=True)


def _section(section: Section) -> str:
    parts = [f'<section id="{_attribute(section.anchor)}">', f"<h2>{_escape(section.heading)}</h2>"]
    for caption, table in section.tables:
        parts += [f"<h3>{_escape(caption)}</h3>", table]
    parts.append("<h3>Figures</h3>")
    if not section.figures:
        parts.append('<p class="note">No figure has rows in this table.</p>')
    for entry in section.figures:
        parts.append(
            f'<figure>\n<img src="{_attribute(entry.png)}" alt="{_attribute(entry.title)}">\n'
            f"<figcaption><b>{_escape(entry.title)}.</b> {_escape(entry.caption)} "
            f'(<a href="{_attribute(entry.pdf)}">PDF</a>)</figcaption>\n</figure>'
        )
    if section.skipped:
        items = "\n".join(
            f"<li><b>{_escape(title)}</b>: {_escape(reason)}</li>"
            for title, reason in section.skipped
        )
        parts += ["<h3>Figures skipped</h3>", f'<ul class="skipped">\n{items}\n</ul>']
    parts.append("</section>")
    return "\n".join(parts)


def render_page(
    *,
    title: str,
    summary: list[str],
    links: list[tuple[str, str]],
    sections: list[Section],
) -> str:
    """The report as one HTML document.

    Parameters
    ----------
    title : str
        Page title and top heading.
    summary : list of str
        Sentences about the table (rows, experiments, seeds); escaped.
    links : list of (text, href)
        Files beside the page (Markdown and CSV tables).
    sections : list of Section
        One per model-dataset.

    Returns
    -------
    str
        The page; its only external references are the hrefs and image sources given.

    Example
    -------
    >>> page = render_page(title="MASC report", summary=["3 rows."], links=[],
    ...                    sections=[Section("mlp-digits", "mlp / digits")])
    >>> page.startswith("<!DOCTYPE html>")
    True
    """
    nav = "\n".join(
        f'<li><a href="#{_attribute(section.anchor)}">{_escape(section.heading)}</a></li>'
        for section in sections
    )
    files = ", ".join(f'<a href="{_attribute(href)}">{_escape(text)}</a>' for text, href in links)
    body = [f"<h1>{_escape(title)}</h1>"]
    body += [f"<p>{_escape(sentence)}</p>" for sentence in summary]
    if files:
        body.append(f'<p class="note">Files: {files}</p>')
    if sections:
        body.append(f"<nav><ul>\n{nav}\n</ul></nav>")
    body += [_section(section) for section in sections]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
