"""The real-data path on files in the real formats that the tests write themselves."""
from __future__ import annotations

import numpy as np
import pytest

from helpers import dataset, gaiaeso, spectra
from helpers.spectra import giraffe_grid

from gaiaeso_fixtures import STARS, make_fixture_set, write_phase3
from helpers.gaiaeso import cname


@pytest.fixture(scope="module")
def fixture_set(tmp_path_factory):
    return make_fixture_set(tmp_path_factory.mktemp("ges"))


def test_reads_nm_and_angstrom_files_alike(fixture_set):
    files = fixture_set["files"]
    cn0, cn2 = list(fixture_set["labels"])[0], list(fixture_set["labels"])[2]
    a = gaiaeso.read_phase3_spectrum(files[(cn0, "HR21")])  # nm, setup inferred from wavelengths
    b = gaiaeso.read_phase3_spectrum(files[(cn2, "HR21")])  # Å, setup from the header keyword
    assert a.setup == b.setup == "HR21"
    assert 8480 < a.wave[0] < 8485 and 8480 < b.wave[0] < 8485
    assert a.normalised and a.header["RA"] == STARS[0][0]


def test_nan_pixels_are_masked_not_fatal(fixture_set):
    cn3 = list(fixture_set["labels"])[3]
    s = gaiaeso.read_phase3_spectrum(fixture_set["files"][(cn3, "HR10")])
    assert s.n_masked == 60


def test_rejections_are_collected_with_reasons(fixture_set):
    good, rejected = gaiaeso.scan_spectra(fixture_set["spectra_dir"])
    assert len(good) == 8
    reasons = {r["file"]: r["reason"] for r in rejected}
    assert any("not a readable FITS" in v for v in reasons.values())
    assert any("not strictly increasing" in v for v in reasons.values())


@pytest.mark.parametrize("kind, match", [
    ("no_unit", "no unit"), ("short", "covers only"), ("mostly_nan", "NaN or have non-positive"),
    ("no_table", "no binary table"), ("bad_unit", "not a length"), ("truncated", "truncated or corrupt"),
    ("empty", "not a readable FITS"),
])
def test_each_bad_file_gives_one_clear_reason(tmp_path, kind, match):
    from astropy.io import fits

    p = tmp_path / "ADP.x.fits"
    w = np.arange(8484.0, 9001.0, 0.05)
    f, e = np.ones(w.size), np.full(w.size, 0.01)
    if kind == "no_unit":
        cols = [fits.Column(name="WAVE", format=f"{w.size}D", array=[w]),
                fits.Column(name="FLUX", format=f"{w.size}E", array=[f]),
                fits.Column(name="ERR", format=f"{w.size}E", array=[e])]
        fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols)]).writeto(p)
    elif kind == "short":
        write_phase3(p, w[:2000], f[:2000], e[:2000], unit="Angstrom")
    elif kind == "mostly_nan":
        f[: int(0.7 * w.size)] = np.nan
        write_phase3(p, w, f, e, unit="Angstrom")
    elif kind == "no_table":
        fits.PrimaryHDU(np.zeros(3)).writeto(p)
    elif kind == "truncated":  # a partial download: the header is there, the table is cut off
        write_phase3(p, w, f, e, unit="Angstrom")
        data = p.read_bytes()
        p.write_bytes(data[:20_000])
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "bad_unit":
        cols = [fits.Column(name="WAVE", format=f"{w.size}D", unit="s", array=[w]),
                fits.Column(name="FLUX", format=f"{w.size}E", array=[f]),
                fits.Column(name="ERR", format=f"{w.size}E", array=[e])]
        fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols)]).writeto(p)
    with pytest.raises(gaiaeso.SpectrumReadError, match=match):
        gaiaeso.read_phase3_spectrum(p)


def test_catalogue_abundances_and_missing_values(fixture_set):
    cat = gaiaeso.read_ges_catalogue(fixture_set["catalogue"])
    lab = np.array([s[2] for s in STARS])
    assert np.allclose(cat["mg_fe"][:4], lab[:, 3])
    assert np.isnan(cat["al_fe"][3]) and np.allclose(cat["al_fe"][:3], lab[:3, 4])
    # another solar scale shifts [Mg/Fe] one to one
    other = gaiaeso.read_ges_catalogue(fixture_set["catalogue"], gaiaeso.SolarScale(mg=7.60))
    assert np.allclose(other["mg_fe"] - cat["mg_fe"], -0.07)
    ok, reason = gaiaeso.quality_mask(cat, snr_min=20, max_errors={"teff": 100})
    assert list(ok[:4]) == [True, True, True, False] and reason[3] == "no al_fe"


def test_lower_case_public_catalogue(tmp_path, fixture_set):
    from astropy.table import Table

    t = Table.read(fixture_set["catalogue"])
    for c in list(t.colnames):
        t.rename_column(c, c.lower())
    t.remove_columns(["snr"])
    p = tmp_path / "public.fits"
    t.write(p)
    cat = gaiaeso.read_ges_catalogue(p)
    assert "CNAME" in cat and np.isfinite(cat["teff"]).all()


def test_crossmatch_by_cname_then_position(fixture_set):
    cat = gaiaeso.read_ges_catalogue(fixture_set["catalogue"])
    names = [cat["CNAME"][0], "", "nonsense"]
    ra = np.array([np.nan, STARS[1][0] + 0.1 / 3600, 0.0])
    dec = np.array([np.nan, STARS[1][1], 0.0])
    assert list(gaiaeso.crossmatch(names, ra, dec, cat, max_sep_arcsec=1.0)) == [0, 1, -1]


def test_resampling_conserves_flux_and_propagates_errors():
    w_in = np.arange(5000.0, 5100.0, 0.02)
    f = 1.0 + 0.5 * np.sin(w_in)
    w_out = np.arange(5010.0, 5090.0, 0.05)
    fo, iv = spectra.resample(w_in, f, np.full(w_in.size, 0.1), w_out)
    # the mean over a wide range is conserved
    assert fo.mean() == pytest.approx(np.mean(f[(w_in > 5010) & (w_in < 5090)]), abs=2e-3)
    # averaging 2.5 input pixels shrinks the error by about sqrt(2.5)
    assert np.median(1 / np.sqrt(iv)) == pytest.approx(0.1 / np.sqrt(2.5), rel=0.15)
    # outside the input range: masked
    fo, iv = spectra.resample(w_in, f, np.full(w_in.size, 0.1), np.array([4990.0, 5050.0]))
    assert iv[0] == 0 and iv[1] > 0


def test_continuum_normalisation_removes_a_slope():
    grid = giraffe_grid()
    from helpers.simulate import ForwardModel

    flux = ForwardModel(grid=grid).render([[5800, 4.4, 0, 0, 0]])[0]
    slope = 1000 + 0.3 * (grid.wave - grid.wave.mean())
    f, iv, cont = spectra.continuum_normalise(grid.wave, flux * slope, np.full(grid.n_pixels, 1e-4), grid)
    assert np.median(np.abs(f - flux)) < 0.01


def test_build_dataset_end_to_end(fixture_set, tmp_path):
    grid = giraffe_grid()
    out_obs, out_tr = tmp_path / "obs.h5", tmp_path / "train.h5"
    res = gaiaeso.build_gaiaeso_dataset(fixture_set["spectra_dir"], fixture_set["catalogue"], grid,
                                        out_obs, out_tr, max_errors={"teff": 200})
    assert res["n_stars"] == 4 and res["n_training"] == 3 and res["n_files"] == 10
    d = dataset.read_dataset(out_obs, expect_grid=grid)
    assert d.flux.shape == (4, grid.n_pixels)
    assert np.all(np.isnan(d.labels("truth")))
    assert d.provenance["source"] == "gaia-eso"
    # the rest-frame, resampled, normalised spectra match the model they were made from
    from helpers.simulate import ForwardModel

    model = ForwardModel(grid=grid).render([s[2] for s in STARS], [[1.2, 3.0, 0.0]] * 4)
    good = d.ivar > 0
    for i in range(4):
        resid = (d.flux[i] - model[i])[good[i]]
        assert np.median(np.abs(resid)) < 0.02, i
    assert (d.ivar[3] == 0).sum() >= 50  # the NaN pixels stay masked
    t = dataset.read_dataset(out_tr)
    assert len(t) == 3 and "99999999+9999999" not in list(t.stars["cname"])


def test_missing_inputs_say_how_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="Running on the real Gaia-ESO data"):
        gaiaeso.scan_spectra(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="Running on the real Gaia-ESO data"):
        gaiaeso.read_ges_catalogue(tmp_path / "nowhere.fits")


@pytest.mark.slow
def test_notebook_01_runs_on_real_format_files(fixture_set, tmp_path):
    """`source: gaia-eso` writes the same data-set format as the simulated path."""
    from helpers import pipeline

    plans = pipeline.run_pipeline(
        "quick", only="01_prepare_data", run_root=tmp_path, log=lambda *_: None,
        overrides=["01_prepare_data.source=gaia-eso",
                   f"01_prepare_data.in_spectra_dir={fixture_set['spectra_dir']}",
                   f"01_prepare_data.in_catalogue={fixture_set['catalogue']}"])
    out = tmp_path / "quick" / plans[0].parameters["out_training"]
    d = dataset.read_dataset(out, expect_grid=giraffe_grid())
    assert len(d) == 3 and d.provenance["source"] == "gaia-eso"
    # the spectra folder is an input: its digest is part of the fingerprint
    assert "in_spectra_dir" in plans[0].inputs


def test_checksums_are_verified_and_mismatches_refused(fixture_set, tmp_path):
    from helpers import manifest

    m = manifest.load_manifest()
    entry = manifest.real_entry(m, "gaia-eso-dr5.1-catalogue")
    cat = fixture_set["catalogue"]
    assert manifest.verify_file(cat, "x", {**entry, "sha256": {}}, "catalogue.fits") == "no checksum declared"
    import pooch

    good = {"sha256": {cat.name: pooch.file_hash(str(cat))}}
    assert manifest.verify_file(cat, "x", good) == "verified"
    with pytest.raises(manifest.ChecksumError, match="refused"):
        manifest.verify_file(cat, "x", {"sha256": {cat.name: "0" * 64}})
    with pytest.raises(FileNotFoundError, match="archive"):
        manifest.verify_file(tmp_path / "missing.fits", "x", entry)
    with pytest.raises(ValueError, match="escapes the data folder"):
        manifest.resolve_data_path(tmp_path, "../../etc/passwd")
    with pytest.raises(ValueError, match="relative"):
        manifest.resolve_data_path(tmp_path, "/etc/passwd")
    assert manifest.resolve_data_path(tmp_path, "gaia-eso/catalogue.fits") == (tmp_path / "gaia-eso/catalogue.fits").resolve()


def test_a_link_out_of_the_data_folder_is_refused(tmp_path):
    from helpers import manifest

    outside = tmp_path / "elsewhere.fits"
    outside.write_bytes(b"x")
    data = tmp_path / "data"
    data.mkdir()
    (data / "ADP.link.fits").symlink_to(outside)
    with pytest.raises(ValueError, match="escapes the data folder"):
        manifest.verify_real_files(manifest.load_manifest(), "gaia-eso-dr5.1-giraffe-spectra", data)


def test_stars_without_vrad_get_one_by_cross_correlation(fixture_set, tmp_path):
    from astropy.table import Table

    from helpers.simulate import ForwardModel

    grid = giraffe_grid()
    t = Table.read(fixture_set["catalogue"])
    t["VRAD"] = np.nan  # a catalogue that gives no radial velocities
    cat = tmp_path / "cat.fits"
    t.write(cat)
    # without a template the stars are refused, each with the reason
    with pytest.raises(ValueError, match="no radial velocity"):
        gaiaeso.build_gaiaeso_dataset(fixture_set["spectra_dir"], cat, grid, tmp_path / "o.h5", tmp_path / "t.h5")
    template = (grid.wave, ForwardModel(grid=grid).render([[5500, 4.0, 0.0, 0.0, 0.0]])[0])  # one typical star
    res = gaiaeso.build_gaiaeso_dataset(fixture_set["spectra_dir"], cat, grid, tmp_path / "o.h5",
                                        tmp_path / "t.h5", rv_template=template)
    assert res["n_stars"] == 4
    d = dataset.read_dataset(tmp_path / "o.h5")
    truth = {str(cname([ra], [dec])[0]): v for ra, dec, _, v in STARS}
    for cn, v, src in zip(d.stars["cname"], d.stars["vrad"], d.stars["vrad_source"]):
        assert src == "cross-correlation" and abs(v - truth[cn]) < 1.0, (cn, v, truth[cn])


def test_cross_correlation_recovers_a_known_shift_and_says_when_it_cannot():
    from helpers.spectra import C_KMS, cross_correlate_rv

    w = np.arange(8480.0, 8900.0, 0.05)
    rest = 1 - 0.5 * np.exp(-0.5 * ((w[:, None] - np.array([8500, 8542, 8600, 8662, 8700])) / 0.4) ** 2).sum(axis=1)
    obs_w = np.arange(8490.0, 8890.0, 0.2)
    f = np.interp(obs_w / (1 + 37.3 / C_KMS), w, rest) * 500.0  # an un-normalised observed spectrum
    res = cross_correlate_rv([(obs_w, f, np.full(f.size, 5.0), np.zeros(f.size, bool))], w, rest)
    assert abs(res["rv"] - 37.3) < 0.5 and 0 < res["rv_err"] < 1
    far = cross_correlate_rv([(obs_w + 5000, f, np.full(f.size, 5.0), np.zeros(f.size, bool))], w, rest)
    assert np.isnan(far["rv"]) and far["n_pixels"] == 0
