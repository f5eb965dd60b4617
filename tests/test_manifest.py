"""Data manifest: safe loading and drift checks."""
from __future__ import annotations

import numpy as np
import pytest

from helpers import manifest


def test_the_repository_manifest_declares_every_profile_it_checks_and_every_shipped_file():
    """What chapter 01 relies on: each profile's manifest_name has an entry for both files it
    checks, and every shipped file the manifest names exists."""
    from helpers import paths, pipeline

    m = manifest.load_manifest()
    nbs = pipeline.discover_notebooks()
    for profile in ("quick", "default"):
        name = pipeline.resolve_parameters(nbs, pipeline.load_profile(profile), {})[nbs[0].stem]["manifest_name"]
        files = m["simulated"][name]["files"]
        assert {"observed.h5", "training.h5"} <= set(files), profile
    for part in m["grid"]["parts"]:
        assert (paths.GRID / part).exists(), part


def _dataset(path, value):
    import numpy as np

    from helpers.dataset import write_dataset
    from helpers.spectra import giraffe_grid

    g = giraffe_grid()
    flux = np.full((2, g.n_pixels), value, np.float32)
    write_dataset(path, g, flux, flux, {"truth_teff": np.array([1.0, 2.0])}, {"seed": 1})


def test_check_and_record(tmp_path):
    mpath = tmp_path / "m.yaml"
    mpath.write_text("# header line\nsimulated: {}\n")
    f = tmp_path / "a.h5"
    _dataset(f, 1.0)
    params = {"n": 1}
    rows = manifest.check_simulated(manifest.load_manifest(mpath), "x", params, {"a.h5": f}, "0.1")
    assert rows[0]["status"] == "not declared"
    manifest.record_simulated("x", params, 1, "gen", "0.1", {"a.h5": f}, "test", path=mpath)
    assert mpath.read_text().startswith("# header line")
    m = manifest.load_manifest(mpath)
    assert manifest.check_simulated(m, "x", params, {"a.h5": f}, "0.1")[0]["status"] == "match"
    _dataset(f, 0.5)
    assert manifest.check_simulated(m, "x", params, {"a.h5": f}, "0.1")[0]["status"] == "drift"
    # with a sketch: bits that differ in the last place are a match at the tolerance, a real change is drift
    _dataset(f, 1.0)
    manifest.record_simulated("x", params, 1, "gen", "0.1", {"a.h5": f}, "test", path=mpath,
                              sketches=tmp_path / "sketches")
    m = manifest.load_manifest(mpath)
    assert m["simulated"]["x"]["files"]["a.h5"]["sketch"] == "sketches/x/a.npz"
    _dataset(f, np.nextafter(np.float32(1.0), np.float32(2.0)))
    row = manifest.check_simulated(m, "x", params, {"a.h5": f}, "0.1", root=tmp_path)[0]
    assert row["status"] == "match at tolerance" and "bits differ" in row["note"], row
    _dataset(f, 1.001)
    row = manifest.check_simulated(m, "x", params, {"a.h5": f}, "0.1", root=tmp_path)[0]
    assert row["status"] == "drift" and "beyond the stated tolerance" in row["note"], row
    (tmp_path / "sketches/x/a.npz").write_bytes(b"altered")
    row = manifest.check_simulated(m, "x", params, {"a.h5": f}, "0.1", root=tmp_path)[0]
    assert row["status"] == "drift" and "missing or altered" in row["note"], row
    assert manifest.check_simulated(m, "x", {"n": 2}, {"a.h5": f}, "0.1")[0]["status"] == "not comparable"
    assert manifest.check_simulated(m, "x", params, {"a.h5": f}, "0.2")[0]["status"] == "not comparable"


def test_not_a_manifest(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text("- a list\n")
    with pytest.raises(ValueError, match="not a data manifest"):
        manifest.load_manifest(p)
    with pytest.raises(FileNotFoundError):
        manifest.load_manifest(tmp_path / "none.yaml")
