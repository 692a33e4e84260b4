"""Options several ``masc-fast`` commands share, each defined once, and the rows writer.

A command's parser calls the ``add_*`` functions for the options it takes, so a flag has one
spelling, one type and one help text everywhere.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = [
    "add_backend",
    "add_batch_size",
    "add_bn_train_mode",
    "add_data_root",
    "add_device",
    "add_download",
    "add_lock_wait",
    "add_memory_budget",
    "add_names",
    "add_no_progress",
    "add_run_dir",
    "add_variance",
    "write_rows",
]


def add_run_dir(parser: argparse.ArgumentParser) -> None:
    """``--run RUN``: a training run directory (``args.run_dir``)."""
    parser.add_argument(
        "--run", dest="run_dir", required=True, type=Path, help="training run directory"
    )


def add_names(parser: argparse.ArgumentParser, flag: str, names, *, default) -> None:
    """``FLAG NAME [NAME …]``: one or more of ``names`` (experiments, baseline probes)."""
    shown = "all" if list(default) == list(names) else " ".join(default)
    parser.add_argument(
        flag,
        nargs="+",
        default=list(default),
        choices=names,
        metavar="NAME",
        help=f"one or more of {', '.join(names)} (default {shown})",
    )


def add_lock_wait(parser: argparse.ArgumentParser) -> None:
    """``--wait SECONDS``: how long to wait for another command holding the folder's lock."""
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long for another masc-fast command writing the same folder (default 0: "
        "stop at once with its name)",
    )


def add_device(parser: argparse.ArgumentParser) -> None:
    """``--device``: where models and tensors go."""
    parser.add_argument("--device", help="cpu, cuda, cuda:1 … (default: cuda if present)")


def add_no_progress(parser: argparse.ArgumentParser) -> None:
    """``--no-progress``: no progress bars."""
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def add_batch_size(parser: argparse.ArgumentParser, default: int = 512) -> None:
    """``--batch-size``: rows per forward pass of a probe (changes no result)."""
    parser.add_argument(
        "--batch-size", type=int, default=default, help=f"rows per forward pass (default {default})"
    )


def add_bn_train_mode(parser: argparse.ArgumentParser) -> None:
    """``--bn-train-mode``: the authors' per-sample BatchNorm extraction."""
    parser.add_argument(
        "--bn-train-mode",
        action="store_true",
        help="per-sample BatchNorm, as the authors' ResNet-18 extraction (default: eval mode)",
    )


def add_backend(parser: argparse.ArgumentParser) -> None:
    """``--backend``: the scoring and accumulation backend."""
    parser.add_argument("--backend", default="auto", help="masc_fast backend (default auto)")


def add_memory_budget(parser: argparse.ArgumentParser) -> None:
    """``--memory-budget``: bytes a probe's own structures may use."""
    parser.add_argument("--memory-budget", help="e.g. 8GiB (default: half the memory)")


def add_variance(parser, default: float | None = 0.99) -> None:
    """``--variance``: the explained-variance threshold t (``parser`` may be a group)."""
    parser.add_argument(
        "--variance", type=float, default=default, help="threshold t (default 0.99)"
    )


def add_data_root(parser: argparse.ArgumentParser, *, required: bool = False) -> None:
    """``--data-root``: the folder holding the datasets."""
    parser.add_argument(
        "--data-root",
        type=Path,
        required=required,
        help="folder with the torchvision / Tiny ImageNet files",
    )


def add_download(parser: argparse.ArgumentParser) -> None:
    """``--download``: fetch missing datasets (off by default: nothing is downloaded)."""
    parser.add_argument("--download", action="store_true", help="download missing data")


def write_rows(rows, out: Path) -> None:
    """Write a tidy table to ``out`` atomically and say so."""
    from masc_fast._io import atomic_write_text

    atomic_write_text(out, rows.to_csv(index=False))
    print(f"\nwrote {len(rows)} rows to {out}")
