"""Single-label response on estimators whose answer is known."""
from __future__ import annotations

import numpy as np
import pytest

from helpers import LABELS
from helpers import response as R
from helpers.noise import NoiseModel
from helpers.spectra import giraffe_grid


class _LinearModel:
    """flux = 1 − Σ_k J_k(λ) (θ_k − θ0_k): every label has its own set of pixels."""

    def __init__(self):
        self.grid = giraffe_grid()
        n = self.grid.n_pixels
        rng = np.random.default_rng(0)
        self.J = np.zeros((len(LABELS), n))
        for k in range(len(LABELS)):
            pix = rng.choice(n, 300, replace=False)
            self.J[k, pix] = rng.uniform(0.05, 0.2, 300) / R.STEP_OF[LABELS[k]]
        self.theta0 = np.array([5000.0, 3.0, -0.5, 0.1, 0.1])

    def render(self, labels, nuis=None, alpha_fe=None):
        d = np.atleast_2d(labels) - self.theta0
        return (1.0 - d @ self.J).astype(np.float32)


@pytest.fixture(scope="module")
def setup():
    fm = _LinearModel()
    return fm, R.response_set(fm), NoiseModel(fm.grid)


def _observed_J(fm, J):
    """The model's derivatives as observed: resampled through the detector's pixels."""
    nm = NoiseModel(fm.grid)
    return nm.to_grid(nm.to_native(J))


def _least_squares(fm):
    pinv = np.linalg.pinv(_observed_J(fm, fm.J).T)

    def predict(flux, ivar):
        return fm.theta0 + (1.0 - np.asarray(flux, float)) @ pinv.T
    return predict


def test_an_unbiased_linear_estimator_responds_one_to_one_without_crosstalk(setup):
    fm, rset, nm = setup
    rows = R.measure_response(_least_squares(fm), rset, nm, snrs=(50.0,), n_draws=8, seed=1)
    for r in rows:
        if np.isinf(r["snr"]):
            assert r["response"] == pytest.approx(1.0, abs=1e-6)
            assert all(abs(r[f"x_{o}"]) < 1e-6 for o in LABELS if o != r["label"])
        else:  # paired noise: the difference is exact for a linear estimator and model up to
            # the change of the photon noise between the two spectra
            assert r["response"] == pytest.approx(1.0, abs=0.1)
            assert r["response_sd"] < 0.2
    summary = R.summarise(rows)
    assert "follows it" in R.response_verdict(summary, "al_fe", snr_min=0)


def test_an_estimator_blind_to_al_lines_has_no_al_response(setup):
    fm, rset, nm = setup
    blind = fm.J.copy()
    blind[LABELS.index("al_fe")] = 0.0
    pinv = np.linalg.pinv(_observed_J(fm, blind).T)

    def predict(flux, ivar):
        return fm.theta0 + (1.0 - np.asarray(flux, float)) @ pinv.T
    rows = R.measure_response(predict, rset, nm, snrs=(), seed=2)
    al = [r for r in rows if r["label"] == "al_fe"]
    assert al and all(abs(r["response"]) < 1e-6 for r in al)
    assert R.response_verdict(R.summarise(rows), "al_fe", snr_min=0).startswith("does not follow it")


def test_cross_talk_is_in_units_of_the_other_label_s_step(setup):
    fm, rset, nm = setup

    def leaky(flux, ivar):  # predicts [Al/Fe] as the true one plus half of the [Mg/Fe] change
        t = _least_squares(fm)(flux, ivar)
        t[:, 4] += 0.5 * (t[:, 3] - fm.theta0[3])
        return t
    rows = R.measure_response(leaky, rset, nm, snrs=(), seed=3)
    mg = [r for r in rows if r["label"] == "mg_fe"]
    # a +0.2 dex [Mg/Fe] step moves [Al/Fe] by 0.1 dex = 1/3 of Al's 0.3 dex step
    assert all(r["x_al_fe"] == pytest.approx(0.1 / R.STEP_OF["al_fe"], abs=1e-6) for r in mg)


def test_rows_round_trip_through_csv_and_line_up_side_by_side(setup, tmp_path):
    from helpers.fileio import write_csv

    fm, rset, nm = setup
    rows = R.measure_response(_least_squares(fm), rset, nm, snrs=(), seed=4)
    path = write_csv(tmp_path / "r.csv", rows)
    back = R.read_rows(path)
    assert len(back) == len(rows)
    assert back[0]["response"] == pytest.approx(rows[0]["response"])
    table = R.side_by_side({"a": R.summarise(rows), "b": R.summarise(back)})
    assert len(table) == len(LABELS)
    assert all(r["a_response"] == pytest.approx(r["b_response"]) for r in table)
