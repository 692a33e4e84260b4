"""Sweep files: read and check the TOML file that names a grid of experiments.

The format::

    [sweep]
    out = "runs/demo-grid"      # training runs go to out/runs, the tidy table to out/results
    models = ["mlp"]
    datasets = ["digits"]
    p = [0.0, 0.2, 0.4]
    seeds = [0, 1, 2]           # default [0]
    experiments = ["exp1", "exp2", "exp3"]   # default ["exp1"]
    randomize = ["none"]        # Zhang's randomization tests; default ["none"]
    regularization = ["none", "dropout=0.5"]  # Arpit's regularisers; default ["none"]
    format = "csv"              # or "parquet" (needs pyarrow); default "csv"

    [[sweep.also]]              # optional, repeatable: more cells in the same grid; axes it
    randomize = ["partial"]     # does not name come from [sweep] (out, format never change)
    regularization = ["dropout=0.5"]

    [train]                     # optional RunConfig overrides (masc_fast.pipeline.runs.config)
    max_epochs = 20

    [probe]                     # optional ProbeSettings (masc_fast.pipeline.experiments.masc)
    variance = 0.99

``randomize`` (:mod:`masc_fast.data.randomization`, :class:`~masc_fast.pipeline.runs.config.RunConfig`)
is an axis whose modes take the p values they allow: ``"none"`` (the paper's corruption) every
p of the list, ``"partial"`` those above 0, ``"random-labels"`` p = 1, ``"true"`` and the input
modes p = 0, whatever the list holds. So ``randomize = ["true", "partial", "random-labels",
"shuffled-pixels", "random-pixels", "gaussian"]`` with ``p = [0.2, 0.4, ...]`` is Zhang et al.'s
Figure 1 grid. Cells and runs of a mode other than ``"none"`` carry it in their ids
(``mlp-digits-gaussian-p0-s0-exp1``).

A ``[[sweep.also]]`` block adds the cells of its own grid (its axes, the rest taken from
``[sweep]``) to the sweep: one file, one folder, one report, for studies whose axes do not
cross (Zhang's randomizations and Arpit's regularisers). A cell two blocks both name runs once;
runs are shared by every cell that needs them, across blocks.

:func:`load_sweep` turns it into a :class:`SweepSpec` whose :meth:`~SweepSpec.cells` are the
grid's :class:`Cell` s, or refuses it with a message naming the file and the key;
:func:`masc_fast.pipeline.sweeps.run.run_sweep` runs them.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from masc_fast.pipeline.experiments import EXPERIMENTS, ProbeSettings
from masc_fast.pipeline.runs.config import RunConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11 only
    import tomli as tomllib

__all__ = ["Cell", "GridBlock", "SweepSpec", "load_sweep", "mode_probabilities"]


_SECTIONS = ("sweep", "train", "probe")
_SWEEP_KEYS = (
    "out",
    "models",
    "datasets",
    "p",
    "seeds",
    "experiments",
    "randomize",
    "regularization",
    "format",
    "also",
)
# The keys a [[sweep.also]] block may set: the grid's axes.
_AXIS_KEYS = ("models", "datasets", "p", "seeds", "experiments", "randomize", "regularization")
_REQUIRED = ("out", "models", "datasets", "p")
_FORMATS = ("csv", "parquet")
# The grid's own axes: a [train] table may not set them.
_CELL_FIELDS = ("model", "dataset", "p", "seed", "randomize", "regularization")


@dataclass(frozen=True)
class Cell:
    """One point of a sweep grid: a training run's coordinates and the experiment on it."""

    model: str
    dataset: str
    p: float
    seed: int
    experiment: str
    randomize: str = "none"
    regularization: str = "none"

    @property
    def train_p(self) -> float:
        """The corruption degree of the run the cell trains: 0 for ``exp3`` (it probes the
        p = 0 run with labels corrupted at ``p`` afterwards), else ``p``."""
        return 0.0 if self.experiment == "exp3" else self.p

    @property
    def run_id(self) -> str:
        """The training run's part of the id (:func:`masc_fast.pipeline.sweeps.cells.run_name`
        of the run it trains)."""
        from masc_fast.pipeline.sweeps.cells import run_name

        return run_name(
            self.model, self.dataset, self.train_p, self.seed, self.randomize, self.regularization
        )

    @property
    def cell_id(self) -> str:
        """Stable id and file name, e.g. ``mlp-digits-p0.2-s1-exp1``; the randomization
        follows the dataset and the regularization the seed when they are not ``"none"``:
        ``mlp-digits-gaussian-p0-s1-dropout=0.5-exp1``."""
        mode = "" if self.randomize == "none" else f"-{self.randomize}"
        extra = "" if self.regularization == "none" else f"-{self.regularization}"
        return (
            f"{self.model}-{self.dataset}{mode}-p{self.p:g}-s{self.seed}{extra}-{self.experiment}"
        )


@dataclass(frozen=True)
class SweepSpec:
    """A parsed sweep file (see the module docstring for the format).

    Attributes
    ----------
    out : pathlib.Path
        The sweep folder (relative paths in the file are resolved against the file's folder).
    models, datasets, experiments : tuple of str
    p : tuple of float
    randomize : tuple of str
        Randomization modes (the module docstring says which p each takes).
    regularization : tuple of str
        Regularisations (:func:`masc_fast.pipeline.runs.config.parse_regularization`).
    seeds : tuple of int
    train : dict
        ``[train]``: keyword overrides of :class:`masc_fast.pipeline.runs.config.RunConfig`.
    probe : dict
        ``[probe]``: keyword arguments of ``masc_fast.pipeline.experiments.masc.ProbeSettings``.
    format : {"csv", "parquet"}
        Format of the rebuilt table.
    source : pathlib.Path or None
        The file it was read from.
    also : tuple of GridBlock
        The ``[[sweep.also]]`` blocks (their missing axes filled from ``[sweep]``).
    """

    out: Path
    models: tuple[str, ...]
    datasets: tuple[str, ...]
    p: tuple[float, ...]
    seeds: tuple[int, ...] = (0,)
    experiments: tuple[str, ...] = ("exp1",)
    randomize: tuple[str, ...] = ("none",)
    regularization: tuple[str, ...] = ("none",)
    train: dict = field(default_factory=dict)
    probe: dict = field(default_factory=dict)
    format: str = "csv"
    source: Path | None = None
    also: tuple[GridBlock, ...] = ()

    @property
    def runs_dir(self) -> Path:
        """Where the cell runner keeps training runs: ``out/runs``."""
        return self.out / "runs"

    @property
    def results_dir(self) -> Path:
        """Where the cell files and the table live: ``out/results``."""
        return self.out / "results"

    def blocks(self) -> tuple[GridBlock, ...]:
        """The grid's blocks: ``[sweep]``'s axes, then each ``[[sweep.also]]``."""
        main = GridBlock(
            self.models,
            self.datasets,
            self.p,
            self.seeds,
            self.experiments,
            self.randomize,
            self.regularization,
        )
        return (main, *self.also)

    def cells(self) -> list[Cell]:
        """Every block's cells in a stable order (a cell named twice, once)."""
        cells: dict[str, Cell] = {}
        for block in self.blocks():
            for cell in block.cells():
                cells.setdefault(cell.cell_id, cell)
        return list(cells.values())


@dataclass(frozen=True)
class GridBlock:
    """One block of a grid: the axes whose product are its cells."""

    models: tuple[str, ...]
    datasets: tuple[str, ...]
    p: tuple[float, ...]
    seeds: tuple[int, ...]
    experiments: tuple[str, ...]
    randomize: tuple[str, ...]
    regularization: tuple[str, ...]

    def cells(self) -> list[Cell]:
        """The block's cells in a stable order: models, then datasets, randomizations, p,
        seeds, regularizations, experiments."""
        return [
            Cell(model, dataset, p, seed, experiment, mode, regularization)
            for model in self.models
            for dataset in self.datasets
            for mode in self.randomize
            for p in mode_probabilities(mode, self.p)
            for seed in self.seeds
            for regularization in self.regularization
            for experiment in self.experiments
        ]


def mode_probabilities(mode: str, p: tuple[float, ...]) -> tuple[float, ...]:
    """The corruption degrees of ``p`` a randomization mode runs at (module docstring)."""
    if mode == "none":
        return p
    if mode == "partial":
        return tuple(value for value in p if value > 0)
    return (1.0,) if mode == "random-labels" else (0.0,)


class _Where:
    """Prefix for error messages: the file and the key."""

    def __init__(self, path: Path):
        self.path = path

    def error(self, key: str, message: str) -> ValueError:
        return ValueError(f"{self.path}: {key}: {message}")


def _as_list(value, key: str, where: _Where) -> list:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise where.error(key, "must not be empty")
    return values


def _names(value, key: str, where: _Where) -> tuple[str, ...]:
    names = _as_list(value, key, where)
    for name in names:
        if not isinstance(name, str) or not name:
            raise where.error(key, f"must be a list of non-empty strings, got {name!r}")
        if not all(ch.isalnum() or ch in "_.-" for ch in name) or name.startswith((".", "-")):
            raise where.error(key, f"{name!r} may hold only letters, digits and _ . -")
    return _unique(names, key, where)


def _probabilities(value, key: str, where: _Where) -> tuple[float, ...]:
    values = _as_list(value, key, where)
    for p in values:
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
            raise where.error(key, f"must be numbers in [0, 1], got {p!r}")
    return _unique([float(p) for p in values], key, where)


def _seeds(value, key: str, where: _Where) -> tuple[int, ...]:
    values = _as_list(value, key, where)
    for seed in values:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise where.error(key, f"must be whole numbers >= 0, got {seed!r}")
    return _unique(values, key, where)


def _unique(values: list, key: str, where: _Where) -> tuple:
    repeated = sorted({str(v) for v in values if values.count(v) > 1})
    if repeated:
        raise where.error(key, f"lists {repeated} more than once")
    return tuple(values)


def _experiments(value, key: str, where: _Where) -> tuple[str, ...]:

    names = _names(value, key, where)
    unknown = [name for name in names if name not in EXPERIMENTS]
    if unknown:
        raise where.error(key, f"unknown experiment(s) {unknown}; expected some of {EXPERIMENTS}")
    return names


def _modes(value, p, where: _Where, key: str = "sweep.randomize") -> tuple[str, ...]:
    from masc_fast.data.randomization import RANDOMIZATIONS

    names = _names(value, key, where)
    unknown = [name for name in names if name != "none" and name not in RANDOMIZATIONS]
    if unknown:
        raise where.error(
            key, f"unknown mode(s) {unknown}; expected some of none, {RANDOMIZATIONS}"
        )
    if "partial" in names and not any(value > 0 for value in _as_list(p, "p", where)):
        raise where.error(key, "'partial' needs some p above 0 in p")
    return names


def _regularizations(value, where: _Where, key: str = "sweep.regularization") -> tuple[str, ...]:
    from masc_fast.pipeline.runs.config import parse_regularization

    names = _as_list(value, key, where)
    for name in names:
        try:
            parse_regularization(name)
        except (TypeError, ValueError) as error:
            raise where.error(key, str(error)) from error
    return _unique(names, key, where)


def _options(table, section: str, where: _Where, fields: Mapping[str, object]) -> dict:
    """A ``[train]`` / ``[probe]`` table, keys checked against ``fields`` (name → default)."""
    if not isinstance(table, dict):
        raise where.error(f"[{section}]", f"must be a table, got {type(table).__name__}")
    for key, value in table.items():
        name = f"{section}.{key}"
        if isinstance(value, dict):
            raise where.error(name, "must be a value, not a table")
        if section == "train" and key in _CELL_FIELDS:
            raise where.error(name, f"is a grid axis; set it in [sweep] ({_plural(key)})")
        if key not in fields:
            raise where.error(name, f"unknown option; known: {sorted(fields)}")
        _check_like_default(value, fields[key], name, where)
    return dict(table)


def _plural(key: str) -> str:
    plural = {"p": "p", "seed": "seeds", "model": "models", "dataset": "datasets"}
    return plural.get(key, key)


def _check_like_default(value, default, name: str, where: _Where) -> None:
    """The value has the kind of its field's default (bool, whole number, number, string)."""
    if default is None or default is dataclasses.MISSING:
        return
    if isinstance(default, bool):
        ok, kind = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, kind = isinstance(value, int) and not isinstance(value, bool), "a whole number"
    elif isinstance(default, float):
        ok, kind = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    elif isinstance(default, str):
        ok, kind = isinstance(value, str), "a string"
    else:
        return
    if not ok:
        raise where.error(name, f"must be {kind}, got {value!r}")


def _dataclass_defaults(cls) -> dict:
    """``{field: default}`` of a dataclass (None for a field without one)."""
    defaults = {}
    for item in dataclasses.fields(cls):
        if item.default is not dataclasses.MISSING:
            defaults[item.name] = item.default
        elif item.default_factory is not dataclasses.MISSING:
            defaults[item.name] = item.default_factory()
        else:
            defaults[item.name] = None
    return defaults


def load_sweep(path: str | os.PathLike) -> SweepSpec:
    """Read and check a sweep file.

    Parameters
    ----------
    path : path
        A TOML file with a ``[sweep]`` table and optional ``[train]`` and ``[probe]`` tables
        (format in the module docstring).

    Returns
    -------
    SweepSpec

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        Invalid TOML, a missing or unknown key, a value of the wrong kind or out of range, a
        repeated grid value, two cells with the same id; the message names the file and the
        key (e.g. ``grid.toml: sweep.p: must be numbers in [0, 1], got 1.5``).

    Example
    -------
    >>> spec = load_sweep("grid.toml")  # doctest: +SKIP
    >>> [cell.cell_id for cell in spec.cells()][:2]  # doctest: +SKIP
    ['mlp-digits-p0-s0-exp1', 'mlp-digits-p0-s0-exp2']
    """
    path = Path(path)
    where = _Where(path)
    try:
        document = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path}: not valid TOML: {error}") from error
    unknown = [key for key in document if key not in _SECTIONS]
    if unknown:
        raise where.error(unknown[0], f"unknown section; expected some of {list(_SECTIONS)}")
    if "sweep" not in document:
        raise where.error("[sweep]", "missing; it names out, models, datasets and p")
    sweep = document["sweep"]
    if not isinstance(sweep, dict):
        raise where.error("sweep", "must be a table")
    for key in sweep:
        if key not in _SWEEP_KEYS:
            raise where.error(f"sweep.{key}", f"unknown key; expected some of {list(_SWEEP_KEYS)}")
    for key in _REQUIRED:
        if key not in sweep:
            raise where.error(f"sweep.{key}", "missing (required)")
    out = sweep["out"]
    if not isinstance(out, str) or not out:
        raise where.error("sweep.out", f"must be a non-empty string path, got {out!r}")
    fmt = sweep.get("format", "csv")
    if fmt not in _FORMATS:
        raise where.error("sweep.format", f"must be one of {list(_FORMATS)}, got {fmt!r}")
    main = _block(sweep, sweep, "sweep", where)
    spec = SweepSpec(
        out=(path.parent / out).resolve() if not Path(out).is_absolute() else Path(out),
        **dataclasses.asdict(main),
        train=_options(
            document.get("train", {}),
            "train",
            where,
            _dataclass_defaults(RunConfig),
        ),
        probe=_options(
            document.get("probe", {}),
            "probe",
            where,
            _dataclass_defaults(ProbeSettings),
        ),
        format=fmt,
        source=path,
        also=_also_blocks(sweep, where),
    )
    _check_cells(spec, where)
    return spec


def _block(table: dict, sweep: dict, name: str, where: _Where) -> GridBlock:
    """A block's axes: ``table``'s, the missing ones from ``sweep`` (``[sweep]``'s defaults
    after that); two cells of one block may not share an id."""

    def axis(key, default):
        return table.get(key, sweep.get(key, default))

    p = axis("p", None)
    block = GridBlock(
        models=_names(axis("models", None), f"{name}.models", where),
        datasets=_names(axis("datasets", None), f"{name}.datasets", where),
        p=_probabilities(p, f"{name}.p", where),
        seeds=_seeds(axis("seeds", [0]), f"{name}.seeds", where),
        experiments=_experiments(axis("experiments", ["exp1"]), f"{name}.experiments", where),
        randomize=_modes(axis("randomize", ["none"]), p, where, f"{name}.randomize"),
        regularization=_regularizations(
            axis("regularization", ["none"]), where, f"{name}.regularization"
        ),
    )
    ids = [cell.cell_id for cell in block.cells()]
    if len(set(ids)) != len(ids):
        clash = sorted({cell_id for cell_id in ids if ids.count(cell_id) > 1})
        raise where.error(f"{name}.p", f"values too close to tell apart in cell ids: {clash[:3]}")
    return block


def _also_blocks(sweep: dict, where: _Where) -> tuple[GridBlock, ...]:
    """The ``[[sweep.also]]`` blocks, each checked like ``[sweep]``."""
    tables = sweep.get("also", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise where.error("sweep.also", "must be [[sweep.also]] tables")
    blocks = []
    for number, table in enumerate(tables, start=1):
        name = f"sweep.also[{number}]"
        for key in table:
            if key not in _AXIS_KEYS:
                raise where.error(
                    f"{name}.{key}", f"not a grid axis; a block sets some of {list(_AXIS_KEYS)}"
                )
        blocks.append(_block(table, sweep, name, where))
    return tuple(blocks)


def _check_cells(spec: SweepSpec, where: _Where) -> None:
    """Build every cell's training configuration and recipe and the probe settings now, so a
    bad value fails ``--list`` and the first cell, not a cell hours into the sweep."""
    from masc_fast.pipeline.sweeps.cells import cell_config

    try:
        ProbeSettings(**spec.probe)
    except (TypeError, ValueError) as error:
        raise where.error("[probe]", str(error)) from error
    for cell in spec.cells():
        try:
            cell_config(cell, spec).recipe()
        except (TypeError, ValueError) as error:
            raise where.error(f"cell {cell.cell_id}", str(error)) from error
