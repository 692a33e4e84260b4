"""``masc-fast env``: versions, which backends can run here and why not, the datasets found."""

from __future__ import annotations

import argparse
import platform
from importlib import metadata

from masc_fast.cli import options

__all__ = ["register", "run"]


def register(commands) -> argparse.ArgumentParser:
    """Add the ``env`` sub-command to an argparse sub-parsers object."""
    parser = commands.add_parser(
        "env", help="versions, which backends can run (and why not), the real datasets found"
    )
    options.add_data_root(parser)
    parser.set_defaults(run=run)
    return parser


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def run(args: argparse.Namespace) -> int:
    """Print versions, devices and backends."""
    import torch

    from masc_fast import __version__
    from masc_fast.backends import available, cpp_ops
    from masc_fast.data import find_datasets

    print(f"masc_fast {__version__}")
    print(f"python {platform.python_version()} on {platform.platform()}")
    for package in ("torch", "numpy", "scikit-learn", "triton", "cupy-cuda12x", "cupy-cuda13x"):
        print(f"{package:<14} {_version(package)}")
    print(f"torch threads  {torch.get_num_threads()}")
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"cuda device    {cuda}")
    print("backends:")
    status = available()
    for name, (usable, reason) in status.items():
        print(f"  {name:<10} {'yes' if usable else 'no: ' + reason}")
    if status["cpp"][0]:
        print(f"cpp kernels    {cpp_ops.describe()}")
    roots = [args.data_root] if args.data_root else []
    found = find_datasets(roots)
    print("datasets:" + ("" if found else " none found (looked in --data-root, "
                         "MASC_FAST_DATA_ROOT, /usr/share/datasets and ./data)"))  # fmt: skip
    for name, folder, how in found:
        print(f"  {name:<14} {folder} ({how})")
    return 0
