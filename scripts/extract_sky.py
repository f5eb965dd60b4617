"""Put the Paranal night-sky spectrum on the GIRAFFE HR10 + HR21 grid (for the noise model).

Usage::

    pip download --no-deps pypeit==2.0.1 -d sdist/
    .venv/bin/python scripts/extract_sky.py sdist/pypeit-2.0.1-py3-none-any.whl

The source is ``pypeit/data/sky_spec/paranal_sky.fits`` in the PypeIt wheel
(BSD-3; Prochaska et al. 2020, JOSS 5, 2308): a model night-sky spectrum for
Paranal, where GIRAFFE observes, in vacuum wavelengths on a 0.05 Å grid from
3000 to 10000 Å, in relative units (continuum ≈ 1 near 5500 Å). This script
converts the wavelengths to air (Morton 2000, the IAU standard), keeps what
lies under our two setups and writes ``src/helpers/data/sky_paranal.npz``
(``wave`` [Å, air], ``sky`` [relative photon flux], ``source``) with its
checksum into ``data_manifest.yaml`` (section ``sky``), which :func:`helpers.noise.load_sky`
verifies on every read. Only :mod:`helpers.noise` reads the file.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import sys
import zipfile
from pathlib import Path

import numpy as np
from astropy.io import fits

from helpers import manifest as M
from helpers import paths
from helpers.fileio import atomic_path
from helpers.spectra import giraffe_grid

MEMBER = "pypeit/data/sky_spec/paranal_sky.fits"


def vacuum_to_air(wave_vac):
    """Air wavelength [Å] from vacuum wavelength [Å] (Morton 2000, eq. 3; valid above 2000 Å)."""
    s2 = (1e4 / np.asarray(wave_vac, float)) ** 2
    n = 1.0 + 8.34254e-5 + 2.406147e-2 / (130.0 - s2) + 1.5998e-4 / (38.9 - s2)
    return wave_vac / n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("wheel", help="pypeit-2.0.1-py3-none-any.whl (pip download --no-deps pypeit==2.0.1)")
    ap.add_argument("--out", default=str(paths.PACKAGE_DATA / "sky_paranal.npz"))
    args = ap.parse_args(argv)
    wheel = Path(args.wheel)
    with zipfile.ZipFile(wheel) as z:
        raw = z.read(MEMBER)
    with fits.open(io.BytesIO(raw)) as h:
        sky = np.asarray(h[0].data, float)
        wave = vacuum_to_air(np.asarray(h[1].data, float))
    grid = giraffe_grid()
    keep = np.any([(wave > s.wmin - 10.0) & (wave < s.wmax + 10.0) for s in grid.setups], axis=0)
    out = Path(args.out)
    source = (f"{MEMBER} in {wheel.name} (sha256 {hashlib.sha256(wheel.read_bytes()).hexdigest()}),"
              " vacuum to air by Morton (2000)")
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, wave=wave[keep], sky=sky[keep].astype(np.float32),
                                source=np.array(source))
    M.declare_shipped_file("sky", out, {
        "description": "Paranal night-sky spectrum under HR10 and HR21 (air wavelengths)",
        "generator": "scripts/extract_sky.py", "source": source})
    print(f"wrote {out}: {keep.sum()} samples, {source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
