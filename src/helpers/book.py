"""Assemble and build the Jupyter Book from the executed notebooks of one run.

The book never executes code: it renders the notebooks that the pipeline
executed into ``runs/<profile>/notebooks/`` (execution is off in
``book/_config.yml``). The sources in ``book/`` and those notebooks are
copied into a staging folder ``runs/<profile>/book_src/``, then
``jupyter-book build`` writes the HTML.

Usage::

    python -m helpers.book --profile default            # HTML in book/_build/html
    python -m helpers.book --profile quick --strict --out /tmp/quick-book
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import tarfile
import subprocess
import sys
from pathlib import Path

import yaml

from . import paths
from .fileio import atomic_path

__all__ = ["chapter_files", "glued_values", "run_substitutions", "run_times_table", "stage_book",
           "install_mathjax", "check_site", "prepare_launch", "build_book", "main"]


#: Folder of the chapters in the staged book. It has the name of the repository's notebook folder, so
#: that a chapter's page path (``notebooks/03_train_ensemble``) is also its path in the repository, which
#: the Binder and Colab launch buttons open.
CHAPTER_DIR = "notebooks"


class BookError(RuntimeError):
    """The book cannot be built (missing chapters, failed build)."""


def chapter_files(toc_path: Path = paths.BOOK / "_toc.yml") -> list[str]:
    """The files named in the table of contents, in order (without suffix)."""
    with open(toc_path, encoding="utf-8") as fh:
        toc = yaml.safe_load(fh)
    out = [toc["root"]]

    def walk(entries):
        for e in entries or []:
            if "file" in e:
                out.append(e["file"])
            walk(e.get("sections"))
            walk(e.get("chapters"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return out


#: Packages listed on the "About this run" page.
KEY_PACKAGES = ("numpy", "astropy", "h5py", "keras", "tensorflow-cpu", "jax", "torch", "scikit-learn",
                "openTSNE", "papermill", "jupyter-book", "myst-nb")


def _read_records(run_dir: Path) -> list[dict]:
    """The run records (``records/*.json``) of one run folder, in notebook order."""
    recs = []
    for p in sorted((Path(run_dir) / paths.RUN_RECORDS).glob("*.json")):
        with open(p, encoding="utf-8") as fh:
            recs.append(json.load(fh))
    return recs


def about_run_page(run_dir: Path) -> str:
    """Markdown of the "About this run" page, written from the run records of ``run_dir``.

    One row per notebook (status, wall time, start, commit), the machine, the versions of the
    main packages and every notebook's parameters, all read from ``records/*.json``.
    """
    recs = _read_records(run_dir)
    name = Path(run_dir).name
    lines = ["# About this run", "",
             f"This book shows the run of profile `{name}` (`params/{name}.yaml`). Everything below is read "
             "from the run records that the pipeline writes beside the artefacts (`runs/<profile>/records/`).",
             ""]
    if not recs:
        return "\n".join(lines + ["No run records were found.", ""])
    total = sum(float(r.get("wall_time_s", 0) or 0) for r in recs)
    lines += ["| notebook | status | wall time [min] | peak memory [GiB] | started (UTC) | commit |",
              "|---|---|---|---|---|---|"]
    for r in recs:
        mem = r.get("peak_memory_gib")
        lines.append(f"| {r['notebook']} | {r.get('status', '')} | {float(r.get('wall_time_s', 0)) / 60:.1f} | "
                     f"{'—' if mem is None else f'{float(mem):.1f}'} | "
                     f"{r.get('started', '')[:16].replace('T', ' ')} | {str(r.get('git_commit', ''))[:10]} |")
    lines += ["", f"Total: {total / 60:.1f} minutes.", ""]
    m = recs[-1].get("machine", {})
    if m:
        lines += ["## Machine", "", ", ".join(f"{k}: {v}" for k, v in m.items()), ""]
    pk = recs[-1].get("packages", {})
    if pk:
        lines += ["## Package versions", "", "| package | version |", "|---|---|"]
        lines += [f"| {k} | {pk[k]} |" for k in KEY_PACKAGES if k in pk]
        lines += ["", "The full list is in each record (`packages`).", ""]
    lines += ["## Parameters", ""]
    for r in recs:
        params = {k: v for k, v in sorted(r.get("parameters", {}).items())}
        lines += [f"### {r['notebook']}", "", f"Seed: {r.get('seed', '')}.", "", "```yaml"]
        lines += [line for line in yaml.safe_dump(params, sort_keys=True, allow_unicode=True).splitlines()]
        lines += ["```", ""]
    return "\n".join(lines)


def glued_values(notebook: Path) -> dict:
    """The numbers and short texts glued (``myst_nb.glue``) in an executed notebook.

    Figures and Markdown tables are left out; values are parsed back from their text form.
    """
    with open(notebook, encoding="utf-8") as fh:
        nb = json.load(fh)
    key = "application/papermill.record/text/plain"
    out = {}
    for cell in nb.get("cells", []):
        for o in cell.get("outputs", []):
            name = o.get("metadata", {}).get("scrapbook", {}).get("name")
            data = o.get("data", {})
            if name and key in data and len(data) == 1:
                try:
                    out[name] = ast.literal_eval(data[key])
                except (ValueError, SyntaxError):
                    out[name] = data[key]
    return out


#: Numbers of the run shown on the Markdown pages (landing page): substitution name, chapter,
#: glued name, format. Markdown pages cannot ``glue``; these are read from the executed chapters.
HEADLINES = (
    ("n_grid", "01_prepare_data", "n_grid", ",d"),
    ("emu_median", "01_prepare_data", "emu_median", ".4f"),
    ("emu_p99", "01_prepare_data", "emu_p99", ".3f"),
    ("n_obs", "03_train_ensemble", "n_obs", ",d"),
    ("n_clean", "02_tsne_cleaning", "n_clean", ",d"),
    ("frac_removed", "02_tsne_cleaning", "frac_removed", ".1%"),
    ("n_kept", "03_train_ensemble", "n_kept", "d"),
    ("n_models", "03_train_ensemble", "n_models", "d"),
    ("teff_truth", "03_train_ensemble", "prec_teff_truth", ".0f"),
    ("logg_truth", "03_train_ensemble", "prec_logg_truth", ".2f"),
    ("feh_truth", "03_train_ensemble", "prec_feh_truth", ".3f"),
    ("mg_truth", "03_train_ensemble", "prec_mg_fe_truth", ".3f"),
    ("al_truth", "03_train_ensemble", "prec_al_fe_truth", ".3f"),
    ("crb_min", "03_train_ensemble", "ratio_min", ".1f"),
    ("crb_max", "03_train_ensemble", "ratio_max", ".1f"),
    ("resp_mg", "03_train_ensemble", "resp_verdict_mg_fe", ""),
    ("resp_al", "03_train_ensemble", "resp_verdict_al_fe", ""),
    ("own_mg", "04_saliency", "own_mg_fe_enr", ".1f"),
    ("own_al", "04_saliency", "own_al_fe_enr", ".1f"),
    ("al_other", "04_saliency", "top_other_al_fe", ""),
    ("al_other_enr", "04_saliency", "top_other_al_fe_enr", ".1f"),
    ("gc_r_cnn", "05_validation", "cnn_r_mean", "+.2f"),
    ("gc_r_true", "05_validation", "true_r_mean", "+.2f"),
    ("gc_verdict", "05_validation", "gc_verdict", ""),
    ("grad_cnn", "06_chemical_evolution", "gR_low_feh_CNN", "+.3f"),
    ("grad_truth", "06_chemical_evolution", "gR_low_feh_truth", "+.3f"),
    ("cannon_teff", "07_cannon", "cannon_teff_truth", ".0f"),
    ("cannon_feh", "07_cannon", "cannon_feh_truth", ".3f"),
    ("cannon_mg", "07_cannon", "cannon_mg_fe_truth", ".3f"),
    ("cannon_al", "07_cannon", "cannon_al_fe_truth", ".3f"),
    ("cannon_train", "07_cannon", "train_phrase", ""),
    ("cannon_infer", "07_cannon", "infer_ratio", ".1f"),
)

#: Text shown in place of a number that this run does not have.
MISSING = "(not in this run)"


def run_substitutions(run_dir: Path) -> dict[str, str]:
    """MyST substitutions ``{{ name }}`` for the Markdown pages, read from the run's executed chapters.

    A value the run does not have (a chapter not run, a number only defined on simulated data)
    becomes :data:`MISSING`, so the page says so instead of failing.
    """
    cache: dict[str, dict] = {}
    subs = {}
    for name, chapter, key, fmt in HEADLINES:
        if chapter not in cache:
            nb = Path(run_dir) / paths.RUN_NOTEBOOKS / f"{chapter}.ipynb"
            cache[chapter] = glued_values(nb) if nb.exists() else {}
        value = cache[chapter].get(key)
        try:
            subs[name] = MISSING if value is None else format(value, fmt)
        except (TypeError, ValueError):
            subs[name] = str(value)
    subs["profile"] = Path(run_dir).name
    return subs


def run_times_table(run_root: Path | None = None) -> str:
    """Markdown table of the measured run time of every profile run on this machine (from the records)."""
    root = Path(run_root) if run_root else paths.RUNS
    rows = []
    for rdir in sorted(p for p in root.glob("*") if (p / paths.RUN_RECORDS).is_dir()):
        ok = [r for r in _read_records(rdir) if r.get("status") == "ok"]
        if not ok:
            continue
        m = ok[-1].get("machine", {})
        per = ", ".join(f"{r['notebook'][:2]}: {float(r['wall_time_s']) / 60:.1f}" for r in ok)
        mem = [float(r["peak_memory_gib"]) for r in ok if r.get("peak_memory_gib") is not None]
        rows.append(f"| `{rdir.name}` | {len(ok)} | {sum(float(r['wall_time_s']) for r in ok) / 60:.1f} | {per} | "
                    + (f"{max(mem):.1f}" if mem else "—") + " | "
                    f"{m.get('cpu_count', '?')} × {m.get('cpu', '?')}, {m.get('memory_gib', '?')} GiB | "
                    f"{max(r.get('started', '') for r in ok)[:10]} |")
    if not rows:
        return "No run records were found on the machine that built this book.\n"
    head = ("| profile | notebooks | total [min] | per notebook [min] | peak memory [GiB] | machine | last run |\n"
            "|---|---|---|---|---|---|---|\n")
    return head + "\n".join(rows) + "\n"


#: Where ``bench/bench_scale.py`` writes its measurements (read by :func:`scale_section`).
SCALE_RESULTS = paths.REPO / "bench" / "results" / "scale.json"


def scale_section(results: Path = SCALE_RESULTS) -> str:
    """The reproduce page's measured 1-versus-2-worker table and the 100-worker estimate, written
    from ``bench/bench_scale.py``'s results (nothing typed by hand)."""
    if not Path(results).exists():
        return ("No scaling measurements on this machine yet: run `.venv/bin/python bench/bench_scale.py` "
                "and rebuild the book.\n")
    r = json.loads(Path(results).read_text(encoding="utf-8"))
    ws = [str(w) for w in r["workers"]]
    head = "| work | " + " | ".join(f"{w} worker{'s' if w != '1' else ''}" for w in ws) + " | speed-up |\n"
    head += "|---|" + "---|" * (len(ws) + 1) + "\n"
    rows = [
        ("survey rendering [spectra/s]", [r["survey"][w]["spectra_per_s"] for w in ws], r["speedup"]["survey"]),
        (f"CNN inference, {r['inference'][ws[0]]['members']} networks [spectra/s]",
         [r["inference"][w]["spectra_per_s"] for w in ws], r["speedup"]["inference"]),
        ("training, default-profile members per hour", [r["training"][w]["default_members_per_hour"] for w in ws],
         r["speedup"]["training"]),
    ]
    body = "".join(f"| {name} | " + " | ".join(f"{v:,.1f}" for v in vals) + f" | {sp:.2f} |\n"
                   for name, vals, sp in rows)
    e = r["estimate"]
    g = r.get("grid", {})
    text = (f"Measured by `bench/bench_scale.py` on {r['machine']['cpu_count']} cores ({r['machine']['cpu']}), "
            f"{r['date']}; each worker is one process of one thread.\n\n" + head + body + "\n")
    per, n, w = e["per_worker_spectra_per_s"], e["survey_spectra"], e["workers"]
    text += ("**Estimate, not a measurement.** Labelling a survey of "
             f"{n:,.0f} spectra with the {r['inference'][ws[0]]['members']}-network ensemble on {w} such workers: "
             f"{n:,.0f} / ({per:,.1f} spectra/s per worker × {w} workers) = {n / (per * w):,.0f} s "
             f"≈ {e['hours']:.2f} h, if reading the spectra from the shared file system keeps up and the workers "
             "are as fast as these cores.")
    if g.get("stars"):
        text += (f" The synthesis grid costs {g['median_s_per_star']:.1f} s per star on one worker (median of "
                 f"{g['stars']:,} stars in `data/grid/log/synth.log`): {g['stars_per_hour_per_worker']:,.0f} stars "
                 f"per hour per worker, so 2 000 stars on {w} workers would take about "
                 f"{2000 / (g['stars_per_hour_per_worker'] * w) * 60:.0f} minutes (estimate).")
    return text + "\n"


def reference_section(folder: Path | None = None) -> str:
    """The reproduce page's account of the shipped reference ensemble, from its record."""
    from . import reference

    rec = reference.read_record(folder)
    if rec is None or not rec.get("members"):
        return "No reference ensemble is shipped yet: chapter 03 trains its members in every run.\n"
    key, ts, mem = rec["key"], rec["training_set"], rec["members"]
    arch = key["architecture"]
    rows = "".join(f"| {name[-2:]} | {m['seed']} | {m['epochs']} | {m['best_epoch']} | {m['best_val_loss']:.5f} | "
                   f"{60 * m['hours']:.0f} | {'yes' if m['stopped_early'] else '**no**'} |\n"
                   for name, m in sorted(mem.items()))
    mach = rec.get("machine") or {}
    done = (f"all {key['n_models']}" if rec.get("complete") else f"{len(mem)} of the {key['n_models']} planned")
    return (f"The shipped reference holds {done} members, trained on {ts['n_fit']:,} spectra of the default "
            f"survey's cleaned training set ({ts['n_spectra']:,} spectra, content digest "
            f"`{ts['content_digest'][:12]}…`), with {ts['n_val']:,} for early stopping: Adam at learning rate "
            f"{arch['learning_rate']:g}, batches of {arch['batch_size']}, at most {arch['epochs']} epochs, stopping "
            f"after {arch['patience']} epochs without a better validation loss. They took "
            f"{rec['worker_hours']:.1f} worker-hours ({rec['wall_hours']:.1f} h from start to end) on "
            f"{mach.get('cpu', '?')} ({mach.get('cpu_count', '?')} cores, {rec.get('scheduler', '?')} scheduler).\n\n"
            "| member | seed | epochs | best epoch | best validation loss | minutes | stopped early |\n"
            "|---|---|---|---|---|---|---|\n" + rows + "\n")


def stage_book(run_dir: Path, stage: Path, book_src: Path = paths.BOOK) -> Path:
    """Copy the book sources and the run's executed notebooks into ``stage``.

    Raises
    ------
    BookError
        If a chapter of the table of contents has no executed notebook in the run.
    """
    if stage.exists():
        shutil.rmtree(stage)
    shutil.copytree(book_src, stage, ignore=shutil.ignore_patterns("_build", CHAPTER_DIR))
    (stage / CHAPTER_DIR).mkdir()
    missing = []
    for f in chapter_files(book_src / "_toc.yml"):
        if f.startswith(CHAPTER_DIR + "/"):
            src = run_dir / paths.RUN_NOTEBOOKS / (Path(f).name + ".ipynb")
            if not src.exists():
                missing.append(str(src))
            else:
                shutil.copy2(src, stage / CHAPTER_DIR / src.name)
    (stage / "about_run.md").write_text(about_run_page(run_dir), encoding="utf-8")
    (stage / "_run_times.md").write_text(run_times_table(Path(run_dir).parent), encoding="utf-8")
    (stage / "_scale.md").write_text(scale_section(), encoding="utf-8")
    (stage / "_reference.md").write_text(reference_section(), encoding="utf-8")
    cfg_path = stage / "_config.yml"
    with open(cfg_path, encoding="utf-8") as fh:
        cfg = yaml.safe_load(fh)
    cfg.setdefault("parse", {})["myst_substitutions"] = run_substitutions(run_dir)
    # MathJax is served from the book itself (see install_mathjax); the path is relative to _static.
    cfg.setdefault("sphinx", {}).setdefault("config", {})["mathjax_path"] = f"../{MATHJAX_DIR}/{MATHJAX_ENTRY}"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True), encoding="utf-8")
    if missing:
        raise BookError("the book needs executed notebooks that this run does not have: "
                        + ", ".join(missing) + "; run the pipeline for this profile first")
    return stage


#: MathJax, taken from the npm registry at build time so the book renders math without a CDN.
MATHJAX_VERSION = "3.2.2"
MATHJAX_URL = f"https://registry.npmjs.org/mathjax/-/mathjax-{MATHJAX_VERSION}.tgz"
MATHJAX_SHA256 = "1b9c0a1c44df864e915690558e72adb9cc5203360daefd385084ced3b6c64c09"
#: Folder of the HTML build that holds MathJax. Not ``_static``: Jupyter Book 1 would load every
#: .js file found there on every page.
MATHJAX_DIR = "_mathjax"
#: The MathJax component the pages load (TeX and MathML input, HTML-CSS output).
MATHJAX_ENTRY = "tex-mml-chtml.js"


def install_mathjax(html_dir: Path, cache_dir: Path = paths.CACHE) -> Path:
    """Put MathJax into ``html_dir/_mathjax`` from the npm package (downloaded once, SHA-256 checked).

    Only the browser build (``es5/``) is copied, without the other combined components.

    Returns
    -------
    Path
        The entry script the pages load.
    """
    import pooch

    tarball = pooch.retrieve(MATHJAX_URL, known_hash=f"sha256:{MATHJAX_SHA256}",
                             fname=f"mathjax-{MATHJAX_VERSION}.tgz", path=cache_dir, progressbar=False)
    dest = Path(html_dir) / MATHJAX_DIR
    tmp = dest.with_name(dest.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    prefix = "package/es5/"
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar.getmembers():
            if not member.isfile() or not member.name.startswith(prefix):
                continue
            rel = member.name[len(prefix):]
            if "/" not in rel and rel != MATHJAX_ENTRY:
                continue  # other combined components: not needed
            if rel.startswith("output/svg"):
                continue
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    return dest / MATHJAX_ENTRY


def check_site(html_dir: Path, toc_path: Path = paths.BOOK / "_toc.yml") -> int:
    """Check that a built site is complete before it is published; return its number of pages.

    Raises
    ------
    BookError
        If a page of the table of contents is missing or empty, or the site has fewer HTML pages
        than the table of contents names (an empty or broken build must not be published).
    """
    html_dir = Path(html_dir)
    files = chapter_files(toc_path)
    problems = []
    for f in files:
        page = html_dir / f"{f}.html"
        if not page.exists():
            problems.append(f"{page} is missing")
        elif page.stat().st_size < 2000:
            problems.append(f"{page} is nearly empty ({page.stat().st_size} bytes)")
    if not (html_dir / MATHJAX_DIR / MATHJAX_ENTRY).exists():
        problems.append(f"{html_dir / MATHJAX_DIR / MATHJAX_ENTRY} is missing (math would not render)")
    n_pages = sum(1 for _ in html_dir.rglob("*.html")) if html_dir.is_dir() else 0
    if n_pages < len(files):
        problems.append(f"{html_dir} has {n_pages} HTML pages, fewer than the {len(files)} of the table "
                        "of contents")
    if problems:
        raise BookError("the site is not complete, do not publish it: " + "; ".join(problems))
    return n_pages


def prepare_launch(run_dir: Path, notebooks_dir: Path = paths.NOTEBOOKS) -> list[Path]:
    """Make the repository's notebooks runnable in place, for Binder or Colab.

    Each notebook of ``notebooks_dir`` is replaced by its executed copy from ``run_dir`` (the same
    chapter, with the run's parameters injected and its outputs), and ``notebooks_dir/artefacts``
    links to the run's artefacts, so that every chapter opens with its inputs in place. Meant for a
    throw-away copy of the repository (a Binder image); it refuses to run where the notebooks are
    tracked by git with changes that would be lost.
    """
    run_dir, notebooks_dir = Path(run_dir), Path(notebooks_dir)
    src = sorted((run_dir / paths.RUN_NOTEBOOKS).glob("[0-9][0-9]_*.ipynb"))
    src = [p for p in src if not p.stem.endswith((".partial", ".failed"))]
    if not src:
        raise BookError(f"{run_dir / paths.RUN_NOTEBOOKS} has no executed notebooks: run the pipeline first "
                        "(python -m helpers.pipeline --profile quick)")
    try:
        changed = subprocess.run(["git", "status", "--porcelain", "--", "."], cwd=notebooks_dir,
                                 capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        changed = None
    if changed is not None and changed.returncode == 0:
        edited = [ln[3:] for ln in changed.stdout.splitlines()
                  if ln[3:].endswith(".ipynb") and not ln.startswith("??")]
        if edited:
            raise BookError("these notebooks have changes that replacing them would lose: " + ", ".join(edited)
                            + "; commit or stash them first")
    out = []
    for p in src:
        target = notebooks_dir / p.name
        with atomic_path(target) as tmp:
            shutil.copy2(p, tmp)
        out.append(target)
    link = notebooks_dir / paths.RUN_ARTEFACTS
    if link.is_symlink():
        link.unlink()
    if link.exists():
        raise BookError(f"{link} exists and is not a link: move it away first")
    link.symlink_to((run_dir / paths.RUN_ARTEFACTS).resolve(), target_is_directory=True)
    return out


def build_book(profile: str, out: Path | None = None, strict: bool = False,
               run_root: Path | None = None) -> Path:
    """Stage and build the HTML book of ``profile``; return the path of ``index.html``."""
    run_dir = paths.run_dir(profile, run_root)
    stage = stage_book(run_dir, run_dir / "book_src")
    out = Path(out) if out else paths.BOOK
    exe = Path(sys.executable).parent / "jupyter-book"
    if not exe.exists():
        raise BookError(f"{exe} not found: install the book requirements (make book does)")
    cmd = [str(exe), "build", str(stage), "--path-output", str(out), "--builder", "html", "--all"]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-40:])
        raise BookError(f"jupyter-book build failed (exit {proc.returncode}):\n{tail}")
    index = out / "_build" / "html" / "index.html"
    if not index.exists():
        raise BookError(f"the build finished but {index} is missing")
    install_mathjax(index.parent)
    return index


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m helpers.book", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="default")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: book/)")
    ap.add_argument("--strict", action="store_true", help="warnings are errors (as in the tests)")
    ap.add_argument("--run-root", type=Path, default=None)
    ap.add_argument("--check-site", type=Path, default=None, metavar="HTML_DIR",
                    help="only check that a built site is complete (before publishing it)")
    ap.add_argument("--prepare-launch", action="store_true",
                    help="only replace notebooks/ by the executed chapters of the profile's run and link "
                         "its artefacts (for Binder or Colab; never in a working copy you edit)")
    args = ap.parse_args(argv)
    try:
        if args.check_site:
            n = check_site(args.check_site)
            print(f"{args.check_site}: {n} HTML pages, every page of the table of contents present")
            return 0
        if args.prepare_launch:
            done = prepare_launch(paths.run_dir(args.profile, args.run_root))
            print(f"{len(done)} notebooks replaced by their executed copies; artefacts linked")
            return 0
        index = build_book(args.profile, args.out, args.strict, args.run_root)
    except BookError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"The book is at {index.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
