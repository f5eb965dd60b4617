"""Files in the real Gaia-ESO formats, written by the tests themselves.

ESO Phase 3 1-D spectra: an empty primary HDU with the observation keywords,
and one binary table with a single row of array cells (``WAVE``, flux and
error columns with ``TUNITn`` units). A Gaia-ESO catalogue FITS table with the
template's upper-case columns (and masked values where a measurement is missing).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import MaskedColumn, Table

from helpers.simulate import ForwardModel
from helpers.spectra import C_KMS, SETUPS
from helpers.gaiaeso import cname

#: Stars of the fixture set: RA, Dec [deg], labels, VRAD [km/s].
STARS = [
    (150.10, -30.20, [5800, 4.40, 0.00, 0.02, 0.03], 12.0),
    (150.20, -30.25, [4700, 2.50, -0.30, 0.15, 0.10], -35.0),
    (150.30, -30.30, [5200, 3.60, -0.80, 0.30, 0.20], 60.0),
    (150.40, -30.35, [6100, 4.20, 0.20, -0.02, 0.00], -5.0),
]
SOLAR = {"mg": 7.53, "al": 6.37, "fe": 7.45}


def write_phase3(path: Path, wave_aa, flux, err, *, unit="nm", normalised=True, header=None,
                 setup_keyword=True, setup=None):
    """Write one spectrum in the ESO Phase 3 1-D format; wavelengths given in Å."""
    n = len(wave_aa)
    scale = {"nm": 0.1, "Angstrom": 1.0}[unit]
    fname, ename = ("FLUX_NORMALIZED", "ERR_NORMALIZED") if normalised else ("FLUX_REDUCED", "ERR_REDUCED")
    cols = [fits.Column(name="WAVE", format=f"{n}D", unit=unit, array=[np.asarray(wave_aa) * scale]),
            fits.Column(name=fname, format=f"{n}E", array=[flux]),
            fits.Column(name=ename, format=f"{n}E", array=[err])]
    prim = fits.PrimaryHDU()
    for k, v in (header or {}).items():
        prim.header[k] = v
    if setup_keyword and setup:
        prim.header["HIERARCH ESO INS EXP MODE"] = setup
    prim.header["PROG_ID"] = "188.B-3002(A)"
    fits.HDUList([prim, fits.BinTableHDU.from_columns(cols)]).writeto(path, overwrite=True)


def make_fixture_set(folder: Path, snr: float = 80.0, seed: int = 1) -> dict:
    """Several stars in both setups, plus a broken file, a NaN file, an Å file, and a catalogue.

    Returns
    -------
    dict
        ``spectra_dir``, ``catalogue``, ``labels`` (truth per CNAME), ``files``.
    """
    folder = Path(folder)
    spec_dir = folder / "spectra"
    spec_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    fm = ForwardModel()
    files = {}
    names = []
    for k, (ra, dec, lab, vrad) in enumerate(STARS):
        cn = str(cname([ra], [dec])[0])
        names.append(cn)
        flux = fm.render([lab], [[1.2, 3.0, 0.0]])[0]
        for s in ("HR10", "HR21"):
            sl = fm.grid.setup_slice(s)
            # the observed frame: shift by VRAD and sample on a slightly offset native grid
            w_obs = np.arange(SETUPS[s].wmin - 3.0, SETUPS[s].wmax + 3.0, 0.05) + 0.013
            f = np.interp(w_obs / (1 + vrad / C_KMS), fm.grid.wave[sl], flux[sl], left=1.0, right=1.0)
            err = np.full(f.size, 1.0 / snr)
            f = (f + err * rng.standard_normal(f.size)).astype(np.float32)
            normalised = k != 1  # star 1: only un-normalised flux, with a sloped continuum
            if not normalised:
                f = f * (1000.0 + 0.5 * (w_obs - w_obs.mean()))
                err = err * (1000.0 + 0.5 * (w_obs - w_obs.mean()))
            unit = "Angstrom" if k == 2 else "nm"  # star 2 in Å, the others in nm
            hdr = {"OBJECT": f"GES-{k}", "RA": ra, "DEC": dec, "SNR": snr, "MJD-OBS": 56000.0 + k,
                   "CONTNORM": normalised, "SPEC_RES": SETUPS[s].resolving_power}
            if k == 3 and s == "HR10":  # a file with NaNs in the flux (masked, not rejected)
                f[100:160] = np.nan
            p = spec_dir / f"ADP.2014-0{k + 1}-01T00:00:0{s[-1]}.000.fits"
            write_phase3(p, w_obs, f, err.astype(np.float32), unit=unit, normalised=normalised,
                         header=hdr, setup=s, setup_keyword=(k != 0))
            files[(cn, s)] = p
    # a broken file, and one with a non-monotonic wavelength array
    (spec_dir / "ADP.2014-09-01T00:00:00.000.fits").write_bytes(b"SIMPLE  =  this is not FITS")
    w = np.arange(8484.0, 9001.0, 0.05)
    w[500] = w[499]
    write_phase3(spec_dir / "ADP.2014-09-02T00:00:00.000.fits", w, np.ones(w.size), np.full(w.size, 0.01),
                 header={"RA": 151.0, "DEC": -31.0})
    # the catalogue: upper-case template columns, with one missing Al abundance (masked)
    labels = {cn: lab for cn, (_, _, lab, _) in zip(names, STARS)}
    t = Table()
    t["CNAME"] = names + ["99999999+9999999"]
    t["GES_FLD"] = ["field_1"] * 5
    t["GES_TYPE"] = ["GE_MW"] * 5
    t["RA"] = [s[0] for s in STARS] + [10.0]
    t["DEC"] = [s[1] for s in STARS] + [10.0]
    lab = np.array([s[2] for s in STARS] + [[5000, 3.0, 0.0, 0.0, 0.0]])
    t["TEFF"], t["E_TEFF"] = lab[:, 0], np.full(5, 60.0)
    t["LOGG"], t["E_LOGG"] = lab[:, 1], np.full(5, 0.1)
    t["FEH"], t["E_FEH"] = lab[:, 2], np.full(5, 0.05)
    t["MG1"], t["E_MG1"] = lab[:, 3] + SOLAR["mg"] + lab[:, 2], np.full(5, 0.06)
    al = MaskedColumn(lab[:, 4] + SOLAR["al"] + lab[:, 2], mask=[False, False, False, True, False])
    t["AL1"], t["E_AL1"] = al, np.full(5, 0.08)
    t["VRAD"] = [s[3] for s in STARS] + [0.0]
    t["SNR"] = np.full(5, snr)
    cat_path = folder / "GES_DR5.1_catalogue.fits"
    t.write(cat_path, overwrite=True)
    return {"spectra_dir": spec_dir, "catalogue": cat_path, "labels": labels, "files": files}
