"""Shared fixtures: a tiny simulated survey written once per test session."""
from __future__ import annotations

import pytest

from helpers import survey


def tiny_config(**kw) -> survey.SurveyConfig:
    base = dict(n_field=120, n_open_clusters=2, members_per_oc=6, n_globular_clusters=2,
                members_per_gc=8, benchmarks=True, bad_fraction=0.2, seed=11, chunk=64, n_workers=1)
    base.update(kw)
    return survey.SurveyConfig(**base)


@pytest.fixture(scope="session")
def tiny_survey(tmp_path_factory):
    cfg = tiny_config()
    path = tmp_path_factory.mktemp("survey") / "observed.h5"
    result = survey.generate_survey(cfg, path, log=None)
    return cfg, path, result["catalogue"]


def last_bit_copy(src, dst, fraction: float = 0.1, seed: int = 0):
    """A copy of data set ``src`` whose flux, ivar and float catalogue values are moved by one
    floating-point step on ``fraction`` of the entries: what another processor's rounding makes."""
    import shutil

    import h5py
    import numpy as np

    shutil.copyfile(src, dst)
    rng = np.random.default_rng(seed)
    with h5py.File(dst, "r+") as f:
        for name in ["flux", "ivar"] + [f"stars/{k}" for k in f["stars"] if f["stars"][k].dtype.kind == "f"]:
            a = f[name][...]
            hit = (rng.random(a.shape) < fraction) & np.isfinite(a) & (a != 0)
            a[hit] = np.nextafter(a[hit], np.inf)
            f[name][...] = a
    return dst
