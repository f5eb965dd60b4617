"""Physics of the forward model that could fail."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from helpers import simulate
from helpers.lines import load_linelist

SUN = np.array([5772.0, 4.44, 0.0, 0.0, 0.0])


@pytest.fixture(scope="module")
def fm():
    return simulate.ForwardModel()


def _near(wave, centres, half=0.4):
    m = np.zeros(wave.size, bool)
    for c in centres:
        m |= np.abs(wave - c) < half
    return m


def _depth(fm, flux, w):
    return 1 - np.interp(w, fm.grid.wave, flux)


def _line_waves(fm, symbols, min_depth=0.01):
    """Wavelengths of lines of ``symbols`` that are not negligible in the Sun."""
    ll = fm.lines
    iso = simulate.isolated_depths(SUN[None], [[1.2, 0, 0]], lines=ll, cal=fm.cal, grid=fm.grid)["depth"][0]
    return ll.wave[np.isin(ll.symbol, symbols) & (iso > min_depth)]


def test_mg_lines_deepen_with_mg_and_only_there(fm):
    cal0 = dataclasses.replace(fm.cal, alpha_coupling=0.0)
    lo, hi = SUN.copy(), SUN.copy()
    hi[3] = 0.3
    f = simulate.render([lo, hi], grid=fm.grid, lines=fm.lines, cal=cal0)
    diff = f[0] - f[1]  # positive where lines got deeper
    mg = _near(fm.grid.wave, _line_waves(fm, ["Mg"], 0.0), half=1.0)
    mg |= _near(fm.grid.wave, [5528.405, 8806.757], half=4.0)  # their damping wings
    for w in (5528.405, 8806.757, 8736.019, 8717.825):
        assert _depth(fm, f[1], w) > _depth(fm, f[0], w) + 0.01
    assert diff[mg].max() > 0.03
    assert np.abs(diff[~mg]).max() < 0.002  # nothing else moves
    # with the default coupling the change also reaches the alpha elements, and nothing else
    f = simulate.render([lo, hi], grid=fm.grid, lines=fm.lines, cal=fm.cal)
    alpha = _near(fm.grid.wave, _line_waves(fm, ["Mg", "O", "Si", "S", "Ca", "Ti"], 0.0), half=1.5)
    alpha |= mg | _near(fm.grid.wave, [8498.023, 8542.091, 8662.141], half=20.0)  # Ca II wings
    assert np.abs(f[0] - f[1])[~alpha].max() < 0.003
    assert np.abs(f[0] - f[1])[alpha & ~mg].max() > 0.005


def test_al_doublet_responds_to_al(fm):
    hi = SUN.copy()
    hi[4] = 0.4
    f = fm.render([SUN, hi])
    for w in (8772.865, 8773.896):
        assert _depth(fm, f[1], w) - _depth(fm, f[0], w) > 0.02
    assert abs(_depth(fm, f[1], 8806.757) - _depth(fm, f[0], 8806.757)) < 1e-4


def test_paschen_lines_only_in_hot_stars(fm):
    f = fm.render([[5000, 4.5, 0, 0, 0], [5800, 4.3, 0, 0, 0], [7000, 4.2, 0, 0, 0]])
    # 8748 Å sits in the blue wing of Pa12 (8750.5 Å), clear of strong metal lines
    d = [_depth(fm, fi, 8748.0) for fi in f]
    assert d[0] < 0.02 and d[1] < 0.05 and d[2] > 0.15


def test_ionised_lines_strengthen_at_low_gravity(fm):
    ll = fm.lines
    stars = np.array([[5000, 4.5, 0, 0, 0], [5000, 2.5, 0, 0, 0]])
    iso = simulate.isolated_depths(stars, [[1.2, 0, 0]] * 2, lines=ll, cal=fm.cal, grid=fm.grid)["ew"]
    fe2 = (ll.symbol == "Fe") & (ll.ion == 1) & (iso[0] > 0.005)
    fe1 = (ll.symbol == "Fe") & (ll.ion == 0) & (iso[0] > 0.005)
    ratio2 = np.median(iso[1, fe2] / iso[0, fe2])
    ratio1 = np.median(iso[1, fe1] / iso[0, fe1])
    assert ratio2 > 1.3  # Fe II: much stronger in the giant
    assert ratio2 > ratio1 * 1.2  # ... and more so than Fe I


def test_curve_of_growth_regimes(fm):
    ll = load_linelist().take(np.array([0]))
    cal = fm.cal
    base = simulate.line_strengths(ll, SUN[None], [[1.0, 0, 0]], cal)
    ews = []
    for dlog in (-4, -3, 0, 1, 4, 5):
        st = {**base, "log_eta": base["log_eta"] - base["log_eta"] + dlog}
        ews.append(simulate.equivalent_widths(st, cal)["ew"][0, 0])
    ews = np.array(ews)
    assert ews[1] / ews[0] == pytest.approx(10, rel=0.05)  # linear: EW ∝ η
    assert ews[3] / ews[2] < 2.0  # saturated: flat
    # damping wings: at large η a larger damping parameter gives a larger EW
    st = {**base, "log_eta": base["log_eta"] * 0 + 5.0}
    small = simulate.equivalent_widths({**st, "a": st["a"] * 0 + 1e-3}, cal)["ew"]
    large = simulate.equivalent_widths({**st, "a": st["a"] * 0 + 1e-1}, cal)["ew"]
    assert large[0, 0] > 3 * small[0, 0]


def test_calibration_against_turbospectrum_depths(fm):
    comp = simulate.depth_comparison(grid=fm.grid, lines=fm.lines, cal=fm.cal)
    table = simulate.depth_rms_table(comp)
    assert set(table) == {(s, st) for s in simulate.REFERENCE_STARS for st in ("HR10", "HR21")}
    for (star, setup), (rms, n) in table.items():
        assert n >= 30
        assert rms <= 0.05, f"{star} {setup}: rms {rms:.3f}"


def test_jacobian_signs_and_shape(fm):
    J = fm.jacobian(SUN[None])
    assert J.shape == (1, fm.grid.n_pixels, 5)
    i = np.argmin(np.abs(fm.grid.wave - 8806.757))
    assert J[0, i, 3] < 0  # more Mg -> less flux in the Mg line
    j = np.argmin(np.abs(fm.grid.wave - 8773.896))
    assert J[0, j, 4] < 0 and abs(J[0, j, 3]) < abs(J[0, j, 4])


def test_render_is_deterministic_and_independent_of_threads(fm):
    rng = np.random.default_rng(3)
    lab = np.column_stack([rng.uniform(4200, 6800, 40), rng.uniform(1.5, 4.6, 40),
                           rng.uniform(-2, 0.4, 40), rng.uniform(-0.1, 0.4, 40), rng.uniform(-0.2, 0.6, 40)])
    a = fm.render(lab, chunk=16)
    b = fm.render(lab, chunk=16, n_threads=2)
    assert np.array_equal(a, b)
    assert a.dtype == np.float32 and np.isfinite(a).all()
    assert 0 < a.min() and a.max() <= 1.0


@pytest.mark.parametrize("bad, match", [
    ([[5772, 4.44, np.nan, 0, 0]], "NaN"),
    ([[5772, 4.44, 0.0, 0.0]], "5 columns"),
])
def test_render_refuses_bad_labels(fm, bad, match):
    with pytest.raises(ValueError, match=match):
        fm.render(bad)


def test_noise_has_requested_snr():
    rng = np.random.default_rng(0)
    flux = np.ones((4, 20000), np.float32)
    noisy, sigma = simulate.add_noise(flux, [10, 50, 100, 200], rng)
    measured = 1 / np.std(noisy - flux, axis=1)
    assert measured == pytest.approx([10, 50, 100, 200], rel=0.03)
    assert sigma.shape == flux.shape
