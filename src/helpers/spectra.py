"""Wavelength grids of the GIRAFFE HR10 and HR21 setups.

Gaia-ESO delivers reduced GIRAFFE spectra on a linear 0.05 Å grid. The model
input is HR10 and HR21 of one star joined into one vector on that grid
(about 5 600 + 10 340 pixels). Wavelengths are in Å (air) throughout.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

__all__ = ["Setup", "SETUPS", "Grid", "giraffe_grid", "C_KMS"]

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
