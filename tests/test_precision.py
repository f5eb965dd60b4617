"""Cramér–Rao bound and precision statistics on cases with known answers."""
from __future__ import annotations

import numpy as np
import pytest

from helpers import precision


def test_cramer_rao_matches_the_analytic_bound():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 0.01, 1000)
    b = rng.normal(0, 0.02, 1000)
    b -= a * (a @ b) / (a @ a)  # orthogonal columns: the bound is per column
    J = np.stack([a, b], axis=-1)[None]
    s = 0.02
    out = precision.cramer_rao(J, np.array([s]))
    assert out[0, 0] == pytest.approx(s / np.sqrt(a @ a), rel=1e-9)
    assert out[0, 1] == pytest.approx(s / np.sqrt(b @ b), rel=1e-9)
    # masking half of the pixels loses information
    mask = np.zeros((1, 1000), bool)
    mask[:, :500] = True
    assert np.all(precision.cramer_rao(J, np.array([s]), mask=mask) > out)


def test_cramer_rao_is_reached_by_least_squares():
    """For a linear model the least-squares scatter equals the bound."""
    rng = np.random.default_rng(1)
    J = rng.normal(0, 0.05, (300, 2))
    s = 0.01
    est = []
    for _ in range(2000):
        y = J @ np.array([0.3, -0.1]) + rng.normal(0, s, 300)
        est.append(np.linalg.lstsq(J, y, rcond=None)[0])
    bound = precision.cramer_rao(J[None], np.array([s]))[0]
    assert np.std(est, axis=0) == pytest.approx(bound, rel=0.06)


def test_robust_scatter_and_calibration():
    rng = np.random.default_rng(2)
    x = rng.normal(0, 2.0, 20000)
    assert precision.robust_scatter(np.append(x, [1e6, np.nan])) == pytest.approx(2.0, rel=0.03)
    frac = precision.calibration_fractions(x, np.full(x.size, 2.0))
    assert frac[1.0] == pytest.approx(0.683, abs=0.01) and frac[2.0] == pytest.approx(0.954, abs=0.01)


def test_marginal_fisher_matches_the_inverse_of_the_full_matrix():
    from helpers.precision import bounds_from_fisher, marginal_fisher

    rng = np.random.default_rng(0)
    A = rng.normal(size=(3, 40, 7))
    F = np.einsum("npi,npj->nij", A, A)
    full = np.sqrt(np.diagonal(np.linalg.inv(F), axis1=1, axis2=2))[:, :5]
    np.testing.assert_allclose(bounds_from_fisher(marginal_fisher(F, 5)), full, rtol=1e-8)
    # knowing the nuisances can only help
    assert np.all(bounds_from_fisher(F[:, :5, :5]) <= full + 1e-12)
    # a nuisance the data say nothing about (a zero column) costs nothing
    G = np.zeros((3, 6, 6))
    G[:, :5, :5] = F[:, :5, :5]
    np.testing.assert_allclose(marginal_fisher(G, 5), F[:, :5, :5])


def test_van_trees_bound_of_a_gaussian_model_is_the_posterior_width():
    """y = θ + ε with σ_ε = 2 and prior N(0, 1): the posterior σ is sqrt(1 / (1/4 + 1))."""
    from helpers.precision import van_trees

    F = np.full((10, 1, 1), 1 / 4.0)
    assert van_trees(F, np.array([[1.0]]))[0] == pytest.approx(np.sqrt(1 / 1.25))
    # stars of unequal information: the stratified bound is the rms of the per-star ones, and it
    # exceeds the pooled one
    F = np.array([[[100.0]], [[0.01]]])
    strat = van_trees(F, np.array([[1.0]]))[0]
    assert strat == pytest.approx(np.sqrt((1 / 101 + 1 / 1.01) / 2))
    assert strat > van_trees(F, np.array([[1.0]]), per_star=False)[0]


def test_prior_only_baseline_knows_a_label_that_follows_the_others():
    from helpers.precision import prior_only_baseline

    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, 3))
    x[:, 2] = 0.5 * x[:, 0] - 0.3 * x[:, 1] ** 2 + rng.normal(0, 0.05, 2000)
    out = prior_only_baseline(x[:1500], x[1500:])
    assert out[2]["from_others_scatter"] == pytest.approx(0.05, rel=0.15)
    assert out[2]["prior_scatter"] > 5 * out[2]["from_others_scatter"]
    assert out[1]["from_others_scatter"] > 0.5  # only x1 squared enters: its sign is unknowable


def test_error_over_bound_is_one_at_the_bound():
    from helpers.precision import error_over_bound

    rng = np.random.default_rng(2)
    b = rng.uniform(0.5, 2.0, 20000)
    assert error_over_bound(rng.normal(0, b), b) == pytest.approx(1.0, abs=0.03)
