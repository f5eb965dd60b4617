"""Every path of the project, named once.

Paths inside a run (artefacts, executed notebooks, records) are relative to
the run folder ``runs/<profile>/``; the notebooks receive them as parameters.
"""
from __future__ import annotations

from pathlib import Path

#: The package folder (``src/helpers``).
PACKAGE = Path(__file__).resolve().parent
#: Data shipped with the package: line lists, calibration, benchmark stars.
PACKAGE_DATA = PACKAGE / "data"
#: Repository root (valid for a source checkout or an editable install).
REPO = PACKAGE.parent.parent
#: Parameterised notebooks, kept without outputs, numbered in run order.
NOTEBOOKS = REPO / "notebooks"
#: Run profiles (``<profile>.yaml``).
PARAMS = REPO / "params"
#: Root of all runs; each profile writes to ``RUNS / <profile>``.
RUNS = REPO / "runs"
#: Jupyter Book sources (markdown pages, config, table of contents).
BOOK = REPO / "book"
#: Where ``make book`` puts the HTML build (``book/_build/html``).
BOOK_BUILD = BOOK / "_build"
#: Downloads needed to build the book (the MathJax package), kept between builds; not committed.
CACHE = REPO / ".cache"
#: The data manifest.
MANIFEST = REPO / "data_manifest.yaml"
#: Expensive results that ship with the repository (declared in the manifest).
DATA = REPO / "data"
#: Sketches of the simulated surveys' files (comparison at a tolerance; helpers.manifest).
SKETCHES = DATA / "sketches"
#: The synthesis grid: packed chunks ``part-NNN.npz`` and the generator's record.
GRID = DATA / "grid"
#: The spectral emulator trained on the grid: weights and record.
EMULATOR = DATA / "emulator"
#: The reference CNN ensemble of the default survey (helpers.reference): members and record.
REFERENCE = DATA / "reference"

# Inside a run folder:
#: Executed notebooks.
RUN_NOTEBOOKS = "notebooks"
#: One JSON run record per notebook.
RUN_RECORDS = "records"
#: Artefacts written by the notebooks.
RUN_ARTEFACTS = "artefacts"

#: The strong-line list with reference depths (copied from the project's shared reference).
LINES_STRONG = PACKAGE_DATA / "lines_strong.csv"
#: Gaia FGK benchmark stars.
BENCHMARKS = PACKAGE_DATA / "benchmarks.csv"
#: Precision figures quoted by Ambrosch et al. (2023), with sources.
PAPER_PRECISION = PACKAGE_DATA / "paper_precision.csv"


def run_dir(profile: str, root: Path | None = None) -> Path:
    """Return the run folder of ``profile`` (``runs/<profile>`` by default)."""
    return (root or RUNS) / profile
