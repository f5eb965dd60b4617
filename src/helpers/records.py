"""Provenance of what the project makes: the git commit, package versions and machine that a run
record, a trained member or a shipped artefact names. The lowest layer: it imports nothing of
``helpers`` but :mod:`helpers.paths`, so any module may use it.
"""
from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from . import paths

__all__ = ["RECORDED_PACKAGES", "git_commit", "package_versions", "machine_info"]

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
