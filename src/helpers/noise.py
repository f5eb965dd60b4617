"""GIRAFFE-like noise: photons, sky and read-out on the native pixels, resampled to 0.05 Å.

Gaia-ESO delivers GIRAFFE spectra resampled from the detector's pixels to a
0.05 Å grid, which oversamples them: the CCD has 4 096 pixels along the
dispersion, so a native pixel is (5619 − 5339)/4096 = 0.068 Å in HR10 and
(9001 − 8484)/4096 = 0.126 Å in HR21. Noise drawn independently on the 0.05 Å
grid would carry 1.4 (HR10) and 2.5 (HR21) times more independent samples
than the real data, and a network or a bound would see a better spectrum than
the sky gives. This module therefore makes a spectrum as the pipeline does:

1. the noise-free spectrum (from :mod:`helpers.simulate`) is sampled at the
   native pixel centres (linear interpolation, operator ``B``);
2. each native pixel gets photon noise of the star, photon noise of the sky
   (the Paranal night-sky spectrum, whose OH lines fill HR21 and whose [O I]
   5577 Å line sits in HR10) and read-out noise;
3. a sky-subtraction residual (the sky spectrum scaled by a small per-spectrum
   error, as a fibre-throughput mismatch leaves it) and, for every spectrum, a
   small continuum-normalisation error are added;
4. the result is resampled to the 0.05 Å grid (linear interpolation,
   operator ``A``), so neighbouring pixels are correlated; the delivered
   inverse variance is the propagated diagonal, which is all a per-pixel
   ``ivar`` can say.

The Fisher information of such data is exactly that of the native samples,
F = (B J)ᵀ Σ⁻¹ (B J) with Σ the native pixels' variances (:meth:`NoiseModel.fisher`),
because ``A`` is one-to-one; the Cramér–Rao bound of the book uses it.

Units: counts in photo-electrons per native pixel; flux relative to the
continuum; wavelengths in Å (air).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import paths
from .spectra import Grid, giraffe_grid

__all__ = ["NATIVE_PIXELS", "READ_NOISE_E", "SKY_V_MAG", "SKY_RESIDUAL", "CONTINUUM_ERROR",
           "NoiseModel", "load_sky", "snr_of", "counts_for_snr", "autocorrelation"]

#: Detector pixels along the dispersion (GIRAFFE's 2k × 4k EEV CCD, 15 µm pixels).
NATIVE_PIXELS = 4096
#: Read-out noise per extracted native pixel [e⁻]: about 4 e⁻ per CCD pixel summed over the
#: ~5 pixels of a fibre's profile.
READ_NOISE_E = 9.0
#: V magnitude of the dark Paranal sky in one MEDUSA fibre: 21.6 mag/arcsec² at zenith
#: (Patat 2003, A&A 400, 1183) over the 1.2″ fibre (1.13 arcsec²).
SKY_V_MAG = 21.6 - 2.5 * np.log10(np.pi * 0.6 ** 2)
#: Standard deviation of the relative sky-subtraction error per spectrum (the residual is
#: this fraction of the sky spectrum; fibre-to-fibre throughput is known to ~1–3 %).
SKY_RESIDUAL = 0.02
#: Standard deviations of the continuum-normalisation error per setup: offset, slope and
#: curvature over the setup (relative flux).
CONTINUUM_ERROR = (0.002, 0.003, 0.002)


def load_sky(path=None, verify: bool = True):
    """The night-sky spectrum under the setups: ``wave`` [Å, air], ``sky`` (relative photons).

    Written by ``scripts/extract_sky.py`` from the PypeIt Paranal sky model; its
    SHA-256 is declared in ``data_manifest.yaml`` (section ``sky``) and checked here.
    """
    from .manifest import verify_shipped_file

    how = "regenerate it with scripts/extract_sky.py (see its docstring)"
    path = Path(path) if path else paths.PACKAGE_DATA / "sky_paranal.npz"
    if verify:
        verify_shipped_file("sky", path, how)
    try:
        with np.load(path, allow_pickle=False) as z:
            return np.asarray(z["wave"], float), np.asarray(z["sky"], float)
    except (OSError, KeyError, ValueError) as exc:
        raise RuntimeError(f"cannot read the sky spectrum {path}: {exc}; {how}") from exc


#: Resolving power of the sky model's own lines (their FWHM is ≈ 0.30 Å at 8830 Å in the file).
SKY_MODEL_RESOLUTION = 30_000.0


def _smooth_sky(wave, sky, grid):
    """The sky model broadened to each setup's line-spread function (Gaussian, the
    quadrature difference of the setup's and the model's resolution)."""
    out = np.asarray(sky, float).copy()
    step = float(np.median(np.diff(wave)))
    for s in grid.setups:
        m = (wave > s.wmin - 10.0) & (wave < s.wmax + 10.0)
        if not m.any():
            continue
        lam = 0.5 * (s.wmin + s.wmax)
        fwhm = lam * np.sqrt(max(1.0 / s.resolving_power ** 2 - 1.0 / SKY_MODEL_RESOLUTION ** 2, 0.0))
        sd = fwhm / 2.3548 / step
        half = int(np.ceil(4 * sd))
        kern = np.exp(-0.5 * (np.arange(-half, half + 1) / sd) ** 2)
        kern /= kern.sum()
        out[m] = np.convolve(np.pad(sky[m], half, mode="edge"), kern, mode="valid")
    return out


def _interp_weights(x_from: np.ndarray, x_to: np.ndarray):
    """Indices and weights of linear interpolation from samples at ``x_from`` to ``x_to``."""
    i0 = np.clip(np.searchsorted(x_from, x_to) - 1, 0, len(x_from) - 2)
    t = np.clip((x_to - x_from[i0]) / (x_from[i0 + 1] - x_from[i0]), 0.0, 1.0)
    return i0, t


def snr_of(counts_e, sky_e, read_noise=READ_NOISE_E):
    """Continuum S/N per native pixel, C / sqrt(C + sky + RON²) (what the survey quotes)."""
    c = np.asarray(counts_e, float)
    return c / np.sqrt(c + np.asarray(sky_e, float) + read_noise ** 2)


def counts_for_snr(snr, sky_e, read_noise=READ_NOISE_E):
    """Star counts C [e⁻/pixel] that give continuum S/N ``snr`` = C / sqrt(C + sky + RON²)."""
    snr = np.asarray(snr, float)
    b = np.asarray(sky_e, float) + read_noise ** 2
    s2 = snr ** 2
    return 0.5 * (s2 + np.sqrt(s2 ** 2 + 4.0 * s2 * b))


@dataclass
class NoiseModel:
    """Native pixels of each setup of ``grid`` and the operators between them and ``grid``.

    Parameters
    ----------
    grid : Grid, optional
        The delivered grid (default HR10 + HR21 at 0.05 Å).
    native_pixels : int
        Detector pixels per setup.
    """

    grid: Grid = None
    native_pixels: int = NATIVE_PIXELS

    def __post_init__(self):
        self.grid = self.grid or giraffe_grid()
        sky_w, sky_f = load_sky()
        natives, down, up = [], [], []
        offset = 0
        for s, (a, b) in zip(self.grid.setups, self.grid.bounds):
            step = (s.wmax - s.wmin) / self.native_pixels
            nat = s.wmin + step * (np.arange(self.native_pixels) + 0.5)
            fine = self.grid.wave[a:b]
            j0, tj = _interp_weights(fine, nat)          # fine → native (B)
            i0, ti = _interp_weights(nat, fine)          # native → fine (A)
            natives.append(nat)
            down.append((j0 + a, tj))
            up.append((i0 + offset, ti))
            offset += len(nat)
        self.native_wave = np.concatenate(natives)
        self._down = (np.concatenate([d[0] for d in down]), np.concatenate([d[1] for d in down]))
        self._up = (np.concatenate([u[0] for u in up]), np.concatenate([u[1] for u in up]))
        # sky at the setups' resolution on the native pixels, in units of its continuum near 5500 Å
        ref = (sky_w > 5400) & (sky_w < 5560)
        if not ref.any() or self.native_wave.min() < sky_w.min() or self.native_wave.max() > sky_w.max():
            raise RuntimeError("the sky spectrum does not cover the grid; regenerate it with "
                               "scripts/extract_sky.py")
        smooth = _smooth_sky(sky_w, sky_f, self.grid)
        self.sky_native = np.interp(self.native_wave, sky_w, smooth) / np.median(smooth[ref])
        self._setup_of_native = np.concatenate(
            [np.full(self.native_pixels, k) for k in range(len(self.grid.setups))])

    @property
    def n_native(self) -> int:
        return self.native_wave.size

    def to_native(self, x):
        """Sample arrays on the delivered grid (…, n_pixels) at the native pixel centres (B)."""
        j0, t = self._down
        x = np.asarray(x)
        t = t.astype(x.dtype) if x.dtype == np.float32 else t
        return x[..., j0] * (1.0 - t) + x[..., j0 + 1] * t

    def to_grid(self, x):
        """Resample arrays on the native pixels (…, n_native) to the delivered grid (A)."""
        i0, t = self._up
        x = np.asarray(x)
        t = t.astype(x.dtype) if x.dtype == np.float32 else t
        return x[..., i0] * (1.0 - t) + x[..., i0 + 1] * t

    def sigma_native(self, flux_native, counts_e, sky_e, read_noise=READ_NOISE_E):
        """Noise of each native pixel relative to the continuum.

        Parameters
        ----------
        flux_native : (n, n_native) relative flux
        counts_e : (n,) star continuum counts [e⁻/pixel]
        sky_e : (n,) sky continuum counts [e⁻/pixel] (at V)
        """
        c = np.asarray(counts_e, float)[:, None]
        b = np.asarray(sky_e, float)[:, None]
        var_e = c * np.clip(flux_native, 0.0, None) + b * self.sky_native[None, :] + read_noise ** 2
        return np.sqrt(var_e) / c

    def observe(self, flux, counts_e, sky_e, rng: np.random.Generator, continuum_error=True):
        """A delivered spectrum and its inverse variance from noise-free ``flux`` (n, n_pixels).

        Returns
        -------
        noisy : (n, n_pixels) float32
        ivar : (n, n_pixels) float32
            Inverse of the propagated per-pixel variance (correlations are not in it).
        """
        n = flux.shape[0]
        f_nat = self.to_native(np.asarray(flux, np.float32))
        c = np.asarray(counts_e, np.float32)[:, None]
        b = np.asarray(sky_e, np.float32)[:, None]
        sky = self.sky_native.astype(np.float32)[None, :]
        var_nat = (c * np.clip(f_nat, 0.0, None) + b * sky + np.float32(READ_NOISE_E ** 2)) / c ** 2
        x = f_nat + np.sqrt(var_nat) * rng.standard_normal(f_nat.shape, dtype=np.float32)
        # sky-subtraction residual: the sky (in units of the star's continuum) times a small error
        x += (rng.normal(0.0, SKY_RESIDUAL, (n, 1)) * (b / c)).astype(np.float32) * sky
        if continuum_error:
            for k in range(len(self.grid.setups)):
                sl = slice(k * self.native_pixels, (k + 1) * self.native_pixels)
                u = np.linspace(-1.0, 1.0, self.native_pixels, dtype=np.float32)
                a = (rng.normal(0.0, 1.0, (n, 3)) * np.asarray(CONTINUUM_ERROR)).astype(np.float32)
                x[:, sl] *= 1.0 + a[:, :1] + a[:, 1:2] * u + a[:, 2:3] * (u ** 2 - np.float32(1 / 3))
        i0, t = self._up
        t = t.astype(np.float32)
        lo, hi = var_nat[:, i0], var_nat[:, i0 + 1]
        ivar = 1.0 / (lo * (1.0 - t) ** 2 + hi * t ** 2)
        return self.to_grid(x).astype(np.float32, copy=False), ivar.astype(np.float32, copy=False)

    def fisher(self, J, flux, counts_e, sky_e, mask=None):
        """Fisher information of the labels, F = (B J)ᵀ Σ⁻¹ (B J), per star.

        Parameters
        ----------
        J : (n, n_pixels, n_labels)
            ∂flux/∂label on the delivered grid.
        flux : (n, n_pixels)
            Noise-free flux at the same labels (sets the photon noise).
        counts_e, sky_e : (n,)
            As in :meth:`sigma_native`.
        mask : (n, n_pixels) bool, optional
            Usable delivered pixels; a native pixel counts only if both its
            neighbouring delivered pixels are usable.
        """
        Jn = self.to_native(np.moveaxis(np.asarray(J, float), 2, 1))  # (n, n_labels, n_native)
        sig = self.sigma_native(self.to_native(np.asarray(flux, float)), counts_e, sky_e)
        w = 1.0 / sig ** 2
        if mask is not None:
            j0, _ = self._down
            m = np.asarray(mask, bool)
            w = w * (m[:, j0] & m[:, j0 + 1])
        return np.einsum("nip,np,njp->nij", Jn, w, Jn)


def autocorrelation(residual, max_lag: int = 6) -> np.ndarray:
    """Autocorrelation of noise residuals (n, n_pixels) at lags 0 … ``max_lag`` pixels."""
    r = np.asarray(residual, float)
    r = r - r.mean(axis=1, keepdims=True)
    var = np.mean(r ** 2)
    return np.array([np.mean(r[:, k:] * r[:, :r.shape[1] - k]) / var for k in range(max_lag + 1)])

