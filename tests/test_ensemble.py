"""Chapter 03's helpers: split, paper figures, prediction table, precision and calibration rows,
Cramér–Rao bound of simulated stars."""
from __future__ import annotations

import numpy as np
import pytest

from helpers import LABELS, ensemble
from helpers.precision import cramer_rao


def test_split_is_fixed_disjoint_and_complete():
    tr, va, te = ensemble.split_rows(1000, 0.25, 0.15, seed=7)
    assert len(te) == 250 and len(va) == 150 and len(tr) == 600
    assert len(np.intersect1d(tr, te)) == 0 and len(np.intersect1d(va, te)) == 0
    assert len(np.intersect1d(tr, va)) == 0
    assert np.array_equal(np.sort(np.concatenate([tr, va, te])), np.arange(1000))
    tr2, va2, te2 = ensemble.split_rows(1000, 0.25, 0.15, seed=7)
    assert np.array_equal(te, te2) and np.array_equal(va, va2)
    assert not np.array_equal(te, ensemble.split_rows(1000, 0.25, 0.15, seed=8)[2])
    # the test part does not depend on the size of the validation part
    assert np.array_equal(te, ensemble.split_rows(1000, 0.25, 0.05, seed=7)[2])
    with pytest.raises(ValueError, match="test_fraction"):
        ensemble.split_rows(10, 1.5, 0.1, 0)
    with pytest.raises(ValueError, match="no training part"):
        ensemble.split_rows(100, 0.5, 0.5, 0)
    with pytest.raises(ValueError, match="empty"):
        ensemble.split_rows(3, 0.1, 0.1, 0)


def test_paper_figures_match_the_abstracts():
    p = ensemble.load_paper_precision()
    assert set(p) == set(LABELS)
    # published abstract: 37 K, 0.06, 0.04 dex [Fe/H]; arXiv v1: spread 24 K, [Al/Fe] 0.03 dex
    assert p["teff"]["training_precision"] == 37 and p["logg"]["training_precision"] == 0.06
    assert p["feh"]["training_precision"] == 0.04 and p["teff"]["ensemble_spread"] == 24
    assert p["al_fe"]["ensemble_spread"] == 0.03
    assert all("Ambrosch" in v["source"] for v in p.values())


def _fake_table(n=400, seed=0, bias_scale=1.0):
    """Stars with known truth; survey = truth + 2 units of noise; CNN = truth + 1 unit; spread 1 unit."""
    rng = np.random.default_rng(seed)
    stars = {"star_id": np.array([f"S{i}" for i in range(n)]), "snr": rng.uniform(10, 100, n)}
    unit = np.array([50.0, 0.1, 0.05, 0.03, 0.04])
    truth = rng.normal(0, 1, (n, 5)) * unit + np.array([5000, 3, -0.3, 0.1, 0.1])
    for j, k in enumerate(LABELS):
        stars[f"truth_{k}"] = truth[:, j]
        stars[f"survey_{k}"] = truth[:, j] + 2 * unit[j] * rng.normal(0, 1, n)
    mean = truth + unit * rng.normal(0, 1, (n, 5)) * bias_scale
    std = np.tile(unit, (n, 1))
    return ensemble.predictions_table(stars, mean, std, {"in_test": np.arange(n) % 4 == 0}), unit


def test_predictions_round_trip_through_fits(tmp_path):
    table, _ = _fake_table(40)
    path = ensemble.write_predictions(tmp_path / "p.fits", table, {"n_models": 8, "seed": 3})
    back = ensemble.read_predictions(path)
    assert back["star_id"][5] == "S5" and back.meta["N_MODELS"] == 8
    assert np.allclose(back["cnn_teff"], table["cnn_teff"]) and back["in_test"].dtype == bool
    # missing survey labels come back as plain NaN, not as a masked column
    table["survey_al_fe"][3] = np.nan
    back = ensemble.read_predictions(ensemble.write_predictions(tmp_path / "q.fits", table))
    assert not hasattr(back["survey_al_fe"], "mask") and np.isnan(back["survey_al_fe"][3])
    assert np.nanmedian(back["survey_al_fe"]) == pytest.approx(np.nanmedian(np.asarray(table["survey_al_fe"])))
    with pytest.raises(FileExistsError):
        ensemble.write_predictions(path, table, overwrite=False)
    with pytest.raises(FileNotFoundError, match="notebook 03"):
        ensemble.read_predictions(tmp_path / "none.fits")


def test_precision_and_calibration_rows_recover_known_scatters():
    table, unit = _fake_table(4000)
    rows = np.arange(4000)
    prec = ensemble.precision_rows(table, rows, rows, paper=ensemble.load_paper_precision())
    bounds = ensemble.bound_rows(table, rows[:1000], np.tile(unit / 4, (1000, 1)), np.tile(unit / 2, (1000, 1)),
                                 van_trees_sigma=unit / 2)
    for r, u in zip(bounds, unit):
        assert r["over_bound"] == pytest.approx(2.0, rel=0.1)  # error 1 unit, bound 0.5 unit
        assert r["rms_over_vt"] == pytest.approx(2.0, rel=0.1)
        assert r["crb_known"] == pytest.approx(u / 4) and np.isnan(r["from_others"])
    for r, u in zip(prec, unit):
        assert r["spread"] == pytest.approx(u)
        assert r["test_vs_truth"] == pytest.approx(u, rel=0.06)  # CNN − truth: 1 unit
        assert r["test_vs_survey"] == pytest.approx(np.sqrt(5) * u, rel=0.06)  # 1 and 2 units in quadrature
        assert r["paper_training"] > 0
    cal = ensemble.calibration_rows(table, rows)
    for r in cal:  # σ_ens equals the true error scale: calibrated
        assert r["within_1"] == pytest.approx(0.683, abs=0.03) and r["scale"] == pytest.approx(1, rel=0.08)
    worse, _ = _fake_table(4000, bias_scale=3.0)
    for r in ensemble.calibration_rows(worse, rows):  # errors 3x the spread
        assert r["scale"] == pytest.approx(3, rel=0.08) and r["within_1"] < 0.35


def test_cramer_rao_of_simulated_stars_scales_with_noise_and_mask():
    from helpers.noise import NoiseModel
    from helpers.simulate import ForwardModel
    from helpers.spectra import giraffe_grid

    fm = ForwardModel(grid=giraffe_grid(("HR21",)))
    stars = {"truth_teff": np.array([5000.0, 4500.0]), "truth_logg": np.array([3.0, 2.0]),
             "truth_feh": np.array([0.0, -0.5]), "truth_mg_fe": np.array([0.1, 0.3]),
             "truth_al_fe": np.array([0.0, 0.2]), "truth_alpha_fe": np.array([0.05, 0.25]),
             "truth_vmic": np.array([1.2, 1.5]), "truth_vsini": np.array([2.0, 3.0]),
             "truth_rv": np.array([0.0, 0.0]),
             "counts_e": np.array([2500.0, 2500.0]), "sky_e": np.array([0.0, 0.0])}
    ivar = np.ones((2, fm.grid.n_pixels))
    b = ensemble.crb_for_rows(fm, stars, ivar, [0, 1], marginal=False)
    assert b.shape == (2, 5) and np.all(np.isfinite(b)) and np.all(b > 0)
    # not knowing [α/Fe], vmic, v sin i, RV and the continuum can only cost precision
    marg = ensemble.crb_for_rows(fm, stars, ivar, [0, 1])
    assert np.all(marg >= b * (1 - 1e-9)) and np.any(marg > 1.2 * b)
    bright = dict(stars, counts_e=4 * stars["counts_e"])
    # nearly photon-limited: four times the photons, about half the bound (a little less,
    # because the read noise weighs less)
    ratio = ensemble.crb_for_rows(fm, bright, ivar, [0, 1], marginal=False) / b
    assert np.all((ratio > 0.45) & (ratio <= 0.5))
    masked = ivar.copy()
    masked[:, : fm.grid.n_pixels // 2] = 0
    assert np.all(ensemble.crb_for_rows(fm, stars, masked, [0, 1], marginal=False) > b)  # less information
    # the same as the bound from the native-pixel Fisher matrix of that star alone
    x = ([[5000, 3.0, 0.0, 0.1, 0.0]], [[1.2, 2.0, 0.0]])
    J = fm.jacobian(*x, alpha_fe=[0.05])
    F = NoiseModel(fm.grid).fisher(J, fm.render(*x, alpha_fe=[0.05]), [2500.0], [0.0])
    assert np.allclose(np.sqrt(np.diag(np.linalg.inv(F[0]))), b[0], rtol=2e-3)
    # white noise at the delivered pixels would claim a smaller bound (more independent pixels)
    white = cramer_rao(J, np.array([1 / 50.0]))[0]
    assert np.all(white < b[0])


def test_predict_file_gives_the_in_memory_numbers_on_any_scheduler(tmp_path):
    pytest.importorskip("keras")
    from helpers import dataset, parallel
    from helpers import model as M
    from helpers import inference as I
    from helpers.spectra import giraffe_grid

    grid = giraffe_grid(("HR21",))
    rng = np.random.default_rng(3)
    flux = rng.uniform(0.6, 1.0, (7, grid.n_pixels)).astype(np.float32)
    ivar = np.full_like(flux, 100.0)
    ivar[2, 10:20] = 0.0  # masked pixels: set to the continuum, as prepare_inputs does
    path = dataset.write_dataset(tmp_path / "obs.h5", grid, flux, ivar, {"star_id": np.array([f"S{i}" for i in range(7)]), "truth_teff": np.linspace(4000, 6000, 7)},
                                 {"seed": 1})
    cfg = M.ModelConfig(filters=(4, 3, 2), kernels=(5, 7, 3), dense=(8, 8, 4))
    models = [M.build_model(grid.n_pixels, 5, cfg) for _ in range(2)]
    scaler = M.LabelScaler(np.zeros(5), np.full(5, 2.0))
    paths = [M.save_member(m, tmp_path / f"member_{i:02d}", scaler=scaler, grid=grid, cfg=cfg, seed=i,
                           history={"val_loss": [1.0]}, seconds=0.0) for i, m in enumerate(models)]
    out = ensemble.predict_file(paths, scaler, path, grid=grid, block=3)  # blocks of 3, 3 and 1
    mean, std, _ = I.ensemble_predict(models, M.prepare_inputs(flux, ivar), scaler)
    assert out["mean"].shape == (7, 5)
    assert np.allclose(out["mean"], mean, atol=1e-5) and np.allclose(out["std"], std, atol=1e-5)
    assert out["seconds"] > 0 and out["engine"] == I.engine_name(I.inference_engine(models))
    # two worker processes of one thread each give the numbers of one engine thread here, bit for bit;
    # with more threads the BLAS sums of the head run in another order (float32 round-off)
    one = ensemble.predict_file(paths, scaler, path, grid=grid, block=3, threads=1)
    with parallel.open_scheduler("local", n_workers=2, log=None) as sched:
        two = ensemble.predict_file(paths, scaler, path, grid=grid, block=3, scheduler=sched)
    assert np.array_equal(two["mean"], one["mean"]) and np.array_equal(two["std"], one["std"])
    assert np.allclose(two["mean"], out["mean"], rtol=1e-5, atol=1e-6)
    assert "2 worker processes" in two["scheduler"]
    with pytest.raises(M.ModelMismatchError, match="another wavelength grid"):
        ensemble.predict_file(paths, scaler, path, grid=giraffe_grid(("HR10",)))


def test_inheritance_rows_tell_a_copied_offset_from_the_truth():
    from astropy.table import Table

    rng = np.random.default_rng(4)
    n = 200
    t = {"truth_teff": rng.uniform(4500, 5000, n), "truth_logg": np.full(n, 2.2),
         "truth_feh": np.full(n, -0.2)}
    for k in ("mg_fe", "al_fe"):
        t[f"truth_{k}"] = np.zeros(n)
    from helpers.survey_labels import planted_offsets
    off = planted_offsets(t["truth_teff"], t["truth_logg"], t["truth_feh"])
    for j, k in enumerate(LABELS):
        t[f"survey_offset_{k}"] = off[:, j]
        t[f"survey_{k}"] = t[f"truth_{k}"] + off[:, j]
        t[f"copy_{k}"] = t[f"survey_{k}"]
        t[f"true_{k}"] = t[f"truth_{k}"]
    table = Table(t)
    copied = ensemble.inheritance_rows(table, np.arange(n), prefix="copy")
    recovered = ensemble.inheritance_rows(table, np.arange(n), prefix="true")
    assert copied and {r["label"] for r in copied} >= {"logg", "al_fe"}
    assert all(r["kind"] == "giants" for r in copied)
    assert np.allclose([r["share"] for r in copied], 1.0)
    assert np.allclose([r["share"] for r in recovered], 0.0)


def test_inheritance_verdict_follows_the_shares():
    row = lambda share: {"share": share, "label": "logg", "kind": "giants", "method": share * 0.1,
                         "planted": 0.1}
    v = ensemble.inheritance_verdict([row(0.9), row(0.2)])
    assert "repeats 1" in v and "leaves 1 behind" in v and "as if they were physics" in v
    v = ensemble.inheritance_verdict([row(0.1), row(3.5), row(-2.0)])
    assert "repeats 0" in v and "in 2 its own bias is larger" in v and "physics" not in v
    assert "no kind of star" in ensemble.inheritance_verdict([])


def test_the_summary_has_one_owner_that_checks_its_members_and_training_set(tmp_path, tiny_survey):
    from helpers import model as M
    from helpers.dataset import content_digest

    _, path, _ = tiny_survey
    member = tmp_path / "member_00.keras"
    member.write_bytes(b"weights")
    kw = dict(members=[{"path": str(member), "seed": 1, "best_val_loss": 0.1, "epochs": 3, "seconds": 2.0}],
              kept=[0], keep_percentile=80.0, threshold=0.2, split={"seed": 4, "n_fit": 2},
              rows={"train": [0, 1, 2], "val": [3], "test": [4], "fit": [2, 0]},
              scaler=M.LabelScaler(np.zeros(5), np.ones(5)), architecture={}, backend="tensorflow",
              training_digest=content_digest(path),
              prediction={"wall": 12.5, "n_spectra": 5, "data": str(path), "scheduler": "synchronous",
                          "engine": "numpy", "batch_size": 256})
    s = ensemble.write_summary(tmp_path / "ensemble.json", **kw)
    got = ensemble.read_summary(s, training=path)
    assert got["rows"]["fit"].tolist() == [2, 0] and got["kept_paths"] == [str(member)]
    assert got["prediction"] == kw["prediction"]  # chapter 07 reads chapter 03's labelling time from here
    with pytest.raises(ValueError, match="lacks"):
        ensemble.write_summary(tmp_path / "e3.json", **{**kw, "prediction": {"wall": 1.0}})
    with pytest.raises(ValueError, match="positive"):
        ensemble.write_summary(tmp_path / "e3.json", **{**kw, "prediction": {**kw["prediction"], "wall": float("nan")}})
    assert not (tmp_path / "e3.json").exists()
    assert ensemble.labelling_record(got, path, 5)["wall"] == 12.5
    with pytest.raises(ensemble.SummaryError, match="re-run chapter 03 on this file"):
        ensemble.labelling_record(got, path, 6)  # another number of spectra
    other = tmp_path / "other.h5"
    other.write_bytes(path.read_bytes())
    with pytest.raises(ensemble.SummaryError, match="re-run chapter 03 on this file"):
        ensemble.labelling_record(got, other, 5)  # another file
    member.write_bytes(b"other weights")  # a member replaced behind the summary's back
    with pytest.raises(ensemble.SummaryError, match="changed since"):
        ensemble.read_summary(s)
    member.write_bytes(b"weights")
    with pytest.raises(ensemble.SummaryError, match="another training set"):
        ensemble.read_summary(ensemble.write_summary(tmp_path / "e2.json", **{**kw, "training_digest": "x"}), training=path)
    (tmp_path / "old.json").write_text('{"members": []}')
    with pytest.raises(ensemble.SummaryError, match="not an ensemble summary"):
        ensemble.read_summary(tmp_path / "old.json")
    with pytest.raises(ensemble.SummaryError, match="run notebook 03"):
        ensemble.read_summary(tmp_path / "none.json")


def test_random_streams_are_named_and_distinct():
    from helpers import model as M
    from helpers import seeds

    assert len(set(seeds.TAGS.values())) == len(seeds.TAGS)
    # member i's stream is none of the other streams of the same run seed (it used to be [seed, i],
    # which for i = 3 was the split's stream)
    states = [tuple(seeds.sequence(42, name).generate_state(4)) for name in seeds.TAGS]
    members = [tuple(seeds.sequence(42, "member", i).generate_state(4)) for i in range(12)]
    assert len(set(states) | set(members)) == len(states) + len(members)
    assert M.member_seed(42, 3) == int(seeds.sequence(42, "member", 3).generate_state(1)[0] % (2**31 - 1))
    # SeedSequence pads with zeros: without the count of indices, item 0 of a stream would be the stream
    assert tuple(np.random.SeedSequence([42, 1001]).generate_state(4)) == tuple(np.random.SeedSequence([42, 1001, 0]).generate_state(4))
    assert tuple(seeds.sequence(42, "member").generate_state(4)) != tuple(seeds.sequence(42, "member", 0).generate_state(4))
    with pytest.raises(KeyError, match="unknown random stream"):
        seeds.rng(1, "nonsense")
