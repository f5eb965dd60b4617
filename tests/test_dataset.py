"""The HDF5 data-set format: round trip, refusals, atomic writes."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from helpers import dataset
from helpers.spectra import giraffe_grid


def _small(tmp_path, n=5, grid=None):
    grid = grid or giraffe_grid()
    rng = np.random.default_rng(0)
    flux = rng.uniform(0.5, 1.0, (n, grid.n_pixels)).astype(np.float32)
    ivar = np.full_like(flux, 100.0)
    cols = {"truth_teff": np.linspace(4000, 6000, n), "star_id": np.array([f"S{i}" for i in range(n)])}
    path = tmp_path / "d.h5"
    dataset.write_dataset(path, grid, flux, ivar, cols, {"generator": "test", "seed": 1})
    return path, flux, cols, grid


def test_round_trip(tmp_path):
    path, flux, cols, grid = _small(tmp_path)
    d = dataset.read_dataset(path, expect_grid=grid)
    assert np.array_equal(d.flux, flux)
    assert list(d.stars["star_id"]) == list(cols["star_id"])
    assert d.provenance == {"generator": "test", "seed": 1}
    assert d.grid.digest == grid.digest and d.grid.setups == grid.setups
    part = dataset.read_dataset(path, rows=np.array([1, 3]))
    assert np.array_equal(part.flux, flux[[1, 3]])
    stars, prov = dataset.read_catalogue(path)
    assert stars["truth_teff"][0] == 4000


def test_other_grid_is_refused(tmp_path):
    path, *_ = _small(tmp_path)
    with pytest.raises(dataset.DatasetError, match="another wavelength grid"):
        dataset.read_dataset(path, expect_grid=giraffe_grid(("HR21",)))


def test_other_version_and_foreign_files_are_refused(tmp_path):
    path, *_ = _small(tmp_path)
    with h5py.File(path, "r+") as h:
        h.attrs["format_version"] = 99
    with pytest.raises(dataset.DatasetError, match="format version 99"):
        dataset.read_dataset(path)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as h:
        h["x"] = 1
    with pytest.raises(dataset.DatasetError, match="not a ges-mgal-dataset"):
        dataset.read_dataset(other)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 at all")
    with pytest.raises(dataset.DatasetError, match="corrupt"):
        dataset.read_dataset(junk)
    with pytest.raises(FileNotFoundError, match="01_prepare_data"):
        dataset.read_dataset(tmp_path / "missing.h5")


def test_nan_flux_is_refused(tmp_path):
    path, *_ = _small(tmp_path)
    with h5py.File(path, "r+") as h:
        h["flux"][0, 10] = np.nan
    with pytest.raises(dataset.DatasetError, match="NaN"):
        dataset.read_dataset(path)


def test_incomplete_write_leaves_no_file_and_keeps_old(tmp_path):
    path, flux, cols, grid = _small(tmp_path)
    before = path.read_bytes()
    with pytest.raises(dataset.DatasetError, match="never written"):
        with dataset.DatasetWriter(path, grid, 5, {}) as w:
            w.write_rows(0, flux[:2], flux[:2])
            w.write_catalogue(cols)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.h5"]
    with pytest.raises(FileExistsError):
        dataset.write_dataset(path, grid, flux, flux, cols, {}, overwrite=False)


def test_subset(tmp_path):
    path, flux, cols, grid = _small(tmp_path)
    out = dataset.subset_dataset(path, tmp_path / "s.h5", np.array([0, 2, 4]), {"subset": "x"})
    d = dataset.read_dataset(out)
    assert np.array_equal(d.flux, flux[[0, 2, 4]])
    assert d.provenance["subset"] == "x" and d.provenance["seed"] == 1
    with pytest.raises(ValueError, match="increasing"):
        dataset.subset_dataset(path, tmp_path / "t.h5", np.array([2, 1]), {})
