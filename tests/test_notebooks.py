"""Notebook hygiene: one parameters cell, no outputs, documented parameters, all in the book."""
from __future__ import annotations

import json

import pytest

from helpers import book, paths, pipeline

NOTEBOOKS = sorted(paths.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_one_parameters_cell_and_no_outputs(nb):
    data = json.loads(nb.read_text())
    cells = data["cells"]
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    for c in cells:
        if c["cell_type"] == "code":
            assert c.get("outputs") == [] and c.get("execution_count") is None, "strip outputs"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_are_commented_and_paths_relative(nb):
    params = pipeline.notebook_parameters(nb)
    data = json.loads(nb.read_text())
    cell = next(c for c in data["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    src = "".join(cell["source"])
    for line in src.splitlines():
        if line.strip() and not line.startswith("#"):
            assert "#" in line, f"parameter line without a comment: {line}"
    assert "seed" in params
    for name, spec in params.items():
        if name.startswith(("in_", "out_")):
            assert spec["type"] == "str" and not spec["default"].startswith("/")


def test_every_notebook_is_a_chapter_of_the_book():
    chapters = [f for f in book.chapter_files() if f.startswith(book.CHAPTER_DIR + "/")]
    assert [c.split("/", 1)[1] for c in chapters] == [p.stem for p in NOTEBOOKS]


def test_profiles_resolve_for_every_notebook():
    for profile in ("quick", "default", "paper"):
        prof = pipeline.load_profile(profile)
        resolved = pipeline.resolve_parameters(NOTEBOOKS, prof, {})
        assert set(resolved) == {p.stem for p in NOTEBOOKS}


def _markdown(nb) -> str:
    data = json.loads(nb.read_text())
    return "\n".join("".join(c["source"]) for c in data["cells"] if c["cell_type"] == "markdown")


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_chapter_has_the_page_shape(nb):
    """Title, what it reproduces, goals, inputs/outputs, parameters, summary, exercises, runtime."""
    import re

    md = _markdown(nb)
    assert re.match(rf"# {nb.stem[:2]} · \S", md), "title '# NN · ...' first"
    order = ["**What this chapter reproduces.**", "**Learning goals.**", "**Inputs.**", "**Outputs.**",
             "## Parameters", "## Summary", "## Exercises", "*Runtime of this chapter"]
    pos = [md.find(s) for s in order]
    assert all(p >= 0 for p in pos), [s for s, p in zip(order, pos) if p < 0]
    assert pos == sorted(pos), "sections out of order"
    exercises = md[md.find("## Exercises"):]
    n_ex = len(re.findall(r"^\d\. ", exercises, re.M))
    n_sol = len(re.findall(r":class: dropdown", exercises))
    assert 2 <= n_ex <= 3 and n_sol == n_ex, (n_ex, n_sol)
    # figures: every glued figure is named and captioned, and the text refers to at least one
    figs = re.findall(r"```\{glue:figure\}\s+\w+\n(.*?)```", md, re.S)
    assert figs
    for body in figs:
        assert re.search(r":name:\s*fig-", body), body[:80]
        caption = [ln for ln in body.splitlines() if ln.strip() and not ln.startswith(":")]
        assert caption, body[:80]
    assert "{numref}`fig-" in md


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_first_code_cell_sets_up_colab_and_does_nothing_here(nb, tmp_path, monkeypatch):
    import subprocess

    data = json.loads(nb.read_text())
    first = next(c for c in data["cells"] if c["cell_type"] == "code")
    assert "colab-setup" in first["metadata"].get("tags", [])
    src = "".join(first["source"])
    stems = [p.stem for p in NOTEBOOKS]
    k = stems.index(nb.stem)
    # it makes the inputs of this chapter, i.e. runs the quick profile up to the chapter before
    assert (f'"--to", "{stems[k - 1][:2]}"' in src) == (k > 0)
    ran = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **kw: ran.append(a))
    monkeypatch.chdir(tmp_path)
    exec(compile(src, nb.name, "exec"), {})
    assert ran == [] and list(tmp_path.iterdir()) == []  # the project is installed here: nothing happens


def test_library_defaults_are_the_notebooks_defaults():
    """One value per default: the helpers' defaults for what a notebook exposes as a parameter
    are the notebook's own (a test, since the notebook must state them as literals)."""
    import dataclasses
    import inspect

    from helpers import compare, survey

    nb01 = pipeline.notebook_parameters(paths.NOTEBOOKS / "01_prepare_data.ipynb")
    fields = {f.name: f.default for f in dataclasses.fields(survey.SurveyConfig)}
    rename = {"benchmarks": "include_benchmarks"}
    shared = [n for n in fields if rename.get(n, n) in nb01]
    assert len(shared) >= 12
    for name in shared:
        assert fields[name] == nb01[rename.get(name, name)]["default"], name
    nb07 = pipeline.notebook_parameters(paths.NOTEBOOKS / "07_cannon.ipynb")
    for name, par in inspect.signature(compare.edge_masks).parameters.items():
        if name in nb07:
            assert par.default == nb07[name]["default"], name
