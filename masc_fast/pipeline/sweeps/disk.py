"""The disk a sweep will need, estimated before its first cell runs.

A sweep writes two kinds of files: training runs, which stay (``init``, ``best``, ``final`` and
every ``checkpoint_every``-th epoch as model-only snapshots, ``last`` with the optimizer state,
written beside the old one before it replaces it, and ``labels.npz``), and each cell's probe
store (stored layers' rows and the fit-pass checkpoint), which is removed when the cell's probe
ends. So the sweep needs the runs still to train, minus what their folders already hold, plus
the largest probe store of the cells still to run. Each figure comes from the real model (its
parameter and buffer bytes, its probed layers' widths from one forward pass of a zero input)
and the strategy rule the probe itself applies (:func:`masc_fast.probing.strategy.planned_disk_bytes`).

It is an upper bound where the run length is unknown: a run is counted at its recipe's
``max_epochs``, every probe with corrupted and true label sets, and a retrain cell as one more
run of its model.
"""

from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch

from masc_fast.pipeline.sweeps.cells import cell_config
from masc_fast.pipeline.sweeps.grid import Cell, SweepSpec

__all__ = ["SweepDisk", "check_sweep_disk", "format_bytes", "sweep_disk"]

_RETRAIN_EXPERIMENTS = ("retrain", "retrain-10")
_NO_PROBE = ("learning-curves", "memorization")  # read the run's own files only


@dataclass(frozen=True)
class SweepDisk:
    """Bytes a sweep still needs (``runs``, ``probe``) at ``folder`` and what is free there."""

    folder: Path
    runs: int
    runs_to_train: int
    probe: int
    free: int

    @property
    def need(self) -> int:
        return self.runs + self.probe

    def summary(self) -> str:
        """One line: the need, its parts and the free space."""
        return (
            f"disk: about {format_bytes(self.need)} more in {self.folder} "
            f"({self.runs_to_train} runs to train: {format_bytes(self.runs)}; the largest "
            f"probe store: {format_bytes(self.probe)}); {format_bytes(self.free)} free"
        )


def format_bytes(count: int) -> str:
    """``1.2 GiB``-style size."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


@cache
def _model_facts(model: str, dataset: str) -> tuple[int, int, dict[str, int]]:
    """(state bytes, parameter bytes, probed layer widths) of a freshly built model."""
    from masc_fast.activations import ActivationTap, resolve_layers
    from masc_fast.data import dataset_info
    from masc_fast.models import build_model

    info = dataset_info(dataset)
    with torch.random.fork_rng(devices=[]):
        network = build_model(model, input_shape=info.input_shape, num_classes=info.num_classes)
    network.eval()
    state = sum(t.numel() * t.element_size() for t in network.state_dict().values())
    params = sum(p.numel() * p.element_size() for p in network.parameters())
    tap = ActivationTap(network, resolve_layers(network, None))
    with tap.attached():
        _, captured = tap.forward(torch.zeros((1, *info.input_shape)))
    return state, params, {name: int(rows.shape[1]) for name, rows in captured.items()}


def _run_bytes(cell: Cell, spec: SweepSpec) -> int:
    """Bytes a finished training run of this cell's model holds (see the module docstring)."""
    from masc_fast.data import dataset_info

    config = cell_config(cell, spec)
    recipe = config.recipe()
    state, params, _ = _model_facts(cell.model, cell.dataset)
    moments = 2 if recipe.optimizer.startswith("adam") else int(bool(recipe.momentum))
    last = state + moments * params
    snapshots = 3 + recipe.max_epochs // config.checkpoint_every  # init, best, final, periodic
    labels = 2 * 8 * dataset_info(cell.dataset).train_size
    return snapshots * state + 2 * last + labels


def _probe_bytes(cell: Cell, spec: SweepSpec) -> int:
    """Bytes of the largest store a probe of this cell writes (removed when it ends)."""
    from masc_fast.data import dataset_info
    from masc_fast.probing.strategy import (
        default_memory_budget,
        parse_bytes,
        plan_strategies,
        planned_disk_bytes,
    )

    info = dataset_info(cell.dataset)
    _, _, dims = _model_facts(cell.model, cell.dataset)
    budget = spec.probe.get("memory_budget")
    budget = parse_bytes(budget) if budget is not None else default_memory_budget(_device(spec))
    plan = plan_strategies(dims, num_classes=info.num_classes, label_sets=2, memory_budget=budget)
    return planned_disk_bytes(
        dims,
        plan,
        rows=info.train_size,
        num_classes=info.num_classes,
        label_sets=2,
        checkpoint=True,
    )


def _device(spec: SweepSpec) -> torch.device:
    wanted = spec.probe.get("device")
    if wanted:
        return torch.device(wanted)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _folder_bytes(folder: Path) -> int:
    if not folder.is_dir():
        return 0
    return sum(entry.stat().st_size for entry in folder.rglob("*") if entry.is_file())


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def sweep_disk(spec: SweepSpec, cells: list[Cell]) -> SweepDisk:
    """What the ``cells`` still to run need on the disk of ``spec.out``, and what is free."""
    runs: dict[Path, int] = {}
    probe = 0
    for cell in cells:
        run_dir = spec.runs_dir / cell.run_id
        if run_dir not in runs and not (run_dir / "summary.json").exists():
            runs[run_dir] = max(0, _run_bytes(cell, spec) - _folder_bytes(run_dir))
        if cell.experiment in _RETRAIN_EXPERIMENTS:  # a second run of the model, per cell
            runs[spec.runs_dir / cell.cell_id] = _run_bytes(cell, spec)
        if cell.experiment not in _NO_PROBE:
            probe = max(probe, _probe_bytes(cell, spec))
    folder = _existing(spec.out)
    free = shutil.disk_usage(folder).free
    return SweepDisk(spec.out, sum(runs.values()), len(runs), probe, free)


def check_sweep_disk(spec: SweepSpec, cells: list[Cell]) -> SweepDisk:
    """:func:`sweep_disk`, raising ``OSError`` (ENOSPC) naming the folder, the bytes needed
    and the bytes free when the estimate does not fit."""
    disk = sweep_disk(spec, cells)
    if disk.need > disk.free:
        raise OSError(
            errno.ENOSPC,
            f"the sweep needs about {disk.need:,} bytes in {spec.out} and {disk.free:,} are "
            f"free ({disk.runs_to_train} training runs: {disk.runs:,} bytes; the largest "
            f"probe store: {disk.probe:,} bytes, removed after its cell); free space, move "
            "sweep.out to a larger disk, or set probe.memory_budget higher so more layers "
            "stream Grams",
            os.fspath(spec.out),
        )
    return disk
