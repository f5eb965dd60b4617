"""The book's helpers: run numbers on Markdown pages, run times, site check, launch preparation,
and the GitHub Pages workflow's guard."""
from __future__ import annotations

import json
import re
import subprocess

import nbformat
import pytest
import yaml

from helpers import book, paths


def _executed(path, values):
    """A notebook with glued values as myst-nb writes them."""
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("glue(...)")
    cell.outputs = [nbformat.v4.new_output(
        "display_data", data={"application/papermill.record/text/plain": repr(v)},
        metadata={"scrapbook": {"name": k, "mime_prefix": "application/papermill.record/"}})
        for k, v in values.items()]
    nb.cells.append(cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def test_glued_values_and_substitutions(tmp_path):
    run = tmp_path / "runs" / "demo"
    _executed(run / "notebooks" / "03_train_ensemble.ipynb",
              {"n_obs": 19628, "prec_teff_truth": 55.8957, "ratio_min": 1.43, "backend": "tensorflow"})
    assert book.glued_values(run / "notebooks" / "03_train_ensemble.ipynb")["prec_teff_truth"] == 55.8957
    subs = book.run_substitutions(run)
    assert subs["n_obs"] == "19,628" and subs["teff_truth"] == "56" and subs["crb_min"] == "1.4"
    assert subs["profile"] == "demo"
    # a chapter the run does not have, or a number it did not glue, says so
    assert subs["gc_r_cnn"] == book.MISSING and subs["feh_truth"] == book.MISSING


def test_every_substitution_used_on_the_landing_page_is_defined():
    import re

    used = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", (paths.BOOK / "intro.md").read_text(encoding="utf-8")))
    defined = {h[0] for h in book.HEADLINES} | {"profile"}
    assert used and used <= defined, used - defined


def test_run_times_table_reads_every_profile(tmp_path):
    for profile, walls in (("quick", [30, 90]), ("default", [600, 700])):
        rec_dir = tmp_path / profile / "records"
        rec_dir.mkdir(parents=True)
        for i, w in enumerate(walls):
            (rec_dir / f"0{i + 1}_x.json").write_text(json.dumps({
                "notebook": f"0{i + 1}_x.ipynb", "status": "ok", "wall_time_s": w,
                "started": "2026-11-25T10:00:00+00:00", "peak_memory_gib": 0.4 + i,
                "machine": {"cpu_count": 2, "cpu": "Test CPU", "memory_gib": 24}}))
    table = book.run_times_table(tmp_path)
    assert "| `quick` | 2 | 2.0 |" in table and "| `default` | 2 | 21.7 |" in table
    assert "| 1.4 |" in table  # the largest peak memory of a profile's notebooks
    assert "2 × Test CPU, 24 GiB" in table
    assert "No run records" in book.run_times_table(tmp_path / "none")


def test_check_site_refuses_an_incomplete_site(tmp_path):
    html = tmp_path / "html"
    with pytest.raises(book.BookError, match="fewer than"):
        book.check_site(html)
    for f in book.chapter_files():
        page = html / f"{f}.html"
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text("<html>" + "x" * 3000 + "</html>")
    (html / book.MATHJAX_DIR).mkdir()
    (html / book.MATHJAX_DIR / book.MATHJAX_ENTRY).write_text("// mathjax")
    assert book.check_site(html) == len(book.chapter_files())
    (html / "intro.html").write_text("")
    with pytest.raises(book.BookError, match="nearly empty"):
        book.check_site(html)
    (html / "intro.html").write_text("<html>" + "x" * 3000 + "</html>")
    (html / book.MATHJAX_DIR / book.MATHJAX_ENTRY).unlink()
    with pytest.raises(book.BookError, match="math would not render"):
        book.check_site(html)


def test_prepare_launch_replaces_notebooks_and_links_artefacts(tmp_path):
    run = tmp_path / "run"
    (run / "artefacts" / "01_x").mkdir(parents=True)
    (run / "artefacts" / "01_x" / "data.h5").write_text("data")
    _executed(run / "notebooks" / "01_x.ipynb", {"n": 1})
    (run / "notebooks" / "02_y.failed.ipynb").write_text("{}")
    nbdir = tmp_path / "repo" / "notebooks"
    nbdir.mkdir(parents=True)
    nbformat.write(nbformat.v4.new_notebook(), nbdir / "01_x.ipynb")
    done = book.prepare_launch(run, nbdir)
    assert [p.name for p in done] == ["01_x.ipynb"]
    assert book.glued_values(nbdir / "01_x.ipynb") == {"n": 1}
    assert (nbdir / "artefacts" / "01_x" / "data.h5").read_text() == "data"
    assert not (nbdir / "02_y.failed.ipynb").exists()
    with pytest.raises(book.BookError, match="run the pipeline first"):
        book.prepare_launch(tmp_path / "empty", nbdir)


def test_prepare_launch_refuses_to_overwrite_edited_notebooks(tmp_path):
    run = tmp_path / "run"
    (run / "artefacts").mkdir(parents=True)
    _executed(run / "notebooks" / "01_x.ipynb", {"n": 1})
    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    nbformat.write(nbformat.v4.new_notebook(), repo / "notebooks" / "01_x.ipynb")
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(git + ["init", "-q"], cwd=repo, check=True)
    subprocess.run(git + ["add", "."], cwd=repo, check=True)
    subprocess.run(git + ["commit", "-qm", "x"], cwd=repo, check=True)
    (repo / "notebooks" / "01_x.ipynb").write_text((repo / "notebooks" / "01_x.ipynb").read_text() + "\n")
    with pytest.raises(book.BookError, match="01_x.ipynb"):
        book.prepare_launch(run, repo / "notebooks")


def test_pages_workflow_checks_the_site_before_publishing():
    wf = yaml.safe_load((paths.REPO / ".github" / "workflows" / "book.yml").read_text(encoding="utf-8"))
    steps = wf["jobs"]["build"]["steps"]
    runs = [s.get("run", "") for s in steps]
    uses = [s.get("uses", "") for s in steps]
    cache = next(i for i, u in enumerate(uses) if u.startswith("actions/cache"))
    pipeline_step = next(i for i, r in enumerate(runs) if "make pipeline" in r)
    build = next(i for i, r in enumerate(runs) if "helpers.book" in r and "--strict" in r)
    check = next(i for i, r in enumerate(runs) if "--check-site" in r)
    upload = next(i for i, u in enumerate(uses) if u.startswith("actions/upload-pages-artifact"))
    assert cache < pipeline_step < build < check < upload
    # the cached run is keyed on what the pipeline reads, so a change to pages alone re-runs nothing
    key = steps[cache]["with"]["key"]
    assert steps[cache]["with"]["path"] == "runs/default"
    assert all(x in key for x in ("notebooks/**", "src/helpers/**", "params/**", "data/**", "requirements.txt"))
    assert "book/" not in key
    assert steps[upload]["with"]["path"] == "book/_build/html"
    assert any(s.get("uses", "").startswith("actions/deploy-pages") for s in wf["jobs"]["deploy"]["steps"])


def test_binder_setup_prepares_the_quick_run():
    post = (paths.REPO / "binder" / "postBuild").read_text(encoding="utf-8")
    assert "helpers.pipeline --profile quick" in post and "--prepare-launch" in post
    assert "-r ../requirements.txt" in (paths.REPO / "binder" / "requirements.txt").read_text(encoding="utf-8")


def test_scale_section_is_written_from_the_bench_results(tmp_path):
    from helpers import book

    assert "bench/bench_scale.py" in book.scale_section(tmp_path / "none.json")
    res = {"machine": {"cpu_count": 2, "cpu": "x86_64"}, "date": "2026-12-02", "workers": [1, 2],
           "survey": {"1": {"spectra_per_s": 100.0}, "2": {"spectra_per_s": 190.0}},
           "inference": {"1": {"spectra_per_s": 300.0, "members": 10}, "2": {"spectra_per_s": 580.0, "members": 10}},
           "training": {"1": {"default_members_per_hour": 6.0}, "2": {"default_members_per_hour": 11.0}},
           "speedup": {"survey": 1.9, "inference": 1.93, "training": 1.83},
           "grid": {"stars": 10, "median_s_per_star": 18.0, "stars_per_hour_per_worker": 200.0},
           "estimate": {"survey_spectra": 2e7, "workers": 100, "per_worker_spectra_per_s": 300.0, "hours": 0.19}}
    f = tmp_path / "scale.json"
    f.write_text(json.dumps(res))
    text = book.scale_section(f)
    assert "| survey rendering [spectra/s] | 100.0 | 190.0 | 1.90 |" in text
    assert "20,000,000 / (300.0 spectra/s per worker × 100 workers) = 667 s" in text
    assert "Estimate, not a measurement" in text and "6 minutes" in text


def test_a_flag_is_drawn_in_two_colours_with_a_legend_not_a_colour_bar():
    import numpy as np

    from helpers import plots

    rng = np.random.default_rng(0)
    flag = rng.random(200) < 0.1
    fig = plots.kiel(rng.uniform(4000, 6500, 200), rng.uniform(1, 4.5, 200), flag, "flagged")
    assert len(fig.axes) == 1  # no colour-bar axes
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert texts == [f"not flagged ({(~flag).sum()})", f"flagged ({flag.sum()})"]
    fig = plots.kiel(rng.uniform(4000, 6500, 200), rng.uniform(1, 4.5, 200), rng.random(200), "[Fe/H]")
    assert len(fig.axes) == 2  # a continuous quantity keeps its colour bar


def test_the_reference_section_is_written_from_the_record(tmp_path):
    from helpers import reference

    assert "No reference ensemble is shipped yet" in book.reference_section(tmp_path)
    arch = {"learning_rate": 0.001, "batch_size": 64, "epochs": 200, "patience": 8}
    reference.write_record(tmp_path, {
        "key": {"n_models": 10, "architecture": arch},
        "training_set": {"n_fit": 8330, "n_spectra": 13884, "n_val": 2083, "content_digest": "e4348499" * 8},
        "members": {"member_00": {"seed": 7, "epochs": 61, "best_epoch": 53, "best_val_loss": 0.0043,
                                  "hours": 0.6, "stopped_early": True}},
        "complete": False, "worker_hours": 0.6, "wall_hours": 0.7, "scheduler": "local",
        "machine": {"cpu": "Test CPU", "cpu_count": 2}})
    text = book.reference_section(tmp_path)
    assert "1 of the 10 planned members" in text and "8,330 spectra" in text and "Test CPU" in text
    assert "| 00 | 7 | 61 | 53 | 0.00430 | 36 | yes |" in text


def test_melt_turns_wide_rows_into_one_row_per_label():
    from helpers.report import md_table, melt

    wide = [{"cluster": "NGC 1", "n": 12, "mean_teff": 5012.345, "sd_teff": 81.0, "mean_feh": -0.1234, "sd_feh": 0.0456}]
    long = melt(wide, ["cluster", "n"], ("teff", "feh"), {"mean": "mean_{k}", "sd": "sd_{k}"},
                names={"teff": "Teff"}, formats={"teff": ".0f", "feh": ".3f"})
    assert long == [{"cluster": "NGC 1", "n": 12, "label": "Teff", "mean": "5012", "sd": "81"},
                    {"cluster": "NGC 1", "n": 12, "label": "feh", "mean": "-0.123", "sd": "0.046"}]
    text = md_table(long, {"cluster": "cluster", "label": "label", "mean": "mean"}).data
    assert text.splitlines()[2] == "| NGC 1 | Teff | 5012 |"


def test_a_bar_inside_a_table_cell_is_escaped():
    """'median |error|' as a header must not split the row: the page showed such tables as text."""
    from helpers.report import md_table

    text = md_table([{"a": 0.5, "b": "x|y"}], {"a": "median |error|", "b": "b"}, {"a": ".2f"}).data
    rows = text.splitlines()
    assert rows[0] == r"| median \|error\| | b |" and rows[2] == r"| 0.50 | x\|y |"
    for row in rows:  # every row has as many unescaped separators as the header
        assert len(re.findall(r"(?<!\\)\|", row)) == 3
