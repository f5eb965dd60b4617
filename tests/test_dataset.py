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


# ---------------------------------------------------------------- content at a tolerance
def test_a_sketch_passes_last_bit_rounding_and_catches_real_changes(tiny_survey, tmp_path):
    import shutil

    from conftest import last_bit_copy

    _, path, _ = tiny_survey
    base = dataset.content_sketch(path)
    near = last_bit_copy(path, tmp_path / "near.h5")
    assert dataset.content_digest(near) != dataset.content_digest(path)  # bits differ ...
    ok, said, worst = dataset.compare_sketches(base, dataset.content_sketch(near))
    assert ok and 0 < worst["flux"] < dataset.SKETCH_TOLERANCE["flux"], said  # ... content within tolerance

    def changed(edit):
        p = tmp_path / "changed.h5"
        shutil.copyfile(path, p)
        with h5py.File(p, "r+") as f:
            edit(f)
        return dataset.compare_sketches(base, dataset.content_sketch(p))

    def pixel(f):
        f["flux"][3, 500] += 2e-4

    def teff(f):
        f["stars/truth_teff"][7] += 0.01

    def text(f):
        d = f["stars/defect"][...]
        d[0] = b"spike" if d[0] != b"spike" else b"none"
        f["stars/defect"][...] = d

    def masked(f):
        f["ivar"][2, 10] = 0

    for edit, says in ((pixel, "beyond the stated tolerance"), (teff, "beyond the stated tolerance"),
                       (text, "catalogue column"), (masked, "masked pixels")):
        ok, said, _ = changed(edit)
        assert not ok and says in said, (edit.__name__, said)
    sub = tmp_path / "sub.h5"
    dataset.subset_dataset(path, sub, np.arange(10), {})
    ok, said, _ = dataset.compare_sketches(base, dataset.content_sketch(sub))
    assert not ok and "spectra" in said


def test_a_sketch_round_trips_and_a_foreign_file_is_refused(tiny_survey, tmp_path):
    _, path, _ = tiny_survey
    sk = dataset.content_sketch(path)
    p = dataset.write_sketch(tmp_path / "s.npz", sk)
    back = dataset.read_sketch(p)
    assert dataset.compare_sketches(sk, back)[2]["flux"] == 0.0
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(dataset.DatasetError, match="another version"):
        dataset.read_sketch(tmp_path / "other.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(dataset.DatasetError, match="not a readable"):
        dataset.read_sketch(tmp_path / "junk.npz")


def test_the_survey_made_on_other_simd_paths_differs_in_bits_not_beyond_the_tolerance(tmp_path):
    """The drift found between two machines: NumPy's and OpenBLAS's processor-dependent code paths
    round differently. Forcing their SSE paths here stands in for another processor."""
    import os
    import subprocess
    import sys

    code = ("import sys; from conftest import tiny_config; from helpers import survey; "
            "survey.generate_survey(tiny_config(), sys.argv[1], log=None, scheduler='synchronous')")
    here = os.path.dirname(__file__)
    outs = []
    for name, extra in (("native", {}), ("sse", {"NPY_DISABLE_CPU_FEATURES": "AVX2 FMA3 AVX512F AVX512CD AVX512_SKX",
                                                 "OPENBLAS_CORETYPE": "Sandybridge"})):
        env = {**os.environ, "PYTHONPATH": here + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra}
        out = tmp_path / f"{name}.h5"
        subprocess.run([sys.executable, "-c", code, str(out)], env=env, check=True, timeout=600,
                       capture_output=True)
        outs.append(out)
    ok, said, worst = dataset.compare_sketches(dataset.content_sketch(outs[0]), dataset.content_sketch(outs[1]))
    assert ok, said
    if dataset.content_digest(outs[0]) == dataset.content_digest(outs[1]):
        pytest.skip("this processor's NumPy and OpenBLAS take the same paths either way (no drift to tolerate)")


def test_sketch_rows_are_matched_by_their_stars_catalogue_numbers(tiny_survey, tmp_path):
    from conftest import last_bit_copy

    from helpers.dataset import (DatasetError, compare_sketches, content_sketch, match_sketch_rows, sketch_rows,
                                 subset_dataset)

    _, path, _ = tiny_survey
    n = len(content_sketch(path)["flux_proj"])
    a_rows, b_rows = np.arange(0, n - 2), np.arange(3, n)  # a lacks the last two stars, b the first three
    a = content_sketch(subset_dataset(path, tmp_path / "a.h5", a_rows, {}))
    b = content_sketch(subset_dataset(last_bit_copy(path, tmp_path / "near.h5"), tmp_path / "b.h5", b_rows, {}))
    m = match_sketch_rows(a, b)  # b's numbers moved in the last bits: still the same stars
    assert m[:3].tolist() == [-1, -1, -1] and m[3:].tolist() == list(range(0, n - 5))
    ok, said, _ = compare_sketches(sketch_rows(a, np.arange(3, n - 2)), sketch_rows(b, m[3:]))
    assert ok, said
    twin = {**b, "numeric": np.vstack([b["numeric"], b["numeric"][:1]])}  # two rows of one star
    with pytest.raises(DatasetError, match="do not tell these stars apart"):
        match_sketch_rows(a, twin)
