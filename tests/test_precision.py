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
