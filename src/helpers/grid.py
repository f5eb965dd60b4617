"""The synthesis grid: its design, its file format and its integrity checks.

The grid is a set of 1D LTE syntheses (PySME with atmosnet model atmospheres,
made by ``scripts/synthesize_grid.py``) of GIRAFFE HR10 + HR21 on the Gaia-ESO
0.05 Å grid. Each spectrum is continuum-normalised and broadened only by a
Gaussian of resolving power :data:`BASE_RESOLUTION` (so that the 0.05 Å pixels
sample it); the GIRAFFE line-spread function, rotation, macroturbulence and
radial velocity are applied later by :mod:`helpers.simulate`.

This module owns the format and imports nothing beyond numpy and the standard
library, so the synthesis environment (which pins other versions of astropy)
can use it too.

Files
-----
``data/grid/stars/<name>.npz``
    One finished synthesis (working files of the generator; not committed).
``data/grid/part-NNN.npz``
    Packed chunks, committed and declared in ``data_manifest.yaml`` (SHA-256).
    Arrays: ``names`` (str), ``labels`` (n, 7) in :data:`GRID_LABELS` order,
    ``mixing`` (n, 3) = [C/Fe], [N/Fe], 12C/13C, ``flux_q`` (n, n_pix) uint16
    with flux = ``flux_q`` / :data:`FLUX_SCALE`, ``seconds`` (n,), ``flags`` (n,)
    (bit 0: atmosphere repaired, bit 1: continuum above 1.01), ``wave_digest``.
``data/grid/grid.json``
    The generator's record: parameters, line-list digests, package versions.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import paths
from .fileio import atomic_path, sha256_file

__all__ = ["GRID_LABELS", "GRID_UNITS", "BASE_RESOLUTION", "FLUX_SCALE", "DOMAIN", "Job",
           "VMIC_BAND", "mixing_recipe", "in_star_region", "in_vmic_band", "in_domain", "design",
           "focus_design", "response_jobs", "plan",
           "split_of", "write_star", "read_star", "pack", "GridData", "load_grid",
           "GridError"]

#: Inputs of a synthesis, in order: Teff [K], log g [dex], [Fe/H], [Mg/Fe], [Al/Fe],
#: [α/Fe] of O, Si, S, Ca, Ti [dex], microturbulence vmic [km/s].
GRID_LABELS = ("teff", "logg", "feh", "mg_fe", "al_fe", "alpha_fe", "vmic")
#: Units of :data:`GRID_LABELS`.
GRID_UNITS = ("K", "dex", "dex", "dex", "dex", "dex", "km/s")
#: Resolving power of the Gaussian every grid spectrum is broadened with.
BASE_RESOLUTION = 40_000.0
#: Quantisation of the stored flux (flux = q / FLUX_SCALE; step 1.7e-5, maximum 1.092).
FLUX_SCALE = 60_000.0
#: The box of the design (lower, upper) per label; the design also keeps to where stars live
#: (:func:`in_star_region`). Margins beyond the paper's label space are deliberate.
DOMAIN = {
    "teff": (3900.0, 7000.0),
    "logg": (0.8, 5.0),
    "feh": (-2.6, 0.6),
    "mg_fe": (-0.4, 0.8),
    "al_fe": (-0.6, 1.2),
    "alpha_fe": (-0.3, 0.6),
    "vmic": (0.5, 2.8),
}


#: Half-width [km/s] of the band around :func:`default_vmic` inside which the emulator is
#: claimed accurate (the survey's stars scatter by 0.1 km/s about the relation; Gaia-ESO's
#: measured vmic scatter about such relations is 0.2-0.3 km/s). The first design spans the
#: whole vmic box; the focus design and the emulator's domain keep to this band.
VMIC_BAND = 0.6


class GridError(ValueError):
    """A grid file that cannot be used (checksum, wavelength grid, labels)."""


def mixing_recipe(teff, logg, feh):
    """Surface [C/Fe], [N/Fe] and 12C/13C after the first dredge-up and extra mixing.

    A smooth version of the standard picture (Gilroy & Brown 1991; Charbonnel &
    Lagarde 2010; Gaia-ESO giants, Tautvaišienė et al. 2015): dwarfs and subgiants
    keep [C/Fe] = [N/Fe] = 0 and 12C/13C = 89; the first dredge-up (log g from
    3.6 to 3.0) lowers [C/Fe] by 0.15 dex, raises [N/Fe] by 0.35 dex and brings
    12C/13C to 22; extra mixing on the upper red-giant branch (log g from 2.4 to
    1.6, stronger in metal-poor stars) lowers [C/Fe] by up to a further 0.25 dex,
    raises [N/Fe] by up to 0.2 dex and brings 12C/13C to about 8.

    Parameters
    ----------
    teff : array, K (unused; kept so the recipe may depend on it later)
    logg : array, dex
    feh : array, dex

    Returns
    -------
    cfe, nfe, c12c13 : arrays
        [C/Fe] [dex], [N/Fe] [dex], the carbon isotope ratio.
    """
    logg = np.asarray(logg, float)
    feh = np.asarray(feh, float)
    f1 = np.clip((3.6 - logg) / 0.6, 0.0, 1.0)
    f2 = np.clip((2.4 - logg) / 0.8, 0.0, 1.0) * np.clip(0.5 - 0.5 * feh, 0.3, 1.0)
    cfe = -0.15 * f1 - 0.25 * f2
    nfe = 0.35 * f1 + 0.20 * f2
    c12c13 = 1.0 / (f1 * (1 - f2) / 22.0 + f2 / 8.0 + (1 - f1) / 89.0)
    return cfe, nfe, c12c13


def in_star_region(teff, logg, feh):
    """True where (Teff, log g, [Fe/H]) lies where FGK stars live, with margins.

    Dwarfs and subgiants (log g ≥ 3.3) need Teff ≥ 4000 + 1000 (4.5 − log g) K;
    giants (log g < 3.7) lie within −450/+750 K of a red-giant branch
    T_RGB = 4000 + 330 (log g − 1) − 170 [Fe/H] K (which covers the red clump
    and the metal-poor branches), and no giant is hotter than 5700 K.
    """
    teff = np.asarray(teff, float)
    logg = np.asarray(logg, float)
    feh = np.asarray(feh, float)
    dwarf = (logg >= 3.3) & (teff >= 4000.0 + 1000.0 * np.clip(4.5 - logg, 0, None))
    t_rgb = 4000.0 + 330.0 * (logg - 1.0) - 170.0 * feh
    giant = (logg < 3.7) & (teff > t_rgb - 450.0) & (teff < t_rgb + 750.0) & (teff < 5700.0)
    return dwarf | giant


def in_vmic_band(teff, logg, vmic):
    """True where vmic [km/s] lies within :data:`VMIC_BAND` of :func:`default_vmic`."""
    return np.abs(np.asarray(vmic, float) - default_vmic(teff, logg)) <= VMIC_BAND


def in_domain(x) -> np.ndarray:
    """True for rows of grid labels (n, 7) inside the emulator's domain.

    That is inside :data:`DOMAIN`, :func:`in_star_region` and, for vmic,
    :func:`in_vmic_band`.
    """
    x = np.atleast_2d(np.asarray(x, float))
    lo = np.array([DOMAIN[k][0] for k in GRID_LABELS])
    hi = np.array([DOMAIN[k][1] for k in GRID_LABELS])
    return (np.all((x >= lo) & (x <= hi), axis=1) & in_star_region(x[:, 0], x[:, 1], x[:, 2])
            & in_vmic_band(x[:, 0], x[:, 1], x[:, 6]))


def design(n: int, seed: int = 2026) -> np.ndarray:
    """The first ``n`` stars of the space-filling design, (n, 7) in :data:`GRID_LABELS` order.

    A scrambled Sobol sequence over :data:`DOMAIN`, kept where
    :func:`in_star_region` holds, in sequence order: the first ``m`` stars of
    ``design(n)`` are ``design(m)``, so the grid can grow without changing.
    """
    from scipy.stats import qmc

    lo = np.array([DOMAIN[k][0] for k in GRID_LABELS])
    hi = np.array([DOMAIN[k][1] for k in GRID_LABELS])
    sob = qmc.Sobol(d=len(GRID_LABELS), scramble=True, seed=seed)
    out = np.empty((0, len(GRID_LABELS)))
    while len(out) < n:
        x = lo + sob.random(4096) * (hi - lo)
        out = np.vstack([out, x[in_star_region(x[:, 0], x[:, 1], x[:, 2])]])
    return out[:n]


def focus_acceptance(teff):
    """Share of focus-design candidates kept at Teff [K]: 1 below 4800 K, 0.4 above 6000 K.

    Cool stars get 2.5 times the density of hot ones, because their spectra
    (strong, saturated and damped lines, CN in giants) change fastest with the
    labels: on the first 741 grid stars the emulator's 99th-percentile error was
    0.05 in cool dwarfs and 0.02 in cool giants against 0.01 elsewhere.
    """
    return np.clip(1.0 - 0.6 * (np.asarray(teff, float) - 4800.0) / 1200.0, 0.4, 1.0)


def focus_design(n: int, seed: int = 2027) -> np.ndarray:
    """The first ``n`` stars of the focus design, (n, 7) in :data:`GRID_LABELS` order.

    A second scrambled Sobol sequence (eight dimensions) over the box of
    :data:`DOMAIN`, with vmic drawn within :data:`VMIC_BAND` of
    :func:`default_vmic` instead of over its whole range, kept where
    :func:`in_domain` holds and, using the eighth coordinate, with probability
    :func:`focus_acceptance` (denser at low Teff). Prefix-stable like :func:`design`.
    """
    from scipy.stats import qmc

    lo = np.array([DOMAIN[k][0] for k in GRID_LABELS])
    hi = np.array([DOMAIN[k][1] for k in GRID_LABELS])
    sob = qmc.Sobol(d=len(GRID_LABELS) + 1, scramble=True, seed=seed)
    out = np.empty((0, len(GRID_LABELS)))
    while len(out) < n:
        u = sob.random(4096)
        x = lo + u[:, :-1] * (hi - lo)
        x[:, 6] = default_vmic(x[:, 0], x[:, 1]) + (2.0 * u[:, 6] - 1.0) * VMIC_BAND
        keep = in_domain(x) & (u[:, -1] < focus_acceptance(x[:, 0]))
        out = np.vstack([out, x[keep]])
    return out[:n]


#: Stars of the single-label response set: (name, Teff, log g, [Fe/H], [Mg/Fe], [Al/Fe], [α/Fe]).
RESPONSE_STARS = (
    ("sun", 5772.0, 4.44, 0.0, 0.0, 0.0, 0.0),
    ("hotdwarf", 6300.0, 4.2, -0.3, 0.1, 0.05, 0.1),
    ("turnoff_mp", 6100.0, 4.0, -1.2, 0.3, 0.1, 0.3),
    ("kdwarf", 4800.0, 4.6, 0.1, 0.0, 0.05, 0.0),
    ("clump", 4750.0, 2.5, -0.1, 0.05, 0.1, 0.05),
    ("rgb_mr", 4300.0, 1.8, 0.2, 0.0, 0.1, 0.0),
    ("rgb_mp", 4700.0, 1.6, -1.6, 0.35, 0.0, 0.35),
    ("gc_2g", 4600.0, 1.7, -1.2, 0.1, 0.9, 0.35),
)
#: One-label steps of the response set: (suffix, label, step).
RESPONSE_STEPS = (("mg", "mg_fe", 0.2), ("al", "al_fe", 0.3), ("fe", "feh", 0.2),
                  ("teff", "teff", 100.0), ("logg", "logg", 0.2))


@dataclass(frozen=True)
class Job:
    """One synthesis to make: a name and its labels (in :data:`GRID_LABELS` order)."""

    name: str
    labels: tuple


def response_jobs() -> list[Job]:
    """Stars of :data:`RESPONSE_STARS`, each as a base spectrum and one spectrum per step.

    vmic follows :func:`default_vmic`; the steps change exactly one label.
    """
    jobs = []
    for name, *lab in RESPONSE_STARS:
        base = dict(zip(GRID_LABELS[:6], lab))
        base["vmic"] = float(default_vmic(base["teff"], base["logg"]))
        jobs.append(Job(f"r-{name}-base", tuple(base[k] for k in GRID_LABELS)))
        for suffix, key, step in RESPONSE_STEPS:
            lab2 = dict(base)
            lab2[key] += step
            jobs.append(Job(f"r-{name}-{suffix}", tuple(lab2[k] for k in GRID_LABELS)))
    return jobs


def default_vmic(teff, logg):
    """Microturbulence [km/s] from Teff [K] and log g (a smooth Gaia-ESO-like relation)."""
    teff = np.asarray(teff, float)
    logg = np.asarray(logg, float)
    return np.clip(1.1 + 0.3e-3 * (teff - 5500.0) + 0.18 * (4.2 - logg), 0.6, 2.6)


def plan(n_design: int, seed: int = 2026, response_after: int = 240, n_focus: int = 0,
         focus_seed: int = 2027) -> list[Job]:
    """The generator's queue.

    Design stars ``dNNNNN`` (:func:`design`), with the response set after the
    first ``response_after``, then focus-design stars ``fNNNNN`` (:func:`focus_design`).
    """
    d = design(n_design, seed)
    jobs = [Job(f"d{i:05d}", tuple(float(v) for v in row)) for i, row in enumerate(d)]
    f = focus_design(n_focus, focus_seed) if n_focus else np.empty((0, len(GRID_LABELS)))
    foc = [Job(f"f{i:05d}", tuple(float(v) for v in row)) for i, row in enumerate(f)]
    return jobs[:response_after] + response_jobs() + jobs[response_after:] + foc


def split_of(name: str) -> str:
    """Role of a grid star in the emulator's fit: ``train``, ``validation``, ``test`` or ``response``.

    Design stars ``dNNNNN`` and focus-design stars ``fNNNNN`` with NNNNN mod 10 = 0
    are the test set (held out from training and from every choice), mod 10 = 1
    the validation set; the response set is held out too.
    """
    if name.startswith("r-"):
        return "response"
    i = int(name[1:])
    return {0: "test", 1: "validation"}.get(i % 10, "train")


def write_star(folder: Path, name: str, labels, mixing, flux, seconds: float, flags: int,
               wave_digest: str) -> Path:
    """Write one synthesis atomically to ``folder/<name>.npz``."""
    flux = np.asarray(flux, float)
    if not np.all(np.isfinite(flux)):
        raise GridError(f"synthesis {name} has non-finite flux")
    q = np.round(np.clip(flux, 0.0, 65535 / FLUX_SCALE) * FLUX_SCALE).astype(np.uint16)
    path = Path(folder) / f"{name}.npz"
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, name=np.array(name), labels=np.asarray(labels, float),
                     mixing=np.asarray(mixing, float), flux_q=q, seconds=np.array(seconds),
                     flags=np.array(flags), wave_digest=np.array(wave_digest))
    return path


def read_star(path: Path) -> dict:
    """Read one star file written by :func:`write_star`."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _stack_stars(star_files, wave_digest: str) -> dict:
    """Arrays of a set of star files (as stored in a chunk); refuse mixed wavelength grids."""
    stars = [read_star(p) for p in star_files]
    if not stars:
        raise GridError("no star files to pack")
    bad = [str(s["name"]) for s in stars if str(s["wave_digest"]) != wave_digest]
    if bad:
        raise GridError(f"stars {bad[:5]} were made on another wavelength grid; re-synthesise them")
    return {"names": np.array([str(s["name"]) for s in stars]),
            "labels": np.stack([s["labels"] for s in stars]),
            "mixing": np.stack([s["mixing"] for s in stars]),
            "flux_q": np.stack([s["flux_q"] for s in stars]),
            "seconds": np.array([float(s["seconds"]) for s in stars]),
            "flags": np.array([int(s["flags"]) for s in stars])}


def pack(star_files, out: Path, wave_digest: str) -> Path:
    """Pack star files into one compressed chunk (atomically); refuse mixed wavelength grids."""
    arrays = _stack_stars(star_files, wave_digest)
    with atomic_path(out, overwrite=False) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, label_names=np.array(GRID_LABELS),
                                wave_digest=np.array(wave_digest), **arrays)
    return out


def read_star_files(star_files, wave_digest: str) -> "GridData":
    """Unpacked star files as :class:`GridData` (no checksums: the generator's working files)."""
    a = _stack_stars(star_files, wave_digest)
    return GridData(a["names"], a["labels"], a["mixing"],
                    a["flux_q"].astype(np.float32) / np.float32(FLUX_SCALE), a["seconds"], a["flags"])


@dataclass
class GridData:
    """Grid spectra in memory.

    Attributes
    ----------
    names : (n,) str
    labels : (n, 7) float, :data:`GRID_LABELS` order
    mixing : (n, 3) float, [C/Fe], [N/Fe], 12C/13C
    flux : (n, n_pix) float32, continuum-normalised, broadened to :data:`BASE_RESOLUTION`
    seconds : (n,) float, synthesis time per star
    flags : (n,) int
    """

    names: np.ndarray
    labels: np.ndarray
    mixing: np.ndarray
    flux: np.ndarray
    seconds: np.ndarray
    flags: np.ndarray

    def select(self, mask) -> "GridData":
        """The stars where ``mask`` holds."""
        return GridData(self.names[mask], self.labels[mask], self.mixing[mask],
                        self.flux[mask], self.seconds[mask], self.flags[mask])

    def split(self, role: str) -> "GridData":
        """The stars of one :func:`split_of` role."""
        return self.select(np.array([split_of(str(n)) == role for n in self.names], bool))

    def inside(self) -> "GridData":
        """The stars inside the emulator's domain (:func:`in_domain`)."""
        return self.select(in_domain(self.labels))

    def named(self, names) -> "GridData":
        """The stars with these names, in this order (KeyError naming a missing one)."""
        index = {str(n): i for i, n in enumerate(self.names)}
        missing = [str(n) for n in names if str(n) not in index]
        if missing:
            raise KeyError(f"grid stars not in the grid: {missing[:5]} (of {len(missing)}); "
                           "load every declared chunk (data_manifest.yaml, section grid)")
        return self.select(np.array([index[str(n)] for n in names], int))


def _declared_parts(manifest: dict) -> dict:
    entry = (manifest.get("grid") or {})
    return entry.get("parts") or {}


def load_grid(folder: Path | None = None, wave_digest: str | None = None,
              manifest: dict | None = None, verify: bool = True) -> GridData:
    """Read every packed chunk of the grid, verifying checksums and the wavelength grid.

    Parameters
    ----------
    folder : path, optional
        Folder of ``part-*.npz`` (default ``data/grid``).
    wave_digest : str, optional
        Digest of the wavelength grid the caller works on
        (:attr:`helpers.spectra.Grid.digest`); a chunk made on another grid is refused.
    manifest : dict, optional
        The data manifest (its ``grid.parts`` section gives each chunk's SHA-256);
        read from the repository when omitted and ``verify`` is true.
    verify : bool
        Check each chunk's SHA-256 against the manifest (an undeclared chunk is refused).

    Raises
    ------
    GridError
        No chunks, a checksum mismatch, an undeclared chunk or another wavelength grid,
        each with what to do.
    """
    folder = Path(folder) if folder else paths.GRID
    files = sorted(folder.glob("part-*.npz"))
    if not files:
        raise GridError(f"no grid chunks (part-*.npz) in {folder}; they ship with the repository "
                        "(git checkout) or are made by scripts/synthesize_grid.py")
    if verify:
        if manifest is None:
            from .manifest import load_manifest
            manifest = load_manifest()
        declared = _declared_parts(manifest)
        for f in files:
            want = declared.get(f.name)
            if want is None:
                raise GridError(f"grid chunk {f} is not declared in data_manifest.yaml; "
                                "run scripts/synthesize_grid.py pack to declare it")
            got = sha256_file(f)
            if got != want:
                raise GridError(f"grid chunk {f} fails its checksum ({got[:12]}… ≠ {want[:12]}…): "
                                "restore it with git checkout or re-pack it")
    parts = []
    for f in files:
        with np.load(f, allow_pickle=False) as z:
            if wave_digest is not None and str(z["wave_digest"]) != wave_digest:
                raise GridError(f"grid chunk {f} was made on another wavelength grid "
                                f"({str(z['wave_digest'])[:12]}…, expected {wave_digest[:12]}…)")
            if tuple(z["label_names"]) != GRID_LABELS:
                raise GridError(f"grid chunk {f} has labels {tuple(z['label_names'])}, "
                                f"expected {GRID_LABELS}")
            parts.append({k: z[k] for k in ("names", "labels", "mixing", "flux_q", "seconds",
                                            "flags")})
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    names, idx = np.unique(cat["names"], return_index=True)
    if len(names) != len(cat["names"]):
        raise GridError(f"grid chunks in {folder} repeat stars; re-pack them")
    flux = cat.pop("flux_q").astype(np.float32) / np.float32(FLUX_SCALE)
    return GridData(cat["names"], cat["labels"], cat["mixing"], flux, cat["seconds"],
                    cat["flags"])


def record_path(folder: Path | None = None) -> Path:
    """Where the generator's record lives."""
    return (Path(folder) if folder else paths.GRID) / "grid.json"


def write_record(record: dict, folder: Path | None = None) -> Path:
    """Write the generator's record (JSON, atomically)."""
    path = record_path(folder)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return path


def cpu_name() -> str:
    """The processor's model name (Linux), for run records."""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return os.uname().machine
