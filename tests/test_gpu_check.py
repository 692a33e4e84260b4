"""``bench/gpu_check.py --smoke``: every part of the GPU check runs end to end on the CPU, so
no minute of a lent GPU goes to a Python error (issue 15)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"
SMOKE_SECONDS = 120


def test_the_gpu_check_runs_every_part_on_the_cpu(tmp_path):
    done = subprocess.run(
        [sys.executable, str(BENCH / "gpu_check.py"), "--smoke", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=2 * SMOKE_SECONDS,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    [path] = tmp_path.glob("gpu_check-*.json")
    assert path.with_suffix(".md").exists()
    record = json.loads(path.read_text())
    for key in ("device", "torch", "triton", "cupy", "commit", "date", "parts", "scoring", "probe"):
        assert key in record, key
    parts = record["parts"]
    assert list(parts) == [
        "environment", "cuda_tests", "precision", "scoring", "block_sweep", "fitting",
        "streaming", "probe_cnn", "probe_alexnet", "distributed",
    ]  # fmt: skip
    # Only the CUDA tests need a GPU to run at all; every other part ran its code here.
    assert {name for name, part in parts.items() if part["status"] != "ok"} == {"cuda_tests"}
    assert (
        parts["cuda_tests"]["status"] == "skip"
        and "tests collected" in parts["cuda_tests"]["error"]
    )
    assert sum(part["seconds"] for part in parts.values()) < SMOKE_SECONDS
    scoring = record["scoring"]
    assert {(row["precision"], row["backend"]) for row in scoring} == {
        ("fp32", "triton"), ("tf32", "triton"), ("tf32x3", "triton"), ("bf16", "triton"),
        ("fp32", "torch"),
    }  # fmt: skip
    assert all(row["agreement"] == 1.0 and row["tflops"] > 0 for row in scoring)
    assert [row["workload"] for row in record["probe"]] == ["cifar10-cnn", "tiny-imagenet-alexnet"]
    assert record["distributed"]["backend"] == "gloo"  # a one-rank group; NCCL on the GPU
    assert [run["strategy"] for run in record["distributed"]["runs"]] == ["gram", "stored"]
    assert all(
        set(row["phases"]) >= {"forward", "eigensolve", "scoring"} for row in record["probe"]
    )
    assert record["block_sweep"]["winners"]["fp32"]
    assert all(case["counts_agree"] for case in record["fitting"]["eigensolvers"])
    assert {row["mapped"]: row["status"] for row in record["streaming"]["runs"]} == {
        False: "ok",
        True: "skip",
    }
    assert record["precision"]["rows"][0]["fp32"] == 1.0


def test_a_failing_crashing_or_hanging_part_is_recorded_and_the_rest_still_run(tmp_path):
    faults = "precision:raise,fitting:crash,streaming:hang"
    done = subprocess.run(
        [sys.executable, str(BENCH / "gpu_check.py"), "--smoke", "--out", str(tmp_path),
         "--limit", "10", "--parts", "precision", "fitting", "streaming", "environment"],
        capture_output=True, text=True, timeout=SMOKE_SECONDS,
        env={**os.environ, "MASC_FAST_GPU_CHECK_FAULT": faults},
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    parts = json.loads(next(tmp_path.glob("gpu_check-*.json")).read_text())["parts"]
    assert parts["precision"]["status"] == "fail"
    assert "fault injected into precision" in parts["precision"]["error"]
    assert parts["fitting"]["status"] == "fail"
    assert "exit 3 without a result" in parts["fitting"]["error"]
    assert parts["streaming"] == {
        "status": "fail",
        "seconds": 10.0,
        "error": "over its 10.0 s limit",
    }
    assert parts["environment"]["status"] == "ok"  # after all three, it still ran
    assert "failed: precision, fitting, streaming" in done.stdout
