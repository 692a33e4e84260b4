"""progress_bar: tqdm on a terminal, a few whole lines in files and pipes, nothing when off."""

from __future__ import annotations

import io

import pytest
from tqdm.std import tqdm

from masc_fast._progress import LINE_SECONDS, QUIET_SECONDS, LineProgress, progress_bar
from masc_fast.cli import main


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class _Clock:
    """Seconds that pass only when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _assert_whole_lines(text: str, *, at_most: int) -> list[str]:
    """The lines of ``text``: no carriage return (a redraw), each ended, at most ``at_most``."""
    assert "\r" not in text, f"a bar redrew itself: {text!r}"
    assert text == "" or text.endswith("\n"), repr(text)
    lines = text.splitlines()
    assert len(lines) <= at_most, f"{len(lines)} lines:\n{text}"
    return lines


def test_progress_bar_on_a_terminal_is_tqdm():
    stream = _Terminal()
    bar = progress_bar(range(3), desc="demo", file=stream)
    assert isinstance(bar, tqdm)
    list(bar)
    assert "\r" in stream.getvalue()  # tqdm draws (and redraws) in place on a terminal


def test_progress_bar_in_a_file_is_line_progress():
    assert isinstance(progress_bar(total=3, file=io.StringIO()), LineProgress)


def test_progress_bar_disabled_writes_nothing():
    stream = io.StringIO()
    for _ in progress_bar(range(5), desc="quiet", disable=True, file=stream):
        pass
    assert stream.getvalue() == ""


def test_line_progress_long_loop_writes_a_line_per_quarter_and_the_end():
    stream, clock = io.StringIO(), _Clock()
    bar = LineProgress(desc="probe: fit pass", total=1000, unit="rows", file=stream, clock=clock)
    for _ in range(1000):  # 40 s in all, 1000 updates: tqdm would redraw hundreds of times
        clock.now += 0.04
        bar.update(1)
        bar.set_postfix({"train": "0.9822"})
    bar.close()
    lines = _assert_whole_lines(stream.getvalue(), at_most=4)
    # first line once the bar is QUIET_SECONDS old (25 % by then), then 50 % and 75 %, the end
    assert [line.split()[3] for line in lines] == ["25%", "50%", "75%", "100%"], lines
    assert all(line.startswith("probe: fit pass: ") for line in lines)
    assert lines[-1].endswith("train=0.9822]") and "1000/1000 rows" in lines[-1]


def test_line_progress_without_total_writes_a_line_a_minute():
    stream, clock = io.StringIO(), _Clock()
    bar = LineProgress(desc="rows", file=stream, clock=clock)
    for _ in range(600):  # ten minutes
        clock.now += 1.0
        bar.update(7)
    bar.close()
    lines = _assert_whole_lines(stream.getvalue(), at_most=12)
    assert len(lines) == 1 + int((600 - QUIET_SECONDS) // LINE_SECONDS) + 1, lines
    assert lines[-1].startswith("rows: 4200 it [")


@pytest.mark.parametrize(("leave", "expected"), [(True, 1), (False, 0)])
def test_line_progress_short_loop_writes_at_most_its_end_line(leave, expected):
    stream = io.StringIO()
    for _ in LineProgress(range(50), desc="epoch 3", unit="batch", leave=leave, file=stream):
        pass
    lines = _assert_whole_lines(stream.getvalue(), at_most=1)
    assert len(lines) == expected
    if expected:
        assert lines[0].startswith("epoch 3: 100% 50/50 batch [")


def test_line_progress_close_twice_writes_once():
    stream = io.StringIO()
    with LineProgress(total=2, file=stream) as bar:
        bar.update(2)
        bar.close()
    assert len(_assert_whole_lines(stream.getvalue(), at_most=1)) == 1


def test_train_command_in_a_file_prints_a_few_lines(tmp_path, capsys):
    # pytest's captured streams are no terminal, like `masc-fast train ... > log 2>&1`
    argv = ["train", "--model", "mlp-small", "--dataset", "digits", "--p", "0.4"]
    assert main([*argv, "--max-epochs", "3", "--out", str(tmp_path / "run")]) == 0
    captured = capsys.readouterr()
    lines = _assert_whole_lines(captured.err, at_most=3)
    assert any(line.startswith("train run: 100% 3/3 epoch") for line in lines), lines
    assert len(captured.out) + len(captured.err) < 2000
