"""Tests of masc_fast.linalg.eigensolvers: the component-count rule and the two eigensolvers."""

from __future__ import annotations

import pytest
import torch
from _compare import assert_close_report

from masc_fast.linalg.eigensolvers import class_eigh
from masc_fast.linalg.spectra import (
    components_for_variance,
    exact_class_eigen,
    exact_class_eigens,
    exact_eigh,
)
from masc_fast.testing.synthetic import structured_classes

# ---------------------------------------------------------------- components_for_variance

# Eigenvalues 5, 3, 1, 1 (total 10): cumulative ratios 0.5, 0.8, 0.9, 1.0.
_VALUES = torch.tensor([5.0, 3.0, 1.0, 1.0], dtype=torch.float64)


@pytest.mark.parametrize(
    ("variance", "expected"),
    [
        (0.4, 1),  # no ratio <= 0.4 -> 0 + 1
        (0.5, 2),  # 0.5 <= 0.5 (equality counts) -> 1 + 1
        (0.7, 2),  # only 0.5 <= 0.7
        (0.8, 3),  # 0.5, 0.8 <= 0.8 -> 2 + 1
        (0.85, 3),
        (0.9, 4),  # 0.5, 0.8, 0.9 -> 3 + 1
        (0.99, 4),  # 0.5, 0.8, 0.9 -> 3 + 1
    ],
)
def test_components_for_variance_hand_worked(variance, expected):
    assert components_for_variance(_VALUES, 10.0, variance, rank_cap=4) == expected


def test_components_for_variance_equality_counts_as_below():
    # 8/10 is the float64 nearest 0.8, so the second cumulative ratio equals t exactly.
    assert float(torch.cumsum(_VALUES, 0)[1] / 10.0) == 0.8
    assert components_for_variance(_VALUES, 10.0, 0.8, rank_cap=4) == 3
    assert components_for_variance(_VALUES, 10.0, 0.8 - 1e-12, rank_cap=4) == 2


@pytest.mark.parametrize(("variance", "expected"), [(1, 1), (2, 2), (2.0, 2), (4, 4), (7, 4)])
def test_components_for_variance_whole_number_is_a_count_capped_at_rank(variance, expected):
    assert components_for_variance(_VALUES, 10.0, variance, rank_cap=4) == expected


def test_components_for_variance_capped_at_rank():
    assert components_for_variance(_VALUES, 10.0, 0.99, rank_cap=2) == 2
    assert components_for_variance(_VALUES, 10.0, 3, rank_cap=2) == 2


def test_components_for_variance_zero_total_is_zero():
    zeros = torch.zeros(4, dtype=torch.float64)
    assert components_for_variance(zeros, 0.0, 0.99, rank_cap=4) == 0
    assert components_for_variance(zeros, 0.0, 3, rank_cap=4) == 0
    assert components_for_variance(_VALUES, 10.0, 0.99, rank_cap=0) == 0


# ---------------------------------------------------------------- solvers


def _projector(vectors: torch.Tensor) -> torch.Tensor:
    return vectors @ vectors.T


def _sampled_gram(dim: int, rows: int, seed: int) -> torch.Tensor:
    """X ᵀX of low-rank-plus-noise rows (rank 24, geometric spectrum, 0.4 % noise)."""
    x, _ = structured_classes(rows, dim, 1, seed=seed, dtype=torch.float64)
    return x.T @ x


@pytest.mark.parametrize("dim", [300, 700])
def test_partial_matches_exact_on_sampled_low_rank_plus_noise(dim):
    gram = _sampled_gram(dim, 2000, seed=dim)
    exact = class_eigh(gram, variance=0.99, count=2000, method="exact")
    count = exact.vectors.shape[1]
    assert count > 1
    # Projector error of the partial solver is about tol · θ_1 / (θ_r − θ_{r+1}); with the
    # cut-off gap ~3e-3 θ_1 here, tol=1e-10 bounds it near 3e-8 and in practice far below.
    tight = class_eigh(gram, variance=0.99, count=2000, method="partial", tol=1e-10)
    assert tight.method == "partial"
    assert tight.vectors.shape[1] == count
    assert_close_report(
        _projector(tight.vectors),
        _projector(exact.vectors),
        1e-8,
        0.0,
        f"projector d={dim} tol=1e-10",
    )
    assert_close_report(
        tight.values[:count], exact.values[:count], 0.0, 1e-10, f"eigenvalues d={dim}"
    )
    # The default tol=1e-7 keeps the same rank; its projector bound is ~3e-5 (worst case).
    default = class_eigh(gram, variance=0.99, count=2000, method="partial")
    assert default.vectors.shape[1] == count
    assert_close_report(
        _projector(default.vectors),
        _projector(exact.vectors),
        1e-5,
        0.0,
        f"projector d={dim} tol=1e-7",
    )


def _known_gram(dim: int, rank: int, seed: int):
    """``V diag(s) Vᵀ + σ² I`` with V random orthonormal: eigenpairs known without eigh."""
    generator = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(dim, rank, generator=generator, dtype=torch.float64)).Q
    signal = 100.0 * 0.8 ** torch.arange(rank, dtype=torch.float64)
    noise = 1e-3
    gram = (basis * signal) @ basis.T
    gram.diagonal().add_(noise)
    values = torch.cat([signal + noise, torch.full((dim - rank,), noise, dtype=torch.float64)])
    return gram, basis, values


@pytest.mark.parametrize("dim", [300, 1500])
def test_partial_matches_known_eigenpairs_large_dim(dim):
    # At d=1500 a dense eigh costs ~10 s on the 2-core CI box, so the exact answer is built in.
    gram, basis, values = _known_gram(dim, 40, seed=dim)
    total = float(values.sum())
    expected_rank = components_for_variance(values, total, 0.99, rank_cap=dim)
    assert 1 < expected_rank < 40
    result = class_eigh(gram, variance=0.99, count=10 * dim, method="partial", tol=1e-10)
    assert result.method == "partial"
    assert result.vectors.shape[1] == expected_rank
    truth = basis[:, :expected_rank]
    assert_close_report(
        _projector(result.vectors), _projector(truth), 1e-8, 0.0, f"projector d={dim}"
    )
    assert_close_report(
        result.values[:expected_rank], values[:expected_rank], 0.0, 1e-10, f"eigenvalues d={dim}"
    )


def test_exact_matches_known_eigenpairs():
    gram, basis, values = _known_gram(300, 40, seed=3)
    result = class_eigh(gram, variance=0.99, count=3000, method="exact")
    count = result.vectors.shape[1]
    assert count == components_for_variance(values, float(values.sum()), 0.99, rank_cap=300)
    assert_close_report(
        _projector(result.vectors), _projector(basis[:, :count]), 1e-10, 0.0, "projector"
    )


def test_partial_on_rank_deficient_gram_is_exact():
    # 20 rows in 400 dimensions: rank <= 20, and the first block (20 + oversampling columns)
    # already spans the range of G, so one Rayleigh–Ritz step is exact (the Gram trick).
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(20, 400, generator=generator, dtype=torch.float64)
    x = x * torch.linspace(3.0, 0.1, 400, dtype=torch.float64)
    gram = x.T @ x
    exact = class_eigh(gram, variance=0.95, count=20, method="exact")
    partial = class_eigh(gram, variance=0.95, count=20, method="partial")
    assert partial.method == "partial"
    assert partial.vectors.shape[1] == exact.vectors.shape[1]
    assert_close_report(
        _projector(partial.vectors), _projector(exact.vectors), 1e-10, 0.0, "projector"
    )
    count = exact.vectors.shape[1]
    assert_close_report(partial.values[:count], exact.values[:count], 0.0, 1e-10, "eigenvalues")


def test_partial_whole_number_variance_on_rank_deficient_class():
    from masc_fast import GramAccumulator

    generator = torch.Generator().manual_seed(11)
    # 10 rows spanning only 3 directions of a 300-dimensional space.
    x = torch.randn(10, 3, generator=generator, dtype=torch.float64) @ torch.randn(
        3, 300, generator=generator, dtype=torch.float64
    )
    accumulator = GramAccumulator(1, 300)
    accumulator.update(x, torch.zeros(10, dtype=torch.int64))
    assert accumulator.fit(5, method="exact").num_components.tolist() == [3]
    assert accumulator.fit(5, method="partial").num_components.tolist() == [3]


def test_auto_picks_exact_up_to_256():
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(30, 256, generator=generator, dtype=torch.float64)
    assert class_eigh(x.T @ x, variance=0.9, count=30).method == "exact"


def test_auto_picks_partial_above_256_when_rank_is_small():
    generator = torch.Generator().manual_seed(6)
    x = torch.randn(30, 257, generator=generator, dtype=torch.float64)
    assert class_eigh(x.T @ x, variance=0.9, count=30).method == "partial"


def test_auto_falls_back_to_exact_when_many_components_are_needed():
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(2000, 300, generator=generator, dtype=torch.float64)  # isotropic: r ~ 0.99 d
    assert class_eigh(x.T @ x, variance=0.99, count=2000).method == "exact"


def test_exact_eigh_is_descending_and_nonnegative():
    generator = torch.Generator().manual_seed(8)
    x = torch.randn(5, 50, generator=generator, dtype=torch.float64)
    values, vectors = exact_eigh(x.T @ x)
    assert bool((values[:-1] >= values[1:]).all())
    assert bool((values >= 0).all())
    assert_close_report(
        vectors.T @ vectors, torch.eye(50, dtype=torch.float64), 1e-12, 0.0, "orthonormality"
    )


def test_class_eigh_unknown_method_raises():
    with pytest.raises(ValueError, match="'auto', 'exact', 'partial' or 'fp32'.*'fast'"):
        class_eigh(torch.eye(3, dtype=torch.float64), variance=0.9, count=3, method="fast")


# ---------------------------------------------------------------- the subspace-iteration core


def _known_spectrum(dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A symmetric matrix with eigenvalues 1, 1/2, 1/3, … in a random orthonormal basis."""
    generator = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64)).Q
    values = 1.0 / torch.arange(1, dim + 1, dtype=torch.float64)
    return basis @ torch.diag(values) @ basis.T, values


def test_subspace_iteration_finds_the_leading_pairs_of_any_operator():
    from masc_fast.linalg.subspace_iteration import DenseGram, Step, subspace_iteration

    gram, values = _known_spectrum(60, 0)
    widths, found = [], []

    def decide(ritz_values, vectors, residuals, block):
        widths.append(block)
        if block < 12:
            return Step(12)  # grow once
        if bool((residuals[:4] <= 1e-9).all()):
            found.append(ritz_values[:4])
            return None
        return Step(block)

    operator = DenseGram(gram, torch.Generator().manual_seed(3))
    assert subspace_iteration(operator, 6, decide, max_steps=200)
    assert widths[:2] == [6, 12]
    torch.testing.assert_close(found[0], values[:4], atol=1e-9, rtol=0)


def test_subspace_iteration_reports_running_out_of_steps():
    from masc_fast.linalg.subspace_iteration import DenseGram, Step, subspace_iteration

    gram, _ = _known_spectrum(40, 1)
    operator = DenseGram(gram, torch.Generator().manual_seed(0))
    steps = []
    assert not subspace_iteration(
        operator, 4, lambda *args: steps.append(1) or Step(4), max_steps=3
    )
    assert len(steps) == 3


def test_subspace_iteration_restricts_a_stack_to_the_rows_asked_for():
    from masc_fast.linalg.subspace_iteration import StackedGrams, Step, subspace_iteration

    grams = torch.stack([_known_spectrum(30, seed)[0] * (seed + 1) for seed in range(3)])
    shapes, tops = [], []

    def decide(values, vectors, residuals, block):
        shapes.append(tuple(vectors.shape))
        tops.append(values[:, 0].tolist())
        return Step(block, rows=[2]) if len(shapes) == 1 else None

    operator = StackedGrams(grams, torch.Generator().manual_seed(0))
    assert subspace_iteration(operator, 5, decide, max_steps=10)
    assert shapes == [(3, 30, 5), (1, 30, 5)]
    # member k's top eigenvalue is k + 1, and Ritz values never exceed it: the one left is #2
    assert all(top <= k + 1 + 1e-12 for k, top in enumerate(tops[0]))
    assert 2 < tops[1][0] <= 3 + 1e-12


# ---------------------------------------------------------------- when to give up, per layer


def _gram_with_spectrum(values: torch.Tensor, seed: int) -> torch.Tensor:
    """``V diag(values) Vᵀ`` with V random orthonormal (d × d)."""
    generator = torch.Generator().manual_seed(seed)
    dim = values.numel()
    basis = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64)).Q
    return (basis * values) @ basis.T


@pytest.mark.parametrize("kept", [0.1, 0.5, 0.9])
def test_components_needed_is_a_lower_bound_on_exact_leading_values(kept):
    """Given the exact leading b eigenvalues, ``components_needed`` never exceeds the count
    the rule asks for (the tail's values are at most the middle one) and, on these spectra
    whose kept values fall only from 1 to 1/2, is at least half of it."""
    from masc_fast.linalg.subspace_iteration import RitzRule
    from masc_fast.testing.synthetic import component_spectrum

    dim = 512
    values = component_spectrum(dim, round(kept * dim)).to(torch.float64)
    total = float(values.sum())
    needed = components_for_variance(values, total, 0.99, rank_cap=dim)
    rule = RitzRule(dim, 0.99, 1e-7)
    for block in (16, 48, 96):
        if block >= needed:
            continue
        estimate = rule.components_needed(values[:block], total)
        assert block <= estimate <= needed, (block, estimate, needed)
        assert estimate >= 0.5 * needed, (block, estimate, needed)
    assert rule.components_needed(values, total) == 0  # nothing missing
    assert RitzRule(dim, 5, 1e-7).components_needed(values[:16], total) == 0  # a count


def test_partial_gives_up_after_one_step_when_the_estimate_is_past_a_quarter():
    """90 % of d = 1024 kept: the first 48-column block's estimate (~860) is far past d/4, so
    the partial solver stops after its first Rayleigh–Ritz step and exact eigh runs."""
    import importlib

    from masc_fast.testing.synthetic import component_spectrum

    iteration = importlib.import_module("masc_fast.linalg.subspace_iteration")
    dim = 1024
    gram = _gram_with_spectrum(component_spectrum(dim, 922).to(torch.float64), seed=1)
    steps = []
    original = iteration.RitzRule.verdict

    def counted(self, values, residuals, **kwargs):
        verdict = original(self, values, residuals, **kwargs)
        steps.append(verdict.next_block)
        return verdict

    iteration.RitzRule.verdict = counted
    try:
        result = class_eigh(gram, variance=0.99, count=10 * dim)
    finally:
        iteration.RitzRule.verdict = original
    assert steps == [0]
    assert result.method == "exact"
    assert components_for_variance(result.values, result.total, 0.99, result.rank_cap) == 922


def test_class_eighs_follows_the_class_before_it():
    """On ``auto`` a class after one keeping more than d/4 goes straight to exact eigh; a class
    keeping few sends the next back to the partial solver; results equal one class at a time."""
    from masc_fast.linalg.eigensolvers import class_eighs
    from masc_fast.testing.synthetic import component_spectrum

    dim = 300
    wide = component_spectrum(dim, 200).to(torch.float64)  # r = 200 > 75
    narrow = _known_gram(dim, 20, seed=9)[2]  # r < 20
    grams = torch.stack(
        [
            _gram_with_spectrum(spectrum, seed)
            for seed, spectrum in enumerate([narrow, wide, wide, narrow, narrow, wide])
        ]
    )
    counts = [10 * dim] * 6
    counts[4] = 0  # a class without rows is skipped and does not reset the rule
    eigens = class_eighs(grams, variance=0.99, counts=counts)
    methods = [None if eigen is None else eigen.method for eigen in eigens]
    # class 1 tries partial (gives up: "exact"), class 2 follows it straight to exact,
    # class 3 (after a wide one) is exact too, class 5 follows the narrow class 3 to partial,
    # gives up and is exact.
    assert methods == ["partial", "exact", "exact", "exact", None, "exact"]
    for label, eigen in enumerate(eigens):
        if eigen is None:
            continue
        alone = class_eigh(grams[label], variance=0.99, count=counts[label], method="exact")
        keep = alone.vectors.shape[1]
        assert eigen.vectors.shape[1] == keep
        assert_close_report(
            _projector(eigen.vectors), _projector(alone.vectors), 1e-5, 0.0, f"class {label}"
        )


@pytest.mark.parametrize("variance", [0.99, 0.5, 3.0])
def test_batched_exact_equals_one_class_at_a_time(variance):
    """One batched eigh and vectorised counts (the path of every narrow layer) give bitwise the
    per-class solver's eigenpairs, totals, ranks and kept vectors, rank bounds and an all-zero
    Gram included."""
    generator = torch.Generator().manual_seed(0)
    for trial in range(12):
        dim, classes = [int(v) for v in torch.randint(1, 160, (2,), generator=generator)]
        classes = classes % 11 + 1
        rank = int(torch.randint(1, dim + 1, (1,), generator=generator))
        shape = (classes, 3 * dim, rank)
        rows = torch.randn(shape, generator=generator, dtype=torch.float64) @ torch.randn(
            (classes, rank, dim), generator=generator, dtype=torch.float64
        )
        grams = rows.transpose(1, 2) @ rows
        if trial % 4 == 0:
            grams[0] = 0
        bounds = torch.randint(0, dim + 1, (classes,), generator=generator).tolist()
        batch = exact_class_eigens(grams, variance=variance, rank_bounds=bounds)
        for label in range(classes):
            one = exact_class_eigen(grams[label], variance=variance, rank_bound=bounds[label])
            mine = batch[label]
            assert (mine.total, mine.rank_cap, mine.method) == (one.total, one.rank_cap, "exact")
            assert torch.equal(mine.values, one.values)
            assert torch.equal(mine.vectors, one.vectors)


def test_narrow_layer_classes_solved_in_bounded_batches(monkeypatch):
    """``class_eighs`` on a narrow layer solves its classes in batches of bounded bytes (here 3
    Grams a batch), skipping absent classes, and returns what one class at a time gives."""
    from masc_fast.linalg import eigensolvers

    dim = 24
    monkeypatch.setattr(eigensolvers, "_EXACT_BATCH_BYTES", 3 * 8 * dim * dim)
    generator = torch.Generator().manual_seed(5)
    rows = torch.randn(8, 40, dim, generator=generator, dtype=torch.float64)
    grams = rows.transpose(1, 2) @ rows
    counts = [40, 0, 40, 40, 0, 40, 40, 40]
    sizes = []
    solve = eigensolvers.exact_class_eigens

    def counted(stack, **kwargs):
        sizes.append(stack.shape[0])
        return solve(stack, **kwargs)

    monkeypatch.setattr(eigensolvers, "exact_class_eigens", counted)
    solved = eigensolvers.class_eighs(grams, variance=0.9, counts=counts, method="exact")
    assert sizes == [3, 3]  # six present classes, three Grams a batch
    for label, count in enumerate(counts):
        if not count:
            assert solved[label] is None
            continue
        one = exact_class_eigen(grams[label], variance=0.9, rank_bound=dim)
        assert torch.equal(solved[label].vectors, one.vectors)
        assert torch.equal(solved[label].values, one.values)
