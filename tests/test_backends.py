"""Every backend's ops against the float64 reference, and backend selection.

Ops are called through ``masc_fast.backends.get_backend(name)`` with validated, contiguous
input, as the engine calls them. The reference is ``masc_fast.reference`` (NumPy, float64).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from _compare import assert_close_report, assert_labels_match
from conftest import BACKEND_NAMES, TOLERANCES, backend_status

from masc_fast import backends
from masc_fast import reference as ref
from masc_fast.backends import BackendUnavailableError, get_backend, select_backend

# name -> (n, d, ranks per class); 0 = absent class.
SHAPES = {
    "n1-d7-k3": (1, 7, (2, 1, 3)),
    "n40-d16-k1": (40, 16, (5,)),
    "n64-d7-rank_d": (64, 7, (7, 2)),
    "n200-d129-k5": (200, 129, (1, 3, 0, 7, 2)),
    "n300-d64-k10-r1": (300, 64, (1,) * 10),
    "n513-d33-k4": (513, 33, (4, 6, 5, 4)),
}
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _device_for(name: str) -> torch.device:
    """Triton runs on CUDA, or on CPU under TRITON_INTERPRET=1; the others are tested on CPU."""
    if name == "triton" and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def _problem(n: int, dim: int, ranks, seed: int):
    """Random orthonormal class bases and rows near them (plus noise), float64."""
    generator = torch.Generator().manual_seed(seed)
    bases = [
        torch.linalg.qr(torch.randn(dim, r, generator=generator, dtype=torch.float64)).Q
        if r
        else None
        for r in ranks
    ]
    present = [k for k, r in enumerate(ranks) if r]
    rows = []
    for i in range(n):
        basis = bases[present[i % len(present)]]
        signal = basis @ torch.randn(basis.shape[1], generator=generator, dtype=torch.float64)
        rows.append(signal + 0.3 * torch.randn(dim, generator=generator, dtype=torch.float64))
    x = torch.stack(rows)
    packed = torch.cat([b for b in bases if b is not None], dim=1)
    offsets = torch.zeros(len(ranks) + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(torch.tensor(ranks), 0)
    return x, packed, offsets, [None if b is None else b.numpy() for b in bases]


def _run_scores(name, x, basis, offsets, **kwargs):
    device = _device_for(name)
    scores, pred = get_backend(name).subspace_scores(
        x.to(device).contiguous(),
        basis.to(device=device, dtype=x.dtype).contiguous(),
        offsets,
        **kwargs,
    )
    assert scores.device.type == device.type and pred.device.type == device.type
    assert scores.dtype == x.dtype and pred.dtype == torch.int64
    return scores.cpu(), pred.cpu()


@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_subspace_scores_matches_reference(backend, dtype, shape):
    n, dim, ranks = shape
    x64, basis, offsets, ref_bases = _problem(n, dim, ranks, seed=n * dim)
    x = x64.to(dtype)
    # The reference scores the same (rounded) input in float64 with exact bases.
    ref_scores = ref.subspace_scores_ref(x.double(), ref_bases)
    ref_pred = ref.predict_ref(x.double(), ref_bases)
    scores, pred = _run_scores(backend, x, basis, offsets)
    atol, rtol = TOLERANCES[dtype]
    assert scores.shape == (n, len(ranks)) and pred.shape == (n,)
    assert_close_report(scores, ref_scores, atol, rtol, f"{backend} scores")
    assert_labels_match(
        pred,
        ref_pred,
        ref_scores,
        score_tol=atol,
        max_excused_fraction=0.01,
        name=f"{backend} labels",
    )
    if dtype == torch.float32 and backend != "torch":
        # Reduced precision: at most twice the plain torch path's error, plus the atol floor.
        torch_scores, _ = _run_scores("torch", x, basis, offsets)
        torch_error = float(np.abs(torch_scores.double().numpy() - ref_scores).max())
        error = float(np.abs(scores.double().numpy() - ref_scores).max())
        assert error <= 2 * torch_error + atol, (error, torch_error)


def test_subspace_scores_zero_row_and_absent_class(backend):
    x, basis, offsets, ref_bases = _problem(20, 9, (0, 2, 3), seed=1)
    x[3] = 0.0
    scores, pred = _run_scores(backend, x, basis, offsets)
    assert not bool(torch.isnan(scores).any())
    assert scores[3].tolist() == [0.0, 0.0, 0.0]
    assert int(pred[3]) == 1  # lowest present class
    assert bool((scores[:, 0] == 0).all())
    assert not bool((pred == 0).any())
    assert_close_report(
        scores,
        ref.subspace_scores_ref(x, ref_bases),
        *TOLERANCES[torch.float64],
        f"{backend} scores",
    )


def test_subspace_scores_exact_tie_goes_to_lowest_class(backend):
    # Classes 0 and 1 share a basis, so their scores are identical whatever the rounding.
    generator = torch.Generator().manual_seed(2)
    shared = torch.linalg.qr(torch.randn(12, 3, generator=generator, dtype=torch.float64)).Q
    other = torch.linalg.qr(torch.randn(12, 2, generator=generator, dtype=torch.float64)).Q
    basis = torch.cat([other, shared, shared], dim=1)
    offsets = torch.tensor([0, 2, 5, 8])
    x = torch.cat(
        [
            torch.randn(30, 3, generator=generator, dtype=torch.float64) @ shared.T,
            torch.randn(30, 12, generator=generator, dtype=torch.float64),
        ]
    )
    scores, pred = _run_scores(backend, x, basis, offsets)
    if backend == "triton":
        # The fused kernel reduces each class inside its column tile, so equal bases at other
        # column positions sum in another order: equal to rounding, not to the bit
        # (kernels/subspace_scores.py, "Determinism"). Where the scores do tie, the lowest wins.
        torch.testing.assert_close(scores[:, 1], scores[:, 2], atol=1e-15, rtol=1e-14)
        tied = scores[:, 1] == scores[:, 2]
        assert bool((pred[:30][tied[:30]] == 1).all())
        assert bool(torch.isin(pred[:30], torch.tensor([1, 2])).all())
        return
    assert torch.equal(scores[:, 1], scores[:, 2])
    assert not bool((pred == 2).any())
    assert bool((pred[:30] == 1).all())


def test_subspace_scores_block_split_is_invisible(backend):
    x, basis, offsets, _ = _problem(257, 20, (3, 4, 2), seed=3)
    whole = _run_scores(backend, x, basis, offsets)
    split = _run_scores(backend, x, basis, offsets, block_rows=50)
    assert_close_report(split[0], whole[0], 1e-14, 0.0, f"{backend} scores by block")
    assert torch.equal(split[1], whole[1])


def test_subspace_scores_no_rows(backend):
    _, basis, offsets, _ = _problem(1, 6, (2, 2), seed=4)
    scores, pred = _run_scores(backend, torch.zeros(0, 6, dtype=torch.float64), basis, offsets)
    assert scores.shape == (0, 2) and pred.shape == (0,)


def test_subspace_scores_no_class_present_predicts_minus_one(backend):
    x = torch.randn(4, 5, dtype=torch.float64)
    scores, pred = _run_scores(
        backend, x, torch.zeros(5, 0, dtype=torch.float64), torch.zeros(3, dtype=torch.int64)
    )
    assert bool((scores == 0).all())
    assert pred.tolist() == [-1] * 4


GRAM_SHAPES = {"n1-d7-k3": (1, 7, 3), "n100-d33-k4": (100, 33, 4), "n257-d129-k2": (257, 129, 2)}


@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("shape", list(GRAM_SHAPES.values()), ids=list(GRAM_SHAPES))
def test_gram_update_matches_reference(backend, dtype, shape):
    n, dim, num_classes = shape
    generator = torch.Generator().manual_seed(n + dim)
    start = torch.randn(num_classes, 5, dim, generator=generator, dtype=torch.float64)
    x = torch.randn(n, dim, generator=generator, dtype=torch.float64).to(dtype)
    y = torch.randint(0, num_classes, (n,), generator=generator)
    y[0] = num_classes - 1  # the last class is always hit
    gram = (start.transpose(1, 2) @ start).to(dtype)  # a non-zero Gram to add to
    expected = gram.double().numpy().copy()
    ref.gram_update_ref(expected, x.double(), y)
    device = _device_for(backend)
    on_device = gram.to(device)
    get_backend(backend).gram_update(on_device, x.to(device), y.to(device))
    assert on_device.dtype == dtype
    atol, rtol = TOLERANCES[dtype]
    # Gram entries are sums of ~n/K products of O(1) numbers: scale atol by the entry size.
    scale = float(np.abs(expected).max())
    assert_close_report(on_device.cpu(), expected, atol * scale, rtol, f"{backend} Gram")


# ---------------------------------------------------------------- selection


def test_available_reports_every_backend():
    status = backends.available()
    assert set(status) == set(BACKEND_NAMES)
    for name, (usable, reason) in status.items():
        assert isinstance(usable, bool)
        assert usable == (reason == ""), name
    assert status["torch"] == (True, "") and status["reference"] == (True, "")


def test_explicit_argument_beats_environment(monkeypatch):
    monkeypatch.setenv("MASC_FAST_BACKEND", "reference")
    assert select_backend("torch", "cpu") == "torch"


def test_environment_beats_auto(monkeypatch):
    monkeypatch.setenv("MASC_FAST_BACKEND", "reference")
    assert select_backend("auto", "cpu") == "reference"
    assert select_backend(None, "cpu") == "reference"


def test_empty_environment_means_auto(monkeypatch):
    monkeypatch.setenv("MASC_FAST_BACKEND", "")
    assert select_backend("auto", "cpu") in ("cpp", "torch")


def test_auto_on_cpu_prefers_cpp_and_never_reference(monkeypatch):
    monkeypatch.delenv("MASC_FAST_BACKEND", raising=False)
    expected = "cpp" if backend_status()["cpp"][0] else "torch"
    assert select_backend("auto", "cpu") == expected


def _fake_availability(unavailable: dict[str, str]):
    real = backends._availability

    def fake(name):
        if name in unavailable:
            return False, unavailable[name]
        return real(name)

    return fake


def test_auto_falls_back_to_torch_and_logs_once(monkeypatch, caplog):
    monkeypatch.delenv("MASC_FAST_BACKEND", raising=False)
    monkeypatch.setattr(
        backends, "_availability", _fake_availability({"cpp": "simulated: not built"})
    )
    backends._log_fallback_once.cache_clear()
    with caplog.at_level(logging.INFO, logger="masc_fast.backends"):
        assert select_backend("auto", "cpu") == "torch"
        assert select_backend("auto", "cpu") == "torch"
    messages = [r.getMessage() for r in caplog.records if "falling back" in r.getMessage()]
    assert len(messages) == 1
    assert "'cpp'" in messages[0] and "simulated: not built" in messages[0]
    assert caplog.records[0].levelno == logging.INFO
    backends._log_fallback_once.cache_clear()


def test_auto_on_cuda_prefers_triton_else_torch(monkeypatch):
    monkeypatch.delenv("MASC_FAST_BACKEND", raising=False)
    monkeypatch.setattr(
        backends, "_availability", _fake_availability({"triton": "simulated: no triton"})
    )
    backends._log_fallback_once.cache_clear()
    assert select_backend("auto", "cuda") == "torch"  # no tensor is created: no GPU needed
    monkeypatch.setattr(backends, "_availability", lambda name: (True, ""))
    assert select_backend("auto", "cuda") == "triton"
    backends._log_fallback_once.cache_clear()


def test_unknown_backend_raises():
    with pytest.raises(ValueError, match="unknown backend 'nope'; expected one of torch, cpp"):
        select_backend("nope", "cpu")


def test_unknown_backend_in_environment_raises(monkeypatch):
    monkeypatch.setenv("MASC_FAST_BACKEND", "nope")
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        select_backend("auto", "cpu")


def test_explicit_unavailable_backend_raises(monkeypatch):
    monkeypatch.setattr(
        backends, "_availability", _fake_availability({"cpp": "simulated: not built"})
    )
    with pytest.raises(BackendUnavailableError, match="backend 'cpp' is unavailable: simulated"):
        select_backend("cpp", "cpu")
    monkeypatch.setenv("MASC_FAST_BACKEND", "cpp")
    with pytest.raises(BackendUnavailableError, match="simulated: not built"):
        select_backend("auto", "cpu")


# ---------------------------------------------------------------- fallback, for real

_FALLBACK_SCRIPT = textwrap.dedent(
    """
    import logging, sys
    sys.modules["masc_fast._C"] = None   # the extension is not built
    sys.modules["triton"] = None         # and Triton is not installed
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="LOG %(name)s %(message)s")
    import torch
    import masc_fast
    from masc_fast import backends
    usable, reason = backends.available()["cpp"]
    assert not usable and "masc_fast._C" in reason, reason
    accumulator = masc_fast.GramAccumulator(3, 6)
    accumulator.update(torch.randn(60, 6, dtype=torch.float64), torch.arange(60) % 3)
    subspaces = accumulator.fit(0.9)
    x = torch.randn(5, 6, dtype=torch.float64)
    print("ACCUMULATOR", accumulator.backend)
    print("RAN", subspaces.score(x).backend)
    print("RAN", subspaces.score(x.float()).backend)
    try:
        backends.select_backend("cpp", "cpu")
    except backends.BackendUnavailableError as error:
        print("EXPLICIT", type(error).__name__, type(error.__cause__).__name__)
    """
)


def _run_fallback_script() -> str:
    result = subprocess.run(
        [sys.executable, "-c", _FALLBACK_SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "MASC_FAST_BACKEND": ""},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def fallback_output() -> str:
    return _run_fallback_script()


def test_fallback_without_extension_runs_torch_and_logs(fallback_output):
    lines = fallback_output.splitlines()
    assert "ACCUMULATOR torch" in lines
    assert lines.count("RAN torch") == 2
    logged = [line for line in lines if line.startswith("LOG masc_fast.backends")]
    assert len(logged) == 1, fallback_output  # once, however often the fallback happens
    assert "backend 'cpp' unavailable" in logged[0]
    assert "masc_fast._C" in logged[0] and "falling back to 'torch'" in logged[0]


def test_fallback_explicit_cpp_raises(fallback_output):
    assert any(
        line.startswith("EXPLICIT BackendUnavailableError") for line in fallback_output.splitlines()
    ), fallback_output


def test_explicit_unavailable_backend_carries_import_error(fallback_output):
    explicit = [line for line in fallback_output.splitlines() if line.startswith("EXPLICIT")]
    assert explicit and explicit[0].split()[-1] in ("ImportError", "ModuleNotFoundError"), explicit
