"""masc_fast.testing.synthetic: generators whose component counts are known in advance."""

from __future__ import annotations

import pytest
import torch

from masc_fast.linalg.spectra import components_for_variance
from masc_fast.reference import fit_subspaces_ref
from masc_fast.testing.synthetic import classes_with_components, component_spectrum


@pytest.mark.parametrize("dim", [7, 64, 1024])
@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_component_spectrum_keeps_the_asked_count(dim, fraction):
    components = max(1, round(fraction * dim))
    values = component_spectrum(dim, components)
    assert values.shape == (dim,)
    assert bool((values[:-1] >= values[1:]).all()) and bool((values > 0).all())
    total = float(values.sum())
    assert components_for_variance(values, total, 0.99, dim) == components


def test_component_spectrum_rejects_counts_out_of_range():
    with pytest.raises(ValueError, match="components must be in"):
        component_spectrum(10, 10)
    with pytest.raises(ValueError, match="variance must be in"):
        component_spectrum(10, 3, variance=1.0)


@pytest.mark.parametrize("components", [3, 20, 36])
def test_classes_with_components_match_the_float64_reference(components):
    x, y, x_test, y_test = classes_with_components(48, 40, 3, components, n_test=30, seed=1)
    assert x.dtype == torch.float32 and x.shape == (144, 40) and x_test.shape == (30, 40)
    assert torch.bincount(y).tolist() == [48] * 3 and torch.bincount(y_test).tolist() == [10] * 3
    bases = fit_subspaces_ref(x, y, 3, 0.99)
    assert [basis.shape[1] for basis in bases] == [components] * 3


def test_classes_with_components_needs_as_many_rows_as_features():
    with pytest.raises(ValueError, match="n_per_class"):
        classes_with_components(10, 40, 2, 5)
