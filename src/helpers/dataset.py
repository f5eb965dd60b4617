"""The data-set file: one self-describing HDF5 file per set of spectra.

Layout (format ``ges-mgal-dataset``, version :data:`FORMAT_VERSION`)::

    /wave            (n_pixels,)          float64  air wavelength [Å]
    /flux            (n_stars, n_pixels)  float32  continuum-normalised flux
    /ivar            (n_stars, n_pixels)  float32  inverse variance; 0 marks a bad pixel
    /stars/<column>  (n_stars,)                    one dataset per catalogue column
    root attributes: format, format_version, grid_digest, setups (JSON),
                     labels (JSON), provenance (JSON: generator, version,
                     parameters, seed, source)

Strings are stored as UTF-8 bytes. Nothing is pickled. The file is written
under a temporary name and renamed when complete (:func:`helpers.fileio.atomic_path`).
Readers check the format, its version and, when asked, the wavelength grid.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from . import LABELS
from .fileio import atomic_path
from .spectra import Grid

__all__ = ["FORMAT", "FORMAT_VERSION", "DatasetError", "Dataset", "DatasetWriter", "content_digest",
           "write_dataset", "read_dataset", "read_catalogue", "read_grid", "n_spectra",
           "subset_dataset", "SKETCH_TOLERANCE", "content_sketch", "write_sketch", "read_sketch",
           "compare_sketches", "sketch_rows", "match_sketch_rows"]

FORMAT = "ges-mgal-dataset"
FORMAT_VERSION = 1
_CHUNK_ROWS = 64


class DatasetError(ValueError):
    """A data-set file that cannot be used: wrong format, version, grid or content."""


def _encode(col: np.ndarray) -> np.ndarray:
    col = np.asarray(col)
    if col.dtype.kind in "UO":
        return np.char.encode(col.astype(str), "utf-8")
    return col


def _decode(arr: np.ndarray) -> np.ndarray:
    if arr.dtype.kind == "S":
        return np.char.decode(arr, "utf-8")
    return arr


class DatasetWriter:
    """Write a data set in row blocks (for surveys larger than memory).

    Use as a context manager; the file appears under its final name only if
    the block completes and every row was written.

    Parameters
    ----------
    path : path-like
    grid : Grid
    n_stars : int
    provenance : dict
        JSON-serialisable description of how the data were made.
    overwrite : bool
        Refuse to replace an existing file when False.
    """

    def __init__(self, path, grid: Grid, n_stars: int, provenance: dict, overwrite: bool = True):
        self.path = Path(path)
        self.grid = grid
        self.n = int(n_stars)
        self.provenance = provenance
        self.overwrite = overwrite
        self._written = np.zeros(self.n, bool)

    def __enter__(self):
        self._ctx = atomic_path(self.path, overwrite=self.overwrite)
        tmp = self._ctx.__enter__()
        self._h5 = h5py.File(tmp, "w", track_order=True)
        h = self._h5
        h.attrs["format"] = FORMAT
        h.attrs["format_version"] = FORMAT_VERSION
        h.attrs["grid_digest"] = self.grid.digest
        h.attrs["setups"] = json.dumps([[s.name, s.wmin, s.wmax, s.resolving_power]
                                        for s in self.grid.setups])
        h.attrs["bounds"] = json.dumps([list(b) for b in self.grid.bounds])
        h.attrs["labels"] = json.dumps(list(LABELS))
        h.attrs["provenance"] = json.dumps(self.provenance, sort_keys=True, default=str)
        h.create_dataset("wave", data=self.grid.wave.astype("<f8"))
        chunks = (min(_CHUNK_ROWS, max(self.n, 1)), self.grid.n_pixels)
        h.create_dataset("flux", shape=(self.n, self.grid.n_pixels), dtype="<f4", chunks=chunks)
        h.create_dataset("ivar", shape=(self.n, self.grid.n_pixels), dtype="<f4", chunks=chunks)
        h.create_group("stars")
        return self

    def write_rows(self, start: int, flux: np.ndarray, ivar: np.ndarray) -> None:
        """Write spectra for rows ``start .. start + len(flux)``."""
        stop = start + len(flux)
        if flux.shape != ivar.shape or flux.shape[1] != self.grid.n_pixels:
            raise DatasetError(f"flux {flux.shape} and ivar {ivar.shape} do not match the grid "
                               f"({self.grid.n_pixels} pixels)")
        self._h5["flux"][start:stop] = flux.astype(np.float32)
        self._h5["ivar"][start:stop] = ivar.astype(np.float32)
        self._written[start:stop] = True

    def write_catalogue(self, columns: dict) -> None:
        """Write the per-star columns (each of length ``n_stars``)."""
        for name, col in columns.items():
            col = np.asarray(col)
            if col.shape[:1] != (self.n,):
                raise DatasetError(f"column '{name}' has length {col.shape[:1]}, expected {self.n}")
            self._h5["stars"].create_dataset(name, data=_encode(col))

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            missing = int((~self._written).sum())
            if missing:
                exc = DatasetError(f"{missing} rows of {self.path} were never written")
            elif "teff" not in self._h5["stars"] and "truth_teff" not in self._h5["stars"]:
                exc = DatasetError(f"{self.path}: no catalogue columns were written")
            exc_type = type(exc) if exc is not None else None
        self._h5.close()
        if exc_type is None:
            self._ctx.__exit__(None, None, None)
            return False
        self._ctx.__exit__(exc_type, exc, None)  # removes the temporary file
        raise exc


def write_dataset(path, grid: Grid, flux, ivar, columns: dict, provenance: dict,
                  overwrite: bool = True) -> Path:
    """Write a whole data set held in memory (see :class:`DatasetWriter`)."""
    with DatasetWriter(path, grid, len(flux), provenance, overwrite) as w:
        w.write_rows(0, np.asarray(flux), np.asarray(ivar))
        w.write_catalogue(columns)
    return Path(path)


@dataclass
class Dataset:
    """A data set read into memory.

    Attributes
    ----------
    wave : ndarray, Å
    flux, ivar : ndarray, (n_stars, n_pixels) float32
    stars : dict of ndarray
        Catalogue columns.
    grid : Grid
    provenance : dict
    path : Path
    """

    wave: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray
    stars: dict
    grid: Grid
    provenance: dict
    path: Path | None = None
    attrs: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.flux)

    def labels(self, kind: str = "truth") -> np.ndarray:
        """Label matrix ``(n_stars, 5)`` of ``kind`` (``truth`` or ``survey``), columns :data:`LABELS`."""
        return np.column_stack([self.stars[f"{kind}_{k}"] for k in LABELS]).astype(float)


def _open(path) -> h5py.File:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data set {path} does not exist; run notebook 01_prepare_data "
                                "(or the pipeline) to create it")
    try:
        h = h5py.File(path, "r")
    except OSError as exc:
        raise DatasetError(f"{path} is not a readable HDF5 file ({exc}); it may be truncated or "
                           "corrupt: delete it and regenerate it") from exc
    fmt = h.attrs.get("format")
    ver = h.attrs.get("format_version")
    if fmt != FORMAT:
        h.close()
        raise DatasetError(f"{path} is not a {FORMAT} file (format attribute: {fmt!r})")
    if ver != FORMAT_VERSION:
        h.close()
        raise DatasetError(f"{path} has format version {ver}, this code reads version "
                           f"{FORMAT_VERSION}; regenerate the file with this version")
    return h


def _grid_from(h) -> Grid:
    from .spectra import Setup

    setups = tuple(Setup(*s) for s in json.loads(h.attrs["setups"]))
    bounds = tuple(tuple(b) for b in json.loads(h.attrs["bounds"]))
    wave = h["wave"][:]
    step = float(np.median(np.diff(wave))) if wave.size > 1 else 0.05
    return Grid(wave, setups, bounds, round(step, 6))


def _check_grid(path, h, expect_grid: Grid | None) -> None:
    if expect_grid is None:
        return
    if h.attrs["grid_digest"] != expect_grid.digest:
        raise DatasetError(
            f"{path} is on another wavelength grid ({h['wave'].shape[0]} pixels, "
            f"{h['wave'][0]:.2f}-{h['wave'][-1]:.2f} Å) than expected ({expect_grid.n_pixels} pixels, "
            f"{expect_grid.wave[0]:.2f}-{expect_grid.wave[-1]:.2f} Å); resample it to the expected grid "
            "or regenerate it"
        )


def rows_by_id(ids, wanted) -> np.ndarray:
    """Positions in ``ids`` of each identifier in ``wanted`` (e.g. ``star_id`` of a subset).

    Raises
    ------
    KeyError
        If an identifier of ``wanted`` is not in ``ids`` (the two files are from different runs).
    """
    row_of = {s: i for i, s in enumerate(np.asarray(ids).tolist())}
    try:
        return np.array([row_of[s] for s in np.asarray(wanted).tolist()], dtype=np.int64)
    except KeyError as exc:
        raise KeyError(f"identifier {exc.args[0]!r} is not in the catalogue: the files come from different "
                       "runs; re-run the pipeline from the notebook that made the older one") from None


def n_spectra(path) -> int:
    """How many spectra a data set file holds (nothing else is read)."""
    with _open(path) as h:
        return int(h["flux"].shape[0])


def read_grid(path) -> Grid:
    """The wavelength grid of a data set file (nothing else is read)."""
    with _open(path) as h:
        return _grid_from(h)


def read_catalogue(path, expect_grid: Grid | None = None) -> tuple[dict, dict]:
    """Read only the catalogue columns and the provenance (cheap for big files)."""
    with _open(path) as h:
        _check_grid(path, h, expect_grid)
        stars = {k: _decode(v[:]) for k, v in h["stars"].items()}
        return stars, json.loads(h.attrs["provenance"])


def read_dataset(path, expect_grid: Grid | None = None, rows=None) -> Dataset:
    """Read a data set, optionally only ``rows`` (a slice or sorted index array).

    Raises
    ------
    FileNotFoundError, DatasetError
        Missing file, foreign or corrupt file, other format version, or another
        grid than ``expect_grid``.
    """
    with _open(path) as h:
        _check_grid(path, h, expect_grid)
        sel = slice(None) if rows is None else rows
        stars = {k: _decode(v[sel]) for k, v in h["stars"].items()}
        flux = h["flux"][sel]
        ivar = h["ivar"][sel]
        if not np.isfinite(flux).all():
            raise DatasetError(f"{path} holds NaN or infinite flux; mask bad pixels with ivar = 0")
        return Dataset(wave=h["wave"][:], flux=flux, ivar=ivar, stars=stars, grid=_grid_from(h),
                       provenance=json.loads(h.attrs["provenance"]), path=Path(path),
                       attrs={k: h.attrs[k] for k in ("grid_digest", "format_version")})


def subset_dataset(src, dst, rows: np.ndarray, provenance_update: dict,
                   block: int = 1024, overwrite: bool = True) -> Path:
    """Copy ``rows`` (sorted indices) of data set ``src`` into a new file ``dst``, block by block."""
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size and np.any(np.diff(rows) <= 0):
        raise ValueError("rows must be strictly increasing")
    with _open(src) as h:
        grid = _grid_from(h)
        prov = {**json.loads(h.attrs["provenance"]), **provenance_update}
        with DatasetWriter(dst, grid, rows.size, prov, overwrite) as w:
            for i in range(0, rows.size, block):
                r = rows[i:i + block]
                w.write_rows(i, h["flux"][r], h["ivar"][r])
            w.write_catalogue({k: _decode(v[:])[rows] for k, v in h["stars"].items()})
    return Path(dst)


def content_digest(path, block: int = 1024) -> str:
    """SHA-256 of a data set's content: attributes, wavelengths, spectra and catalogue columns.

    Unlike the file's own checksum it does not change with the HDF5 library
    version that wrote the file, so it detects drift of the data, not of the
    container.
    """
    import hashlib

    h = hashlib.sha256()
    with _open(path) as f:
        for key in sorted(f.attrs):
            h.update(key.encode())
            h.update(str(f.attrs[key]).encode())
        h.update(np.ascontiguousarray(f["wave"][:]).tobytes())
        for name in ("flux", "ivar"):
            ds = f[name]
            for i in range(0, ds.shape[0], block):
                h.update(np.ascontiguousarray(ds[i:i + block]).tobytes())
        for key in sorted(f["stars"]):
            h.update(key.encode())
            h.update(np.ascontiguousarray(f["stars"][key][:]).tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------- content at a stated tolerance
#: Version of the sketch layout (:func:`content_sketch`).
SKETCH_VERSION = 1
#: Tolerances of :func:`compare_sketches`. Two runs of the same generator on processors whose
#: numerical libraries round differently (NumPy's SIMD paths, the BLAS kernel) make data that differ
#: in the last bit: measured here, forcing NumPy and OpenBLAS onto their SSE paths moved 7 % of the
#: flux values by one float32 step (at most 2.4e-7) and float64 catalogue values by about 1e-16 of
#: their size. The tolerances sit well above that and well below any change of the data a reader
#: would call real (one flux pixel moved by 2e-4, one star's Teff by 0.01 K).
SKETCH_TOLERANCE = {
    "flux": 1e-6,       # flux projections (unit-norm ±1 patterns over a spectrum's pixels), absolute
    "ivar": 1e-6,       # projections of 1/σ, relative to the spectrum's rms 1/σ
    "catalogue": 1e-6,  # each catalogue number, relative to the larger of its size and its column's rms
    "wave": 1e-9,       # wavelengths [Å]
}
_SKETCH_PATTERNS = 4
_SKETCH_SEED = 20230301  # fixed: the projection patterns are part of the sketch's definition


def _patterns(n: int, k: int) -> np.ndarray:
    rng = np.random.Generator(np.random.PCG64(_SKETCH_SEED))
    return (rng.integers(0, 2, size=(k, n)) * 2.0 - 1.0) / np.sqrt(n)


def content_sketch(path, block: int = 1024) -> dict[str, np.ndarray]:
    """Numbers that a data set's content fixes, for comparing two data sets at a tolerance
    (:func:`compare_sketches`) where :func:`content_digest` can only say equal or not.

    Per spectrum: its flux projected on four fixed ±1 patterns (unit norm), its 1/σ projected on
    two of them with its rms 1/σ, and its number of masked pixels; the catalogue's numbers (as
    float32) and a digest of every other column; the wavelengths; a digest of the attributes.
    About 40 bytes per spectrum plus the catalogue (13 884 spectra: 2.5 MB).

    Returns
    -------
    dict of numpy.ndarray
        The sketch (:func:`write_sketch` stores it).
    """
    import hashlib

    with _open(path) as f:
        wave = f["wave"][:]
        n, n_pix = f["flux"].shape
        pat = _patterns(n_pix, _SKETCH_PATTERNS)
        flux_p = np.empty((n, _SKETCH_PATTERNS))
        sig_p = np.empty((n, 2))
        sig_rms = np.empty(n)
        masked = np.empty(n, np.int64)
        for i in range(0, n, block):
            fl = f["flux"][i:i + block].astype(np.float64)
            iv = f["ivar"][i:i + block].astype(np.float64)
            s = np.sqrt(np.clip(iv, 0, None))
            flux_p[i:i + block] = fl @ pat.T
            sig_p[i:i + block] = s @ pat[:2].T
            sig_rms[i:i + block] = np.sqrt(np.mean(s * s, axis=1))
            masked[i:i + block] = np.sum(iv <= 0, axis=1)
        attrs = hashlib.sha256()
        for key in sorted(f.attrs):
            attrs.update(key.encode())
            attrs.update(str(f.attrs[key]).encode())
        num_names, num, other_names, other = [], [], [], []
        for key in sorted(f["stars"]):
            col = f["stars"][key][:]
            if col.dtype.kind == "f":
                num_names.append(key)
                num.append(col.astype(np.float64))
            else:
                other_names.append(key)
                other.append(hashlib.sha256(np.ascontiguousarray(col).tobytes()).hexdigest())
    return {"sketch_version": np.array(SKETCH_VERSION), "wave": wave, "flux_proj": flux_p,
            "sigma_proj": sig_p, "sigma_rms": sig_rms, "masked": masked,
            "attrs": np.array(attrs.hexdigest()), "numeric_names": np.array(num_names),
            "numeric": (np.column_stack(num) if num else np.empty((n, 0))).astype(np.float32),
            "other_names": np.array(other_names), "other": np.array(other)}


def write_sketch(path, sketch: dict) -> Path:
    """Store a sketch as ``.npz`` (atomically; read back without pickle by :func:`read_sketch`)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **sketch)
    return Path(path)


def read_sketch(path) -> dict[str, np.ndarray]:
    """Read a sketch written by :func:`write_sketch`.

    Raises
    ------
    DatasetError
        If the file is not a sketch of this version.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            sk = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path} is not a readable data-set sketch ({exc}); regenerate it") from exc
    if int(sk.get("sketch_version", -1)) != SKETCH_VERSION:
        raise DatasetError(f"{path} is a sketch of another version (expected {SKETCH_VERSION}); regenerate it")
    return sk


def compare_sketches(a: dict, b: dict, tolerance: dict | None = None) -> tuple[bool, str, dict]:
    """Whether two data sets are equal within :data:`SKETCH_TOLERANCE`, and the worst differences.

    Returns
    -------
    equal : bool
    reason : str
        What differs beyond its tolerance, or the largest differences found (one sentence part).
    worst : dict
        Largest difference per part, in the units of its tolerance's definition.
    """
    tol = {**SKETCH_TOLERANCE, **(tolerance or {})}
    if a["flux_proj"].shape != b["flux_proj"].shape:
        return False, (f"{a['flux_proj'].shape[0]} against {b['flux_proj'].shape[0]} spectra"), {}
    for part, what in (("attrs", "the attributes (provenance, grid, labels)"), ("masked", "the masked pixels"),
                       ("numeric_names", "the catalogue's columns"), ("other_names", "the catalogue's columns"),
                       ("other", "a text or integer catalogue column")):
        if a[part].shape != b[part].shape or not np.array_equal(a[part], b[part]):
            return False, f"{what} differ", {}
    worst = {}
    if a["wave"].shape != b["wave"].shape:
        return False, "the wavelength grids differ", {}
    worst["wave"] = float(np.max(np.abs(a["wave"] - b["wave"]), initial=0.0))
    worst["flux"] = float(np.max(np.abs(a["flux_proj"] - b["flux_proj"]), initial=0.0))
    scale = np.maximum(np.maximum(a["sigma_rms"], b["sigma_rms"]), 1e-30)[:, None]
    worst["ivar"] = float(np.max(np.abs(a["sigma_proj"] - b["sigma_proj"]) / scale, initial=0.0))
    x, y = a["numeric"].astype(np.float64), b["numeric"].astype(np.float64)
    nan_x, nan_y = np.isnan(x), np.isnan(y)
    if not np.array_equal(nan_x, nan_y):
        return False, "the catalogue's missing values differ", worst
    col_rms = np.sqrt(np.nanmean(np.where(nan_x, np.nan, x) ** 2, axis=0)) if x.size else np.zeros(0)
    col_rms = np.where(np.isfinite(col_rms), col_rms, 0.0)
    denom = np.maximum(np.maximum(np.abs(x), col_rms[None, :]), 1e-30)
    rel = np.where(nan_x, 0.0, np.abs(np.nan_to_num(x) - np.nan_to_num(y)) / denom)
    worst["catalogue"] = float(np.max(rel, initial=0.0))
    over = [k for k in ("wave", "flux", "ivar", "catalogue") if worst[k] > tol[k]]
    said = ", ".join(f"{k} {worst[k]:.1e} (tolerance {tol[k]:g})" for k in ("flux", "ivar", "catalogue", "wave"))
    if over:
        return False, "the content differs beyond the stated tolerance: " + said, worst
    return True, "largest differences " + said, worst


#: The parts of a sketch that hold one entry per spectrum (the rest describe the whole file).
_PER_SPECTRUM = ("flux_proj", "sigma_proj", "sigma_rms", "masked", "numeric")


def sketch_rows(sketch: dict, rows) -> dict[str, np.ndarray]:
    """The sketch of some spectra of a data set, for comparing them with :func:`compare_sketches`.

    The per-spectrum parts are those of ``rows``; the parts that describe the whole file (its
    attributes and the digests of its text columns) cannot be restricted to rows and are left
    out, so two such sketches compare the spectra and catalogue numbers only.
    """
    rows = np.asarray(rows, np.int64)
    out = {k: v for k, v in sketch.items() if k not in _PER_SPECTRUM}
    out.update({k: np.asarray(sketch[k])[rows] for k in _PER_SPECTRUM})
    out["attrs"] = np.array("rows only")
    out["other"] = np.array([], dtype="<U1")
    return out


def match_sketch_rows(a: dict, b: dict, tolerance: dict | None = None) -> np.ndarray:
    """For every spectrum of sketch ``a``, the row of sketch ``b`` that holds the same star.

    Stars are recognised by all their catalogue numbers (positions, magnitudes, labels, ...):
    two rows are the same star when every number agrees within the catalogue tolerance of
    :data:`SKETCH_TOLERANCE` (relative to the larger of the value and its column's rms), as
    :func:`compare_sketches` measures it.

    Returns
    -------
    ndarray of int (len(a),)
        Row of ``b``, or −1 where ``b`` holds no such star.

    Raises
    ------
    DatasetError
        If the two catalogues have other columns, or a star of ``a`` matches several rows of ``b``
        (a catalogue whose numbers do not tell its stars apart).
    """
    from scipy.spatial import cKDTree

    tol = {**SKETCH_TOLERANCE, **(tolerance or {})}["catalogue"]
    if not np.array_equal(a["numeric_names"], b["numeric_names"]):
        raise DatasetError("the two sketches have other catalogue columns; their stars cannot be matched")
    x, y = np.asarray(a["numeric"], np.float64), np.asarray(b["numeric"], np.float64)
    if x.shape[1] == 0:
        raise DatasetError("the sketches hold no catalogue numbers to recognise stars by")
    both = np.vstack([x, y])
    col_rms = np.sqrt(np.nanmean(both ** 2, axis=0))
    col_rms = np.where(np.isfinite(col_rms) & (col_rms > 0), col_rms, 1.0)
    fx, fy = np.nan_to_num(x / col_rms, nan=0.0), np.nan_to_num(y / col_rms, nan=0.0)
    # candidates: the nearest rows in the scaled numbers; then the exact per-number test
    _, idx = cKDTree(fy).query(fx, k=min(2, len(fy)))
    idx = idx[:, None] if idx.ndim == 1 else idx
    out = np.full(len(x), -1, np.int64)

    def same(i, j):
        if not np.array_equal(np.isnan(x[i]), np.isnan(y[j])):
            return False
        denom = np.fmax(np.fmax(np.abs(x[i]), col_rms), 1e-30)  # fmax: a missing value does not count
        return bool(np.all(np.nan_to_num(np.abs(x[i] - y[j])) / denom <= tol))

    for i in range(len(x)):
        hits = [int(j) for j in idx[i] if j < len(y) and same(i, int(j))]
        if len(hits) > 1:
            raise DatasetError(f"star {i} of the first sketch matches rows {hits} of the second: the catalogue "
                               "numbers do not tell these stars apart")
        if hits:
            out[i] = hits[0]
    taken = out[out >= 0]
    if np.unique(taken).size != taken.size:
        raise DatasetError("several stars of the first sketch match one row of the second: the catalogue numbers "
                           "do not tell these stars apart")
    return out
