"""Side-by-side comparison helpers (chapter 07)."""
from __future__ import annotations

import numpy as np
import pytest

from helpers import LABELS, compare


def _labels(n, rng):
    return np.column_stack([rng.uniform(4000, 7000, n), rng.uniform(1, 4.8, n), rng.uniform(-2, 0.4, n),
                            rng.uniform(-0.1, 0.4, n), rng.uniform(-0.2, 0.5, n)])


def test_summary_rows_measure_known_scatter_and_bias():
    rng = np.random.default_rng(0)
    truth = _labels(20000, rng)
    sig_a = np.array([50, 0.1, 0.05, 0.05, 0.05])
    a = truth + rng.normal(0, 1, truth.shape) * sig_a
    b = truth + rng.normal(0, 1, truth.shape) * 2 * sig_a + np.array([10, 0, 0, 0, 0.02])
    rows = compare.summary_rows({"A": a, "B": b}, {"truth": truth})
    for j, r in enumerate(rows):
        assert r["A_truth_scatter"] == pytest.approx(sig_a[j], rel=0.03)
        assert r["ratio_truth"] == pytest.approx(2.0, rel=0.05)
    assert rows[0]["B_truth_bias"] == pytest.approx(10, abs=2)
    assert rows[4]["B_truth_bias"] == pytest.approx(0.02, abs=0.003)


def test_binned_precision_follows_noise_with_snr():
    rng = np.random.default_rng(1)
    snr = rng.uniform(10, 200, 30000)
    err = rng.normal(0, 1, (30000, 5)) * (100.0 / snr)[:, None]
    edges = compare.snr_bins(snr, 5)
    assert len(edges) == 6 and edges[0] == snr.min()
    b = compare.binned_precision(err, snr, edges)
    assert np.all(np.diff(b["scatter"][:, 0]) < 0)  # falls with S/N
    assert b["count"].sum() == len(snr)
    small = compare.binned_precision(err[:5], snr[:5], edges)
    assert np.all(np.isnan(small["scatter"]))  # too few stars per bin: not defined


def test_edges_and_verdict_from_numbers():
    rng = np.random.default_rng(2)
    truth = _labels(3000, rng)
    masks = compare.edge_masks(truth)
    mp = next(k for k in masks if k.startswith("metal-poor"))
    assert np.array_equal(masks[mp], truth[:, 2] < -1.0)
    assert not np.any(masks["bulk"] & masks[mp])
    a = truth + rng.normal(0, 1, truth.shape) * np.array([50, 0.1, 0.05, 0.05, 0.05])
    b = truth + rng.normal(0, 1, truth.shape) * np.array([100, 0.05, 0.05, 0.1, 0.1])
    rows = compare.summary_rows({"CNN": a, "Cannon": b}, {"truth": truth})
    edges = compare.edge_rows({"CNN": a, "Cannon": b}, truth, masks)
    speed = compare.speed_rows({"CNN": {"train_s": 600, "n_train": 1, "infer_s": 10, "n_infer": 1000},
                                "Cannon": {"train_s": 60, "n_train": 1, "infer_s": 100, "n_infer": 1000}})
    assert speed[1]["train_rel"] == pytest.approx(0.1) and speed[1]["infer_rel"] == pytest.approx(0.1)
    text = compare.verdict(rows, edges, speed, tilts={"CNN": -0.2, "Cannon": -0.5, "truth": -0.6})
    assert "the CNN is more precise for $T_\\mathrm{eff}$" in text and "[Mg/Fe]" in text
    assert "the Cannon is more precise for $\\log g$" in text
    assert "agree within 5% for [Fe/H]" in text
    assert "trains in 0.1 of the CNN's time" in text and "the CNN labels 10 times" in text
    assert "the Cannon's plane is closer in tilt" in text
    biased = compare.summary_rows({"CNN": a + 20 * np.eye(5)[0], "Cannon": b}, {"truth": truth})
    assert "The Cannon is less biased (median offset, CNN first) for $T_\\mathrm{eff}$" in compare.verdict(
        biased, edges, speed)
    assert compare.faster_or_slower(12.0) == "12 times faster"
    assert compare.faster_or_slower(0.5) == "2 times slower"
    assert set(LABELS) == {r["label"] for r in rows}
