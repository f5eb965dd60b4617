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
    # every number the landing page quotes is produced by the run (a renamed glue key would
    # otherwise print "(not in this run)" without failing)
    subs = book.run_substitutions(root / "quick")
    missing = [name for name, *_ in book.HEADLINES if subs[name] == book.MISSING]
    assert not missing, missing
    # the survey rendered on the local Dask cluster is the declared one (made with a process pool;
    # test_survey.py renders it in one process against the same checksum)
    ch01 = json.loads((root / "quick" / "notebooks" / "01_prepare_data.ipynb").read_text())
    tables = ["".join(v) for c in ch01["cells"] for o in c.get("outputs", [])
              if "check_simulated" in "".join(c["source"]) for k, v in o.get("data", {}).items()
              if k.endswith("text/markdown")]  # glued (tab_check), shown by {glue:md} as a table
    # bit for bit on the processor that declared it, within the stated tolerance on one that rounds differently
    assert tables and all(re.search(rf"\| {f} \| match( at tolerance)? \|", tables[0])
                          for f in ("observed.h5", "training.h5")), tables
    assert book.glued_values(root / "quick" / "notebooks" / "01_prepare_data.ipynb")["scheduler_desc"].startswith("local Dask")
    # nothing changed: a second run skips everything; where the work runs is not a change
    again = pipeline.run_pipeline("quick", run_root=root, log=lambda *_: None)
    assert all(p.action == "skip" for p in again)
    again = pipeline.run_pipeline("quick", run_root=root, log=lambda *_: None,
                                  overrides=["scheduler=synchronous"])
    assert all(p.action == "skip" for p in again)
    # a chapter that re-runs (here forced; an edited figure does the same) reuses its expensive
    # steps from the step store, and says so on its page; its outputs keep their content
    before = json.loads((root / "quick" / "records" / "02_tsne_cleaning.json").read_text())["outputs"]
    pipeline.run_pipeline("quick", run_root=root, only="02", force=True, log=lambda *_: None)
    glued = book.glued_values(root / "quick" / "notebooks" / "02_tsne_cleaning.ipynb")
    for key in ("tsne_step_note", "cmp_step_note"):
        assert glued[key].startswith("The ") and "was reused from an earlier run" in glued[key], glued[key]
    after = json.loads((root / "quick" / "records" / "02_tsne_cleaning.json").read_text())["outputs"]
    assert {k: v["sha256"] for k, v in after.items()} == {k: v["sha256"] for k, v in before.items()}
    before = json.loads((root / "quick" / "records" / "04_saliency.json").read_text())["outputs"]
    pipeline.run_pipeline("quick", run_root=root, only="04", force=True, log=lambda *_: None)
    note = book.glued_values(root / "quick" / "notebooks" / "04_saliency.ipynb")["grad_step_note"]
    assert "was reused from an earlier run" in note, note
    after = json.loads((root / "quick" / "records" / "04_saliency.json").read_text())["outputs"]
    assert {k: v["sha256"] for k, v in after.items()} == {k: v["sha256"] for k, v in before.items()}
    assert "was computed in this run" in book.glued_values(
        root / "quick" / "notebooks" / "01_prepare_data.ipynb")["step_note"]


@pytest.fixture(scope="module")
def quick_book(quick_run, tmp_path_factory):
    root, _ = quick_run
    out = tmp_path_factory.mktemp("book")
    index = book.build_book("quick", out=out, strict=True, run_root=root)
    return index.parent


@pytest.mark.slow
def test_strict_book_build(quick_run, quick_book):
    root, _ = quick_run
    html = quick_book
    assert book.check_site(html) >= len(book.chapter_files())
    for f in book.chapter_files():
        page = (html / f"{f}.html").read_text(encoding="utf-8")
        assert "np.float64" not in page and "&lt;Figure size" not in page
        assert "{{" not in page, f"unfilled substitution on {f}"
        # no progress-bar clutter: Keras bars (one line per epoch is fine), tqdm bars, carriage returns
        assert not re.search(r"━+\s+\d+m?s|it/s\]|\r", page), f
        # nor the runner's progress, scheduler or member lines (they go to its terminal)
        assert not re.search(r"\(\d+ of \d+ tasks|Dask dashboard: http|\[progress\]|member \d+/\d+ \(seed", page), f
        if f.startswith(book.CHAPTER_DIR + "/"):
            assert "mybinder.org/v2/gh/" in page and f"{f}.ipynb" in page  # launch buttons open this chapter
            assert "colab.research.google.com/github/" in page
            assert f"_sources/{f}.ipynb" in page  # download as .ipynb
            # this run's parameters are shown open; the notebook's defaults are collapsed
            m = re.search(r'class="cell tag_injected-parameters[^"]*"', page)
            assert m and "tag_hide-cell" not in m.group(0)
            assert "Parameters of this run" in page
            m = re.search(r'class="cell tag_parameters[^"]*"', page)
            assert m and "tag_hide-cell" in m.group(0)
            nb = (root / "quick" / "notebooks" / (f.split("/")[1] + ".ipynb")).read_text()
            n_figs = len(set(re.findall(r'glue:figure\}\s+(\w+)', nb)))
            assert page.count("<img") >= n_figs > 0


@pytest.mark.slow
def test_book_in_a_real_browser(quick_book, tmp_path):
    """Landing page and every page of the table of contents in headless Chromium, served locally.

    The column width that figures' text is sized for is the one helpers.plots assumes.

    No console errors (nothing fetched from the internet either: other hosts do not resolve), every
    image loaded, math typeset by the book's own MathJax, navigation links answer, no table wider
    than the text column, no log, progress or repr text; a screenshot of each page is kept in
    test-artifacts/screenshots/.
    """
    from helpers import paths

    import browser

    if browser.find_browser() is None:
        if browser.require_browser():
            pytest.fail("REQUIRE_BROWSER is set but headless Chromium is missing: " + browser.INSTALL_HINT)
        pytest.skip("headless Chromium is not installed: " + browser.INSTALL_HINT)
    pages = ["index.html"] + [f"{f}.html" for f in book.chapter_files()]
    shots = paths.REPO / "test-artifacts" / "screenshots"
    reports = browser.check_pages(quick_book, pages, shots, tmp_path)
    by_page = dict(zip(pages, reports))
    # Jupyter Book's index.html is a redirect: the browser must land on the landing page
    assert by_page["index.html"].final_url.endswith("/intro.html")
    for page, rep in by_page.items():
        assert rep.console_errors == [], (page, rep.console_errors)
        assert rep.broken_images == [], (page, rep.broken_images)
        assert rep.nav_links and rep.broken_links == [], (page, rep.broken_links)
        assert rep.math_errors == 0, page
        assert rep.wide_tables == [], (page, "tables wider than the text column", rep.wide_tables)
        assert rep.log_text == [], (page, "log, progress or repr text on the page", rep.log_text)
        # figures are shown at least as large as their text was sized for (8 pt at plots.COLUMN_PX)
        assert rep.small_figures == [], (page, "figures shown smaller than sized for", rep.small_figures)
        assert rep.screenshot.exists() and rep.screenshot.stat().st_size > 10_000, page
        if page.startswith(book.CHAPTER_DIR + "/"):
            assert rep.n_images > 0, page
    # math is typeset on the pages that have some (served from the book, not a CDN)
    assert by_page["intro.html"].n_math > 0 and by_page["notebooks/03_train_ensemble.html"].n_math > 0
