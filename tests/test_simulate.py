"""The forward model: broadening that keeps the physics, the emulator behind it, noise."""
from __future__ import annotations

import numpy as np
import pytest

from helpers import simulate
from helpers.emulator import DomainError
from helpers.spectra import C_KMS, giraffe_grid

SUN = np.array([5772.0, 4.44, 0.0, 0.0, 0.0])
GRID = giraffe_grid()


@pytest.fixture(scope="module")
def fm():
    return simulate.ForwardModel()


def _line(depth=0.5, sigma_pix=1.0, centre=None):
    """A Gaussian absorption line in the middle of each setup (flux, centres in Å)."""
    flux = np.ones(GRID.n_pixels, np.float32)
    centres = []
    for s, (a, b) in zip(GRID.setups, GRID.bounds):
        c = centre or 0.5 * (GRID.wave[a] + GRID.wave[b - 1])
        x = (GRID.wave[a:b] - c) / GRID.step
        flux[a:b] -= depth * np.exp(-0.5 * (x / sigma_pix) ** 2)
        centres.append(c)
    return flux, centres


def _moments(flux, sl, wave):
    a = 1.0 - flux[sl].astype(float)
    w = wave[sl]
    ew = a.sum() * GRID.step
    mean = (a * w).sum() / a.sum()
    var = (a * (w - mean) ** 2).sum() / a.sum()
    return ew, mean, var


def test_broadening_keeps_continuum_and_equivalent_width():
    flux, _ = _line()
    out = simulate.broaden(np.stack([flux, np.ones_like(flux)]), GRID, vsini=[30.0, 30.0],
                           vmac=[4.0, 4.0], rv=[0.0, 0.0])
    assert np.allclose(out[1], 1.0, atol=1e-6)
    for s, (a, b) in zip(GRID.setups, GRID.bounds):
        ew0 = _moments(flux, slice(a, b), GRID.wave)[0]
        ew1 = _moments(out[0], slice(a, b), GRID.wave)[0]
        assert ew1 == pytest.approx(ew0, rel=1e-4)


def test_line_spread_function_has_the_setup_resolution():
    flux, centres = _line(depth=0.3, sigma_pix=0.3)
    out = simulate.broaden(flux[None], GRID)[0]
    for s, (a, b), c in zip(GRID.setups, GRID.bounds, centres):
        var_in = _moments(flux, slice(a, b), GRID.wave)[2]
        var_out = _moments(out, slice(a, b), GRID.wave)[2]
        lam0 = 0.5 * (GRID.wave[a] + GRID.wave[b - 1])
        fwhm = 2 * np.sqrt(2 * np.log(2))
        expected = (lam0 / (fwhm * s.resolving_power)) ** 2 - (lam0 / (fwhm * 40000.0)) ** 2
        assert var_out - var_in == pytest.approx(expected, rel=0.01)


def test_rotation_profile_has_grays_second_moment():
    # Gray's profile, linear limb darkening eps: <x^2> = ((1-eps)/4 + (2 eps/3)/5) / (1 - eps/3),
    # x in units of the edge lambda v sin i / c
    flux, _ = _line(depth=0.2, sigma_pix=0.3)
    v = 60.0
    lsf = simulate.broaden(flux[None], GRID)[0]
    rot = simulate.broaden(flux[None], GRID, vsini=v)[0]
    eps = simulate.LIMB_DARKENING
    m2 = ((1 - eps) / 4 + (2 * eps / 3) / 5) / (1 - eps / 3)
    for s, (a, b) in zip(GRID.setups, GRID.bounds):
        lam0 = 0.5 * (GRID.wave[a] + GRID.wave[b - 1])
        dl = lam0 * v / C_KMS
        extra = _moments(rot, slice(a, b), GRID.wave)[2] - _moments(lsf, slice(a, b), GRID.wave)[2]
        assert extra == pytest.approx(m2 * dl ** 2, rel=0.02)


@pytest.mark.parametrize("rv", [1.0, -0.5, 25.0, -60.0])
def test_radial_velocity_moves_the_line_by_the_doppler_shift(rv):
    for frac in (0.2, 0.5, 0.8):  # near both ends and the middle of each setup
        flux = np.ones(GRID.n_pixels, np.float32)
        cs = []
        for (a, b) in GRID.bounds:
            c = GRID.wave[a] + frac * (GRID.wave[b - 1] - GRID.wave[a])
            flux[a:b] -= 0.4 * np.exp(-0.5 * ((GRID.wave[a:b] - c) / 0.08) ** 2)
            cs.append(c)
        out = simulate.broaden(flux[None], GRID, rv=rv)[0]
        for (a, b), c in zip(GRID.bounds, cs):
            m = np.abs(GRID.wave - c) < 3.0
            m[:a] = False
            m[b:] = False
            a_ = 1 - out[m].astype(float)
            centroid = (a_ * GRID.wave[m]).sum() / a_.sum()
            assert centroid - c == pytest.approx(c * rv / C_KMS, abs=0.002)


def test_broadening_refuses_negative_widths():
    with pytest.raises(ValueError, match="vsini and vmac"):
        simulate.broaden(np.ones((1, GRID.n_pixels)), GRID, vsini=-1.0)


def test_render_sub_grid_is_the_same_pixels(fm):
    hr21 = giraffe_grid(("HR21",))
    full = fm.render(SUN)[0]
    part = simulate.ForwardModel(grid=hr21, emulator=fm.emulator).render(SUN)[0]
    assert np.allclose(part, full[GRID.setup_slice("HR21")], atol=1e-6)


def test_mg_and_al_lines_answer_their_own_label(fm):
    base = fm.render(SUN)[0]
    mg = fm.render(SUN + [0, 0, 0, 0.3, 0])[0]
    al = fm.render(SUN + [0, 0, 0, 0, 0.4])[0]
    d = lambda f, w: 1 - np.interp(w, GRID.wave, f)
    assert d(mg, 8806.75) > d(base, 8806.75) + 0.01   # the strong Mg I line deepens
    assert d(al, 8773.9) > d(base, 8773.9) + 0.01     # the Al I line deepens
    # and Al leaves Mg alone: the synthesis moves Mg I 8806 by at most 0.004 for such a step (Al is
    # a minor electron donor); the emulator's change there stays well below the Al line's own
    assert abs(d(al, 8806.75) - d(base, 8806.75)) < 0.25 * (d(al, 8773.9) - d(base, 8773.9))


def test_jacobian_matches_finite_differences(fm):
    nuis = np.array([[1.1, 5.0, 2.0]])
    J = fm.jacobian(SUN[None], nuis)[0]
    # small steps: the emulator is piecewise linear (leaky ReLU), and a wide secant crosses kinks
    steps = [5.0, 0.01, 0.005, 0.005, 0.005]
    for k, h in enumerate(steps):
        lo, hi = SUN.copy(), SUN.copy()
        lo[k] -= h
        hi[k] += h
        fd = (fm.render(hi, nuis).astype(float) - fm.render(lo, nuis)) / (2 * h)
        scale = np.abs(fd).max()
        assert np.abs(J[:, k] - fd[0]).max() < 0.05 * scale


@pytest.mark.parametrize("bad, err, match", [
    ([[5772, 4.44, 0.0, 0.0]], ValueError, "5 columns"),
    ([[5772, 4.44, np.nan, 0.0, 0.0]], ValueError, "NaN"),
    ([[9000, 4.0, 0.0, 0.0, 0.0]], DomainError, "outside the emulator's domain"),
    ([[4000, 4.0, 0.0, 0.0, 0.0]], DomainError, "outside the emulator's domain"),  # no such star
])
def test_render_refuses_bad_labels(fm, bad, err, match):
    with pytest.raises(err, match=match):
        fm.render(bad)


def test_noise_has_requested_snr():
    rng = np.random.default_rng(0)
    flux = np.ones((4, 20000), np.float32)
    noisy, sigma = simulate.add_noise(flux, [10, 50, 100, 200], rng)
    measured = 1 / np.std(noisy - flux, axis=1)
    assert measured == pytest.approx([10, 50, 100, 200], rel=0.03)
    assert sigma.shape == flux.shape
