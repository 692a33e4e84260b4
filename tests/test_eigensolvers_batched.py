"""Tests of the batched partial eigensolver against the per-class solvers it must reproduce.

``partial_eigh_batched`` / ``class_eigh_batched`` must give, class by class, what
``partial_eigh`` / ``class_eigh`` give: the same component counts and rank caps, and
projectors ``U Uᵀ`` within 1e-5 at the default ``tol=1e-7`` and 1e-8 at ``tol=1e-10`` (the
bounds the per-class solver is held to in test_eigensolvers.py; the projector error is about
``tol · θ_1 / (θ_r − θ_{r+1})`` and the spectra below keep that gap >= 7e-5 θ_1).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _compare import assert_close_report

from masc_fast import GramAccumulator
from masc_fast.linalg.batched import class_eigh_batched, partial_eigh_batched
from masc_fast.linalg.eigensolvers import class_eigh, partial_eigh
from masc_fast.linalg.subspace_iteration import rayleigh_ritz
from masc_fast.testing.synthetic import structured_classes

# tol -> projector tolerance (see the module docstring)
PROJECTOR_ATOL = {1e-7: 1e-5, 1e-10: 1e-8}


def _projector(vectors: torch.Tensor) -> torch.Tensor:
    return vectors @ vectors.mT


def _power_law_gram(dim: int, rows: int, alpha: float, seed: int) -> torch.Tensor:
    """XᵀX of ``rows`` Gaussian rows with covariance spectrum i^-alpha in a random basis."""
    generator = torch.Generator().manual_seed(seed)
    scales = torch.arange(1, dim + 1, dtype=torch.float64) ** (-alpha / 2)
    basis = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64)).Q
    x = (torch.randn(rows, dim, generator=generator, dtype=torch.float64) * scales) @ basis.T
    return x.T @ x


def _rank_one_gram(dim: int, rows: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    direction = torch.randn(dim, generator=generator, dtype=torch.float64)
    x = torch.randn(rows, 1, generator=generator, dtype=torch.float64) * direction
    return x.T @ x


def _few_rows_gram(dim: int, rows: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, dim, generator=generator, dtype=torch.float64)
    x = x * torch.linspace(3.0, 0.1, dim, dtype=torch.float64)
    return x.T @ x


def _totals(grams: torch.Tensor) -> list[float]:
    return grams.diagonal(dim1=-2, dim2=-1).sum(-1).tolist()


def _assert_same_eigens(actual, expected, atol: float, name: str) -> None:
    """Same counts, rank caps and projectors (within ``atol``), class by class."""
    assert len(actual) == len(expected)
    for label, (got, want) in enumerate(zip(actual, expected)):
        if want is None:
            assert got is None, f"{name}: class {label} solved, expected None"
            continue
        assert got is not None, f"{name}: class {label} is None"
        assert got.vectors.shape[1] == want.vectors.shape[1], f"{name}: class {label} count"
        assert got.rank_cap == want.rank_cap, f"{name}: class {label} rank cap"
        assert_close_report(
            _projector(got.vectors),
            _projector(want.vectors),
            atol,
            0.0,
            f"{name}: projector of class {label}",
        )


# ---------------------------------------------------------------- partial_eigh_batched


@pytest.mark.parametrize("tol", [1e-7, 1e-10])
def test_partial_batched_matches_per_class_on_power_law_spectra(tol):
    # d=400, t=0.95: 3, 12 and ~50 components. The third class needs more than the first
    # block (48 columns) holds, so the common block grows to 96 for all three.
    dim, rows = 400, 1500
    grams = torch.stack(
        [_power_law_gram(dim, rows, alpha, seed) for seed, alpha in enumerate([3.0, 2.0, 1.6])]
    )
    totals = _totals(grams)
    batched = partial_eigh_batched(
        grams, variance=0.95, totals=totals, rank_caps=[rows] * 3, tol=tol
    )
    counts = []
    for label, result in enumerate(batched):
        single = partial_eigh(
            grams[label], variance=0.95, total=totals[label], rank_cap=rows, tol=tol
        )
        exact = class_eigh(grams[label], variance=0.95, count=rows, method="exact")
        assert result is not None and single is not None
        values, vectors, rank_cap = result
        counts.append(vectors.shape[1])
        assert vectors.shape[1] == single[1].shape[1] == exact.vectors.shape[1]
        assert rank_cap == single[2]
        for other, name in ((single[1], "per-class partial"), (exact.vectors, "exact")):
            assert_close_report(
                _projector(vectors),
                _projector(other),
                PROJECTOR_ATOL[tol],
                0.0,
                f"class {label} vs {name}, tol={tol:g}",
            )
        assert_close_report(
            values, exact.values[: len(values)], 0.0, 1e3 * tol, f"eigenvalues {label}"
        )
    assert counts[:2] == [3, 12]
    assert counts[2] + 8 > 48  # more than the first block holds with its margin: it grew


def test_partial_batched_gives_up_where_per_class_does():
    # alpha=1.4 needs 107 of 400 components at t=0.95: more than a quarter of d.
    dim, rows = 400, 1500
    grams = torch.stack([_power_law_gram(dim, rows, 1.4, 0), _power_law_gram(dim, rows, 3.0, 1)])
    totals = _totals(grams)
    assert partial_eigh(grams[0], variance=0.95, total=totals[0], rank_cap=rows) is None
    batched = partial_eigh_batched(grams, variance=0.95, totals=totals, rank_caps=[rows] * 2)
    assert batched[0] is None
    assert batched[1] is not None and batched[1][1].shape[1] == 3


def test_partial_batched_skips_classes_without_rows_or_variance():
    dim = 300
    grams = torch.stack([_few_rows_gram(dim, 20, 0), _few_rows_gram(dim, 30, 1)])
    grams = torch.cat([grams, torch.zeros(1, dim, dim, dtype=torch.float64)])
    totals = _totals(grams)
    batched = partial_eigh_batched(grams, variance=0.9, totals=totals, rank_caps=[0, 30, 0])
    assert batched[0] is None and batched[2] is None
    single = partial_eigh(grams[1], variance=0.9, total=totals[1], rank_cap=30)
    assert batched[1][1].shape[1] == single[1].shape[1]
    assert_close_report(_projector(batched[1][1]), _projector(single[1]), 1e-10, 0.0, "projector")


def test_partial_batched_single_class():
    gram = _power_law_gram(300, 1000, 2.0, 3)
    total = float(gram.trace())
    (result,) = partial_eigh_batched(
        gram.unsqueeze(0), variance=0.95, totals=[total], rank_caps=[1000], tol=1e-10
    )
    single = partial_eigh(gram, variance=0.95, total=total, rank_cap=1000, tol=1e-10)
    assert result[1].shape[1] == single[1].shape[1] > 1
    assert result[2] == single[2]
    assert_close_report(_projector(result[1]), _projector(single[1]), 1e-8, 0.0, "projector")


def test_partial_batched_rank_one_class_among_others():
    # Rank 1 (30 rows along one direction), 20 rows in 400-d (the first block spans the
    # range: exact in one step), and a power-law class that iterates: they finish at different
    # steps, so the working set is compacted on the way.
    dim = 400
    direction_gram = _rank_one_gram(dim, 30, 0)
    grams = torch.stack(
        [
            direction_gram,
            _few_rows_gram(dim, 20, 1),
            _power_law_gram(dim, 1500, 2.0, 2),
            _rank_one_gram(dim, 5, 3),
        ]
    )
    caps = [30, 20, 1500, 5]
    totals = _totals(grams)
    batched = partial_eigh_batched(grams, variance=0.99, totals=totals, rank_caps=caps)
    values, vectors, rank_cap = batched[0]
    assert vectors.shape[1] == 1 and rank_cap == 1
    direction = torch.linalg.eigh(direction_gram).eigenvectors[:, -1:]
    assert_close_report(_projector(vectors), _projector(direction), 1e-12, 0.0, "rank-1 basis")
    assert_close_report(values, [totals[0]], 0.0, 1e-12, "rank-1 eigenvalue")
    for label in range(4):
        single = partial_eigh(
            grams[label], variance=0.99, total=totals[label], rank_cap=caps[label]
        )
        assert batched[label][1].shape[1] == single[1].shape[1]
        assert batched[label][2] == single[2]
        assert_close_report(
            _projector(batched[label][1]), _projector(single[1]), 1e-5, 0.0, f"class {label}"
        )


def test_partial_batched_whole_number_variance_capped_at_rank():
    generator = torch.Generator().manual_seed(11)
    # 10 rows spanning only 3 directions of a 300-dimensional space, and a full-rank class.
    x = torch.randn(10, 3, generator=generator, dtype=torch.float64) @ torch.randn(
        3, 300, generator=generator, dtype=torch.float64
    )
    grams = torch.stack([x.T @ x, _power_law_gram(300, 1000, 2.0, 4)])
    batched = partial_eigh_batched(grams, variance=5, totals=_totals(grams), rank_caps=[10, 300])
    assert [vectors.shape[1] for _, vectors, _ in batched] == [3, 5]
    assert batched[0][2] == 3


def test_partial_batched_gives_up_after_max_iterations(monkeypatch, caplog):
    import masc_fast.linalg.batched as eigensolvers_batched

    # One Rayleigh-Ritz step: the 20-row class is exact at once, the power-law one is not.
    monkeypatch.setattr(eigensolvers_batched, "MAX_ITERATIONS", 1)
    grams = torch.stack([_few_rows_gram(300, 20, 0), _power_law_gram(300, 1000, 2.0, 1)])
    with caplog.at_level("INFO", logger="masc_fast.linalg.batched"):
        batched = partial_eigh_batched(
            grams, variance=0.95, totals=_totals(grams), rank_caps=[20, 1000], tol=1e-10
        )
    assert batched[0] is not None and batched[1] is None
    assert "1 classes did not converge in 1 iterations" in caplog.text


def test_ritz_on_host_matches_device_solve():
    grams = torch.stack([_power_law_gram(120, 400, 2.0, seed) for seed in range(3)])
    basis = torch.linalg.qr(torch.randn(3, 120, 40, dtype=torch.float64)).Q
    on_device = rayleigh_ritz(grams, basis)
    on_host = rayleigh_ritz(grams, basis, on_host=True)
    for got, want, name in zip(on_host[:3], on_device[:3], ("values", "vectors", "residuals")):
        assert_close_report(got.abs(), want.abs(), 1e-10, 1e-10, name)


def test_partial_batched_on_device_matches_cpu(device):
    grams = torch.stack([_power_law_gram(300, 1000, alpha, 5) for alpha in (2.0, 3.0)])
    totals = _totals(grams)
    on_cpu = partial_eigh_batched(grams, variance=0.95, totals=totals, rank_caps=[1000] * 2)
    on_device = partial_eigh_batched(
        grams.to(device), variance=0.95, totals=totals, rank_caps=[1000] * 2
    )
    for label, (want, got) in enumerate(zip(on_cpu, on_device)):
        assert got[1].device.type == device.type
        assert got[1].shape == want[1].shape
        assert_close_report(
            _projector(got[1]), _projector(want[1]), 1e-5, 0.0, f"class {label} on {device}"
        )


# ---------------------------------------------------------------- class_eigh_batched


@pytest.mark.parametrize("method", ["auto", "partial", "exact"])
def test_class_eigh_batched_matches_class_eigh(method):
    dim = 400
    grams = torch.stack(
        [
            _power_law_gram(dim, 1500, 1.4, 0),  # needs > d/4 components: exact fallback
            _power_law_gram(dim, 1500, 2.0, 1),
            _rank_one_gram(dim, 30, 2),
            torch.zeros(dim, dim, dtype=torch.float64),  # no rows
        ]
    )
    counts = [1500, 1500, 30, 0]
    batched = class_eigh_batched(grams, variance=0.95, counts=counts, method=method)
    expected = [
        class_eigh(gram, variance=0.95, count=count, method=method) if count else None
        for gram, count in zip(grams, counts)
    ]
    assert [e.method if e else None for e in batched] == [e.method if e else None for e in expected]
    _assert_same_eigens(batched, expected, 1e-5, f"method={method}")
    if method != "exact":
        assert [e.method for e in batched[:3]] == ["exact", "partial", "partial"]


def test_class_eigh_batched_unknown_method_raises():
    with pytest.raises(ValueError, match="'auto', 'exact', 'partial' or 'fp32'.*'fast'"):
        class_eigh_batched(torch.eye(3).unsqueeze(0), variance=0.9, counts=[3], method="fast")


def _random_relu_features(x: torch.Tensor, width: int, seed: int) -> torch.Tensor:
    """ReLU(W x + b) of a seeded, untrained linear layer: real inputs, a wide activation."""
    from masc_fast.models import MLP

    torch.manual_seed(seed)
    layer = MLP(x.shape[1], 10, hidden=(width,)).double()
    with torch.no_grad():
        return layer.relu1(layer.fc1(x.double()))


def _class_grams(x: torch.Tensor, y: torch.Tensor, num_classes: int):
    grams = torch.stack([x[y == k].T @ x[y == k] for k in range(num_classes)])
    return grams, torch.bincount(y, minlength=num_classes).tolist()


def _check_real(x, y, variance, methods_expected):
    grams, counts = _class_grams(x, y, 10)
    exact = [
        class_eigh(gram, variance=variance, count=count, method="exact")
        for gram, count in zip(grams, counts)
    ]
    for tol, atol in PROJECTOR_ATOL.items():
        batched = class_eigh_batched(
            grams, variance=variance, counts=counts, method="partial", tol=tol
        )
        assert {e.method for e in batched} == {methods_expected}
        per_class = [
            class_eigh(gram, variance=variance, count=count, method="partial", tol=tol)
            for gram, count in zip(grams, counts)
        ]
        _assert_same_eigens(batched, per_class, atol, f"vs per-class partial, tol={tol:g}")
        for got, want in zip(batched, exact):
            assert got.vectors.shape[1] == want.vectors.shape[1]
            assert_close_report(
                _projector(got.vectors), _projector(want.vectors), atol, 0.0, "vs exact"
            )


def test_class_eigh_batched_on_digits_pixels(digits):
    # d=64: the first block (48 columns) already exceeds d/4, so every class falls back to
    # exact eigh, as the per-class solver does.
    x, y = digits
    _check_real(torch.from_numpy(x), torch.from_numpy(y), 0.99, "exact")


def test_class_eigh_batched_on_digits_activations(digits):
    # 768 ReLU features of ~180 images per class: rank <= rows <= d/4, one step is exact.
    x, y = digits
    features = _random_relu_features(torch.from_numpy(x / 8.0 - 1.0), 768, seed=0)
    _check_real(features, torch.from_numpy(y), 0.99, "partial")


def test_class_eigh_batched_on_mnist1d_activations():
    pytest.importorskip("mnist1d")
    from masc_fast.data.in_memory import load_mnist1d

    x, y, _, _ = load_mnist1d()
    # 512 ReLU features of 400 signals per class: 15-35 components at t=0.9, iterated.
    features = _random_relu_features(x, 512, seed=0)
    _check_real(features, y, 0.9, "partial")


# ---------------------------------------------------------------- GramAccumulator.fit


def _accumulator(dim: int = 300) -> GramAccumulator:
    x, y = structured_classes(3000, dim, 5, seed=3, dtype=torch.float32)
    y = torch.where(y == 4, torch.tensor(5), y)  # class 4 gets no rows
    accumulator = GramAccumulator(7, dim)
    accumulator.update(x, y)
    generator = torch.Generator().manual_seed(4)
    direction = torch.randn(dim, generator=generator)
    rank_one = torch.randn(40, 1, generator=generator) * direction
    accumulator.update(rank_one, torch.full((40,), 6))
    return accumulator


@pytest.mark.filterwarnings("ignore::masc_fast.accumulator.EmptyClassWarning")
@pytest.mark.parametrize("method", ["auto", "partial", "exact"])
def test_fit_batched_matches_per_class_fit(method):
    accumulator = _accumulator()
    per_class = accumulator.fit(0.99, method=method, batched=False)
    batched = accumulator.fit(0.99, method=method, batched=True)
    default = accumulator.fit(0.99, method=method)  # CPU: per class
    assert batched.num_components.tolist() == per_class.num_components.tolist()
    assert per_class.num_components[4] == 0 and per_class.num_components[6] == 1
    assert default.num_components.tolist() == per_class.num_components.tolist()
    for label, (got, want, same) in enumerate(zip(batched.bases, per_class.bases, default.bases)):
        if want is None:
            assert got is None and same is None
            continue
        assert_close_report(_projector(got), _projector(want), 1e-5, 0.0, f"class {label}")
        assert torch.equal(same, want)
    assert np.allclose(batched.explained_variance, per_class.explained_variance, atol=1e-10)


def test_fit_batched_warns_about_empty_classes():
    accumulator = _accumulator()
    with pytest.warns(UserWarning, match="class 4 has no training rows"):
        accumulator.fit(0.99, batched=True)
