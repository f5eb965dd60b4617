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
import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from . import paths

__all__ = ["chapter_files", "stage_book", "build_book", "main"]


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


def about_run_page(run_dir: Path) -> str:
    """Markdown of the "About this run" page, written from the run records of ``run_dir``.

    One row per notebook (status, wall time, start, commit), the machine, the versions of the
    main packages and every notebook's parameters, all read from ``records/*.json``.
    """
    recs = []
    for p in sorted((Path(run_dir) / paths.RUN_RECORDS).glob("*.json")):
        with open(p, encoding="utf-8") as fh:
            recs.append(json.load(fh))
    name = Path(run_dir).name
    lines = ["# About this run", "",
             f"This book shows the run of profile `{name}` (`params/{name}.yaml`). Everything below is read "
             "from the run records that the pipeline writes beside the artefacts (`runs/<profile>/records/`).",
             ""]
    if not recs:
        return "\n".join(lines + ["No run records were found.", ""])
    total = sum(float(r.get("wall_time_s", 0) or 0) for r in recs)
    lines += ["| notebook | status | wall time [min] | started (UTC) | commit |", "|---|---|---|---|---|"]
    for r in recs:
        lines.append(f"| {r['notebook']} | {r.get('status', '')} | {float(r.get('wall_time_s', 0)) / 60:.1f} | "
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


def stage_book(run_dir: Path, stage: Path, book_src: Path = paths.BOOK) -> Path:
    """Copy the book sources and the run's executed notebooks into ``stage``.

    Raises
    ------
    BookError
        If a chapter of the table of contents has no executed notebook in the run.
    """
    if stage.exists():
        shutil.rmtree(stage)
    shutil.copytree(book_src, stage, ignore=shutil.ignore_patterns("_build", "chapters"))
    (stage / "chapters").mkdir()
    missing = []
    for f in chapter_files(book_src / "_toc.yml"):
        if f.startswith("chapters/"):
            src = run_dir / paths.RUN_NOTEBOOKS / (Path(f).name + ".ipynb")
            if not src.exists():
                missing.append(str(src))
            else:
                shutil.copy2(src, stage / "chapters" / src.name)
    (stage / "about_run.md").write_text(about_run_page(run_dir), encoding="utf-8")
    if missing:
        raise BookError("the book needs executed notebooks that this run does not have: "
                        + ", ".join(missing) + "; run the pipeline for this profile first")
    return stage


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
    return index


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m helpers.book", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="default")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: book/)")
    ap.add_argument("--strict", action="store_true", help="warnings are errors (as in the tests)")
    ap.add_argument("--run-root", type=Path, default=None)
    args = ap.parse_args(argv)
    try:
        index = build_book(args.profile, args.out, args.strict, args.run_root)
    except BookError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"The book is at {index.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
