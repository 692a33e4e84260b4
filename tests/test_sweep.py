"""Sweeps: TOML parsing and checks, grid expansion, resuming after a crash, the table."""

from __future__ import annotations

import argparse
import textwrap

import pandas as pd
import pytest

from masc_fast.cli.sweep import register
from masc_fast.pipeline.results_table import RESULT_COLUMNS, completed_cells, load_results
from masc_fast.pipeline.sweeps.run import Cell, load_sweep, run_sweep

GRID = """
[sweep]
out = "grid-out"
models = ["mlp"]
datasets = ["digits"]
p = [0.0, 0.2]
seeds = [0, 1]
experiments = ["exp1", "exp2"]
[train]
max_epochs = 3
[probe]
variance = 0.9
"""


def _write(tmp_path, text: str, name: str = "grid.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _accuracy(cell: Cell) -> float:
    """A value that identifies the cell, so a mixed-up row is caught."""
    return round(0.5 + cell.p + cell.seed / 10 + (cell.experiment == "exp2") / 100, 6)


class FakeRunner:
    """Stands in for training + probing; records calls, optionally fails on the n-th."""

    def __init__(self, fail_on: int | None = None, error: type[BaseException] = KeyboardInterrupt):
        self.calls: list[str] = []
        self.fail_on = fail_on
        self.error = error

    def __call__(self, cell: Cell, spec) -> pd.DataFrame:
        self.calls.append(cell.cell_id)
        if self.fail_on is not None and len(self.calls) == self.fail_on:
            raise self.error("killed")
        return pd.DataFrame(
            {
                "layer": ["input", "model"],
                "subspaces": ["corrupted" if cell.experiment == "exp1" else "true", ""],
                "split": ["test", "test"],
                "labels": ["true", "true"],
                "metric": ["accuracy", "model_accuracy"],
                "value": [_accuracy(cell), 0.9],
            }
        )


def test_grid_expansion_order_and_ids(tmp_path):
    spec = load_sweep(_write(tmp_path, GRID))
    ids = [cell.cell_id for cell in spec.cells()]
    assert ids == [
        "mlp-digits-p0-s0-exp1",
        "mlp-digits-p0-s0-exp2",
        "mlp-digits-p0-s1-exp1",
        "mlp-digits-p0-s1-exp2",
        "mlp-digits-p0.2-s0-exp1",
        "mlp-digits-p0.2-s0-exp2",
        "mlp-digits-p0.2-s1-exp1",
        "mlp-digits-p0.2-s1-exp2",
    ]
    assert spec.out == (tmp_path / "grid-out").resolve()  # relative to the file, not the cwd
    assert spec.results_dir == spec.out / "results" and spec.runs_dir == spec.out / "runs"
    assert spec.train == {"max_epochs": 3} and spec.probe == {"variance": 0.9}
    assert Cell("cnn", "fashion-mnist", 0.4, 2, "exp3").cell_id == "cnn-fashion-mnist-p0.4-s2-exp3"


def test_also_blocks_add_their_cells_once_with_the_rest_from_sweep(tmp_path):
    grid = GRID.replace(
        "[train]",
        '[[sweep.also]]\nregularization = ["none", "dropout=0.5"]\nseeds = [1]\n'
        'experiments = ["exp1"]\n[[sweep.also]]\np = [0.4]\n[train]',
    )
    spec = load_sweep(_write(tmp_path, grid))
    ids = [cell.cell_id for cell in spec.cells()]
    assert ids[:8] == [cell.cell_id for cell in spec.blocks()[0].cells()]
    assert ids[8:] == [
        "mlp-digits-p0-s1-dropout=0.5-exp1",  # the block's unregularised cells are the main's
        "mlp-digits-p0.2-s1-dropout=0.5-exp1",
        "mlp-digits-p0.4-s0-exp1",  # seeds and experiments from [sweep]
        "mlp-digits-p0.4-s0-exp2",
        "mlp-digits-p0.4-s1-exp1",
        "mlp-digits-p0.4-s1-exp2",
    ]
    runner = FakeRunner()
    run_sweep(spec, run_cell=runner, progress=False)
    assert runner.calls == ids


@pytest.mark.parametrize(
    "block, match",
    [
        ('[[sweep.also]]\nout = "x"\n', r"sweep\.also\[1\]\.out: not a grid axis"),
        ("[[sweep.also]]\np = [1.5]\n", r"sweep\.also\[1\]\.p: must be numbers in \[0, 1\]"),
        (
            '[[sweep.also]]\nexperiments = ["exp1"]\n[[sweep.also]]\nrandomize = ["nope"]\n',
            r"sweep\.also\[2\]\.randomize: unknown mode",
        ),
        ('[[sweep.also]]\nregularization = ["dropout=2"]\n', r"sweep\.also\[1\]\.regularization"),
        ("[sweep.also]\np = [0.4]\n", r"sweep\.also: must be \[\[sweep\.also\]\] tables"),
    ],
)
def test_also_block_errors_name_the_block_and_key(tmp_path, block, match):
    path = _write(tmp_path, GRID.replace("[train]", block + "[train]"))
    with pytest.raises(ValueError, match=match) as info:
        load_sweep(path)
    assert str(path) in str(info.value)


def test_defaults_and_single_values(tmp_path):
    spec = load_sweep(
        _write(tmp_path, '[sweep]\nout = "o"\nmodels = "mlp"\ndatasets = ["digits"]\np = 0.4\n')
    )
    assert spec.seeds == (0,) and spec.experiments == ("exp1",) and spec.format == "csv"
    assert [c.cell_id for c in spec.cells()] == ["mlp-digits-p0.4-s0-exp1"]


def test_second_run_only_runs_missing_cells(tmp_path):
    spec = load_sweep(_write(tmp_path, GRID))
    runner = FakeRunner()
    table = run_sweep(spec, run_cell=runner, progress=False)
    assert len(runner.calls) == 8 and len(table) == 16
    again = FakeRunner()
    table_again = run_sweep(spec, run_cell=again, progress=False)
    assert again.calls == []
    pd.testing.assert_frame_equal(table, table_again)
    # A grown grid runs only the new cells.
    grown = _write(tmp_path, GRID.replace("seeds = [0, 1]", "seeds = [0, 1, 2]"))
    more = FakeRunner()
    run_sweep(load_sweep(grown), run_cell=more, progress=False)
    assert more.calls == [
        "mlp-digits-p0-s2-exp1",
        "mlp-digits-p0-s2-exp2",
        "mlp-digits-p0.2-s2-exp1",
        "mlp-digits-p0.2-s2-exp2",
    ]


def test_killed_mid_grid_keeps_finished_cells_and_resumes(tmp_path, caplog):
    spec = load_sweep(_write(tmp_path, GRID))
    cells = [cell.cell_id for cell in spec.cells()]
    crashing = FakeRunner(fail_on=3)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, run_cell=crashing, progress=False)
    assert completed_cells(spec.results_dir) == set(cells[:2])
    assert "mlp-digits-p0-s1-exp1 failed" in caplog.text
    partial = load_results(spec.out)
    assert sorted(partial["seed"].unique()) == [0] and len(partial) == 4
    resumed = FakeRunner()
    table = run_sweep(spec, run_cell=resumed, progress=False)
    assert resumed.calls == cells[2:]
    assert completed_cells(spec.results_dir) == set(cells)
    assert not [p for p in spec.out.rglob(".*") if p.is_file()]  # no temporary files left
    # Every cell's rows carry its own coordinates and value.
    acc = table[table["metric"] == "accuracy"]
    for cell in spec.cells():
        row = acc[
            (acc["p"] == cell.p)
            & (acc["seed"] == cell.seed)
            & (acc["experiment"] == cell.experiment)
        ]
        assert row["value"].tolist() == [_accuracy(cell)]


def test_table_loads_in_one_call_with_the_schema(tmp_path):
    spec = load_sweep(_write(tmp_path, GRID))
    run_sweep(spec, run_cell=FakeRunner(), progress=False)
    table = pd.read_csv(spec.results_dir / "results.csv", keep_default_na=False)
    assert tuple(table.columns) == RESULT_COLUMNS
    assert set(table["model"]) == {"mlp"} and set(table["subspaces"]) == {"corrupted", "true", ""}
    assert len(table) == 16


def test_runner_rows_that_break_the_schema_stop_the_sweep(tmp_path):
    spec = load_sweep(_write(tmp_path, GRID))

    def bad(cell, spec):
        return pd.DataFrame({"layer": ["input"], "value": [0.5]})

    with pytest.raises(ValueError, match="lack the column"):
        run_sweep(spec, run_cell=bad, progress=False)
    assert completed_cells(spec.results_dir) == set()


def test_changed_options_refuse_to_mix_with_finished_cells(tmp_path):
    spec = load_sweep(_write(tmp_path, GRID))
    with pytest.raises(RuntimeError):
        run_sweep(spec, run_cell=FakeRunner(fail_on=2, error=RuntimeError), progress=False)
    changed = load_sweep(_write(tmp_path, GRID.replace("variance = 0.9", "variance = 0.5")))
    with pytest.raises(ValueError, match=r"probe\.variance differ"):
        run_sweep(changed, run_cell=FakeRunner(), progress=False)
    # Presentation options (progress bars, batch size) may change.
    looser = load_sweep(
        _write(tmp_path, GRID.replace("variance = 0.9", "variance = 0.9\nbatch_size = 64"))
    )
    run_sweep(looser, run_cell=FakeRunner(), progress=False)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            '[sweep]\nout = "o"\nmodels = ["mlp"]\ndatasets = ["digits"]\np = [0.2, 1.5]\n',
            r"sweep\.p: .*1\.5",
        ),
        ('[sweep]\nout = "o"\nmodels = ["mlp"]\ndatasets = ["digits"]\n', r"sweep\.p: missing"),
        (
            '[sweep]\nout = "o"\nmodel = ["mlp"]\ndatasets = ["d"]\np = [0.2]\n',
            r"sweep\.model: unknown key",
        ),
        (
            '[sweep]\nout = "o"\nmodels = ["mlp"]\ndatasets = ["d"]\np = [0.2]\nseeds = [true]\n',
            r"sweep\.seeds",
        ),
        (
            '[sweep]\nout = "o"\nmodels = ["mlp"]\ndatasets = ["d"]\np = [0.2]\nseeds = [1, 1]\n',
            r"sweep\.seeds: lists \['1'\] more than once",
        ),
        (
            '[sweep]\nout = "o"\nmodels = ["mlp"]\ndatasets = ["d"]\np = [0.2]\nexperiments = ["exp9"]\n',
            r"sweep\.experiments: unknown experiment",
        ),
        ('[sweep]\nout = "o"\nmodels = ["m/x"]\ndatasets = ["d"]\np = [0.2]\n', r"sweep\.models"),
        (
            '[sweep]\nout = "o"\nmodels = []\ndatasets = ["d"]\np = [0.2]\n',
            r"sweep\.models: must not be empty",
        ),
        (
            '[sweep]\nout = "o"\nmodels = ["mlp"]\ndatasets = ["d"]\np = [0.2]\nformat = "xls"\n',
            r"sweep\.format",
        ),
        (
            '[sweep]\nout = "o"\nmodels = ["mlp"]\ndatasets = ["d"]\np = [0.2]\n[plot]\nx = 1\n',
            r"plot: unknown section",
        ),
        (
            '[sweep]\nout = "o"\nmodels = ["mlp"]\ndatasets = ["d"]\np = [0.2]\n[probe]\nvariancee = 0.9\n',
            r"probe\.variancee: unknown option",
        ),
        (
            '[sweep]\nout = "o"\nmodels = ["mlp"]\ndatasets = ["d"]\np = [0.2]\n[probe]\nbn_train_mode = 1\n',
            r"probe\.bn_train_mode: must be true or false",
        ),
        (
            '[sweep]\nout = "o"\nmodels = ["mlp"]\ndatasets = ["d"]\np = [0.2]\n[probe]\nbatch_size = 0.5\n',
            r"probe\.batch_size: must be a whole number",
        ),
        (
            '[sweep]\nout = "o"\nmodels = ["mlp"]\ndatasets = ["d"]\np = [0.2]\n[train]\nmax_epoch = 3\n',
            r"train\.max_epoch: unknown option",
        ),
        (
            '[sweep]\nout = "o"\nmodels = ["mlp"]\ndatasets = ["d"]\np = [0.2]\n[train]\nshuffle = 1\n',
            r"train\.shuffle: must be true or false",
        ),
        (
            '[sweep]\nout = "o"\nmodels = ["mlp"]\ndatasets = ["d"]\np = [0.2]\n[train]\np = 0.3\n',
            r"train\.p: is a grid axis",
        ),
        (
            '[sweep]\nout = "o"\nmodels = ["mlp"]\ndatasets = ["d"]\np = [0.2]\n[train]\nsub = {a = 1}\n',
            r"train\.sub: must be a value",
        ),
        ('[sweep]\nout = "o"\nmodels = ["mlp"\n', r"not valid TOML"),
        ("[train]\nlr = 0.1\n", r"\[sweep\]: missing"),
    ],
)
def test_toml_errors_name_the_file_and_key(tmp_path, text, match):
    path = _write(tmp_path, text)
    with pytest.raises(ValueError, match=match) as info:
        load_sweep(path)
    assert str(path) in str(info.value)


def test_cli_lists_runs_and_resumes(tmp_path, capsys):
    grid = _write(tmp_path, GRID)
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["sweep", str(grid), "--no-progress"])
    crashing = FakeRunner(fail_on=2, error=RuntimeError)
    assert args.run(args, run_cell=crashing) == 1
    assert "1 of 8 cells done" in capsys.readouterr().out
    listing = parser.parse_args(["sweep", str(grid), "--list"])
    assert listing.run(listing) == 0
    out = capsys.readouterr().out
    assert "done  mlp-digits-p0-s0-exp1" in out and "todo  mlp-digits-p0-s0-exp2" in out
    runner = FakeRunner()
    assert args.run(args, run_cell=runner) == 0
    assert len(runner.calls) == 7
    assert "8 of 8 cells done; 16 rows" in capsys.readouterr().out
    bad = _write(tmp_path, "[sweep]\n", "bad.toml")
    broken = parser.parse_args(["sweep", str(bad)])
    assert broken.run(broken) == 2
    assert "sweep.out: missing" in capsys.readouterr().out


def test_cli_out_overrides_the_file(tmp_path):
    grid = _write(tmp_path, GRID)
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["sweep", str(grid), "--out", str(tmp_path / "elsewhere"), "--no-progress"]
    )
    assert args.run(args, run_cell=FakeRunner()) == 0
    assert len(completed_cells(tmp_path / "elsewhere" / "results")) == 8
    assert not (tmp_path / "grid-out").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            'models = ["mlpx"]',
            r"cell mlpx-digits-p0-s0-exp1: no training recipe for model 'mlpx' on dataset 'digits'",
        ),
        ("[train]\nmax_epochs = 0", r"cell mlp-digits-p0-s0-exp1: max_epochs must be at least 1"),
        ("[probe]\nvariance = 1.5", r"\[probe\]: variance >= 1 means a number of components"),
        (
            "[probe]\nbackend = 'gpu'",
            r"\[probe\]: unknown backend 'gpu'; expected one of torch, cpp, triton, reference",
        ),
    ],
)
def test_every_grid_value_is_checked_when_the_grid_is_loaded(tmp_path, extra, message, capsys):
    """A bad model, training option or probe option fails ``--list`` (and so the first cell),
    naming the file and the cell or section, not a cell hours into the sweep."""
    base = {"models": 'models = ["mlp"]'}
    lines = [
        "[sweep]",
        'out = "out"',
        extra if extra.startswith("models") else base["models"],
        'datasets = ["digits"]',
        "p = [0.0]",
    ]
    if not extra.startswith("models"):
        lines.append(extra)
    grid = _write(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=message):
        load_sweep(grid)
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["sweep", str(grid), "--list"])
    assert args.run(args) == 2
    assert str(grid) in capsys.readouterr().out


def test_sweep_disk_estimate_bounds_a_real_run_and_its_probe(tmp_path):
    """The up-front estimate against what a real digits MLP run writes: at least its
    folder's size, at most 1.6x it (the upper bounds: ``last`` counted twice, every periodic
    snapshot); a finished run is not counted again; the largest probe store is the one the
    probe's own check computes for the same layers."""
    from masc_fast.pipeline.runs.train import RunConfig, train_run
    from masc_fast.pipeline.sweeps.cells import run_name
    from masc_fast.pipeline.sweeps.disk import sweep_disk
    from masc_fast.probing.strategy import planned_disk_bytes

    spec = load_sweep(_write(tmp_path, GRID.replace('"grid-out"', f'"{tmp_path / "out"}"')))
    disk = sweep_disk(spec, spec.cells())
    assert disk.runs_to_train == 4  # 2 p x 2 seeds; exp1 and exp2 share a run
    cell = spec.cells()[0]
    run_dir = spec.runs_dir / run_name(cell.model, cell.dataset, cell.p, cell.seed)
    config = RunConfig(model="mlp", dataset="digits", p=0.0, seed=0, max_epochs=1)  # same files
    train_run(config, run_dir, progress=False)
    written = sum(f.stat().st_size for f in run_dir.rglob("*") if f.is_file())
    assert written <= disk.runs / 4 <= 1.6 * written
    after = sweep_disk(spec, spec.cells())
    assert after.runs_to_train == 3 and after.runs == 3 * disk.runs // 4
    dims = {"input": 64, "fc1": 128, "fc2": 512, "fc3": 2048, "fc4": 2048}  # the paper's MLP
    gram_only = planned_disk_bytes(
        dims, dict.fromkeys(dims, "gram"), rows=1347, num_classes=10, label_sets=2, checkpoint=True
    )
    assert disk.probe == gram_only == 2 * 2 * 10 * 8 * sum(d * d for d in dims.values())
    assert "4 runs to train" in disk.summary() and "free" in disk.summary()


def test_sweep_stops_before_any_cell_when_the_disk_is_short(tmp_path, monkeypatch, capsys):
    """A shortfall is reported before the first cell runs, naming the folder and the bytes."""
    from collections import namedtuple

    import masc_fast.pipeline.sweeps.disk as disk_module

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(disk_module.shutil, "disk_usage", lambda path: usage(10**6, 0, 10**6))
    grid = _write(tmp_path, GRID)
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    listing = parser.parse_args(["sweep", str(grid), "--list"])
    assert listing.run(listing) == 0
    assert "disk: about" in capsys.readouterr().out
    args = parser.parse_args(["sweep", str(grid), "--no-progress"])
    runner = FakeRunner()
    assert args.run(args, run_cell=runner) == 1
    out = capsys.readouterr().out
    assert runner.calls == []
    assert "the sweep needs about" in out and "1,000,000 are free" in out and "grid-out" in out


def test_every_shipped_grid_loads():
    """The grids under masc_fast/pipeline/sweeps/grids are valid sweep files (every cell's
    configuration and recipe resolve)."""
    from pathlib import Path

    import masc_fast.pipeline.sweeps as sweeps

    grids = sorted((Path(sweeps.__file__).parent / "grids").glob("*.toml"))
    assert len(grids) >= 6
    for grid in grids:
        assert load_sweep(grid).cells(), grid
    default = load_sweep(Path(sweeps.__file__).parent / "grids" / "zhang-arpit-digits.toml")
    # Zhang's block: 9 settings, 3 seeds, 5 experiments; Arpit's regularisers: 5 settings,
    # 3 regularisers, 2 seeds, 2 experiments (the unregularised ones are Zhang's cells).
    assert len(default.cells()) == 9 * 3 * 5 + 5 * 3 * 2 * 2
    assert len({cell.run_id for cell in default.cells()}) == 9 * 3 + 5 * 3 * 2
