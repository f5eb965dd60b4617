"""Atomic data: elements and the line list used by the forward model.

``lines_strong.csv``, shipped in ``helpers/data``, holds 85 lines in or near
HR10/HR21 with Gaia-ESO v6 atomic data and the line depths that Turbospectrum
gives for three reference stars (the project's reference material; its
``source`` column says where each number comes from). The spectra themselves
are synthesised with the whole Gaia-ESO v6 list (``scripts/synthesize_grid.py``).

Wavelengths are in Å (air), excitation potentials in eV.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import paths

__all__ = ["ELEMENTS", "Element", "load_reference_lines", "load_line_list", "species_name",
           "element_by_z"]


@dataclass(frozen=True)
class Element:
    """Data of one chemical element.

    Attributes
    ----------
    symbol : str
    z : int
        Atomic number.
    mass : float
        Atomic mass in atomic mass units.
    a_sun : float
        Solar photospheric abundance A(X) = log(N_X/N_H) + 12 (Grevesse, Asplund &
        Sauval 2007, the composition of the MARCS standard models).
    chi1, chi2 : float
        First and second ionisation potentials in eV.
    """

    symbol: str
    z: int
    mass: float
    a_sun: float
    chi1: float
    chi2: float


_ELEMENT_ROWS = [
    # symbol, Z, mass [u], A_sun, chi_I [eV], chi_II [eV]
    ("H", 1, 1.008, 12.00, 13.598, 99.0),
    ("Li", 3, 6.94, 1.05, 5.392, 75.64),
    ("C", 6, 12.011, 8.39, 11.260, 24.383),
    ("N", 7, 14.007, 7.78, 14.534, 29.601),
    ("O", 8, 15.999, 8.66, 13.618, 35.121),
    ("Na", 11, 22.990, 6.17, 5.139, 47.286),
    ("Mg", 12, 24.305, 7.53, 7.646, 15.035),
    ("Al", 13, 26.982, 6.37, 5.986, 18.829),
    ("Si", 14, 28.085, 7.51, 8.152, 16.346),
    ("S", 16, 32.06, 7.14, 10.360, 23.338),
    ("K", 19, 39.098, 5.08, 4.341, 31.63),
    ("Ca", 20, 40.078, 6.31, 6.113, 11.872),
    ("Sc", 21, 44.956, 3.17, 6.561, 12.80),
    ("Ti", 22, 47.867, 4.90, 6.828, 13.58),
    ("V", 23, 50.942, 4.00, 6.746, 14.66),
    ("Cr", 24, 51.996, 5.64, 6.767, 16.49),
    ("Mn", 25, 54.938, 5.39, 7.434, 15.64),
    ("Fe", 26, 55.845, 7.45, 7.902, 16.199),
    ("Co", 27, 58.933, 4.92, 7.881, 17.08),
    ("Ni", 28, 58.693, 6.23, 7.640, 18.169),
    ("Cu", 29, 63.546, 4.21, 7.726, 20.292),
    ("Zn", 30, 65.38, 4.60, 9.394, 17.964),
    ("Sr", 38, 87.62, 2.92, 5.695, 11.030),
    ("Y", 39, 88.906, 2.21, 6.217, 12.24),
    ("Zr", 40, 91.224, 2.58, 6.634, 13.13),
    ("Ba", 56, 137.33, 2.17, 5.212, 10.004),
    ("La", 57, 138.91, 1.13, 5.577, 11.06),
    ("Ce", 58, 140.12, 1.70, 5.539, 10.85),
    ("Nd", 60, 144.24, 1.45, 5.525, 10.73),
    ("Eu", 63, 151.96, 0.52, 5.670, 11.24),
]
#: Elements known to the forward model, by symbol.
ELEMENTS: dict[str, Element] = {r[0]: Element(*r) for r in _ELEMENT_ROWS}
_BY_Z = {e.z: e for e in ELEMENTS.values()}
_ROMAN = {0: "I", 1: "II", 2: "III"}


def species_name(symbol: str, ion: int) -> str:
    """``('Fe', 0) -> 'Fe I'``; ``ion`` is 0 for neutral, 1 for singly ionised."""
    return f"{symbol} {_ROMAN[ion]}"


def element_by_z(z: int) -> Element | None:
    """The :class:`Element` of atomic number ``z``, or None if not modelled."""
    return _BY_Z.get(z)


def _float(x: str, default: float = np.nan) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return default


def load_reference_lines(path: Path = paths.LINES_STRONG) -> list[dict]:
    """Rows of the strong-line file with numeric columns converted to float (NaN if empty)."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    numeric = ("wavelength_air_A", "excitation_eV", "loggf", "depth_sun", "depth_giant",
               "depth_mp_giant", "ew_sun_mA", "ew_giant_mA", "ew_mp_giant_mA")
    for r in rows:
        for k in numeric:
            r[k] = _float(r[k])
    return rows


def load_line_list(path: Path | None = None, verify: bool = True) -> list[dict]:
    """Every Gaia-ESO v6 line (and Paschen line) under HR10 and HR21: ``species``,
    ``wavelength_air_A``, ``excitation_eV``, ``loggf``.

    Written by ``scripts/extract_lines.py`` from the sdist the synthesis grid was made
    from; the shipped file's SHA-256 (``data_manifest.yaml``, section ``lines``) is checked.
    """
    from .manifest import verify_shipped_file

    path = Path(path) if path else paths.PACKAGE_DATA / "lines_ges_hr.csv"
    if verify:
        verify_shipped_file("lines", path, "regenerate it with scripts/extract_lines.py (see its docstring)")
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        for k in ("wavelength_air_A", "excitation_eV", "loggf"):
            r[k] = float(r[k])
    return rows
