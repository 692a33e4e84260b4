"""The parts of ``bench/gpu_check.py``: each proves or measures one CUDA path of masc_fast.

A part is a function ``part(context) -> dict`` that returns its measurements (JSON-ready) or
raises :class:`NoGPU` when it cannot mean anything on this machine; ``gpu_check.py`` runs each
in its own process under its own time limit. With ``context.smoke`` every part runs the same
code at tiny shapes on the CPU (Triton under its interpreter): a check of the check, no timing.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from _gpu import scoring_case

PRECISIONS = ("fp32", "tf32", "tf32x3", "bf16")


class NoGPU(Exception):
    """The part measures a CUDA path and there is no CUDA device (status ``skip``)."""


@dataclass(frozen=True)
class Context:
    device: torch.device
    smoke: bool
    repo: Path


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(run, device, *, repeats: int = 3) -> float:
    """Median wall seconds of ``run()`` after one warm-up (compilation, handles), synchronised."""
    run()
    _sync(device)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        _sync(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def peak_extra_bytes(run, device) -> int | None:
    """Device bytes ``run()`` allocates above what was allocated before it (None on the CPU)."""
    if device.type != "cuda":
        run()
        return None
    _sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    run()
    _sync(device)
    return int(torch.cuda.max_memory_allocated(device) - before)


# ---------------------------------------------------------------- environment and tests


def environment(context: Context) -> dict:
    """GPU, driver, versions, commit, and which backends can run."""
    from importlib import metadata

    from masc_fast import backends

    def version(package):
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None

    info = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "triton": version("triton"),
        "cupy": version("cupy-cuda13x") or version("cupy-cuda12x"),
        "backends": {name: ok for name, (ok, _) in backends.available().items()},
    }
    if context.device.type == "cuda":
        properties = torch.cuda.get_device_properties(context.device)
        info.update(
            gpu=properties.name,
            sm_count=properties.multi_processor_count,
            memory_gib=round(properties.total_memory / 2**30, 1),
            capability=f"{properties.major}.{properties.minor}",
            driver=_driver_version(),
        )
    return info


def _driver_version() -> str | None:
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip().splitlines()[0]


#: The tests that skip without CUDA (and the full-size kernel tests), run on CUDA.
CUDA_TESTS = (
    "tests/test_kernels_triton.py",
    "tests/test_backends.py",
    "tests/test_streaming.py",
    "tests/test_threshold_scoring.py",
    "tests/test_verify_reference.py",
    "tests/test_eigensolvers_batched.py",
    "tests/test_train_run.py",
    "tests/test_scale_safety.py",
)
CUDA_SELECTION = "cuda or gpu or full_size or on_device"


def cuda_tests(context: Context) -> dict:
    """pytest over the CUDA tests (kernels, backends, streaming, threshold scoring,
    verify-reference, batched eigensolver, training); triton is required on a GPU."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfs"]
    command += [*CUDA_TESTS, "-k", CUDA_SELECTION]
    env = dict(os.environ)
    if context.device.type != "cuda":  # collect only: proves the selection, runs nothing
        done = subprocess.run(
            [*command, "--co"], cwd=context.repo, capture_output=True, text=True, env=env
        )
        if done.returncode != 0:
            raise RuntimeError(done.stdout[-2000:] + done.stderr[-2000:])
        raise NoGPU(f"no CUDA device; {done.stdout.strip().splitlines()[-1]}")
    env["MASC_FAST_REQUIRE"] = "cpp,triton" if _has_cpp() else "triton"
    done = subprocess.run(command, cwd=context.repo, capture_output=True, text=True, env=env)
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    if done.returncode != 0:
        raise RuntimeError(f"{summary}\n{done.stdout[-3000:]}")
    return {"summary": summary, "required": env["MASC_FAST_REQUIRE"]}


def _has_cpp() -> bool:
    from masc_fast import backends

    return backends.available()["cpp"][0]


# ---------------------------------------------------------------- precision agreement


def precision(context: Context) -> dict:
    """Prediction agreement of each precision mode with the float64 reference, on the real
    activations of noisy MLPs (digits, MNIST-1D) and structured data, by the Triton kernel."""
    from precision_agreement import agreement_rows, paper_sources, triton_predict

    from masc_fast.testing.synthetic import structured_classes

    if context.smoke:
        x, y = structured_classes(240, 24, 4, seed=7, dtype=torch.float64)
        sources = [("structured d=24 (smoke)", *_split(x.numpy(), y.numpy(), 200))]
    else:
        sources = paper_sources()

    def predict(x, bases, mode):
        return triton_predict(x, bases, mode, device=context.device)

    return {"precision": {"rows": agreement_rows(sources, predict)}}


def _split(x: np.ndarray, y: np.ndarray, n_train: int):
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


# ---------------------------------------------------------------- scoring


SCORING_SHAPES = {  # name: (n, d, K, r_k)
    "n10000-d4096-R5000": (10000, 4096, 100, 50),
    "n100000-d4096-k200-R44000": (100000, 4096, 200, 220),
    "n50000-d512-k10": (50000, 512, 10, 50),
}
SMOKE_SCORING_SHAPES = {"n96-d40-k3": (96, 40, 3, 6)}


def _gemm(x, basis, mode):
    """The cuBLAS GEMM at ``mode`` (bf16 operands cast beforehand: the GEMM alone)."""
    from masc_fast.backends.torch_ops import precision_product

    if mode == "bf16":
        a, b = x.bfloat16(), basis.bfloat16()
        return lambda: a @ b
    product = precision_product("fp32" if mode == "tf32x3" else mode)
    return lambda: product(x, basis)


def scoring(context: Context) -> dict:
    """The fused kernel against cuBLAS at the same precision and the unfused torch path."""
    shapes = SMOKE_SCORING_SHAPES if context.smoke else SCORING_SHAPES
    rows = []
    for name, shape in shapes.items():
        rows += _score_shape(name, *shape, context.device)
    return {"scoring": rows}


def _score_shape(name: str, n: int, d: int, k: int, r: int, device) -> list[dict]:
    from masc_fast.backends import torch_ops, triton_ops

    x, basis, offsets = scoring_case(n, d, k, r, device)
    expected = torch_ops.subspace_scores(x.double(), basis.double(), offsets)[1]
    flops, ceilings, rows = 2 * n * d * basis.shape[1], {}, []
    runs = {
        (mode, "triton"): lambda mode=mode: triton_ops.subspace_scores(
            x, basis, offsets, precision=mode
        )
        for mode in PRECISIONS
    }
    runs["fp32", "torch"] = lambda: torch_ops.subspace_scores(x, basis, offsets)
    for (mode, backend), run in runs.items():
        ceiling_mode = "fp32" if mode == "tf32x3" else mode  # cuBLAS has no 3-pass TF32
        if ceiling_mode not in ceilings:
            ceilings[ceiling_mode] = flops / median_seconds(_gemm(x, basis, mode), device)
        rate = flops / median_seconds(run, device)
        rows.append({
            "shape": name, "precision": mode, "backend": backend, "tflops": rate / 1e12,
            "ceiling_tflops": ceilings[ceiling_mode] / 1e12, "fraction": rate / ceilings[ceiling_mode],
            "agreement": float((run()[1] == expected).double().mean()),
            "peak_extra_bytes": peak_extra_bytes(run, device),
        })  # fmt: skip
    return rows


# ---------------------------------------------------------------- block-size sweep


def sweep_candidates(mode: str):
    """Tile shapes to try per precision: BLOCK_M × BLOCK_R × BLOCK_D, warps, stages."""
    from masc_fast.kernels import FusedBlocks

    if mode == "fp32":  # the "ieee" path on the FMA units
        shapes = [(64, 64, 32, 4, 3), (64, 64, 16, 4, 4), (128, 64, 16, 8, 3), (64, 128, 16, 8, 3),
                  (32, 64, 32, 4, 3), (128, 128, 16, 8, 2)]  # fmt: skip
    else:  # tensor cores
        shapes = [(128, 64, 32, 4, 3), (128, 128, 32, 8, 3), (64, 128, 32, 4, 4),
                  (128, 64, 64, 4, 3), (128, 128, 64, 8, 3), (256, 64, 32, 8, 3)]  # fmt: skip
    return [
        FusedBlocks(m, r, dd, group_m=8, num_warps=w, num_stages=s) for m, r, dd, w, s in shapes
    ]


def block_sweep(context: Context, *, budget_seconds: float = 55.0) -> dict:
    """Time the energies kernel's tile shapes per precision; the fastest goes to the table the
    launcher reads (``masc_fast.kernels._utils.TUNED_BLOCKS``) once committed."""
    from masc_fast.kernels import FusedBlocks, subspace_scores

    device, started = context.device, time.perf_counter()
    n, d, k, r = (96, 40, 3, 6) if context.smoke else (20000, 4096, 100, 50)
    x, basis, offsets = scoring_case(n, d, k, r, device)
    offsets = offsets.to(device)
    flops, results = 2 * n * d * basis.shape[1], []
    modes = ("fp32",) if context.smoke else ("fp32", "tf32", "bf16", "tf32x3")
    for mode in modes:
        candidates = sweep_candidates(mode)[:2] if context.smoke else sweep_candidates(mode)
        if context.smoke:  # the interpreter takes any tile of at least 16
            candidates = [FusedBlocks(32, 32, 16), FusedBlocks(16, 32, 32, group_m=2)]
        for blocks in candidates:
            if time.perf_counter() - started > budget_seconds:
                break

            def run(blocks=blocks, mode=mode):
                return subspace_scores(x, basis, offsets, precision=mode, blocks=blocks)

            try:
                seconds = median_seconds(run, device)
            except Exception as error:  # a shape that does not compile or fit is a result too
                results.append(
                    {"precision": mode, "blocks": _tuple(blocks), "error": str(error)[:200]}
                )
                continue
            results.append(
                {"precision": mode, "blocks": _tuple(blocks), "seconds": seconds,
                 "tflops": flops / seconds / 1e12}
            )  # fmt: skip
    timed = [row for row in results if "seconds" in row]
    winners = {
        mode: min((row for row in timed if row["precision"] == mode), key=lambda row: row["seconds"])["blocks"]
        for mode in {row["precision"] for row in timed}
    }  # fmt: skip
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (interpreter)"
    return {"block_sweep": {"gpu": gpu, "shape": [n, d, k, r], "results": results,
                            "winners": winners}}  # fmt: skip


def _tuple(blocks) -> list[int]:
    return [blocks.block_m, blocks.block_r, blocks.block_d, blocks.group_m, blocks.num_warps,
            blocks.num_stages]  # fmt: skip
