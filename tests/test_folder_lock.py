"""One writer per folder (issue 17, deliverable 4): the advisory lock of
:mod:`masc_fast.pipeline.folder_lock`, across real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from masc_fast.pipeline.folder_lock import LOCK_NAME, FolderBusyError, FolderLock

_HOLD = textwrap.dedent(
    """
    import sys, time
    from masc_fast.pipeline.folder_lock import FolderLock
    with FolderLock(sys.argv[1], "holder-under-test"):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
    """
)


def _holder(folder, seconds: float) -> subprocess.Popen:
    """A second process holding ``folder``'s lock for ``seconds``; returns once it holds it."""
    process = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(folder), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline().strip() == "held"
    return process


def _finish(process: subprocess.Popen, *, kill: bool = False) -> None:
    if kill:
        process.kill()
    process.wait()
    process.stdout.close()


def test_a_second_process_is_refused_with_the_holder_named(tmp_path):
    holder = _holder(tmp_path, 30)
    try:
        with pytest.raises(FolderBusyError) as caught, FolderLock(tmp_path, "second"):
            pass
        message = str(caught.value)
        assert (
            f"{tmp_path.resolve()} is in use by holder-under-test (pid {holder.pid} on " in message
        )
        assert f"(lock {tmp_path.resolve() / LOCK_NAME})" in message
    finally:
        _finish(holder, kill=True)


def test_waiting_gets_the_lock_when_the_holder_finishes(tmp_path):
    holder = _holder(tmp_path, 1.0)
    started = time.monotonic()
    with FolderLock(tmp_path, "waiter", wait=30):
        held_after = time.monotonic() - started
        assert json.loads((tmp_path / LOCK_NAME).read_text())["command"] == "waiter"
    _finish(holder)
    assert 0.3 < held_after < 20
    assert (tmp_path / LOCK_NAME).read_text() == ""  # released: no holder named


def test_a_killed_holders_lock_is_taken_over_with_a_message(tmp_path, capsys):
    holder = _holder(tmp_path, 30)
    os.kill(holder.pid, signal.SIGKILL)
    _finish(holder)
    with FolderLock(tmp_path, "next"):
        pass
    err = capsys.readouterr().err
    assert f"next: took over the lock of {tmp_path.resolve()} from holder-under-test (pid " in err
    assert f"{holder.pid} on" in err and "which is no longer running" in err


def test_the_lock_is_reentrant_in_one_process_and_ignored_by_fresh_run_checks(tmp_path):
    with FolderLock(tmp_path, "outer"), FolderLock(tmp_path, "inner"):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["command"] == "outer"
    from masc_fast.pipeline.runs.files import check_run_dir
    from masc_fast.pipeline.runs.recipes import RECIPES

    with FolderLock(tmp_path, "train"):
        assert check_run_dir(tmp_path, {}, RECIPES[("mlp", "digits")], resume=False) == "fresh"


def test_two_sweeps_on_one_folder_the_second_exits_naming_the_first(tmp_path):
    """The CLI: ``masc-fast sweep`` on a folder another sweep holds exits with status 3."""
    grid = tmp_path / "grid.toml"
    grid.write_text(
        textwrap.dedent(
            f"""
            [sweep]
            out = "{tmp_path / "out"}"
            models = ["mlp"]
            datasets = ["digits"]
            p = [0.0]
            seeds = [0]
            experiments = ["exp1"]
            """
        )
    )
    holder = _holder(tmp_path / "out", 60)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "masc_fast.cli.main", "sweep", str(grid), "--no-progress"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        _finish(holder, kill=True)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "is in use by holder-under-test" in done.stdout + done.stderr
