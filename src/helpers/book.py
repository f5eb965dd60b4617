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
