"""The GIRAFFE-like noise model: native pixels, sky, resampling, and the information it leaves."""
from __future__ import annotations

import numpy as np
import pytest

from helpers import noise as N
from helpers.spectra import giraffe_grid


@pytest.fixture(scope="module")
def nm():
    return N.NoiseModel()


def test_native_pixels_are_the_detector_s(nm):
    g = nm.grid
    for k, s in enumerate(g.setups):
        nat = nm.native_wave[k * N.NATIVE_PIXELS:(k + 1) * N.NATIVE_PIXELS]
        assert np.diff(nat).mean() == pytest.approx((s.wmax - s.wmin) / N.NATIVE_PIXELS)
    # the delivered 0.05 Å grid oversamples both setups (HR10 0.068 Å, HR21 0.126 Å)
    assert nm.n_native < g.n_pixels


def test_counts_for_snr_inverts_snr():
    sky = np.array([0.0, 50.0, 500.0])
    c = N.counts_for_snr([20.0, 50.0, 100.0], sky)
    nm_snr = c / np.sqrt(c + sky + N.READ_NOISE_E ** 2)
    np.testing.assert_allclose(nm_snr, [20.0, 50.0, 100.0], rtol=1e-10)


def test_delivered_noise_is_correlated_and_its_ivar_is_the_propagated_variance(nm):
    rng = np.random.default_rng(3)
    n = 400
    flux = np.ones((n, nm.grid.n_pixels), np.float32)
    counts = N.counts_for_snr(np.full(n, 50.0), np.zeros(n))
    noisy, ivar = nm.observe(flux, counts, np.zeros(n), rng, continuum_error=False)
    r = noisy - 1.0
    for name, lag1_min in (("HR10", 0.3), ("HR21", 0.6)):
        sl = nm.grid.setup_slice(name)
        x = r[:, sl]
        lag1 = np.mean(x[:, 1:] * x[:, :-1]) / np.mean(x ** 2)
        assert lag1 > lag1_min  # neighbours share native pixels
        # per pixel, the empirical variance over stars matches 1/ivar within sampling error
        ratio = x.var(axis=0) / np.mean(1.0 / ivar[:, sl], axis=0)
        assert np.median(ratio) == pytest.approx(1.0, abs=0.03)
    # photon noise: σ of a native pixel is 1/(S/N) in the continuum
    assert np.sqrt(1.0 / ivar[:, 0]).max() <= 1 / 50.0 + 1e-6


def test_sky_lines_raise_the_noise_of_a_faint_star_in_hr21(nm):
    rng = np.random.default_rng(4)
    flux = np.ones((2, nm.grid.n_pixels), np.float32)
    sky = np.array([500.0, 500.0])
    counts = np.array([200.0, 20000.0])  # faint, bright
    _, ivar = nm.observe(flux, counts, sky, rng)
    w = nm.grid.wave
    line = np.argmin(np.abs(w - 8827.1))  # a strong OH line
    cont = np.argmin(np.abs(w - 8690.0))
    faint = ivar[0, cont] / ivar[0, line]
    bright = ivar[1, cont] / ivar[1, line]
    assert faint > 10 and faint > 5 * bright


def test_fisher_equals_the_information_of_the_full_covariance():
    """On a small grid, F = (B J)ᵀ Σ⁻¹ (B J) equals J_dᵀ C⁺ J_d of the delivered data.

    The delivered spectrum is A (B f + ε): its Jacobian is J_d = A B J and its noise
    covariance C = A Σ Aᵀ (singular: fewer native pixels than delivered ones).
    """
    g = giraffe_grid(("HR10",), step=0.5)
    nm = N.NoiseModel(g, native_pixels=300)
    rng = np.random.default_rng(5)
    n_lab = 3
    J = rng.normal(size=(1, g.n_pixels, n_lab))
    J_d = np.moveaxis(nm.to_grid(nm.to_native(np.moveaxis(J, 2, 1))), 1, 2)[0]
    flux = np.ones((1, g.n_pixels))
    counts, sky = np.array([900.0]), np.array([30.0])
    F = nm.fisher(J, flux, counts, sky)[0]
    sig = nm.sigma_native(nm.to_native(flux), counts, sky)[0]
    A = nm.to_grid(np.eye(nm.n_native)).T  # (n_pix, n_native)
    C = A @ np.diag(sig ** 2) @ A.T
    F_full = J_d.T @ np.linalg.pinv(C, rcond=1e-10, hermitian=True) @ J_d
    np.testing.assert_allclose(F, F_full, rtol=1e-6)
    # white noise at the delivered pixels with the propagated variance claims more
    var = np.diag(C)
    F_white = J_d.T @ (J_d / var[:, None])
    assert np.all(np.diag(F_white) > np.diag(F))


def test_a_missing_sky_file_is_named(tmp_path):
    with pytest.raises(RuntimeError, match="extract_sky"):
        N.load_sky(tmp_path / "nope.npz")


def test_a_tampered_sky_file_is_refused(tmp_path, monkeypatch):
    from helpers import paths

    src = paths.PACKAGE_DATA / "sky_paranal.npz"
    fake = tmp_path / "data"
    fake.mkdir()
    (fake / "sky_paranal.npz").write_bytes(src.read_bytes()[:-10] + b"0123456789")
    monkeypatch.setattr(paths, "PACKAGE_DATA", fake)
    with pytest.raises(RuntimeError, match="checksum"):
        N.load_sky()
