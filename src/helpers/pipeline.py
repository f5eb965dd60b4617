"""Run the numbered notebooks in order with papermill, for one parameter profile.

Usage (see ``python -m helpers.pipeline --help``)::

    python -m helpers.pipeline --profile quick
    python -m helpers.pipeline --profile default --only 01_prepare_data -p 01_prepare_data.n_field=500
    python -m helpers.pipeline --profile default -p scheduler=synchronous
    python -m helpers.pipeline --profile default --from 02 --force

What it guarantees
------------------
* Notebooks ``notebooks/NN_*.ipynb`` run in number order into ``runs/<profile>/``:
  executed notebooks in ``notebooks/``, artefacts in ``artefacts/``, and one
  run record per notebook in ``records/``.
* Parameters are the notebook's defaults, overridden by the profile file
  ``params/<profile>.yaml`` and then by ``-p notebook.name=value``. An unknown
  name or a value of the wrong type is refused before anything runs.
* Parameters whose names start with ``in_`` or ``out_`` are paths, relative to
  the run folder, which is the notebook's working directory.
* A notebook whose content, parameters, input artefacts (by content) and the
  helper modules it uses (its imports, transitively: :func:`code_digests`) are
  unchanged since its last successful run is skipped. A later notebook re-runs
  only if something it reads changed in content; the log (and ``--dry-run``)
  says what changed. ``scheduler`` and ``n_workers`` say where the work runs,
  not what it computes, and are left out.
* A notebook that re-runs (an edited figure, say) does not redo its expensive steps: they go
  through the step store ``runs/<profile>/steps/<notebook>/`` (:mod:`helpers.steps`), keyed by
  what decides their result (parameters, input content, the code that computes them), so only
  the figures and text are made again. ``--force`` re-executes notebooks and still reuses stored
  steps; delete a chapter's folder under ``steps/`` to recompute them.
* The first failure stops the run with the notebook, the cell and the error;
  the partly executed notebook is kept as ``NN_name.failed.ipynb``. Executed
  notebooks and records are written under temporary names and renamed on
  success; the notebooks write their artefacts the same way
  (:func:`helpers.fileio.atomic_path`).
* A wall-clock limit per notebook stops a notebook that runs too long and
  names it.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import datetime as _dt
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import yaml

from . import parallel, paths
from .records import git_commit, imported_helpers, machine_info, module_digests, package_versions
from .fileio import atomic_path, sha256_file, write_json

__all__ = [
    "PipelineError",
    "ParameterError",
    "NotebookFailed",
    "Plan",
    "discover_notebooks",
    "notebook_parameters",
    "load_profile",
    "resolve_parameters",
    "run_pipeline",
    "main",
]

PATH_PREFIXES = ("in_", "out_")


class PipelineError(RuntimeError):
    """Any refusal or failure of the runner, with a message meant for the user."""


class ParameterError(PipelineError):
    """An unknown parameter, or a value of the wrong type."""


class NotebookFailed(PipelineError):
    """A notebook raised an error, or ran past its wall-clock limit."""

    def __init__(self, message: str, notebook: str, cell: int | None = None,
                 kept: Path | None = None):
        super().__init__(message)
        self.notebook = notebook
        self.cell = cell
        self.kept = kept


# --------------------------------------------------------------------------- discovery
def discover_notebooks(folder: Path = paths.NOTEBOOKS) -> list[Path]:
    """Return the pipeline notebooks ``NN_*.ipynb`` of ``folder`` in run order."""
    found = sorted(p for p in Path(folder).glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise PipelineError(f"no notebooks named NN_*.ipynb in {folder}")
    return found


def notebook_parameters(nb_path: Path) -> dict[str, dict]:
    """Return the parameters cell's names with their defaults and types.

    Returns
    -------
    dict
        ``{name: {"default": value, "type": type_name, "comment": help}}`` in cell order, where
        ``type_name`` is one of ``bool, int, float, str, list, dict, None`` and ``help`` is the
        comment that ends the assignment.

    Raises
    ------
    PipelineError
        If the notebook does not have exactly one cell tagged ``parameters``,
        or a default is not a plain literal.
    """
    import ast

    nb = nbformat.read(nb_path, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise PipelineError(
            f"{nb_path.name} has {len(cells)} cells tagged 'parameters'; it needs exactly one"
        )
    import io
    import tokenize

    params: dict[str, dict] = {}
    tree = ast.parse(cells[0].source)
    comments = {}  # line number -> the comment that ends it (the parameter's help text)
    try:
        for tok in tokenize.generate_tokens(io.StringIO(cells[0].source).readline):
            if tok.type == tokenize.COMMENT:
                comments[tok.start[0]] = tok.string.lstrip("#").strip()
    except (tokenize.TokenError, IndentationError):
        pass
    for node in tree.body:
        if isinstance(node, ast.AnnAssign):
            targets, value = [node.target], node.value
        elif isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        else:
            continue
        for target in targets:
            if not isinstance(target, ast.Name):
                continue
            try:
                default = ast.literal_eval(value)
            except ValueError as exc:
                raise PipelineError(
                    f"{nb_path.name}: the default of parameter '{target.id}' is not a literal"
                ) from exc
            params[target.id] = {"default": default, "type": _type_name(default),
                                 "comment": comments.get(node.end_lineno, comments.get(node.lineno, ""))}
    return params


def _type_name(value) -> str:
    if value is None:
        return "None"
    for t in (bool, int, float, str, list, dict):
        if isinstance(value, t):
            return t.__name__
    return type(value).__name__


def _check_type(nb: str, name: str, value, expected: str) -> None:
    ok = {
        "None": True,
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "str": isinstance(value, str),
        "list": isinstance(value, list),
        "dict": isinstance(value, dict),
    }.get(expected, True)
    if not ok:
        raise ParameterError(
            f"parameter '{name}' of {nb} must be {expected}, got {value!r} "
            f"({_type_name(value)})"
        )


# --------------------------------------------------------------------------- profiles
def load_profile(profile: str, params_dir: Path = paths.PARAMS, _seen: tuple = ()) -> dict:
    """Read ``params/<profile>.yaml`` (``yaml.safe_load``) and check its shape.

    A profile may start from another (``extends: default``): it takes that profile's description,
    time limit, shared and per-notebook values, and overrides any of them.
    """
    if profile in _seen:
        raise PipelineError(f"profiles extend each other in a circle: {' -> '.join((*_seen, profile))}")
    path = Path(params_dir) / f"{profile}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in Path(params_dir).glob("*.yaml"))
        raise PipelineError(f"no profile '{profile}' ({path} is missing); known profiles: {known}")
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise PipelineError(f"{path} must hold a mapping")
    unknown = set(data) - {"description", "timeout_s", "notebooks", "shared", "extends"}
    if unknown:
        raise PipelineError(f"{path}: unknown top-level keys {sorted(unknown)} "
                            "(allowed: description, extends, timeout_s, shared, notebooks)")
    if data.get("extends"):
        base = load_profile(str(data["extends"]), params_dir, (*_seen, profile))
        own_nbs = data.get("notebooks") or {}
        if not isinstance(own_nbs, dict):
            raise PipelineError(f"{path}: 'notebooks' must map notebook names to parameters")
        merged = {k: dict(v) for k, v in base["notebooks"].items()}
        for k, v in own_nbs.items():
            merged.setdefault(k, {}).update(v or {})
        data = {"description": data.get("description", base.get("description")),
                "timeout_s": data.get("timeout_s", base["timeout_s"]),
                "shared": {**base["shared"], **(data.get("shared") or {})},
                "notebooks": merged, "extends": data["extends"]}
    if not isinstance(data.get("shared") or {}, dict):
        raise PipelineError(f"{path}: 'shared' must map parameter names to values")
    data["shared"] = data.get("shared") or {}
    data.setdefault("notebooks", {})
    data.setdefault("timeout_s", 3600)
    return data


#: Key of :func:`parse_overrides` for parameters given without a notebook (``-p scheduler=...``).
SHARED = "*"

#: Parameters that say where the work runs, not what it computes: left out of the fingerprints, so
#: changing them re-runs nothing (the results do not depend on them; tests/test_parallel.py).
PLACEMENT_PARAMETERS = ("scheduler", "n_workers")


def parse_overrides(items: list[str]) -> dict[str, dict]:
    """Parse ``-p notebook.name=value`` items (values read as YAML scalars); ``-p name=value``
    without a notebook sets the parameter in every notebook that has it (key :data:`SHARED`)."""
    out: dict[str, dict] = {}
    for item in items or []:
        if "=" not in item or not item.split("=", 1)[0]:
            raise ParameterError(
                f"cannot read override '{item}': write it as NOTEBOOK.NAME=VALUE, "
                "e.g. 03_train_ensemble.n_models=4, or NAME=VALUE for every notebook that has it"
            )
        key, raw = item.split("=", 1)
        nb, name = key.split(".", 1) if "." in key else (SHARED, key)
        if raw.startswith(("tcp://", "tls://", "ucx://", "inproc://")):
            value = raw  # an address is text, not YAML
        else:
            value = yaml.safe_load(raw) if raw != "" else ""
        out.setdefault(nb, {})[name] = value
    return out


def _match_notebook(key: str, stems: list[str]) -> str:
    hits = [s for s in stems if s == key or s.split("_", 1)[0] == key]
    if len(hits) != 1:
        raise ParameterError(f"'{key}' names no single notebook; notebooks are {stems}")
    return hits[0]


def resolve_parameters(notebooks: list[Path], profile: dict,
                       overrides: dict[str, dict]) -> dict[str, dict]:
    """Merge defaults, the profile and the overrides; refuse unknown names and bad types.

    Returns
    -------
    dict
        ``{notebook_stem: {name: value}}`` for every notebook, complete.
    """
    stems = [p.stem for p in notebooks]
    specs = {nb.stem: notebook_parameters(nb) for nb in notebooks}
    overrides = dict(overrides)

    def shared_layer(source, shared):
        fixed = {}
        for name, value in shared.items():
            users = [s for s in stems if name in specs[s]]
            if not users:
                raise ParameterError(f"no notebook has a parameter '{name}' (from the {source} parameters)")
            for s in users:
                fixed.setdefault(s, {})[name] = value
        return source, fixed

    def notebook_layer(source, mapping):
        fixed = {}
        for key, values in mapping.items():
            if not isinstance(values, dict):
                raise ParameterError(f"{source} entry '{key}' must map parameter names to values")
            fixed[_match_notebook(str(key), stems)] = values
        return source, fixed

    # later layers win: the profile's shared values, its per-notebook ones, then the overrides
    layers = [shared_layer("profile's shared", profile.get("shared") or {}),
              notebook_layer("profile", profile.get("notebooks") or {}),
              shared_layer("override", overrides.pop(SHARED, {})),
              notebook_layer("override", overrides)]
    resolved = {}
    for nb in notebooks:
        spec = specs[nb.stem]
        values = {k: v["default"] for k, v in spec.items()}
        for source, layer in layers:
            for name, value in (layer.get(nb.stem) or {}).items():
                if name not in spec:
                    raise ParameterError(
                        f"unknown parameter '{name}' for {nb.stem} (from the {source}); "
                        f"its parameters are: {', '.join(spec)}"
                    )
                _check_type(nb.stem, name, value, spec[name]["type"])
                if name == "scheduler":
                    try:
                        parallel.describe(value)
                    except ValueError as exc:
                        raise ParameterError(f"{nb.stem}.scheduler (from the {source}): {exc}") from None
                if spec[name]["type"] == "float" and isinstance(value, int):
                    value = float(value)
                values[name] = value
        resolved[nb.stem] = values
    return resolved


# --------------------------------------------------------------------------- fingerprints
def _source_digest(nb_path: Path) -> str:
    nb = nbformat.read(nb_path, as_version=4)
    h = hashlib.sha256()
    for cell in nb.cells:
        h.update(cell.cell_type.encode())
        h.update(cell.source.encode())
        h.update(json.dumps(sorted(cell.get("metadata", {}).get("tags", []))).encode())
    return h.hexdigest()


def helpers_digest() -> str:
    """Digest of the whole helper package's source (recorded in run records; the fingerprints use
    :func:`code_digests`, the modules each notebook actually uses)."""
    h = hashlib.sha256()
    for p in sorted(paths.PACKAGE.rglob("*")):
        if p.is_file() and p.suffix in {".py", ".c", ".h", ".csv", ".json"} and "__pycache__" not in p.parts:
            h.update(str(p.relative_to(paths.PACKAGE)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def code_digests(nb_path: Path, package: Path = paths.PACKAGE) -> dict[str, str]:
    """SHA-256 of every helper module a notebook uses, transitively (its imports, their imports,
    function-level imports included), plus the package's data files; ``{file: sha256}``.

    A change to a module no notebook cell reaches (say a plotting function only chapter 05 uses)
    re-runs only the notebooks that reach it (:func:`helpers.records.module_digests`).
    """
    nb = nbformat.read(nb_path, as_version=4)
    todo = set()
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        src = "\n".join(l for l in cell.source.splitlines() if not l.lstrip().startswith(("%", "!")))
        try:
            todo |= imported_helpers(ast.parse(src))
        except SyntaxError:
            continue
    return module_digests(todo, package=package)


def _content_digest(path: Path) -> str:
    """What a notebook reads from a file (:func:`helpers.steps.file_digest`)."""
    from .steps import file_digest

    return file_digest(path)


class _DigestCache:
    """SHA-256 of files, reusing the digests recorded for unchanged files."""

    def __init__(self, records: list[dict]):
        self.known = {}
        for rec in records:
            for path, info in (rec.get("outputs") or {}).items():
                self.known[path] = info

    def digest(self, path: Path) -> dict:
        st = path.stat()
        info = self.known.get(str(path))
        if info and info["size"] == st.st_size and info["mtime_ns"] == st.st_mtime_ns:
            return info
        info = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": _content_digest(path)}
        self.known[str(path)] = info
        return info


def _path_params(values: dict, prefix: str, run_dir: Path) -> dict[str, Path]:
    out = {}
    for name, value in values.items():
        if name.startswith(prefix) and isinstance(value, str) and value:
            p = Path(value)
            out[name] = p if p.is_absolute() else (run_dir / p).resolve()
    return out


# --------------------------------------------------------------------------- records
def read_record(run_dir: Path, stem: str) -> dict | None:
    """Return the run record of notebook ``stem`` in ``run_dir``, or None."""
    path = run_dir / paths.RUN_RECORDS / f"{stem}.json"
    if not path.exists():
        return None
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


# --------------------------------------------------------------------------- execution
@dataclass
class Plan:
    """What the runner will do for one notebook."""

    notebook: Path
    parameters: dict
    fingerprint: str | None = None
    action: str = "run"  # run | skip
    reason: str = ""
    inputs: dict = field(default_factory=dict)
    parts: dict = field(default_factory=dict)  # what the fingerprint is made of


def _failure_from_notebook(nb_path: Path) -> tuple[int | None, str]:
    try:
        nb = nbformat.read(nb_path, as_version=4)
    except Exception:  # the notebook may be unreadable if the kernel died mid-write
        return None, "the executed notebook could not be read"
    code_index = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if "injected-parameters" not in cell.get("metadata", {}).get("tags", []):
            code_index += 1  # numbered as in the source notebook
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                first = next((ln for ln in cell.source.splitlines() if ln.strip()), "")
                return code_index, (f"{out.get('ename')}: {out.get('evalue')} "
                                    f"(cell starts: {first[:80]!r})")
    return None, "no error output was found in the notebook"


class _PeakMemory:
    """The largest total resident memory of a process and all its descendants (the kernel, its Dask
    workers), sampled twice a second in a thread while the notebook runs [bytes]."""

    def __init__(self, pid: int, every_s: float = 0.5):

        self.pid, self.every_s, self.peak = pid, every_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self):
        try:
            import psutil
        except ImportError:  # pragma: no cover - installed with distributed
            return
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._stop.is_set():
            total = 0
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                break
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(self.every_s)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=5)
        return self.peak


def _execute(nb: Path, out_partial: Path, parameters: dict, run_dir: Path,
             timeout_s: float, log) -> dict:
    """Execute one notebook with papermill in a child process, with a wall-clock limit; returns
    ``{"peak_memory_gib": ...}`` (the process tree's largest total resident memory)."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False, encoding="utf-8") as fh:
        yaml.safe_dump(parameters, fh)
        params_file = fh.name
    cmd = [sys.executable, "-m", "papermill", str(nb), str(out_partial), "-f", params_file,
           "--cwd", str(run_dir), "--no-progress-bar", "--log-level", "WARNING"]
    env = dict(os.environ)
    env["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"  # figures as PNG in the notebook
    env["PYTHONHASHSEED"] = "0"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ log would clutter the pages
    fd, progress_file = tempfile.mkstemp(prefix=f"{nb.stem}-progress-", suffix=".txt")
    os.close(fd)
    env[parallel.PROGRESS_ENV] = progress_file  # progress lines land here, relayed to the terminal below
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)
    memory = _PeakMemory(proc.pid)
    lines: list[str] = []
    finished = threading.Event()

    def collect():  # papermill's own output, kept for the error message
        for line in proc.stdout:
            lines.append(line)

    def relay():  # the progress file, as it grows
        pos = 0
        while True:
            done = finished.is_set()
            try:
                with open(progress_file, encoding="utf-8") as fh:
                    fh.seek(pos)
                    chunk = fh.read()
            except OSError:
                chunk = ""
            if chunk:
                complete, _, _ = chunk.rpartition("\n")
                if complete:
                    pos += len((complete + "\n").encode("utf-8"))
                    for line in complete.splitlines():
                        log(f"  {nb.stem} {line.rstrip()}")
            if done:
                return
            finished.wait(0.5)

    reader = threading.Thread(target=collect, daemon=True)
    relayer = threading.Thread(target=relay, daemon=True)
    reader.start()
    relayer.start()
    try:
        proc.wait(timeout=timeout_s)
        reader.join()
        output = "".join(lines)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise NotebookFailed(
            f"{nb.stem} ran past its wall-clock limit of {timeout_s:g} s and was stopped; "
            "raise timeout_s in the profile or pass --timeout",
            nb.stem,
        )
    finally:
        os.unlink(params_file)
        peak = memory.stop()
        finished.set()
        relayer.join(timeout=5)
        with contextlib.suppress(OSError):
            os.unlink(progress_file)
    if proc.returncode != 0:
        cell, error = _failure_from_notebook(out_partial) if out_partial.exists() else (None, "")
        tail = "\n".join(output.strip().splitlines()[-15:])
        where = f"code cell {cell}" if cell else "an unknown cell"
        raise NotebookFailed(
            f"{nb.stem} failed in {where}: {error or 'papermill exited with status ' + str(proc.returncode)}"
            + (f"\n--- papermill output (last lines) ---\n{tail}" if not cell else ""),
            nb.stem, cell,
        )
    return {"peak_memory_gib": round(peak / 1024**3, 2)}


def run_pipeline(profile: str, *, only: str | None = None, start: str | None = None,
                 stop: str | None = None, overrides: list[str] | None = None, force: bool = False,
                 timeout_s: float | None = None, run_root: Path | None = None,
                 notebooks_dir: Path = paths.NOTEBOOKS, params_dir: Path = paths.PARAMS,
                 dry_run: bool = False, log=print) -> list[Plan]:
    """Run the pipeline for ``profile``; see the module docstring for the guarantees.

    Parameters
    ----------
    profile : str
        Name of ``params/<profile>.yaml``.
    only, start, stop : str, optional
        Run just this notebook, start from it, or stop after it (full stem or its number).
    overrides : list of str
        ``NOTEBOOK.NAME=VALUE`` items.
    force : bool
        Run even notebooks whose inputs are unchanged.
    timeout_s : float, optional
        Wall-clock limit per notebook in seconds (default: the profile's ``timeout_s``).
    run_root : Path, optional
        Folder holding the run folders (default ``runs/``).

    Returns
    -------
    list of Plan
        One entry per selected notebook, with ``action`` ``run`` or ``skip``.
    """
    notebooks = discover_notebooks(notebooks_dir)
    prof = load_profile(profile, params_dir)
    resolved = resolve_parameters(notebooks, prof, parse_overrides(overrides or []))
    stems = [p.stem for p in notebooks]
    if only and (start or stop):
        raise PipelineError("use either --only or --from/--to, not both")
    selected = notebooks
    if only:
        key = _match_notebook(only, stems)
        selected = [p for p in notebooks if p.stem == key]
    else:
        lo = stems.index(_match_notebook(start, stems)) if start else 0
        hi = stems.index(_match_notebook(stop, stems)) + 1 if stop else len(stems)
        selected = notebooks[lo:hi]

    run_dir = paths.run_dir(profile, run_root).resolve()
    for sub in (paths.RUN_NOTEBOOKS, paths.RUN_RECORDS, paths.RUN_ARTEFACTS):
        (run_dir / sub).mkdir(parents=True, exist_ok=True)
    records = [r for s in stems if (r := read_record(run_dir, s))]
    cache = _DigestCache(records)
    limit = float(timeout_s if timeout_s is not None else prof["timeout_s"])

    plans: list[Plan] = []
    would_run: dict[Path, str] = {}  # dry run: outputs of the notebooks that would run, and whose they are
    for nb in selected:
        values = resolved[nb.stem]
        plan = Plan(nb, values)
        plans.append(plan)
        inputs = _path_params(values, "in_", run_dir)
        missing = [f"{k} = {p}" for k, p in inputs.items() if not p.exists()]
        if missing and not (dry_run and would_run):
            raise PipelineError(
                f"{nb.stem} cannot run: input artefacts are missing ({'; '.join(missing)}). "
                "Run the earlier notebooks first (drop --only/--from) or fix the path."
            )
        # inputs are digested now, after the notebooks before this one have run: a notebook
        # re-runs when something it reads changed in content, not because an earlier one ran
        if not missing:
            plan.inputs = {k: cache.digest(p)["sha256"] for k, p in inputs.items()}
        parts = {"notebook": _source_digest(nb), "inputs": plan.inputs,
                 "parameters": {k: v for k, v in values.items() if k not in PLACEMENT_PARAMETERS},
                 "code": code_digests(nb)}
        plan.parts = parts
        plan.fingerprint = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
        previous = read_record(run_dir, nb.stem)
        outputs = _path_params(values, "out_", run_dir)
        executed = run_dir / paths.RUN_NOTEBOOKS / nb.name
        if force:
            plan.reason = "forced"
        elif not previous or previous.get("status") != "ok":
            plan.reason = "no successful run recorded"
        elif previous.get("fingerprint") != plan.fingerprint:
            plan.reason = _what_changed(previous.get("fingerprint_parts") or {}, parts)
        elif not executed.exists() or not all(p.exists() for p in outputs.values()):
            plan.reason = "an output is missing"
        elif dry_run and (upstream := sorted({would_run[p] for p in inputs.values() if p in would_run})):
            plan.reason = (f"runs if what it reads from {', '.join(upstream)} changes in content "
                           "(known only once they have run)")
        else:
            plan.action, plan.reason = "skip", "unchanged since the last successful run"
        log(f"[{plan.action:4s}] {nb.stem}: {plan.reason}")
        if plan.action == "run":
            would_run.update({p: nb.stem for p in outputs.values()})
            if not dry_run:
                _run_one(plan, run_dir, profile, limit, cache, log)
    return plans


def _what_changed(before: dict, now: dict) -> str:
    """Which parts of a fingerprint changed, in words (for the log and ``--dry-run``)."""
    if not before:
        return "notebook, parameters, inputs or helper code changed (the last run recorded no details)"
    said = []
    if before.get("notebook") != now["notebook"]:
        said.append("the notebook's cells changed")
    bp, np_ = before.get("parameters") or {}, now["parameters"]
    changed = sorted(k for k in set(bp) | set(np_) if bp.get(k) != np_.get(k))
    if changed:
        said.append("parameters changed: " + ", ".join(changed))
    bi, ni = before.get("inputs") or {}, now["inputs"] or {}
    changed = sorted(k for k in set(bi) | set(ni) if bi.get(k) != ni.get(k))
    if changed:
        said.append("inputs changed: " + ", ".join(changed))
    bc, nc = before.get("code") or {}, now["code"]
    changed = sorted(k for k in set(bc) | set(nc) if bc.get(k) != nc.get(k))
    if changed:
        shown = ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
        said.append("helper code it uses changed: " + shown)
    return "; ".join(said) or "the fingerprint changed"


def _run_one(plan: Plan, run_dir: Path, profile: str, limit: float, cache: _DigestCache,
             log) -> None:
    nb = plan.notebook
    out_dir = run_dir / paths.RUN_NOTEBOOKS
    final = out_dir / nb.name
    partial = out_dir / f"{nb.stem}.partial.ipynb"
    failed = out_dir / f"{nb.stem}.failed.ipynb"
    for stale in (partial, failed):
        if stale.exists():
            stale.unlink()
    record_path = run_dir / paths.RUN_RECORDS / f"{nb.stem}.json"
    record = {
        "notebook": nb.name, "profile": profile, "parameters": plan.parameters,
        "seed": plan.parameters.get("seed"), "git_commit": git_commit(),
        "packages": package_versions(), "machine": machine_info(),
        "fingerprint": plan.fingerprint, "fingerprint_parts": plan.parts, "inputs": plan.inputs,
        "helpers_digest": helpers_digest(),
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    log(f"running {nb.stem} (limit {limit:g} s) ...")
    # a run killed from here on leaves this record: the next run sees no successful run and
    # runs the notebook again, whatever it had written before it was stopped
    write_json(record_path, {**record, "status": "running"})
    t0 = time.perf_counter()
    try:
        usage = _execute(nb, partial, plan.parameters, run_dir, limit, log)
    except NotebookFailed as exc:
        record.update(status="failed", error=str(exc), wall_time_s=round(time.perf_counter() - t0, 2))
        if partial.exists():
            os.replace(partial, failed)
            exc.kept = failed
            exc.args = (f"{exc.args[0]}\nthe partly executed notebook is kept at {failed}",)
        write_json(record_path, record)
        raise
    wall = time.perf_counter() - t0
    outputs = _path_params(plan.parameters, "out_", run_dir)
    missing = [f"{k} = {p}" for k, p in outputs.items() if not p.exists()]
    if missing:
        os.replace(partial, failed)
        record.update(status="failed", error=f"outputs not written: {missing}", wall_time_s=round(wall, 2))
        write_json(record_path, record)
        raise NotebookFailed(f"{nb.stem} finished but did not write {'; '.join(missing)}",
                             nb.stem, kept=failed)
    _collapse_injected(partial)
    os.replace(partial, final)
    record.update(
        status="ok", wall_time_s=round(wall, 2), **usage,
        finished=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        outputs={str(p): cache.digest(p) for p in outputs.values()},
    )
    write_json(record_path, record)
    log(f"finished {nb.stem} in {wall:.1f} s")


#: First line of the injected-parameters cell as the book shows it.
RUN_PARAMETERS_HEADER = "# Parameters of this run (the notebook's defaults are in the collapsed cell above)"


def _collapse_injected(nb_path: Path) -> None:
    """Make the book show this run's parameters: papermill's injected cell stays open under a
    header that says so, and the notebook's own defaults cell is collapsed."""
    nb = nbformat.read(nb_path, as_version=4)
    changed = False
    for cell in nb.cells:
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if "parameters" in tags and "hide-cell" not in tags:
            tags.append("hide-cell")
            changed = True
        if "injected-parameters" in tags:
            if "hide-cell" in tags:
                tags.remove("hide-cell")
                changed = True
            lines = cell.source.splitlines()
            if lines and lines[0].strip() == "# Parameters":
                cell.source = "\n".join([RUN_PARAMETERS_HEADER] + lines[1:])
                changed = True
    if changed:
        with atomic_path(nb_path) as tmp:
            nbformat.write(nb, tmp)


# --------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m helpers.pipeline",
        description="Execute the numbered notebooks in order with papermill for one profile "
                    "(params/<profile>.yaml) into runs/<profile>/.",
    )
    p.add_argument("--profile", default="default", help="profile name (default: %(default)s)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--only", metavar="NOTEBOOK", help="run just this notebook (stem or number)")
    g.add_argument("--from", dest="start", metavar="NOTEBOOK",
                   help="start from this notebook and run the rest")
    p.add_argument("--to", dest="stop", metavar="NOTEBOOK", default=None,
                   help="stop after this notebook (stem or number)")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NB.NAME=VALUE",
                   help="override a parameter, e.g. -p 03_train_ensemble.n_models=4 (repeatable)")
    p.add_argument("--force", action="store_true", help="run even if nothing changed")
    p.add_argument("--timeout", type=float, default=None,
                   help="wall-clock limit per notebook in seconds (default: the profile's)")
    p.add_argument("--run-root", type=Path, default=None,
                   help="folder holding the run folders (default: runs/)")
    p.add_argument("--notebooks-dir", type=Path, default=paths.NOTEBOOKS, help=argparse.SUPPRESS)
    p.add_argument("--params-dir", type=Path, default=paths.PARAMS, help=argparse.SUPPRESS)
    p.add_argument("--dry-run", action="store_true", help="print what would run, run nothing")
    p.add_argument("--list-parameters", action="store_true",
                   help="print every notebook's parameters with the profile's values and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit status."""
    args = build_parser().parse_args(argv)
    try:
        if args.list_parameters:
            nbs = discover_notebooks(args.notebooks_dir)
            prof = load_profile(args.profile, args.params_dir)
            resolved = resolve_parameters(nbs, prof, parse_overrides(args.param))
            specs = {nb.stem: notebook_parameters(nb) for nb in nbs}
            try:
                for stem, values in resolved.items():
                    print(stem)
                    for k, v in values.items():
                        note = specs[stem][k].get("comment", "")
                        print(f"    {k} = {v!r}" + (f"  # {note}" if note else ""))
                sys.stdout.flush()
            except BrokenPipeError:  # e.g. piped to `head`: stop quietly
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        run_pipeline(args.profile, only=args.only, start=args.start, stop=args.stop, overrides=args.param,
                     force=args.force, timeout_s=args.timeout, run_root=args.run_root,
                     notebooks_dir=args.notebooks_dir, params_dir=args.params_dir,
                     dry_run=args.dry_run)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
