"""Wavelength grids of the GIRAFFE HR10 and HR21 setups.

Gaia-ESO delivers reduced GIRAFFE spectra on a linear 0.05 Å grid. The model
input is HR10 and HR21 of one star joined into one vector on that grid
(about 5 600 + 10 340 pixels). Wavelengths are in Å (air) throughout.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

__all__ = ["Setup", "SETUPS", "Grid", "giraffe_grid", "C_KMS", "cross_correlate_rv"]

#: Speed of light in km/s.
C_KMS = 299_792.458


@dataclass(frozen=True)
class Setup:
    """One GIRAFFE setup.

    Attributes
    ----------
    name : str
    wmin, wmax : float
        Wavelength range of the delivered grid in Å (air), ``wmax`` excluded.
    resolving_power : float
        R = λ/Δλ (FWHM of the line-spread function).
    """

    name: str
    wmin: float
    wmax: float
    resolving_power: float


#: The two setups of the paper (ESO GIRAFFE standard settings).
SETUPS = {
    "HR10": Setup("HR10", 5339.0, 5619.0, 19_800.0),
    "HR21": Setup("HR21", 8484.0, 9001.0, 16_200.0),
}


@dataclass(frozen=True)
class Grid:
    """A joined multi-setup wavelength grid.

    Attributes
    ----------
    wave : ndarray, shape (n_pixels,)
        Air wavelength of every pixel in Å.
    setups : tuple of Setup
    bounds : tuple of (int, int)
        Pixel slice ``[start, stop)`` of each setup in :attr:`wave`.
    step : float
        Pixel size in Å.
    """

    wave: np.ndarray
    setups: tuple
    bounds: tuple
    step: float

    @property
    def n_pixels(self) -> int:
        return self.wave.size

    def setup_slice(self, name: str) -> slice:
        """Pixel slice of setup ``name``."""
        for s, (a, b) in zip(self.setups, self.bounds):
            if s.name == name:
                return slice(a, b)
        raise KeyError(f"setup {name!r} is not on this grid ({[s.name for s in self.setups]})")

    def resolving_power(self) -> np.ndarray:
        """R of every pixel."""
        out = np.empty(self.n_pixels)
        for s, (a, b) in zip(self.setups, self.bounds):
            out[a:b] = s.resolving_power
        return out

    @property
    def digest(self) -> str:
        """SHA-256 of the grid (wavelengths rounded to 1e-6 Å): data sets and models carry it."""
        return hashlib.sha256(np.round(self.wave, 6).astype("<f8").tobytes()).hexdigest()


def giraffe_grid(setups=("HR10", "HR21"), step: float = 0.05) -> Grid:
    """Return the joined Gaia-ESO grid of ``setups`` with ``step`` Å pixels.

    Examples
    --------
    >>> g = giraffe_grid()
    >>> g.n_pixels
    15940
    """
    waves, bounds, used = [], [], []
    start = 0
    for name in setups:
        if name not in SETUPS:
            raise KeyError(f"unknown setup {name!r}; known: {sorted(SETUPS)}")
        s = SETUPS[name]
        n = int(round((s.wmax - s.wmin) / step))
        w = s.wmin + step * np.arange(n)
        waves.append(w)
        bounds.append((start, start + n))
        used.append(s)
        start += n
    return Grid(np.concatenate(waves), tuple(used), tuple(bounds), step)


# --------------------------------------------------------------------------- preprocessing
def to_rest_frame(wave, vrad_kms: float):
    """Shift observed wavelengths [Å] to the rest frame of a star moving at ``vrad_kms`` [km/s]."""
    return np.asarray(wave, float) / (1.0 + vrad_kms / C_KMS)


def _edges(centres: np.ndarray) -> np.ndarray:
    mid = 0.5 * (centres[1:] + centres[:-1])
    return np.concatenate([[centres[0] - (mid[0] - centres[0])], mid,
                           [centres[-1] + (centres[-1] - mid[-1])]])


def resample(wave_in, flux, err, wave_out, mask=None, min_coverage: float = 0.5):
    """Flux-conserving resampling onto ``wave_out``, with the errors propagated.

    Each output pixel gets the mean flux over its extent, computed from the
    overlaps with the input pixels (a sparse weight matrix ``W``); the
    variance is ``W² @ var``. Masked input pixels carry no weight; an output
    pixel less than ``min_coverage`` covered by good input is masked.

    Parameters
    ----------
    wave_in : array, Å, strictly increasing
    flux, err : array
        Same length as ``wave_in``; ``err`` is the 1-σ error.
    wave_out : array, Å, strictly increasing
    mask : array of bool, optional
        True marks a bad input pixel.

    Returns
    -------
    flux_out, ivar_out : ndarray (float32)
        ``ivar_out = 0`` where the output pixel is not covered by good data
        (``flux_out`` is 1 there).
    """
    from scipy.sparse import coo_matrix

    wave_in = np.asarray(wave_in, float)
    wave_out = np.asarray(wave_out, float)
    flux = np.asarray(flux, float)
    err = np.asarray(err, float)
    good = np.isfinite(flux) & np.isfinite(err) & (err > 0)
    if mask is not None:
        good &= ~np.asarray(mask, bool)
    e_in, e_out = _edges(wave_in), _edges(wave_out)
    # overlap of input pixel i with output pixel j
    j_lo = np.clip(np.searchsorted(e_out, e_in[:-1], side="right") - 1, 0, wave_out.size - 1)
    j_hi = np.clip(np.searchsorted(e_out, e_in[1:], side="left") - 1, 0, wave_out.size - 1)
    rows, cols, vals = [], [], []
    span = int((j_hi - j_lo).max()) + 1 if wave_in.size else 1
    for k in range(span):
        j = j_lo + k
        ok = j <= j_hi
        i = np.nonzero(ok)[0]
        jj = j[ok]
        ov = np.minimum(e_in[i + 1], e_out[jj + 1]) - np.maximum(e_in[i], e_out[jj])
        keep = ov > 0
        rows.append(jj[keep]); cols.append(i[keep]); vals.append(ov[keep])
    rows, cols, vals = (np.concatenate(x) for x in (rows, cols, vals))
    W = coo_matrix((vals, (rows, cols)), shape=(wave_out.size, wave_in.size)).tocsr()
    width = np.diff(e_out)
    g = good.astype(float)
    covered = (W @ g) / width
    denom = W @ g
    safe = np.where(denom > 0, denom, 1.0)
    f_out = (W @ np.where(good, flux, 0.0)) / safe
    var_out = ((W.multiply(W)) @ np.where(good, err ** 2, 0.0)) / safe ** 2
    ok = (covered >= min_coverage) & (var_out > 0)
    ivar = np.where(ok, 1.0 / np.where(ok, var_out, 1.0), 0.0)
    return np.where(ok, f_out, 1.0).astype(np.float32), ivar.astype(np.float32)


def continuum_normalise(wave, flux, ivar, grid: Grid, degree: int = 3, n_iter: int = 6,
                        low_sigma: float = 1.5, high_sigma: float = 3.0):
    """Divide each setup of a spectrum by an iteratively clipped Chebyshev continuum.

    The same function is used for training and for application data, so the
    network never sees two normalisations. Points far below the fit (absorption
    lines) or above it (spikes) are rejected in turn; the fit is redone
    ``n_iter`` times per setup.

    Parameters
    ----------
    wave : array, Å (the grid's wavelengths)
    flux, ivar : array
        One spectrum on ``grid``; ``ivar = 0`` marks bad pixels.
    grid : Grid
    degree : int
        Chebyshev degree per setup.

    Returns
    -------
    flux_norm, ivar_norm : ndarray (float32)
    continuum : ndarray
    """
    flux = np.asarray(flux, float)
    ivar = np.asarray(ivar, float)
    cont = np.ones_like(flux)
    for a, b in grid.bounds:
        w, f, iv = wave[a:b], flux[a:b], ivar[a:b]
        use = iv > 0
        if use.sum() < 5 * (degree + 1):
            continue
        x = (w - w.mean()) / (0.5 * np.ptp(w))
        for _ in range(n_iter):
            coef = np.polynomial.chebyshev.chebfit(x[use], f[use], degree)
            c = np.polynomial.chebyshev.chebval(x, coef)
            resid = f - c
            s = 1.4826 * np.median(np.abs(resid[use] - np.median(resid[use])))
            new = (iv > 0) & (resid > -low_sigma * s) & (resid < high_sigma * s)
            if new.sum() < 5 * (degree + 1) or np.array_equal(new, use):
                break
            use = new
        cont[a:b] = np.where(c > 0, c, np.nan)
    bad = ~np.isfinite(cont) | (cont <= 0)
    cont = np.where(bad, 1.0, cont)
    out_ivar = np.where(bad, 0.0, ivar * cont ** 2)
    return (flux / cont).astype(np.float32), out_ivar.astype(np.float32), cont


def _running_continuum(wave, flux, good, width_aa: float = 25.0) -> np.ndarray:
    """A rough continuum: the upper envelope (90th percentile) of the good pixels in windows of
    ``width_aa`` [Å], interpolated (enough to compare line patterns, not for abundances)."""
    edges = np.arange(wave[0], wave[-1] + width_aa, width_aa)
    centres, levels = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = good & (wave >= lo) & (wave < hi)
        if m.sum() >= 10:
            centres.append(0.5 * (lo + hi))
            levels.append(np.percentile(flux[m], 90))
    if len(centres) < 2:
        level = np.nanpercentile(flux[good], 90) if good.any() else 1.0
        return np.full_like(wave, level if level > 0 else 1.0)
    return np.interp(wave, centres, levels)


def cross_correlate_rv(spectra, template_wave, template_flux, v_min: float = -500.0,
                       v_max: float = 500.0, step: float = 2.0) -> dict:
    """Radial velocity of a star from its spectra, by χ² against a rest-frame template.

    Each spectrum (observed wavelengths [Å], flux, error, mask) is divided by a rough continuum;
    the template (rest-frame wavelengths [Å], normalised flux, on a grid covering the spectra) is
    shifted to each trial velocity on a grid of ``step`` km/s from ``v_min`` to ``v_max`` and
    compared pixel by pixel; the χ² minimum is refined with a parabola through its neighbours.

    Parameters
    ----------
    spectra : list of (wave, flux, err, mask)
        One entry per setup; ``mask`` True where a pixel is unusable.
    template_wave, template_flux : array_like
        The template in the rest frame.
    v_min, v_max, step : float
        Trial velocities [km/s].

    Returns
    -------
    dict
        ``rv`` [km/s] (NaN if no pixel could be compared), ``rv_err`` [km/s] from the curvature of
        χ² (formal, with the template taken as exact), ``chi2_min`` and ``n_pixels``.
    """
    tw, tf = np.asarray(template_wave, float), np.asarray(template_flux, float)
    trials = np.arange(v_min, v_max + step / 2, step)
    chi2 = np.zeros(trials.size)
    n_used = 0
    for wave, flux, err, mask in spectra:
        wave, flux, err = (np.asarray(a, float) for a in (wave, flux, err))
        good = ~np.asarray(mask, bool) & np.isfinite(flux) & np.isfinite(err) & (err > 0)
        cont = _running_continuum(wave, flux, good)
        f, e = flux / cont, err / cont
        inside = good & (wave / (1 + v_max / C_KMS) > tw[0]) & (wave / (1 + v_min / C_KMS) < tw[-1])
        if inside.sum() < 50:
            continue
        w = 1.0 / e[inside] ** 2
        for k, v in enumerate(trials):
            t = np.interp(wave[inside] / (1 + v / C_KMS), tw, tf)
            chi2[k] += np.sum(w * (f[inside] - t) ** 2)
        n_used += int(inside.sum())
    if n_used == 0:
        return {"rv": float("nan"), "rv_err": float("nan"), "chi2_min": float("nan"), "n_pixels": 0}
    k = int(np.argmin(chi2))
    rv, rv_err = float(trials[k]), float("nan")
    if 0 < k < trials.size - 1:
        c0, c1, c2 = chi2[k - 1], chi2[k], chi2[k + 1]
        curv = (c0 - 2 * c1 + c2) / step**2
        if curv > 0:
            rv = float(trials[k] + 0.5 * step * (c0 - c2) / (c0 - 2 * c1 + c2))
            rv_err = float(np.sqrt(2.0 / curv))
    return {"rv": rv, "rv_err": rv_err, "chi2_min": float(chi2[k]), "n_pixels": n_used}
