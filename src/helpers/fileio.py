"""Atomic file writing and content digests.

Every artefact of the pipeline is written to a temporary name in its final
folder and renamed into place only when it is complete, so that a crash or a
timeout never leaves a half-written file under the real name.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_path", "write_json", "write_text", "write_csv", "sha256_file"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    Parameters
    ----------
    path : path-like
        Final destination. Its parent folder is created if needed.
    overwrite : bool
        If False and ``path`` exists, raise :class:`FileExistsError` before
        anything is written, so nothing computed earlier is replaced.

    Yields
    ------
    pathlib.Path
        Where the caller must write. If the ``with`` block raises, the
        temporary file is removed and ``path`` is left untouched.
    """
    final = Path(path)
    if not overwrite and final.exists():
        raise FileExistsError(
            f"{final} already exists; choose another output path or remove it first"
        )
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"nothing was written to the temporary file for {final}")
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8) and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj, indent: int = 2) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically and return the path."""
    return write_text(path, json.dumps(obj, indent=indent, sort_keys=True, default=str) + "\n")


def write_csv(path: str | os.PathLike, rows: list[dict]) -> Path:
    """Write dict rows as CSV atomically (every key of any row, in order of appearance; a key a
    row lacks is left empty); return the path."""
    import csv
    import io

    if not rows:
        raise ValueError(f"no rows to write to {path}")
    buf = io.StringIO()
    names = list(dict.fromkeys(k for r in rows for k in r))
    w = csv.DictWriter(buf, fieldnames=names, restval="", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return write_text(path, buf.getvalue())


def sha256_file(path: str | os.PathLike, chunk_bytes: int = 1 << 22) -> str:
    """Return the hexadecimal SHA-256 digest of a file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_bytes):
            h.update(chunk)
    return h.hexdigest()
