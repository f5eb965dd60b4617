"""Survey labels like a pipeline's: correlated errors, HR-diagram systematics, outliers, nodes."""
from __future__ import annotations

import numpy as np
import pytest

from helpers import survey_labels as S


def _truth(n, rng, giant=False):
    teff = rng.uniform(4600, 5200, n) if giant else rng.uniform(5600, 5900, n)
    logg = np.full(n, 2.4 if giant else 4.4)
    return np.column_stack([teff, logg, rng.uniform(-0.4, 0.2, n), np.full(n, 0.1),
                            np.full(n, 0.1)])


def test_random_errors_are_correlated_like_the_excitation_ionisation_balance():
    rng = np.random.default_rng(0)
    truth = _truth(20000, rng)
    rep = S.survey_labels(truth, np.full(len(truth), 50.0), rng)
    ok = ~rep["outlier"]
    z = (rep["labels"] - truth - rep["offset"])[ok] / rep["quoted"][ok]
    c = np.corrcoef(z.T)
    assert c[0, 1] == pytest.approx(S.ERROR_CORRELATION[0, 1], abs=0.03)
    assert c[2, 3] == pytest.approx(S.ERROR_CORRELATION[2, 3], abs=0.03)
    assert np.std(z, axis=0) == pytest.approx(np.ones(5), abs=0.03)  # the quoted error is the random one


def test_giants_carry_the_planted_offsets_and_dwarfs_do_not():
    rng = np.random.default_rng(1)
    dw = S.planted_offsets(*_truth(10, rng).T[:3])
    gi = S.planted_offsets(*_truth(10, rng, giant=True).T[:3])
    assert np.allclose(dw, 0.0)
    assert np.all(gi[:, 1] > 0.05) and np.all(gi[:, 4] > 0.05)


def test_outliers_come_at_the_planted_rate_and_lie_along_the_degeneracy():
    rng = np.random.default_rng(2)
    truth = _truth(30000, rng)
    rep = S.survey_labels(truth, np.full(len(truth), 200.0), rng)
    assert rep["outlier"].mean() == pytest.approx(S.OUTLIER_FRACTION, abs=0.004)
    d = rep["labels"][rep["outlier"]] - truth[rep["outlier"]]
    assert np.mean(np.abs(d[:, 0]) > 200) > 0.97
    assert np.mean(np.sign(d[:, 0]) == np.sign(d[:, 1])) > 0.97


def test_members_of_one_cluster_share_one_node_s_zero_points():
    rng = np.random.default_rng(3)
    truth = _truth(60, rng)
    cluster = np.array(["A"] * 30 + ["B"] * 30)
    rep = S.survey_labels(truth, np.full(60, 100.0), rng, cluster=cluster)
    for name in ("A", "B"):
        m = cluster == name
        assert len(set(rep["node"][m])) == 1
        assert np.ptp(rep["offset"][m], axis=0) == pytest.approx(np.zeros(5), abs=1e-12)
    field = S.survey_labels(truth, np.full(60, 100.0), rng)
    assert np.all(field["node"] == -1)


def test_quoted_errors_grow_at_low_snr_and_for_cool_dwarfs():
    e = S.quoted_errors([5800, 5800, 4300], [4.4, 4.4, 4.7], [0, 0, 0], [100, 20, 100])
    assert np.all(e[1] > e[0]) and np.all(e[2] > e[0])
