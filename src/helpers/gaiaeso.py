"""Reading the real Gaia-ESO data: ESO Phase 3 spectra and the Gaia-ESO catalogue.

ESO 1-D spectra (``ADP.<timestamp>.fits``, the "SDP" format of the IVOA
Spectrum data model) have an empty primary HDU and one binary table with a
single row whose cells hold the arrays. The exact column names of the
Gaia-ESO GIRAFFE files are not confirmed, so columns are found by name from
lists of candidates, and the wavelength unit is read from the column's
``TUNITn``. Each file that cannot be used gives one clear reason, collected
in a rejection table, instead of stopping the run.

The catalogue is a FITS table with the Gaia-ESO template's upper-case names
(``CNAME``, ``TEFF``, ``MG1``, ...) or the lower-case names of the public
subset. Abundances ``MG1``/``AL1`` are absolute, A(X) = log ε(X); they become
[Mg/Fe] = MG1 − A☉(Mg) − FEH with a solar scale that is a parameter.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.io import fits

from . import LABELS, __version__
from .spectra import SETUPS, Grid, continuum_normalise, resample, to_rest_frame

__all__ = ["SpectrumReadError", "Phase3Spectrum", "read_phase3_spectrum", "scan_spectra",
           "read_ges_catalogue", "SolarScale", "quality_mask", "crossmatch",
           "build_gaiaeso_dataset", "GES_TYPE_GROUPS", "cname"]

WAVE_COLUMNS = ("WAVE", "WAVELENGTH", "LAMBDA", "WAVE_AIR")
FLUX_NORM_COLUMNS = ("FLUX_NORMALIZED", "FLUX_NORMALISED", "FLUX_NORM", "NORM_FLUX")
ERR_NORM_COLUMNS = ("ERR_NORMALIZED", "ERR_NORMALISED", "ERR_NORM", "NORM_ERR")
FLUX_COLUMNS = ("FLUX_REDUCED", "FLUX", "FLUX_REDUCED_SKY")
ERR_COLUMNS = ("ERR_REDUCED", "ERR", "ERROR", "SIGMA", "FLUX_ERR")
SETUP_KEYWORDS = ("SETUP", "HIERARCH ESO INS EXP MODE", "HIERARCH ESO INS SETUP", "INSMODE")
#: Gaia-ESO GES_TYPE → our ``group`` column.
GES_TYPE_GROUPS = {"GE_MW": "field", "GE_MW_BL": "field", "GE_SD_OC": "open_cluster",
                   "GE_CL": "open_cluster", "GE_SD_GC": "globular_cluster", "GE_SD_BM": "benchmark",
                   "GE_SD_BW": "benchmark"}


class SpectrumReadError(ValueError):
    """A spectrum file that cannot be used, with the file and the reason."""

    def __init__(self, path, reason: str):
        super().__init__(f"{Path(path).name}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass
class Phase3Spectrum:
    """One GIRAFFE spectrum read from an ESO Phase 3 file.

    Attributes
    ----------
    path : str
    wave : ndarray
        Air wavelength in Å (strictly increasing).
    flux, err : ndarray
        Flux and 1-σ error; continuum-normalised if ``normalised``.
    mask : ndarray of bool
        True for unusable pixels (NaN flux, non-positive or NaN error).
    normalised : bool
    setup : str
        ``HR10`` or ``HR21``.
    header : dict
        OBJECT, RA, DEC [deg], MJD-OBS, PROG_ID, SNR, SPEC_RES, CONTNORM, ...
    """

    path: str
    wave: np.ndarray
    flux: np.ndarray
    err: np.ndarray
    mask: np.ndarray
    normalised: bool
    setup: str
    header: dict = field(default_factory=dict)

    @property
    def n_masked(self) -> int:
        return int(self.mask.sum())


def _find_column(names: list[str], candidates) -> str | None:
    upper = {n.upper(): n for n in names}
    for c in candidates:
        if c in upper:
            return upper[c]
    return None


def _unit_to_angstrom(unit_str: str | None, path) -> float:
    if not unit_str:
        raise SpectrumReadError(path, "the wavelength column has no unit (TUNITn); cannot tell nm from Å")
    try:
        unit = u.Unit(unit_str.strip().replace("Angstroms", "Angstrom"), parse_strict="raise")
        return float((1 * unit).to(u.AA).value)
    except (ValueError, u.UnitConversionError) as exc:
        raise SpectrumReadError(path, f"wavelength unit {unit_str!r} is not a length") from exc


def _infer_setup(wave_aa: np.ndarray) -> str | None:
    best, best_overlap = None, 0.0
    for name, s in SETUPS.items():
        ov = min(wave_aa[-1], s.wmax) - max(wave_aa[0], s.wmin)
        frac = ov / (s.wmax - s.wmin)
        if frac > best_overlap:
            best, best_overlap = name, frac
    return best if best_overlap > 0 else None


def cname(ra_deg, dec_deg) -> np.ndarray:
    """Gaia-ESO CNAME ``hhmmssss±ddmmsss`` from ICRS RA, Dec in degrees ('' where NaN)."""
    out = []
    for ra, dec in zip(np.atleast_1d(ra_deg), np.atleast_1d(dec_deg)):
        if not (np.isfinite(ra) and np.isfinite(dec)):
            out.append("")
            continue
        h = (ra % 360) / 15.0
        hh, mm = int(h), int((h * 60) % 60)
        ss = (h * 3600) % 60
        sign = "+" if dec >= 0 else "-"
        d = abs(dec)
        dd, dm = int(d), int((d * 60) % 60)
        ds = (d * 3600) % 60
        out.append(f"{hh:02d}{mm:02d}{int(ss * 100):04d}{sign}{dd:02d}{dm:02d}{int(ds * 10):03d}")
    return np.array(out)


def read_phase3_spectrum(path, min_coverage: float = 0.8, max_masked: float = 0.5) -> Phase3Spectrum:
    """Read one ESO Phase 3 1-D spectrum of a GIRAFFE setup.

    Parameters
    ----------
    path : path-like
    min_coverage : float
        Fraction of the setup's nominal range the file must cover.
    max_masked : float
        Largest tolerated fraction of unusable pixels.

    Raises
    ------
    SpectrumReadError
        With the reason: unreadable, no table, missing columns, no or wrong unit,
        non-monotonic or short wavelength coverage, unknown setup, too many bad pixels.
    """
    try:
        hdul = fits.open(path, memmap=False)
    except (OSError, ValueError) as exc:
        raise SpectrumReadError(path, f"not a readable FITS file ({exc})") from exc
    try:
        with hdul:
            return _phase3_from_hdul(path, hdul, min_coverage, max_masked)
    except SpectrumReadError:
        raise
    except (OSError, ValueError, TypeError, IndexError, KeyError, EOFError) as exc:
        # astropy reads the table lazily: a file cut short fails here, not in fits.open
        raise SpectrumReadError(path, f"truncated or corrupt file: its table cannot be read ({type(exc).__name__}: "
                                      f"{exc}); download it again") from exc


def _phase3_from_hdul(path, hdul, min_coverage: float, max_masked: float) -> Phase3Spectrum:
    """The body of :func:`read_phase3_spectrum` for an opened file."""
    table = next((h for h in hdul[1:] if isinstance(h, fits.BinTableHDU)), None)
    if table is None or table.data is None or len(table.data) < 1:
        raise SpectrumReadError(path, "no binary table with a spectrum row (ESO Phase 3 1-D format expected)")
    names = list(table.columns.names)
    wcol = _find_column(names, WAVE_COLUMNS)
    if wcol is None:
        raise SpectrumReadError(path, f"no wavelength column among {names}")
    fcol = _find_column(names, FLUX_NORM_COLUMNS)
    ecol = _find_column(names, ERR_NORM_COLUMNS)
    normalised = fcol is not None
    if not normalised:
        fcol = _find_column(names, FLUX_COLUMNS)
        ecol = _find_column(names, ERR_COLUMNS)
    if fcol is None:
        raise SpectrumReadError(path, f"no flux column among {names}")
    if ecol is None:
        raise SpectrumReadError(path, f"no error column among {names}")
    scale = _unit_to_angstrom(table.columns[wcol].unit, path)
    row = table.data[0]
    wave = np.asarray(row[wcol], float).ravel() * scale
    flux = np.asarray(row[fcol], float).ravel()
    err = np.asarray(row[ecol], float).ravel()
    hdr = {**dict(hdul[0].header), **dict(table.header)}
    if not (wave.size == flux.size == err.size) or wave.size < 10:
        raise SpectrumReadError(path, f"array lengths differ or are too short (wave {wave.size}, "
                                      f"flux {flux.size}, err {err.size})")
    if not np.all(np.isfinite(wave)):
        raise SpectrumReadError(path, "the wavelength array holds NaN")
    if np.any(np.diff(wave) <= 0):
        raise SpectrumReadError(path, "the wavelength array is not strictly increasing")
    setup = None
    for key in SETUP_KEYWORDS:
        val = str(hdr.get(key, "")).upper().replace(" ", "")
        for name in SETUPS:
            if name in val:
                setup = name
    setup = setup or _infer_setup(wave)
    if setup is None:
        raise SpectrumReadError(path, f"wavelengths {wave[0]:.1f}-{wave[-1]:.1f} Å match neither HR10 nor HR21")
    s = SETUPS[setup]
    coverage = (min(wave[-1], s.wmax) - max(wave[0], s.wmin)) / (s.wmax - s.wmin)
    if coverage < min_coverage:
        raise SpectrumReadError(path, f"covers only {coverage:.0%} of {setup} ({wave[0]:.1f}-{wave[-1]:.1f} Å); "
                                      "wrong wavelength unit or a truncated spectrum?")
    mask = ~np.isfinite(flux) | ~np.isfinite(err) | (err <= 0)
    if mask.mean() > max_masked:
        raise SpectrumReadError(path, f"{mask.mean():.0%} of the pixels are NaN or have non-positive errors")
    keys = ("OBJECT", "RA", "DEC", "MJD-OBS", "PROG_ID", "SNR", "SPEC_RES", "CONTNORM", "WAVELMIN",
            "WAVELMAX", "CNAME")
    header = {k: hdr[k] for k in keys if k in hdr}
    return Phase3Spectrum(str(path), wave, flux, err, mask, normalised, setup, header)


def scan_spectra(folder, pattern: str = "ADP.*.fits") -> tuple[list[Phase3Spectrum], list[dict]]:
    """Read every spectrum file in ``folder``; return the readable ones and a rejection table."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"spectrum folder {folder} does not exist; see the book page "
                                "'Running on the real Gaia-ESO data' for how to download the files")
    spectra, rejected = [], []
    for p in sorted(glob.glob(os.path.join(folder, pattern))):
        try:
            spectra.append(read_phase3_spectrum(p))
        except SpectrumReadError as exc:
            rejected.append({"file": Path(p).name, "reason": exc.reason})
    if not spectra and not rejected:
        raise FileNotFoundError(f"no files matching {pattern} in {folder}")
    return spectra, rejected


# --------------------------------------------------------------------------- catalogue
@dataclass(frozen=True)
class SolarScale:
    """Solar abundances A☉(X) used to turn absolute abundances into [X/Fe] (MARCS standard composition)."""

    mg: float = 7.53
    al: float = 6.37
    fe: float = 7.45


_CATALOGUE_COLUMNS = ("CNAME", "GES_FLD", "GES_TYPE", "SETUP", "SNR", "TEFF", "E_TEFF", "LOGG",
                      "E_LOGG", "FEH", "E_FEH", "MG1", "E_MG1", "AL1", "E_AL1", "VRAD", "VSINI",
                      "RA", "DEC")


def read_ges_catalogue(path, solar: SolarScale = SolarScale()) -> dict:
    """Read a Gaia-ESO catalogue FITS table into columns with our names.

    Upper-case template names and the lower-case public subset are both read;
    masked or missing values become NaN (numbers) or '' (text). Adds
    ``mg_fe``, ``al_fe`` and their errors from the absolute abundances.

    Returns
    -------
    dict of ndarray
        Keys: the template names present, plus ``teff, logg, feh, mg_fe, al_fe``
        and ``e_<label>``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"catalogue {path} does not exist; see the book page "
                                "'Running on the real Gaia-ESO data' for how to obtain it")
    from astropy.table import Table

    try:
        t = Table.read(path, hdu=1)
    except Exception as exc:  # astropy raises several types for broken files
        raise ValueError(f"{path} is not a readable FITS table ({exc})") from exc
    by_upper = {c.upper(): c for c in t.colnames}
    if "CNAME" not in by_upper and not {"RA", "DEC"} <= set(by_upper):
        raise ValueError(f"{path} has neither CNAME nor RA/DEC columns; is it the Gaia-ESO catalogue?")
    out = {}
    for name in _CATALOGUE_COLUMNS:
        if name not in by_upper:
            continue
        col = t[by_upper[name]]
        if col.dtype.kind in "SUO":
            vals = np.array([str(v).strip() if v is not np.ma.masked else "" for v in
                             (col.filled("") if hasattr(col, "filled") else col)])
        else:
            vals = np.asarray(col.filled(np.nan) if hasattr(col, "filled") else col, float)
        out[name] = vals
    n = len(t)
    nan = np.full(n, np.nan)
    get = lambda k: out.get(k, nan)
    out["teff"], out["e_teff"] = get("TEFF"), get("E_TEFF")
    out["logg"], out["e_logg"] = get("LOGG"), get("E_LOGG")
    out["feh"], out["e_feh"] = get("FEH"), get("E_FEH")
    out["mg_fe"] = get("MG1") - solar.mg - get("FEH")
    out["e_mg_fe"] = np.hypot(get("E_MG1"), get("E_FEH"))
    out["al_fe"] = get("AL1") - solar.al - get("FEH")
    out["e_al_fe"] = np.hypot(get("E_AL1"), get("E_FEH"))
    return out


def quality_mask(cat: dict, snr_min: float = 20.0, max_errors: dict | None = None,
                 snr: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The paper's kind of training-set cuts: all five labels, S/N and label errors.

    Parameters
    ----------
    max_errors : dict, optional
        Largest accepted error per label, e.g. ``{"teff": 200, "logg": 0.3}``.
    snr : array, optional
        S/N per star (default: the catalogue's ``SNR`` column).

    Returns
    -------
    ok : ndarray of bool
    reason : ndarray of str
        The first failed cut per row ('' where ``ok``).
    """
    n = len(cat["teff"])
    reason = np.full(n, "", dtype=object)
    for k in LABELS:
        bad = ~np.isfinite(cat[k]) & (reason == "")
        reason[bad] = f"no {k}"
    s = cat.get("SNR") if snr is None else snr
    if s is not None:
        reason[(np.nan_to_num(s, nan=0.0) < snr_min) & (reason == "")] = f"S/N < {snr_min:g}"
    for k, lim in (max_errors or {}).items():
        e = cat[f"e_{k}"]
        reason[~(np.nan_to_num(e, nan=np.inf) <= lim) & (reason == "")] = f"e_{k} > {lim:g}"
    reason = reason.astype(str)
    return reason == "", reason


def crossmatch(spec_cnames, spec_ra, spec_dec, cat: dict, max_sep_arcsec: float = 1.0) -> np.ndarray:
    """Catalogue row for each spectrum: by CNAME where possible, else by position (-1 if none)."""
    from astropy.coordinates import SkyCoord

    n = len(spec_ra)
    idx = np.full(n, -1)
    if "CNAME" in cat:
        lookup = {c: i for i, c in enumerate(cat["CNAME"]) if c}
        for k, c in enumerate(spec_cnames):
            idx[k] = lookup.get(str(c).strip(), -1)
    todo = np.nonzero((idx < 0) & np.isfinite(spec_ra) & np.isfinite(spec_dec))[0]
    if todo.size and "RA" in cat and "DEC" in cat:
        ok = np.isfinite(cat["RA"]) & np.isfinite(cat["DEC"])
        rows = np.nonzero(ok)[0]
        if rows.size:
            c_cat = SkyCoord(cat["RA"][rows] * u.deg, cat["DEC"][rows] * u.deg)
            c_sp = SkyCoord(np.asarray(spec_ra)[todo] * u.deg, np.asarray(spec_dec)[todo] * u.deg)
            j, sep, _ = c_sp.match_to_catalog_sky(c_cat)
            good = sep.arcsec <= max_sep_arcsec
            idx[todo[good]] = rows[j[good]]
    return idx


def _spectrum_cname(s: Phase3Spectrum) -> str:

    for key in ("CNAME", "OBJECT"):
        v = str(s.header.get(key, "")).strip()
        if len(v) == 16 and v[8] in "+-" and v.replace("+", "").replace("-", "").isdigit():
            return v
    ra, dec = s.header.get("RA"), s.header.get("DEC")
    if ra is None or dec is None:
        return ""
    return str(cname([float(ra)], [float(dec)])[0])


def build_gaiaeso_dataset(spectra_dir, catalogue_path, grid: Grid, out_observed, out_training,
                          solar: SolarScale = SolarScale(), snr_min: float = 20.0,
                          max_errors: dict | None = None, max_sep_arcsec: float = 1.0,
                          pattern: str = "ADP.*.fits", rv_template=None) -> dict:
    """Turn a folder of Phase 3 spectra and a catalogue into the observed and training data sets.

    Per star with both setups: shift to the rest frame (catalogue VRAD), resample
    flux-conservingly to ``grid``, normalise the continuum with
    :func:`helpers.spectra.continuum_normalise` (also when the files carry a
    normalised flux, so training and application data are treated alike), and
    join HR10 and HR21. Stars missing a setup or without a catalogue match are
    rejected with the reason recorded. A star without a catalogue VRAD gets one by
    cross-correlation against ``rv_template`` (``(rest-frame wavelengths [Å],
    normalised flux)``, e.g. the spectral model's spectrum of a typical star;
    :func:`helpers.spectra.cross_correlate_rv`), recorded in the ``vrad_source``
    column; without a template, or when that fails, the star is rejected.

    Returns
    -------
    dict
        ``n_files``, ``n_stars``, ``n_training``, ``rejected`` (list of dicts:
        ``file`` (a file name, or the CNAME for star-level rejections) and ``reason``).
    """
    from .dataset import write_dataset

    spectra, rejected = scan_spectra(spectra_dir, pattern)
    n_files = len(spectra) + len(rejected)
    cat = read_ges_catalogue(catalogue_path, solar)
    names = [_spectrum_cname(s) for s in spectra]
    ra = np.array([float(s.header.get("RA", np.nan)) for s in spectra])
    dec = np.array([float(s.header.get("DEC", np.nan)) for s in spectra])
    rows = crossmatch(names, ra, dec, cat, max_sep_arcsec) if spectra else np.array([], int)
    stars: dict[int, dict[str, Phase3Spectrum]] = {}
    for s, r in zip(spectra, rows):
        if r < 0:
            rejected.append({"file": Path(s.path).name, "reason": "no catalogue match (CNAME or position)"})
            continue
        stars.setdefault(int(r), {})
        if s.setup in stars[int(r)]:
            rejected.append({"file": Path(s.path).name, "reason": f"second {s.setup} spectrum of the star; "
                                                                   "the first one is used"})
            continue
        stars[int(r)][s.setup] = s
    needed = [st.name for st in grid.setups]
    fluxes, ivars, keep = [], [], []
    vrad = np.array(cat.get("VRAD", np.full(len(cat["teff"]), np.nan)), float)
    vrad_source = np.where(np.isfinite(vrad), "catalogue", "").astype("<U17")
    for r, by_setup in sorted(stars.items()):
        missing = [n for n in needed if n not in by_setup]
        label = cat["CNAME"][r] if "CNAME" in cat else str(r)
        if missing:
            rejected.append({"file": label, "reason": f"no {'/'.join(missing)} spectrum"})
            continue
        if not np.isfinite(vrad[r]) and rv_template is not None:
            from .spectra import cross_correlate_rv

            xc = cross_correlate_rv([(s.wave, s.flux, s.err, s.mask) for s in by_setup.values()], *rv_template)
            if np.isfinite(xc["rv"]) and np.isfinite(xc["rv_err"]):
                vrad[r], vrad_source[r] = xc["rv"], "cross-correlation"
        if not np.isfinite(vrad[r]):
            rejected.append({"file": label, "reason": "no radial velocity (VRAD) in the catalogue"
                             + (" and none from cross-correlation" if rv_template is not None else
                                " (give a template to measure one)")})
            continue
        f_all = np.ones(grid.n_pixels, np.float32)
        iv_all = np.zeros(grid.n_pixels, np.float32)
        for st, (a, b) in zip(grid.setups, grid.bounds):
            s = by_setup[st.name]
            f, iv = resample(to_rest_frame(s.wave, vrad[r]), s.flux, s.err, grid.wave[a:b], s.mask)
            f_all[a:b], iv_all[a:b] = f, iv
        f_all, iv_all, _ = continuum_normalise(grid.wave, f_all, iv_all, grid)
        fluxes.append(f_all)
        ivars.append(iv_all)
        keep.append(r)
    keep = np.array(keep, int)
    n = keep.size
    if n == 0:
        raise ValueError(f"no star in {spectra_dir} has usable {' and '.join(needed)} spectra with a "
                         f"catalogue match; rejections: {rejected[:10]}")
    text = lambda k: cat[k][keep] if k in cat else np.full(n, "")
    num = lambda k: cat[k][keep] if k in cat else np.full(n, np.nan)
    snr = np.array([np.nanmedian([float(stars[r][s].header.get("SNR", np.nan)) for s in needed]) for r in keep])
    snr = np.where(np.isfinite(snr), snr, num("SNR"))
    ges_type = text("GES_TYPE")
    columns = {
        "star_id": text("CNAME") if "CNAME" in cat else np.array([str(r) for r in keep]),
        "cname": text("CNAME"),
        "group": np.array([GES_TYPE_GROUPS.get(t, "field") for t in ges_type]),
        "cluster": text("GES_FLD"), "population": np.full(n, "unknown"), "state": np.full(n, "unknown"),
        "benchmark_mg_al_assumed": np.zeros(n, bool),
    }
    for k in LABELS:
        columns[f"truth_{k}"] = np.full(n, np.nan)
    for k in ("vmic", "vsini", "rv"):
        columns[f"truth_{k}"] = np.full(n, np.nan)
    for k in LABELS:
        columns[f"survey_{k}"] = cat[k][keep]
        columns[f"survey_e_{k}"] = cat[f"e_{k}"][keep]
    ok, reason = quality_mask({k: v[keep] for k, v in cat.items()}, snr_min, max_errors, snr=snr)
    columns.update({"survey_flag": np.zeros(n, int), "snr": snr, "defect": np.full(n, "unknown"),
                    "ra": num("RA"), "dec": num("DEC"), "distance_pc": np.full(n, np.nan),
                    "R_kpc": np.full(n, np.nan), "z_kpc": np.full(n, np.nan), "vrad": vrad[keep],
                    "vrad_source": vrad_source[keep],
                    "train_reject_reason": reason})
    prov = {"generator": "helpers.gaiaeso", "generator_version": __version__, "source": "gaia-eso",
            "seed": None, "parameters": {"spectra_dir": str(spectra_dir), "catalogue": str(catalogue_path),
                                         "solar": solar.__dict__, "snr_min": snr_min,
                                         "max_errors": max_errors or {}, "max_sep_arcsec": max_sep_arcsec}}
    flux, ivar = np.array(fluxes), np.array(ivars)
    write_dataset(out_observed, grid, flux, ivar, columns, prov)
    train_rows = np.nonzero(ok & np.isin(columns["group"], ["field", "open_cluster"]))[0]
    write_dataset(out_training, grid, flux[train_rows], ivar[train_rows],
                  {k: v[train_rows] for k, v in columns.items()}, {**prov, "subset": "training"})
    return {"n_files": n_files, "n_stars": n, "n_training": int(train_rows.size), "rejected": rejected}
