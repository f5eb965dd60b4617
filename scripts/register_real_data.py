"""Record the SHA-256 of downloaded real data files in data_manifest.yaml (computed with pooch).

Usage::

    python scripts/register_real_data.py gaia-eso-dr5.1-giraffe-spectra data/gaia-eso/spectra
    python scripts/register_real_data.py gaia-eso-dr5.1-catalogue data/gaia-eso

Every later read of these files by notebook 01 is verified against the checksums; a mismatch
refuses the file.
"""
from __future__ import annotations

import sys

from helpers.manifest import load_manifest, real_entry, register_real


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print(__doc__)
        return 2
    name, folder = argv
    entry = real_entry(load_manifest(), name)
    n = register_real(name, folder, entry.get("pattern", "*"))
    print(f"recorded {n} checksums for {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
