"""The whole pipeline in the quick profile, then a strict book build of it."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from helpers import book, pipeline


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    plans = pipeline.run_pipeline("quick", run_root=root, log=lambda *_: None)
    return root, plans


@pytest.mark.slow
def test_quick_pipeline_runs_every_notebook(quick_run):
    root, plans = quick_run
    assert [p.notebook.stem for p in plans] == [p.stem for p in pipeline.discover_notebooks()]
    for p in plans:
        rec = json.loads((root / "quick" / "records" / f"{p.notebook.stem}.json").read_text())
        assert rec["status"] == "ok" and rec["wall_time_s"] > 0
        for out in rec["outputs"]:
            assert (root / "quick").resolve() in Path(out).parents
    # nothing changed: a second run skips everything
    again = pipeline.run_pipeline("quick", run_root=root, log=lambda *_: None)
    assert all(p.action == "skip" for p in again)


@pytest.mark.slow
def test_strict_book_build(quick_run, tmp_path):
    root, _ = quick_run
    index = book.build_book("quick", out=tmp_path, strict=True, run_root=root)
    html = tmp_path / "_build" / "html"
    assert index.exists()
    for f in book.chapter_files():
        page = (html / f"{f}.html").read_text(encoding="utf-8")
        assert "np.float64" not in page and "&lt;Figure size" not in page
        if f.startswith("chapters/"):
            nb = (root / "quick" / "notebooks" / (f.split("/")[1] + ".ipynb")).read_text()
            n_figs = len(set(re.findall(r'glue:figure\}\s+(\w+)', nb)))
            assert page.count("<img") >= n_figs > 0
            assert "injected-parameters" in page or "tag_injected-parameters" in page
