"""Expensive steps, kept apart from the figures that show them.

A chapter re-runs when anything it uses changes, a plotting function included
(:mod:`helpers.pipeline`). Its expensive steps (rendering the survey, the t-SNE map, the
comparison networks, The Cannon) need not: each goes through :func:`cached` or
:func:`cached_file` with a key made of

* the step's name and its parameters (what shapes the result, not where it runs),
* the content of the files it reads (:func:`input_digest`), and
* the code it runs: the helper modules that compute it and everything they import, transitively
  (:func:`helpers.records.module_digests`). Plotting and reporting modules are not among them, so
  an edit of a figure leaves the key unchanged.

A result stored under the same key in the run's step store (a chapter's ``steps_dir``
parameter) is loaded instead of computed, and :class:`StepInfo` says which happened, for the
chapter's text. The store holds, per step and key, ``<name>-<key>.npz`` (the result's arrays,
read without pickle) and ``<name>-<key>.json`` (the key, the rest of the result, when and in how
long it was computed). Both are written atomically, the JSON last, and the JSON names the
checksum of the arrays: a step killed while writing, or a damaged file, is computed again, never
taken for finished. Entries of other keys stay (switching a parameter back reuses them).

For a step whose result is a file the chapter hands on (the survey of chapter 01),
:func:`cached_file` keeps the key and a stamp of that file (size, modification time, SHA-256)
and reuses the file only while the stamp still holds.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .fileio import atomic_path, sha256_file, write_json
from .records import module_digests

__all__ = ["STORE_VERSION", "StepInfo", "StepError", "step_key", "file_digest", "input_digest", "cached", "cached_file"]

#: Version of the store's layout; entries of another version are computed again.
STORE_VERSION = 1


class StepError(ValueError):
    """A step's result cannot be stored (a value that is neither an array nor JSON)."""


@dataclass(frozen=True)
class StepInfo:
    """What happened to one step in this run.

    Attributes
    ----------
    name : str
    reused : bool
        True when the result was loaded from the store.
    seconds : float
        Wall time of the computation [s] (of the earlier run, when reused).
    computed_at : str
        UTC time the result was computed (ISO 8601).
    key : str
        SHA-256 of the step's key (first 12 characters name its files).
    """

    name: str
    reused: bool
    seconds: float
    computed_at: str
    key: str

    def sentence(self) -> str:
        """One sentence for the chapter's text: computed now, or reused and why that is safe."""
        if not self.reused:
            return f"The {self.name} step was computed in this run ({self.seconds:.0f} s)."
        return (f"The {self.name} step was reused from an earlier run of this chapter (computed "
                f"{self.computed_at[:16].replace('T', ' ')} UTC in {self.seconds:.0f} s): its "
                "parameters, its input files and the code that computes it are unchanged.")


def _canonical(obj):
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def step_key(name: str, parameters: dict, inputs: dict[str, str] | None = None,
             modules=()) -> dict:
    """The key of a step.

    Parameters
    ----------
    name : str
        The step's name (``"t-SNE"``).
    parameters : dict
        JSON-able values that shape the result.
    inputs : dict, optional
        ``{label: content digest}`` of the files it reads (:func:`input_digest`).
    modules : iterable of str
        Helper modules (``"cleaning"``) whose functions compute the step; their imports follow.
    """
    return {"version": STORE_VERSION, "name": name, "parameters": _canonical(parameters),
            "inputs": dict(sorted((inputs or {}).items())), "code": module_digests(set(modules))}


def _key_digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def file_digest(path) -> str:
    """What a reader takes from ``path``: for a data set (``.h5``) its content
    (:func:`helpers.dataset.content_digest`: HDF5 containers differ byte by byte between two writes
    of the same data), for a folder the digests of its files, otherwise the bytes."""
    path = Path(path)
    if path.suffix == ".h5" and path.is_file():
        from .dataset import DatasetError, content_digest

        try:
            return "content:" + content_digest(path)
        except (DatasetError, OSError, KeyError, ValueError):
            pass
    if path.is_dir():
        h = hashlib.sha256()
        for p in sorted(path.rglob("*")):
            if p.is_file():
                h.update(str(p.relative_to(path)).encode())
                h.update(sha256_file(p).encode())
        return h.hexdigest()
    return sha256_file(path)


def input_digest(path, store=None) -> str:
    """Digest of what a step reads from ``path``: a data set's content for ``.h5``
    (:func:`helpers.dataset.content_digest`), the bytes otherwise.

    With a ``store`` folder, digests are remembered by the file's size and modification time, so
    an unchanged multi-GB file is not read again.
    """
    path = Path(path).resolve()
    st = path.stat()
    memo_path = Path(store) / "inputs.json" if store is not None else None
    memo = {}
    if memo_path is not None and memo_path.exists():
        try:
            memo = json.loads(memo_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            memo = {}
    seen = memo.get(str(path))
    if seen and seen.get("size") == st.st_size and seen.get("mtime_ns") == st.st_mtime_ns:
        return seen["digest"]
    digest = file_digest(path)
    if memo_path is not None:
        memo[str(path)] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "digest": digest}
        write_json(memo_path, memo)
    return digest


# ---------------------------------------------------------------- results as arrays + JSON
def _split(obj, arrays: dict, where: str):
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise StepError(f"step result {where or '(top)'}: object arrays cannot be stored without pickle")
        arrays[where] = obj
        return {"__array__": where}
    if isinstance(obj, dict):
        if not all(isinstance(k, str) for k in obj):
            raise StepError(f"step result {where or '(top)'}: dictionary keys must be strings")
        # as [key, value] pairs: the JSON file sorts dictionary keys, and a table built from the
        # result must come back with its columns in the same order
        return {"__items__": [[k, _split(v, arrays, f"{where}/{k}")] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [_split(v, arrays, f"{where}/{i}") for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise StepError(f"step result {where or '(top)'}: a {type(obj).__name__} is neither an array nor JSON")


def _join(obj, arrays):
    if isinstance(obj, dict):
        if set(obj) == {"__array__"}:
            return arrays[obj["__array__"]]
        if set(obj) == {"__items__"}:
            return {k: _join(v, arrays) for k, v in obj["__items__"]}
        return {k: _join(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join(v, arrays) for v in obj]
    return obj


def _say(line: str) -> None:
    from .parallel import say

    say(line)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _read_entry(meta_path: Path, key: dict) -> dict | None:
    """The entry's JSON when it belongs to ``key`` and its arrays are intact, else None."""
    if not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        _say(f"step store: {meta_path.name} is unreadable; computing the step again")
        return None
    if meta.get("version") != STORE_VERSION or meta.get("key") != key:
        return None
    return meta


def cached(store, name: str, compute: Callable[[], object], *, parameters: dict,
           inputs: dict[str, str] | None = None, modules=()) -> tuple[object, StepInfo]:
    """Run ``compute()`` or load its stored result.

    Parameters
    ----------
    store : path-like
        The step store (created if missing).
    name : str
        The step's name; also names its files.
    compute : callable
        Returns the result: arrays, numbers, strings, None, and dicts (string keys) and lists of
        them (tuples come back as lists).
    parameters, inputs, modules
        The key (:func:`step_key`).

    Returns
    -------
    result, StepInfo
        The result (freshly computed or loaded, equal either way) and what happened.
    """
    store = Path(store)
    key = step_key(name, parameters, inputs, modules)
    digest = _key_digest(key)
    stem = f"{_slug(name)}-{digest[:12]}"
    meta_path, npz_path = store / f"{stem}.json", store / f"{stem}.npz"
    meta = _read_entry(meta_path, key)
    if meta is not None:
        if npz_path.exists() and sha256_file(npz_path) == meta.get("npz_sha256"):
            with np.load(npz_path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            info = StepInfo(name, True, float(meta["seconds"]), meta["computed_at"], digest)
            _say(f"{name}: reused from the step store ({npz_path.name}, computed in {info.seconds:.0f} s)")
            return _join(meta["result"], arrays), info
        _say(f"{name}: the stored arrays {npz_path.name} are missing or damaged; computing again")
    t0 = time.perf_counter()
    result = compute()
    seconds = time.perf_counter() - t0
    arrays: dict = {}
    skeleton = _split(result, arrays, "")
    with atomic_path(npz_path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    info = StepInfo(name, False, seconds, _now(), digest)
    write_json(meta_path, {"version": STORE_VERSION, "key": key, "result": skeleton,
                           "npz_sha256": sha256_file(npz_path), "seconds": seconds,
                           "computed_at": info.computed_at})
    return _join(skeleton, arrays), info


def cached_file(store, name: str, out_path, compute: Callable[[], dict], *, parameters: dict,
                inputs: dict[str, str] | None = None, modules=()) -> tuple[dict, StepInfo]:
    """Make the file ``out_path`` with ``compute()`` unless it is already there for this key.

    ``compute`` writes ``out_path`` (atomically) and returns a JSON-able dict (how it went).
    The store keeps, per step name, the key, that dict and a stamp of the file (size,
    modification time, SHA-256); the file is reused while the key is the same and the file
    matches its stamp (its SHA-256 is computed again only if size or time changed).

    Returns
    -------
    dict, StepInfo
        ``compute``'s dict (stored, when reused) and what happened.
    """
    store, out = Path(store), Path(out_path)
    key = step_key(name, parameters, inputs, modules)
    digest = _key_digest(key)
    meta_path = store / f"{_slug(name)}.file.json"
    meta = _read_entry(meta_path, key)
    if meta is not None and meta.get("path") == str(out.resolve()) and out.exists():
        st, stamp = out.stat(), meta["stamp"]
        same = st.st_size == stamp["size"] and (st.st_mtime_ns == stamp["mtime_ns"]
                                                or sha256_file(out) == stamp["sha256"])
        if same:
            info = StepInfo(name, True, float(meta["seconds"]), meta["computed_at"], digest)
            _say(f"{name}: reused {out.name} (computed in {info.seconds:.0f} s, unchanged since)")
            return meta["result"], info
        _say(f"{name}: {out.name} changed since it was made; making it again")
    if meta_path.exists():
        os.unlink(meta_path)  # the file is about to be replaced: its old stamp no longer holds
    t0 = time.perf_counter()
    result = compute()
    seconds = time.perf_counter() - t0
    if not out.exists():
        raise StepError(f"step {name!r} did not write {out}")
    st = out.stat()
    info = StepInfo(name, False, seconds, _now(), digest)
    write_json(meta_path, {"version": STORE_VERSION, "key": key, "result": _canonical(result),
                           "path": str(out.resolve()), "seconds": seconds, "computed_at": info.computed_at,
                           "stamp": {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256_file(out)}})
    return _canonical(result), info


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_") or "step"
