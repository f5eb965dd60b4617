"""The forward model: labels → GIRAFFE HR10 + HR21 spectra, from real radiative transfer.

Two steps:

1. **The star** — :mod:`helpers.emulator`, a neural network trained on 1D LTE
   syntheses (PySME on atmosnet model atmospheres with the Gaia-ESO v6 line
   list, Paschen and CN lines; :mod:`helpers.grid`), gives the continuum-
   normalised flux on the 0.05 Å grid, broadened to R = 40 000.
2. **What the star's motions and the instrument add** — :func:`broaden`:
   the rest of the setup's Gaussian line-spread function (R = 19 800 for
   HR10, 16 200 for HR21; σ² = σ_R² − σ_40000²), Gaussian macroturbulence,
   rotation (Gray's profile, linear limb darkening ε = 0.6) and the radial
   velocity, all in Fourier space, per setup.

The survey's noise (GIRAFFE-like, :mod:`helpers.noise`) and defects come later
(:mod:`helpers.survey`); :func:`add_noise` is plain white noise for idealised tests.

What the model leaves out, and the book says so: departures from LTE and 3D
effects; the real, wavelength-dependent GIRAFFE line-spread function (a Gaussian
of fixed R here, evaluated at each setup's central wavelength); isotopic and
hyperfine structure beyond the line list's; telluric and sky lines.

The five labels :data:`helpers.LABELS` are the model's public inputs; [α/Fe]
(O, Si, S, Ca, Ti) and microturbulence are optional inputs with the defaults
documented at :meth:`ForwardModel.render`.
"""
from __future__ import annotations

import numpy as np
import scipy.fft as sfft
from scipy.special import j1

from . import LABELS
from .emulator import Emulator, load_emulator
from .grid import BASE_RESOLUTION, GRID_LABELS, default_vmic
from .spectra import C_KMS, Grid, giraffe_grid

__all__ = ["NUISANCES", "ALPHA_COUPLING", "LIMB_DARKENING", "default_vmic", "grid_labels",
           "broaden", "add_noise", "ForwardModel"]

#: Nuisance parameters: microturbulence [km/s], v sin i [km/s], radial-velocity residual [km/s].
NUISANCES = ("vmic", "vsini", "rv")
#: [α/Fe] (O, Si, S, Ca, Ti) in units of [Mg/Fe] when a caller gives no [α/Fe] of its own.
ALPHA_COUPLING = 0.8
#: Linear limb-darkening coefficient of the rotation profile.
LIMB_DARKENING = 0.6
_FWHM = 2.0 * np.sqrt(2.0 * np.log(2.0))
_PAD = 256  # pixels of padding each side of a setup before the FFT (150 km/s rotation needs ~90)


def grid_labels(labels, vmic, alpha_fe=None) -> np.ndarray:
    """The emulator's seven inputs from the five labels, vmic and an optional [α/Fe].

    Parameters
    ----------
    labels : (n, 5) Teff [K], log g, [Fe/H], [Mg/Fe], [Al/Fe] [dex]
    vmic : (n,) km/s
    alpha_fe : (n,) dex, optional
        Default ``ALPHA_COUPLING × [Mg/Fe]``.
    """
    labels = np.atleast_2d(np.asarray(labels, float))
    if labels.shape[1] != len(LABELS):
        raise ValueError(f"labels must have {len(LABELS)} columns {LABELS}, got {labels.shape}")
    n = len(labels)
    alpha = ALPHA_COUPLING * labels[:, 3] if alpha_fe is None else \
        np.broadcast_to(np.asarray(alpha_fe, float), (n,))
    vmic = np.broadcast_to(np.asarray(vmic, float), (n,))
    return np.column_stack([labels, alpha, vmic])


def _rotation_ft(u, eps=LIMB_DARKENING):
    """Fourier transform of Gray's rotation profile (unit area) at u = 2π f Δλ_L."""
    u = np.asarray(u, float)
    small = u < 1e-3
    us = np.where(small, 1.0, u)
    t1 = np.where(small, 1.0 - u ** 2 / 8, 2.0 * j1(us) / us)
    t2 = np.where(small, 1.0 - u ** 2 / 10, 3.0 * (np.sin(us) - us * np.cos(us)) / us ** 3)
    w1 = (1.0 - eps) / (1.0 - eps / 3.0)
    w2 = (2.0 * eps / 3.0) / (1.0 - eps / 3.0)
    return w1 * t1 + w2 * t2


def broaden(flux, grid: Grid, vsini=0.0, vmac=0.0, rv=0.0,
            base_resolution: float = BASE_RESOLUTION) -> np.ndarray:
    """Apply the line-spread function, macroturbulence, rotation and radial velocity.

    Parameters
    ----------
    flux : (n, n_pixels) normalised flux at ``base_resolution`` on ``grid``
    grid : Grid
        Its setups give the resolving power R of each part.
    vsini, vmac, rv : (n,) or scalar, km/s
        Projected rotation, Gaussian macroturbulence (dispersion vmac/√2) and
        radial velocity (positive: redshift).
    base_resolution : float
        Resolving power already in ``flux``; it must exceed every setup's R.

    Returns
    -------
    (n, n_pixels) float32

    Notes
    -----
    Each setup is padded with its edge values and convolved by FFT with a kernel
    evaluated at the setup's central wavelength (the kernel's width changes by
    ±2.5 % across HR10, ±3 % across HR21). The radial velocity is a phase shift at
    the central wavelength; the rest of the Doppler shift, (λ − λ0) v/c, is applied by
    linear interpolation when it exceeds 0.01 pixel.
    """
    flux = np.atleast_2d(np.asarray(flux, np.float32))
    n = len(flux)
    vsini = np.broadcast_to(np.asarray(vsini, float), (n,))
    vmac = np.broadcast_to(np.asarray(vmac, float), (n,))
    rv = np.broadcast_to(np.asarray(rv, float), (n,))
    if np.any(vsini < 0) or np.any(vmac < 0):
        raise ValueError("vsini and vmac must be >= 0 km/s")
    out = np.empty_like(flux)
    for setup, (p0, p1) in zip(grid.setups, grid.bounds):
        if setup.resolving_power >= base_resolution:
            raise ValueError(f"{setup.name}: R = {setup.resolving_power} is not below the base "
                             f"resolution {base_resolution} of the emulated spectra")
        f = flux[:, p0:p1]
        m = f.shape[1]
        wave = grid.wave[p0:p1]
        lam0 = 0.5 * (wave[0] + wave[-1])
        length = sfft.next_fast_len(m + 2 * _PAD, real=True)
        fp = np.pad(f.astype(np.float64), ((0, 0), (_PAD, length - m - _PAD)), mode="edge")
        F = sfft.rfft(fp, axis=1, workers=1)
        freq = sfft.rfftfreq(length, d=grid.step)  # cycles per Å
        sig2 = ((lam0 / (_FWHM * setup.resolving_power)) ** 2
                - (lam0 / (_FWHM * base_resolution)) ** 2
                + (lam0 * vmac / C_KMS) ** 2 / 2.0)
        H = np.exp(-2.0 * np.pi ** 2 * freq[None, :] ** 2 * sig2[:, None])
        rot = vsini > 0
        if rot.any():
            H[rot] *= _rotation_ft(2 * np.pi * freq[None, :] * (lam0 * vsini[rot] / C_KMS)[:, None])
        shift = lam0 * rv / C_KMS  # Å
        H = H * np.exp(-2j * np.pi * freq[None, :] * shift[:, None])
        g = sfft.irfft(F * H, n=length, axis=1, workers=1)[:, _PAD:_PAD + m]
        # the wavelength-dependent rest of the Doppler shift, in pixels
        resid = (wave[None, :] - lam0) * (rv[:, None] / C_KMS) / grid.step
        big = np.abs(resid).max(axis=1) > 0.01
        for i in np.nonzero(big)[0]:
            x = np.arange(m) - resid[i]
            g[i] = np.interp(x, np.arange(m), g[i])
        out[:, p0:p1] = g
    return out


def add_noise(flux, snr, rng: np.random.Generator):
    """Gaussian noise at signal-to-noise ``snr`` per pixel (σ = 1/snr of the continuum).

    Returns
    -------
    noisy : ndarray, float32
    sigma : ndarray, float32
        Per-pixel flux error (same shape as ``flux``).
    """
    snr = np.asarray(snr, float).reshape(-1, 1)
    sigma = np.broadcast_to((1.0 / snr).astype(np.float32), flux.shape).copy()
    noisy = flux + sigma * rng.standard_normal(flux.shape, dtype=np.float32)
    return noisy.astype(np.float32), sigma


class ForwardModel:
    """Labels → observed-resolution spectra on a GIRAFFE grid, through the emulator.

    Parameters
    ----------
    grid : Grid, optional
        Default HR10 + HR21 (:func:`helpers.spectra.giraffe_grid`); a grid of
        fewer setups takes their pixels of the emulator's output.
    emulator : Emulator, optional
        Default: the shipped one (:func:`helpers.emulator.load_emulator`).

    Examples
    --------
    >>> fm = ForwardModel()
    >>> flux = fm.render([[5772, 4.44, 0.0, 0.0, 0.0]])
    >>> flux.shape
    (1, 15940)
    """

    def __init__(self, grid: Grid | None = None, emulator: Emulator | None = None):
        self.grid = grid or giraffe_grid()
        self.emulator = emulator or load_emulator()
        full = giraffe_grid()
        if self.emulator.wave_digest != full.digest:
            raise ValueError("the emulator was trained on another wavelength grid than "
                             "helpers.spectra.giraffe_grid(); retrain it (scripts/train_emulator.py)")
        self._full = full
        if self.grid.digest == full.digest:
            self._pix = slice(None)
        else:
            idx = np.searchsorted(np.round(full.wave, 6), np.round(self.grid.wave, 6))
            idx = np.clip(idx, 0, full.n_pixels - 1)
            if not np.allclose(full.wave[idx], self.grid.wave, atol=1e-6):
                raise ValueError("the requested grid is not part of the emulator's 0.05 Å "
                                 "HR10 + HR21 grid")
            self._pix = idx

    def _nuisances(self, labels, nuis):
        labels = np.atleast_2d(np.asarray(labels, float))
        if nuis is None:
            nuis = np.column_stack([default_vmic(labels[:, 0], labels[:, 1]),
                                    np.zeros(len(labels)), np.zeros(len(labels))])
        nuis = np.atleast_2d(np.asarray(nuis, float))
        if nuis.shape != (len(labels), len(NUISANCES)):
            raise ValueError(f"nuis must have shape ({len(labels)}, 3) for {NUISANCES}, "
                             f"got {nuis.shape}")
        if not np.all(np.isfinite(labels)) or not np.all(np.isfinite(nuis)):
            raise ValueError("labels or nuisances contain NaN or infinity")
        return labels, nuis

    def in_domain(self, labels, nuis=None, alpha_fe=None) -> np.ndarray:
        """True for stars whose labels the emulator covers (see :meth:`Emulator.in_domain`)."""
        labels, nuis = self._nuisances(labels, nuis)
        return self.emulator.in_domain(grid_labels(labels, nuis[:, 0], alpha_fe))

    def render(self, labels, nuis=None, *, alpha_fe=None, vmac=None,
               chunk: int = 1024) -> np.ndarray:
        """Noise-free, continuum-normalised spectra at the setups' resolution.

        Parameters
        ----------
        labels : (n, 5) or (5,)
            Teff [K], log g [dex], [Fe/H], [Mg/Fe], [Al/Fe] [dex].
        nuis : (n, 3), optional
            vmic, vsini, rv [km/s]; default :func:`default_vmic`, 0, 0.
        alpha_fe : (n,), optional
            [α/Fe] of O, Si, S, Ca and Ti [dex]; default ``ALPHA_COUPLING × [Mg/Fe]``.
        vmac : (n,), optional
            Macroturbulence [km/s]; default 0 (the base resolution already smooths
            the lines by 7.5 km/s FWHM).
        chunk : int
            Stars per block (memory ~ chunk × 0.2 MB).

        Raises
        ------
        helpers.emulator.DomainError
            For labels outside the grid the emulator was trained on.
        """
        labels, nuis = self._nuisances(labels, nuis)
        x = grid_labels(labels, nuis[:, 0], alpha_fe)
        self.emulator.check_domain(x)
        vmac = np.zeros(len(x)) if vmac is None else np.broadcast_to(np.asarray(vmac, float),
                                                                      (len(x),))
        out = np.empty((len(x), self.grid.n_pixels), np.float32)
        for i in range(0, len(x), chunk):
            sl = slice(i, i + chunk)
            base = self.emulator.predict(x[sl], check=False)
            out[sl] = broaden(base, self._full, nuis[sl, 1], vmac[sl], nuis[sl, 2])[:, self._pix]
        return out

    def jacobian(self, labels, nuis=None, *, alpha_fe=None, vmac=None,
                 extra: bool = False) -> np.ndarray:
        """∂flux/∂label of the observed spectrum, exact through the emulator.

        Returns
        -------
        ndarray, (n, n_pixels, 5), or (n, n_pixels, 7) with ``extra``
            Per unit of each label (1/K for Teff, 1/dex otherwise); with
            ``extra`` the last two columns are ∂/∂[α/Fe] and ∂/∂vmic (s/km). When
            ``alpha_fe`` is not given it follows [Mg/Fe], and the [Mg/Fe] column
            includes that coupling.
        """
        labels, nuis = self._nuisances(labels, nuis)
        x = grid_labels(labels, nuis[:, 0], alpha_fe)
        J = self.emulator.jacobian(x)  # (n, n_full, 7)
        if alpha_fe is None:
            J[:, :, 3] += ALPHA_COUPLING * J[:, :, 5]
        vmac = np.zeros(len(x)) if vmac is None else np.broadcast_to(np.asarray(vmac, float),
                                                                      (len(x),))
        cols = range(7) if extra else range(5)
        out = np.empty((len(x), self.grid.n_pixels, len(cols)))
        for n in range(len(x)):
            b = broaden(J[n, :, list(cols)].astype(np.float32), self._full,
                        np.full(len(cols), nuis[n, 1]), np.full(len(cols), vmac[n]),
                        np.full(len(cols), nuis[n, 2]))
            out[n] = b[:, self._pix].T
        return out


assert GRID_LABELS[:5] == LABELS, "grid and package labels must share their first five names"
