"""The simulated survey: reproducibility, defects, clusters, labels, training cuts."""
from __future__ import annotations

import numpy as np
import pytest

from helpers import LABELS, dataset, gaiaeso, survey

from conftest import tiny_config


def test_same_seed_same_file_other_seed_other_file(tiny_survey, tmp_path):
    """Same seed, same data (the HDF5 container's bytes may differ between writes, the data may not)."""
    cfg, path, _ = tiny_survey
    again = survey.generate_survey(tiny_config(n_workers=2), tmp_path / "again.h5", log=None)
    assert dataset.content_digest(again["path"]) == dataset.content_digest(path)
    a, b = dataset.read_dataset(again["path"]), dataset.read_dataset(path)
    assert np.array_equal(a.flux, b.flux) and np.array_equal(a.ivar, b.ivar)
    other = survey.generate_survey(tiny_config(seed=12), tmp_path / "other.h5", log=None)
    assert dataset.content_digest(other["path"]) != dataset.content_digest(path)


def test_file_content(tiny_survey):
    cfg, path, cat = tiny_survey
    d = dataset.read_dataset(path)
    n = len(cat["star_id"])
    from helpers.spectra import giraffe_grid

    assert d.flux.shape == (n, giraffe_grid().n_pixels) and d.flux.dtype == np.float32
    assert d.provenance["seed"] == cfg.seed and d.provenance["generator"] == survey.GENERATOR
    assert np.isfinite(d.flux).all()
    # truth and survey labels are both there and differ
    t, s = d.labels("truth"), d.labels("survey")
    assert t.shape == (n, 5)
    ok = np.isfinite(s)
    assert np.all(np.abs(t - s)[ok] > 0)


def test_defects_at_known_rates(tiny_survey):
    cfg, path, cat = tiny_survey
    field = cat["group"] == "field"
    n_bad = int(np.sum(cat["defect"][field] != "none"))
    assert n_bad == round(cfg.bad_fraction * field.sum())
    assert set(cat["defect"][cat["defect"] != "none"]) == set(survey.DEFECTS)
    assert np.all(cat["defect"][~field] == "none")
    d = dataset.read_dataset(path)
    missing = np.nonzero(cat["defect"] == "missing")[0]
    assert all((d.ivar[i] == 0).sum() >= 60 for i in missing)
    clean = np.nonzero(cat["defect"] == "none")[0]
    assert np.all(d.ivar[clean] > 0)
    spikes = np.nonzero(cat["defect"] == "spike")[0]
    assert all(d.flux[i].max() > 1.3 for i in spikes)
    assert np.all(cat["snr"][cat["defect"] == "low_snr"] < 6.01)


def test_clusters_and_benchmarks(tiny_survey):
    _, _, cat = tiny_survey
    for name in np.unique(cat["cluster"][cat["group"] == "open_cluster"]):
        m = cat["cluster"] == name
        for k in ("feh", "mg_fe", "al_fe"):
            assert np.ptp(cat[f"truth_{k}"][m]) == 0  # chemically homogeneous
    gc = cat["group"] == "globular_cluster"
    r = np.corrcoef(cat["truth_al_fe"][gc], cat["truth_mg_fe"][gc])[0, 1]
    assert r < -0.5  # Mg-Al anticorrelation
    b = cat["group"] == "benchmark"
    rows = survey.load_benchmarks()
    names = set(cat["cluster"][b])
    # each benchmark inside the synthesis grid's domain appears twice, once at S/N 250
    assert b.sum() == 2 * len(names) and np.sum(cat["snr"][b] == 250.0) == len(names)
    from helpers.grid import in_domain
    for r in rows:
        if r["name"] not in names:  # left out only because the grid does not reach it
            x = [r["teff"], r["logg"], r["feh"], 0.0, 0.0, 0.0, 1.2]  # abundances, vmic: mid-grid
            assert not in_domain(x)[0], r
    assert len(names) >= len(rows) - 6
    assert np.all(cat["benchmark_mg_al_assumed"][b]) and not np.any(cat["benchmark_mg_al_assumed"][~b])


def test_gc_spread_follows_mass_and_metallicity():
    big_poor = survey.gc_mgal_extent(-2.0, 6.0)
    small_rich = survey.gc_mgal_extent(-0.7, 5.0)
    assert big_poor > 0.8 and small_rich < 0.2


def test_training_cuts(tiny_survey):
    cfg, _, cat = tiny_survey
    rows = survey.select_training(cat, cfg)
    assert rows.size > 0 and np.all(np.diff(rows) > 0)
    assert np.all(cat["snr"][rows] >= cfg.train_snr_min)
    assert set(cat["group"][rows]) <= {"field", "open_cluster"}
    for k in LABELS:
        assert np.isfinite(cat[f"survey_{k}"][rows]).all()


def test_cname_format():
    c = gaiaeso.cname([150.123456, 10.0, np.nan], [-30.5, 5.25, 0.0])
    assert c[0] == "10002962-3030000" and c[1] == "00400000+0515000" and c[2] == ""


@pytest.mark.parametrize("kw, name", [({"snr_min": 300.0}, "snr_min"), ({"bad_fraction": 0.9}, "bad_fraction"),
                                      ({"n_globular_clusters": 9}, "n_globular_clusters")])
def test_bad_survey_parameters_are_refused(kw, name):
    with pytest.raises(ValueError, match=name):
        tiny_config(**kw)


def test_the_quick_survey_in_one_process_is_the_declared_one(tmp_path):
    """The quick profile's survey, rendered without Dask, has the content checksum declared in
    data_manifest.yaml (made with worker processes); the end-to-end test renders it on the local
    Dask cluster and checks the same checksum in chapter 01."""
    from helpers import __version__, parallel, pipeline
    from helpers.manifest import check_simulated, load_manifest

    nbs = pipeline.discover_notebooks()
    values = pipeline.resolve_parameters(nbs, pipeline.load_profile("quick"), {})[nbs[0].stem]
    cfg = survey.survey_config_from_parameters(values)
    with parallel.open_scheduler("synchronous", log=None) as sched:
        res = survey.generate_survey(cfg, tmp_path / "observed.h5", log=None, scheduler=sched)
    assert res["scheduler"].startswith("synchronous")
    rows = check_simulated(load_manifest(), values["manifest_name"], cfg.as_dict(),
                           {"observed.h5": res["path"]}, __version__)
    assert rows[0]["status"] in ("match", "match at tolerance"), rows
