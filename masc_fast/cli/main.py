"""``masc-fast``: the command line.

``demo`` and ``env`` live here; the paper's pipeline has one module per command group:
``train`` (:mod:`masc_fast.cli.train`), ``probe`` (:mod:`masc_fast.cli.probe`), ``retrain``
(:mod:`masc_fast.cli.retrain`), ``baselines`` (:mod:`masc_fast.cli.baselines`), ``sweep`` and
``verify-reference`` (:mod:`masc_fast.cli.sweep`), ``report`` (:mod:`masc_fast.cli.report`).
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import time
from dataclasses import replace
from importlib import metadata

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from masc_fast.pipeline.demo import DemoConfig, format_summary, run_demo

    config = DemoConfig()
    if args.corruptions:
        config = replace(config, corruptions=tuple(args.corruptions))
    if args.max_epochs:
        config = replace(config, max_epochs=args.max_epochs)
    started = time.perf_counter()
    summary = run_demo(args.output, config=config, progress=not args.no_progress)
    print("\nMASC on digits (best layer by test accuracy; gain = MASC / model test - 1)")
    print(format_summary(summary))
    print(
        f"\nwrote {args.output}/summary.csv, results/results.csv and report/index.html "
        f"in {time.perf_counter() - started:.0f} s"
    )
    return 0


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _env(args: argparse.Namespace) -> int:
    import torch

    from masc_fast import __version__
    from masc_fast.backends import available

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
        print(f"cpp kernels    {_cpp_details()}")
    return 0


def _cpp_details() -> str:
    """OpenMP, worker count and BLAS of the C++ extension (for ``masc-fast env``)."""
    from masc_fast.backends import cpp_ops

    ext = cpp_ops._ext()
    blas = [
        f"{info.get('internal_api')} {info.get('version')}"
        for info in cpp_ops._blas_controller().info()
        if "scipy.libs" in info.get("filepath", "")  # SciPy's wheel, not NumPy's copy
    ]
    openmp = "OpenMP" if ext.has_openmp else "no OpenMP (one thread)"
    return (
        f"{openmp}, {cpp_ops.default_threads()} threads, BLAS from {ext.blas_source}"
        f" ({', '.join(blas) or 'version unknown'})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="masc-fast",
        description="MASC probes of deep networks and the paper's experiments around them.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="train digits MLPs with shuffled labels and probe them")
    demo.add_argument("--output", default="masc_demo", help="output folder (default masc_demo)")
    demo.add_argument("--corruptions", type=float, nargs="+", help="corruption degrees p")
    demo.add_argument("--max-epochs", type=int, help="epoch cap per model")
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    demo.set_defaults(run=_demo)
    env = commands.add_parser("env", help="versions and which backends can run, and why not")
    env.set_defaults(run=_env)
    from masc_fast.cli import baselines as cli_baselines
    from masc_fast.cli import probe as cli_probe
    from masc_fast.cli import report as cli_report
    from masc_fast.cli import retrain as cli_retrain
    from masc_fast.cli import sweep as cli_sweep
    from masc_fast.cli import train as cli_train

    cli_train.register(commands)
    cli_probe.register(commands)
    cli_retrain.register(commands)
    cli_baselines.register(commands)
    cli_sweep.register(commands)
    cli_report.register(commands)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
