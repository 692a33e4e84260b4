"""One command that proves and measures every CUDA path of masc_fast, in minutes (issue 15).

    python bench/gpu_check.py                 # on a GPU machine: every part, ≤ 6 min on an H100
    python bench/gpu_check.py --smoke         # on any machine: the same code at tiny shapes on
                                              # the CPU (Triton interpreted), < 2 min; a test
    python bench/gpu_check.py --parts scoring block_sweep

Each part (``gpu_parts`` and ``gpu_parts_fit``) runs in its own process under its own time
limit, so a part that fails, hangs or crashes the CUDA context is recorded and the others still
run. One plain line per part goes to stdout as it finishes. The record goes to ``--out``
(default ``bench/results/``): ``gpu_check-<gpu>-<date>.json`` with the device, versions, commit,
each part's status, seconds and error, the scoring rows (TFLOP/s, fraction of the same-precision
cuBLAS ceiling, agreement with float64, peak extra memory), the probe rows (seconds, phases, peak
GPU memory) and every other part's measurements; and a Markdown summary beside it. Exit status:
1 when a part failed for a reason other than "no GPU", else 0.

On the GPU machine (its image has torch, triton, pytest, scikit-learn, pandas; no registry):
``pip install --no-build-isolation --no-deps -e . && python bench/gpu_check.py``; if the C++
extension does not build there, the install goes on without it and ``environment`` says so.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
#: name -> (module, function, seconds allowed on a GPU); the order is the run order.
PARTS = {
    "environment": ("gpu_parts", "environment", 60),
    "cuda_tests": ("gpu_parts", "cuda_tests", 150),
    "precision": ("gpu_parts", "precision", 90),
    "scoring": ("gpu_parts", "scoring", 90),
    "block_sweep": ("gpu_parts", "block_sweep", 75),
    "fitting": ("gpu_parts_fit", "fitting", 60),
    "streaming": ("gpu_parts_fit", "streaming", 45),
    "probe_cnn": ("gpu_parts_fit", "probe_cnn", 60),
    "probe_alexnet": ("gpu_parts_fit", "probe_alexnet", 150),
    "distributed": ("gpu_parts_distributed", "distributed", 45),
}
#: A smoke run's parts take this many seconds each at most (interpreted, tiny shapes).
SMOKE_LIMIT = 90
#: Fault injection for the check's own tests: ``part:raise``, ``part:crash`` or ``part:hang``.
FAULT = "MASC_FAST_GPU_CHECK_FAULT"


def _inject_fault(name: str) -> None:
    faults = dict(item.split(":") for item in os.environ.get(FAULT, "").split(",") if ":" in item)
    kind = faults.get(name)
    if kind == "raise":
        raise RuntimeError(f"fault injected into {name}")
    if kind == "crash":
        os._exit(3)
    if kind == "hang":
        time.sleep(3600)


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
            check=True, timeout=10,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("MASC_FAST_COMMIT", "unknown")


def run_child(name: str, result_path: Path, smoke: bool) -> int:
    """Run one part in this process and write ``{"status", "data"|"error"}`` to ``result_path``."""
    import importlib

    import torch

    sys.path.insert(0, str(BENCH))
    module, function, _ = PARTS[name]
    device = torch.device("cuda" if torch.cuda.is_available() and not smoke else "cpu")
    try:
        _inject_fault(name)
        parts = importlib.import_module("gpu_parts")
        context = parts.Context(device=device, smoke=smoke, repo=REPO)
        data = getattr(importlib.import_module(module), function)(context)
        outcome = {"status": "ok", "data": data}
    except Exception as error:  # every failure is recorded, the run goes on
        skipped = type(error).__name__ == "NoGPU"
        outcome = {"status": "skip" if skipped else "fail", "error": str(error)[-2000:]}
        if not skipped:
            outcome["traceback"] = traceback.format_exc()[-4000:]
    result_path.write_text(json.dumps(outcome, default=str))
    return 0 if outcome["status"] != "fail" else 1


def _run_part(name: str, smoke: bool, limit: float | None = None) -> dict:
    """One part in a child process under its time limit: status, seconds, error, data."""
    limit = limit or (SMOKE_LIMIT if smoke else PARTS[name][2])
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if smoke:
        env["TRITON_INTERPRET"] = "1"
    with tempfile.TemporaryDirectory() as folder:
        result_path = Path(folder) / "result.json"
        command = [sys.executable, __file__, "--child", name, "--result", str(result_path)]
        command += ["--smoke"] if smoke else []
        started = time.perf_counter()
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=limit, env=env, cwd=REPO
            )
            output = done.stdout[-2000:] + done.stderr[-2000:]
        except subprocess.TimeoutExpired:
            return {"status": "fail", "seconds": limit, "error": f"over its {limit} s limit"}
        seconds = time.perf_counter() - started
        if not result_path.exists():  # the child died (segfault, CUDA abort, killed)
            return {"status": "fail", "seconds": seconds,
                    "error": f"exit {done.returncode} without a result: {output}"}  # fmt: skip
        outcome = json.loads(result_path.read_text())
    return {**outcome, "seconds": seconds}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "unknown"


def _markdown(record: dict) -> str:
    lines = [
        f"# gpu_check on {record['device']} ({record['date']}, commit {record['commit']})",
        "",
        f"torch {record['torch']}, triton {record['triton']}, cupy {record['cupy']}"
        + (" — smoke run: tiny shapes on the CPU, no timing" if record["smoke"] else ""),
        "",
        "| part | status | seconds | error |",
        "|---|---|---|---|",
    ]
    for name, part in record["parts"].items():
        error = part.get("error", "").replace("|", "/").replace("\n", " ")[:160]
        lines.append(f"| {name} | {part['status']} | {part['seconds']:.1f} | {error} |")
    if record["scoring"]:
        lines += ["", "| shape | precision | backend | TFLOP/s | ceiling | fraction | agreement "
                  "| peak extra MB |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for row in record["scoring"]:
            peak = row["peak_extra_bytes"]
            peak = "" if peak is None else f"{peak / 2**20:.0f}"
            lines.append(
                f"| {row['shape']} | {row['precision']} | {row['backend']} | {row['tflops']:.2f} "
                f"| {row['ceiling_tflops']:.2f} | {row['fraction']:.1%} | {row['agreement']:.4%} "
                f"| {peak} |"
            )
    if record["probe"]:
        lines += ["", "| workload | seconds | phases | peak GPU GiB |", "|---|---|---|---|"]
        for row in record["probe"]:
            phases = ", ".join(f"{k} {v:.1f}" for k, v in row["phases"].items())
            peak = "" if row["peak_gpu_bytes"] is None else f"{row['peak_gpu_bytes'] / 2**30:.2f}"
            lines.append(f"| {row['workload']} | {row['seconds']:.1f} | {phases} | {peak} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=BENCH / "results", help="record folder")
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS))
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU")
    parser.add_argument("--limit", type=float, help="seconds allowed to every part (override)")
    parser.add_argument("--child", choices=list(PARTS), help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return run_child(args.child, args.result, args.smoke)

    record = {"commit": _commit(), "date": datetime.date.today().isoformat(), "smoke": args.smoke,
              "parts": {}, "scoring": [], "probe": []}  # fmt: skip
    for name in args.parts:
        outcome = _run_part(name, args.smoke, args.limit)
        data = outcome.pop("data", None) or {}
        record["parts"][name] = outcome
        record["scoring"] += data.pop("scoring", [])
        record["probe"] += data.pop("probe", [])
        if name == "environment":
            record["environment"] = data
        else:
            record.update(data)
        note = f": {outcome.get('error', '')[:200]}" if outcome["status"] != "ok" else ""
        print(f"{name:<14} {outcome['status']:<5} {outcome['seconds']:7.1f} s{note}", flush=True)

    environment = record.get("environment", {})
    record["device"] = environment.get("gpu") or ("cpu (smoke)" if args.smoke else "unknown")
    for key in ("torch", "triton", "cupy"):
        record[key] = environment.get(key)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"gpu_check-{_slug(record['device'])}-{record['date']}"
    sys.path.insert(0, str(REPO))
    from masc_fast._io import atomic_write_text

    atomic_write_text(args.out / f"{stem}.json", json.dumps(record, indent=1, default=str) + "\n")
    atomic_write_text(args.out / f"{stem}.md", _markdown(record))
    failed = [name for name, part in record["parts"].items() if part["status"] == "fail"]
    print(f"wrote {args.out / stem}.json and .md; failed: {', '.join(failed) or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
