"""Provenance of what the project makes: the git commit, package versions and machine that a run
record, a trained member or a shipped artefact names. The lowest layer: it imports nothing of
``helpers`` but :mod:`helpers.paths`, so any module may use it. Code is named by the digests of the
helper modules it runs (:func:`module_digests`), found by walking their imports.
"""
from __future__ import annotations

import ast
import hashlib
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from . import paths

__all__ = ["RECORDED_PACKAGES", "git_commit", "package_versions", "machine_info", "imported_helpers",
           "module_closure", "module_digests"]

#: Packages whose versions go into every run record.
RECORDED_PACKAGES = (
    "numpy", "scipy", "astropy", "h5py", "matplotlib", "papermill", "nbformat",
    "pooch", "pyyaml", "jupyter-book", "myst-nb", "keras", "tensorflow", "jax", "torch",
    "scikit-learn", "openTSNE", "dask", "distributed",
)


def git_commit(repo: Path = paths.REPO) -> str:
    """Return ``<sha>`` or ``<sha>-dirty`` of the checkout, or ``unknown``."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                             text=True, check=True, timeout=20).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=repo, capture_output=True, text=True, timeout=20).stdout
        return sha + ("-dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions(names=RECORDED_PACKAGES) -> dict[str, str]:
    """Versions of the installed packages among ``names`` (absent ones left out)."""
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def machine_info() -> dict:
    """Processor, core count and memory of this machine (no host or user names)."""
    mem = None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    mem = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"system": platform.system(), "machine": platform.machine(), "cpu": cpu,
            "cpu_count": os.cpu_count(), "memory_gib": mem}


# --------------------------------------------------------------------------- code
def imported_helpers(tree, current: str | None = None) -> set[str]:
    """Names of the helper modules a parsed source imports (``current``: the module it is in)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "helpers" or a.name.startswith("helpers."):
                    out.add(a.name.split(".")[1] if "." in a.name else "__init__")
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level == 0 and (mod == "helpers" or mod.startswith("helpers.")):
                base = mod.split(".")[1] if "." in mod else None
            elif node.level >= 1 and current is not None:
                base = mod.split(".")[0] if mod else None
            else:
                continue
            if base:
                out.add(base)
            else:  # from helpers import a, b  /  from . import a, b
                out.add("__init__")
                out.update(a.name for a in node.names)
    return out


#: Files besides Python modules that belong to a module's code (the C kernel of ``inference``).
_MODULE_EXTRA = {"inference": ("_convkernel.c", "_conv_body.h")}


def module_closure(names, package: Path = paths.PACKAGE) -> set[str]:
    """The helper modules ``names`` (e.g. ``{"cleaning"}``) and every helper module they import,
    transitively (function-level imports included), plus the package's ``__init__``."""
    todo = set(names) | {"__init__"}
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        f = package / f"{name}.py"
        if name in seen or not f.exists():
            continue
        seen.add(name)
        todo |= imported_helpers(ast.parse(f.read_text(encoding="utf-8")), current=name) - seen
    return seen


def module_digests(names, package: Path = paths.PACKAGE) -> dict[str, str]:
    """SHA-256 of the code that the helper modules ``names`` run: the files of
    :func:`module_closure` (with the C kernel's sources for ``inference``) and the package's data
    files; ``{file relative to the package: sha256}``."""
    seen = module_closure(names, package)
    files = [package / f"{m}.py" for m in seen]
    files += [package / x for m in seen for x in _MODULE_EXTRA.get(m, ())]
    files += [p for p in sorted((package / "data").rglob("*")) if p.is_file()]
    return {str(f.relative_to(package)): _sha256(f) for f in sorted(set(files)) if f.exists()}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
