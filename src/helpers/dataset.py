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
           "subset_dataset"]

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
