"""``masc-fast env``: versions, and which backends can run here and why not."""

from __future__ import annotations

import argparse
import platform
from importlib import metadata

__all__ = ["register", "run"]


def register(commands) -> argparse.ArgumentParser:
    """Add the ``env`` sub-command to an argparse sub-parsers object."""
    parser = commands.add_parser("env", help="versions and which backends can run, and why not")
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
    return 0
