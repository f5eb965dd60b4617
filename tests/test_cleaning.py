"""t-SNE cleaning: finds obvious defects, is reproducible, and its metrics are right."""
from __future__ import annotations

import numpy as np
import pytest

from helpers import cleaning, dataset, survey

from conftest import tiny_config


@pytest.fixture(scope="module")
def defect_set(tmp_path_factory):
    cfg = tiny_config(n_field=500, bad_fraction=0.2, n_open_clusters=0, n_globular_clusters=0,
                      benchmarks=False)
    path = tmp_path_factory.mktemp("clean") / "t.h5"
    survey.generate_survey(cfg, path, log=None)
    d = dataset.read_dataset(path)
    labels = np.column_stack([d.stars["survey_teff"], d.stars["survey_logg"], d.stars["survey_feh"]])
    return d, labels



# A reduced PCA for the small set: with 50 components fitted on 400 spectra, a spectrum of the fit
# subset with a unique defect gets a component of its own and is reconstructed too well.
CFG = cleaning.CleaningConfig(n_pca=30, pca_fit_size=400, perplexity=20, seed=3)


def test_obvious_defects_are_found(defect_set):
    d, labels = defect_set
    res = cleaning.clean(d.flux, d.ivar, labels, CFG)
    metrics = {r["kind"]: r for r in cleaning.removal_metrics(d.stars["defect"], res["remove"])}
    for kind in ("missing", "spike", "rv_error", "fast_rotator"):
        assert metrics[kind]["recall"] >= 0.9, (kind, metrics[kind])
    # emission in the Ca II cores: 13 such spectra in this small set, 8 found; the missed ones have
    # S/N 13-25 (S/N follows V magnitude and exposure), where narrow core emission stays within
    # the main group of the map
    assert metrics["emission"]["recall"] >= 0.6, metrics["emission"]
    # a small set with 20 % bad spectra loses more good ones than the default profile (see the book)
    assert metrics["none (good lost)"]["recall"] < 0.2
    assert res["embedding"].shape == (len(d), 2)
    assert set(np.unique(res["reason"][res["remove"]])) and not res["reason"][~res["remove"]].any()


def test_same_settings_same_removed_list(defect_set):
    d, labels = defect_set
    a = cleaning.clean(d.flux, d.ivar, labels, CFG)
    b = cleaning.clean(d.flux, d.ivar, labels, CFG)
    assert np.array_equal(a["remove"], b["remove"])
    assert np.array_equal(a["reason"], b["reason"])
    c = cleaning.clean(d.flux, d.ivar, labels, cleaning.CleaningConfig(**{**CFG.as_dict(), "spike_z_max": 1e9}))
    assert c["remove"].sum() <= a["remove"].sum()


def test_removal_metrics_on_a_known_case():
    defect = np.array(["none", "none", "none", "none", "spike", "spike", "binary", "binary"])
    remove = np.array([True, False, False, False, True, True, False, True])
    rows = {r["kind"]: r for r in cleaning.removal_metrics(defect, remove)}
    assert rows["spike"]["recall"] == 1.0 and rows["binary"]["recall"] == 0.5
    assert rows["all defects"]["recall"] == 0.75 and rows["all defects"]["precision"] == 0.75
    assert rows["none (good lost)"]["recall"] == 0.25


def test_group_rule_removes_a_whole_bad_group():
    groups = np.array([0, 0, 0, 1, 1, 1, -1])
    scores = {"neighbour_chi2": np.array([1, 2, 1, 50, 60, 70, 1.0]), "recon_chi2": np.ones(7),
              "spike_z": np.ones(7), "continuum_z": np.ones(7)}
    remove, reason = cleaning.decide(groups, scores, cleaning.CleaningConfig(group_threshold=30))
    assert list(remove) == [False, False, False, True, True, True, False]
    assert reason[3].startswith("t-SNE group 1")


def test_thresholds_chosen_on_one_half_and_scored_on_the_other(defect_set):
    d, labels = defect_set
    res = cleaning.clean(d.flux, d.ivar, labels, CFG)
    a, b = cleaning.halves(len(d), seed=1)
    assert len(np.intersect1d(a, b)) == 0 and len(a) + len(b) == len(d)
    chosen, objective = cleaning.choose_thresholds(res["groups"], res["scores"], d.stars["defect"], a, CFG)
    assert set(cleaning.THRESHOLDS) <= set(chosen.as_dict())
    # the choice is at least as good as the defaults on the half it was chosen on
    def obj(cfg, rows):
        remove, _ = cleaning.decide(res["groups"][rows], {k: v[rows] for k, v in res["scores"].items()}, cfg)
        defect = d.stars["defect"][rows]
        bad = ~np.isin(defect, ["none", "low_snr"])
        return remove[bad].mean() - 5 * remove[defect == "none"].mean()
    assert objective == pytest.approx(obj(chosen, a))
    assert objective >= obj(CFG, a) - 1e-12
    with pytest.raises(ValueError, match="defective and good"):
        cleaning.choose_thresholds(res["groups"], res["scores"], np.full(len(d), "none"), a, CFG)
