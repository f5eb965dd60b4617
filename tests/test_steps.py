"""The step store: an expensive step runs once per key, and only a change of what decides its result
(parameters, input content, the code that computes it) runs it again."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from helpers import steps


def _counting(result):
    calls = []

    def compute():
        calls.append(1)
        return result() if callable(result) else result

    return compute, calls


def test_a_step_runs_once_and_comes_back_equal(tmp_path):
    result = {"z_last_first": 1, "embedding": np.arange(12.0).reshape(6, 2), "reason": np.array(["", "spike", "gap"]),
              "scores": {"chi2": np.array([1.0, np.nan])}, "seconds": {"tsne": 1.5}, "n": np.int64(3),
              "rows": [{"label": "teff", "ratio": float("nan")}], "note": None}
    compute, calls = _counting(result)
    first, info = steps.cached(tmp_path, "t-SNE map", compute, parameters={"perplexity": 30.0}, modules=["cleaning"])
    again, info2 = steps.cached(tmp_path, "t-SNE map", compute, parameters={"perplexity": 30.0}, modules=["cleaning"])
    assert len(calls) == 1 and not info.reused and info2.reused and info2.key == info.key
    assert "reused from an earlier run" in info2.sentence() and "computed in this run" in info.sentence()
    for got in (first, again):
        np.testing.assert_array_equal(got["embedding"], result["embedding"])
        assert got["reason"].tolist() == ["", "spike", "gap"] and got["n"] == 3 and got["note"] is None
        assert np.isnan(got["scores"]["chi2"][1]) and np.isnan(got["rows"][0]["ratio"])
        assert got["seconds"] == {"tsne": 1.5}
        assert list(got) == list(result) and list(got["scores"]) == ["chi2"]  # order kept (JSON sorts keys)


def test_what_decides_the_result_changes_the_key_and_nothing_else_does(tmp_path, monkeypatch):
    compute, calls = _counting({"x": np.zeros(3)})
    run = lambda **kw: steps.cached(tmp_path, "s", compute, **{"parameters": {"a": 1}, "modules": ["cleaning"], **kw})
    run()
    run(parameters={"a": 2})                      # a parameter
    run(inputs={"training": "content:abc"})        # an input's content
    assert len(calls) == 3
    real = steps.module_digests
    monkeypatch.setattr(steps, "module_digests", lambda names: {**real(names), "cleaning.py": "edited"})
    run()                                          # the code that computes it
    assert len(calls) == 4
    monkeypatch.setattr(steps, "module_digests", real)
    run(parameters={"a": 1})                       # back to the first key: its entry is still there
    assert len(calls) == 4


def test_the_key_holds_the_computing_code_not_the_figures():
    """An edit of a figure (helpers.plots) or of the book's tables (helpers.report) leaves the
    expensive steps' keys unchanged; an edit of what they import (cleaning imports model inside a
    function) does not."""
    for modules, needs in ((["cleaning"], {"cleaning.py", "model.py"}), (["survey"], {"survey.py", "simulate.py", "noise.py"})):
        code = steps.step_key("s", {}, modules=modules)["code"]
        assert needs <= set(code), (modules, sorted(code))
        assert "plots.py" not in code and "report.py" not in code, sorted(code)


def test_a_damaged_or_half_written_entry_is_computed_again(tmp_path):
    compute, calls = _counting({"x": np.arange(4)})
    _, info = steps.cached(tmp_path, "s", compute, parameters={}, modules=[])
    npz = next(tmp_path.glob("s-*.npz"))
    npz.write_bytes(b"damaged")
    got, info2 = steps.cached(tmp_path, "s", compute, parameters={}, modules=[])
    assert len(calls) == 2 and not info2.reused and got["x"].tolist() == [0, 1, 2, 3]
    # killed after the arrays and before the JSON: no JSON, so not taken for finished
    next(tmp_path.glob("s-*.json")).unlink()
    steps.cached(tmp_path, "s", compute, parameters={}, modules=[])
    assert len(calls) == 3
    # an unreadable JSON too
    next(tmp_path.glob("s-*.json")).write_text("{")
    steps.cached(tmp_path, "s", compute, parameters={}, modules=[])
    assert len(calls) == 4


def test_a_result_that_needs_pickle_is_refused(tmp_path):
    with pytest.raises(steps.StepError, match="object arrays"):
        steps.cached(tmp_path, "s", lambda: {"r": np.array(["a", 1], dtype=object)}, parameters={}, modules=[])
    with pytest.raises(steps.StepError, match="neither an array nor JSON"):
        steps.cached(tmp_path, "s", lambda: {"f": open}, parameters={}, modules=[])
    assert not list(tmp_path.glob("s-*.json"))


def test_a_file_step_is_reused_while_its_file_is_unchanged(tmp_path):
    out = tmp_path / "observed.h5"

    def make():
        out.write_bytes(b"spectra")
        return {"seconds": 1.0}

    compute, calls = _counting(make)
    store = tmp_path / "steps"
    run = lambda **kw: steps.cached_file(store, "survey rendering", out, compute,
                                         **{"parameters": {"n": 5}, "modules": ["survey"], **kw})
    res, info = run()
    res2, info2 = run()
    assert len(calls) == 1 and info2.reused and res2 == {"seconds": 1.0}
    os.utime(out, ns=(1, 1))                       # touched, same bytes: reused after its checksum
    assert run()[1].reused and len(calls) == 1
    out.write_bytes(b"SPECTRA")                    # changed by someone else: made again
    assert not run()[1].reused and len(calls) == 2
    run(parameters={"n": 6})                       # another key: made again
    assert len(calls) == 3
    out.unlink()                                   # gone: made again
    run(parameters={"n": 6})
    assert len(calls) == 4 and json.loads((store / "survey_rendering.file.json").read_text())["stamp"]["size"] == 7
    with pytest.raises(steps.StepError, match="did not write"):
        steps.cached_file(store, "nothing", tmp_path / "none.h5", lambda: {}, parameters={}, modules=[])


def test_input_digests_are_remembered_by_size_and_time(tmp_path):
    f = tmp_path / "a.csv"
    f.write_text("1,2\n")
    d = steps.input_digest(f, tmp_path / "store")
    memo = json.loads((tmp_path / "store" / "inputs.json").read_text())
    assert memo[str(f.resolve())]["digest"] == d
    f.write_text("1,3\n")
    assert steps.input_digest(f, tmp_path / "store") != d
