"""Nothing left behind by a kill (issue 17, deliverable 3).

Real processes are killed with SIGKILL at random moments, again and again, while they train,
probe (checkpointing after every batch) and sweep; then the same command runs to the end. After
that no temporary may remain anywhere under the folder (the private folders of atomic writes,
safetensors' ``.tmpXXXXXX``, checkpoint tensors no manifest names) and the folder's disk use
must equal a clean, never-killed run's within 10 %.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from masc_fast._io import TEMPORARY_PREFIX, atomic_path, remove_stale_temporaries

REPO = Path(__file__).resolve().parents[1]
_LEFTOVER = re.compile(
    r"^(" + re.escape(TEMPORARY_PREFIX) + r".*|\.tmp[A-Za-z0-9]{6}|\..+\.tmp|\.[a-z_0-9]+\..+)$"
)


def _leftovers(folder: Path) -> list[str]:
    """Temporaries under ``folder``, and probe checkpoint tensors no manifest names."""
    found = [str(path) for path in folder.rglob("*") if _LEFTOVER.match(path.name)]
    for state in folder.rglob("state_*.safetensors"):
        manifest = state.parent / "checkpoint.json"
        if not manifest.exists() or state.name not in manifest.read_text():
            found.append(str(state))
    return found


def _disk_use(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def _run(code: str, *, kill_after: float | None = None) -> int:
    """Run ``code`` in a fresh interpreter; SIGKILL it after ``kill_after`` seconds if given.
    Returns the exit status (negative: the signal)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        if kill_after is not None:
            try:
                process.wait(timeout=kill_after)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=300)
        if process.returncode not in (0, -signal.SIGKILL):
            raise AssertionError(process.stderr.read().decode()[-3000:])
    finally:
        process.stderr.close()
    return process.returncode


# Prepended to the killed runs: every safetensors write pauses after writing its file (still
# under its temporary name), so a kill at a random moment lands inside a write most of the time.
_SLOW_WRITES = """
import time
import safetensors.torch
_save = safetensors.torch.save_file
def _slow_save(*args, **kwargs):
    _save(*args, **kwargs)
    time.sleep(0.25)
safetensors.torch.save_file = _slow_save
"""


def _kill_then_finish(code: str, kills: int, window: tuple[float, float], seed: int) -> int:
    """Kill ``code`` ``kills`` times at random moments in ``window`` seconds (its writes
    slowed, see ``_SLOW_WRITES``), then run it to the end; returns how many runs were really
    killed."""
    rng = random.Random(seed)
    slowed = _SLOW_WRITES + textwrap.dedent(code)
    killed = sum(_run(slowed, kill_after=rng.uniform(*window)) < 0 for _ in range(kills))
    assert _run(code) == 0
    return killed


def _check_kills_leave_nothing(code, tmp_path, *, kills, least, window, seed, grid=None):
    """A clean run of ``code`` in ``clean``, then killed runs finished in ``killed``: at least
    ``least`` kills landed, nothing is left behind, disk use within 10 % of the clean run's.
    ``grid(out) -> path`` writes a sweep file for a folder (``code`` takes ``grid=``)."""
    folders = {name: tmp_path / name for name in ("clean", "killed")}
    arguments = {
        name: {"grid": grid(folder)} if grid else {"folder": str(folder)}
        for name, folder in folders.items()
    }
    assert _run(code.format(**arguments["clean"])) == 0
    assert _kill_then_finish(code.format(**arguments["killed"]), kills, window, seed) >= least
    assert _leftovers(folders["killed"]) == []
    clean_bytes = max(_disk_use(folders["clean"]), 4096)
    assert abs(_disk_use(folders["killed"]) - _disk_use(folders["clean"])) <= 0.1 * clean_bytes


def test_atomic_write_leaves_nothing_on_error_and_a_dead_writers_folder_is_removed(tmp_path):
    target = tmp_path / "model.safetensors"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        Path(tmp).write_bytes(b"partial")
        raise RuntimeError("crash mid-write")
    assert list(tmp_path.iterdir()) == []
    # A writer killed mid-write: its private folder (with safetensors' own temporary inside).
    code = f"""
        import os, tempfile
        work = tempfile.mkdtemp(dir={str(tmp_path)!r}, prefix="{TEMPORARY_PREFIX}%d-" % os.getpid())
        open(os.path.join(work, ".tmpAb3dE9"), "wb").write(b"x" * 1000)
        os._exit(0)  # no cleanup, as after kill -9
    """
    assert _run(code) == 0
    mine = Path(tmp_path / f"{TEMPORARY_PREFIX}{os.getpid()}-inflight")
    mine.mkdir()  # a live process's write in flight is left alone
    assert len(_leftovers(tmp_path)) == 3
    assert remove_stale_temporaries(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == [mine.name]


_TRAIN = """
    import torch
    from masc_fast.pipeline.runs.train import RunConfig, train_run
    torch.set_num_threads(1)
    config = RunConfig("mlp", "digits", p=0.2, max_epochs=3, checkpoint_every=1, device="cpu")
    train_run(config, {folder!r}, resume=True, progress=False)
"""


@pytest.mark.slow
def test_train_killed_again_and_again_leaves_nothing(tmp_path):
    _check_kills_leave_nothing(_TRAIN, tmp_path, kills=2, least=1, window=(2.5, 5.0), seed=17)


_PROBE = """
    import torch
    from sklearn.datasets import load_digits
    from masc_fast import probe
    from masc_fast.models import MLP
    from masc_fast.probing.fit_checkpoint import FitCheckpoint
    torch.set_num_threads(1)
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32); y = torch.tensor(y)
    torch.manual_seed(0)
    model = MLP(64, 10, hidden=(256, 1024))
    batches = [(x[i : i + 15], y[i : i + 15]) for i in range(0, 1500, 15)]
    store = {folder!r}
    probe(model, batches, activation_dir=store, checkpoint_seconds=0, progress=False,
          resume=FitCheckpoint(store).exists(), strategy={{"fc1": "stored"}})
"""


@pytest.mark.slow
def test_probe_killed_during_its_checkpoints_leaves_nothing(tmp_path):
    _check_kills_leave_nothing(_PROBE, tmp_path, kills=3, least=2, window=(2.5, 5.0), seed=3)


_SWEEP = """
    import sys
    from masc_fast.cli.main import main
    sys.exit(main(["sweep", {grid!r}, "--no-progress"]))
"""


@pytest.mark.slow
def test_sweep_killed_again_and_again_leaves_nothing(tmp_path):
    def grid(out: Path) -> str:
        path = out.with_suffix(".toml")
        path.write_text(
            textwrap.dedent(
                f"""
                [sweep]
                out = "{out}"
                models = ["mlp"]
                datasets = ["digits"]
                p = [0.2]
                seeds = [0]
                experiments = ["exp1"]
                [train]
                max_epochs = 3
                """
            )
        )
        return str(path)

    _check_kills_leave_nothing(
        _SWEEP, tmp_path, kills=2, least=1, window=(3.0, 7.0), seed=5, grid=grid
    )
