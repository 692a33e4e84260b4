"""Progress bars that suit their stream: tqdm on a terminal, a few whole lines anywhere else.

A tqdm bar redraws itself with carriage returns several times a second. On a terminal that is
one line; in a file or a pipe (``masc-fast demo > log 2>&1``, a CI log) every redraw stays,
and the demo alone left about 190 KB of them. :func:`progress_bar` therefore gives tqdm's bar
on a terminal (tqdm's widget in a notebook) and a :class:`LineProgress` elsewhere, which writes
whole lines only: nothing while a bar is young (:data:`QUIET_SECONDS`), then a line at each
quarter of the total and at least every :data:`LINE_SECONDS`, and one at the end — the end line
only for bars tqdm would leave on screen, or that have already written a line. Every
``masc_fast`` loop that shows progress gets its bar here.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator

from tqdm.auto import tqdm

__all__ = ["LINE_SECONDS", "QUIET_SECONDS", "LineProgress", "progress_bar"]

#: A bar writes no progress line in its first seconds: a loop that ends sooner costs at most its
#: end line (and a transient bar, ``leave=False``, nothing at all).
QUIET_SECONDS = 10.0
#: After that, a slow bar writes a line at least this often, even without crossing a quarter.
LINE_SECONDS = 60.0

_LINE = "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} {unit} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
_LINE_NO_TOTAL = "{desc}: {n_fmt} {unit} [{elapsed}, {rate_fmt}{postfix}]"


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


def _in_notebook() -> bool:
    """Whether tqdm.auto chose its notebook widget (a Jupyter kernel's streams are no tty)."""
    return any(cls.__module__ == "tqdm.notebook" for cls in tqdm.__mro__)


class LineProgress:
    """A progress bar for files and pipes: whole lines, a few per loop, no redraws.

    Takes the arguments of tqdm that masc_fast uses and offers the methods it calls
    (``update``, ``set_postfix``, ``set_postfix_str``, ``close``, iteration, ``with``).

    Parameters
    ----------
    iterable : iterable, optional
        Iterate through the bar; its ``len`` is the default ``total``.
    desc : str, optional
        What the bar counts; starts every line.
    total : int, optional
        Expected count; without it lines show the count and rate only.
    unit : str, default "it"
    unit_scale : bool, default False
        Show counts as 1.35k etc.
    leave : bool, default True
        Write an end line at :meth:`close` even if no progress line was written.
    initial : int, default 0
        Count already done (a resumed loop).
    file : text stream, default ``sys.stderr``
    clock : callable, default ``time.monotonic``
        Seconds; tests pass a fake one.

    Example
    -------
    >>> import io
    >>> stream = io.StringIO()
    >>> for _ in LineProgress(range(3), desc="demo", file=stream):
    ...     pass
    >>> stream.getvalue().startswith("demo: 100% 3/3 it [")
    True
    """

    def __init__(
        self,
        iterable: Iterable | None = None,
        *,
        desc: str | None = None,
        total: int | None = None,
        unit: str = "it",
        unit_scale: bool = False,
        leave: bool = True,
        initial: int = 0,
        file=None,
        clock: Callable[[], float] = time.monotonic,
    ):
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.total, self.n = iterable, total, initial
        self.desc, self.unit, self.unit_scale, self.leave = (
            desc or "progress",
            unit,
            unit_scale,
            leave,
        )
        self.file = sys.stderr if file is None else file
        self._clock, self._initial = clock, initial
        self._start = self._last = clock()
        self._postfix = ""
        self._quarter = self._quarters()
        self._lines = 0
        self._closed = False

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        """Count ``n`` more; write a line if one is due."""
        self.n += n
        now = self._clock()
        if now - self._start < QUIET_SECONDS or self._done():
            return  # young, or finished: close() writes the end line
        quarter = self._quarters()
        if self._lines == 0 or quarter > self._quarter or now - self._last >= LINE_SECONDS:
            self._quarter = quarter
            self._write(now)

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        """``key=value`` pairs shown at the end of the next line."""
        values = {**(ordered_dict or {}), **kwargs}
        self._postfix = ", ".join(
            f"{key}={tqdm.format_num(value) if isinstance(value, float) else value}"
            for key, value in values.items()
        )

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        """A text shown at the end of the next line."""
        self._postfix = str(s)

    def close(self) -> None:
        """Write the end line (see the class notes); later calls do nothing."""
        if self._closed:
            return
        self._closed = True
        if self.leave or self._lines:
            self._write(self._clock())

    def _done(self) -> bool:
        return self.total is not None and self.n >= self.total

    def _quarters(self) -> int:
        return int(4 * self.n / self.total) if self.total else 0

    def _write(self, now: float) -> None:
        line = tqdm.format_meter(
            self.n,
            self.total,
            now - self._start,
            prefix=self.desc,
            unit=self.unit,
            unit_scale=self.unit_scale,
            postfix=self._postfix or None,
            initial=self._initial,
            bar_format=_LINE if self.total else _LINE_NO_TOTAL,
        )
        self.file.write(line + "\n")
        self.file.flush()
        self._last = now
        self._lines += 1


def progress_bar(
    iterable: Iterable | None = None,
    *,
    desc: str | None = None,
    total: int | None = None,
    unit: str = "it",
    unit_scale: bool = False,
    leave: bool = True,
    initial: int = 0,
    disable: bool = False,
    file=None,
):
    """A progress bar for ``file`` (default ``sys.stderr``): tqdm's on a terminal or in a
    notebook, a :class:`LineProgress` elsewhere, a silent pass-through when ``disable``.

    The arguments are tqdm's, with its meanings; the stream is looked at once, here.

    Example
    -------
    >>> import io
    >>> bar = progress_bar(total=4, desc="fit", unit="rows", file=io.StringIO())
    >>> type(bar).__name__
    'LineProgress'
    """
    options = {"desc": desc, "total": total, "unit": unit, "unit_scale": unit_scale}
    options.update(leave=leave, initial=initial)
    if disable:
        return tqdm(iterable, disable=True, **options)
    stream = sys.stderr if file is None else file
    if _in_notebook() or _is_terminal(stream):
        return tqdm(iterable, file=file, **options)
    return LineProgress(iterable, file=stream, **options)
