"""The data manifest (``data_manifest.yaml``): which data sets exist and their checksums.

The manifest declares every data set the pipeline reads or makes. For the
simulated survey it records, per run profile, the generator version, the seed,
a digest of the generator parameters and the SHA-256 of each file produced, so
that a regeneration can be checked for drift. The checksums are written by
``scripts/update_manifest.py``, never by hand.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

from . import paths
from .fileio import sha256_file, write_text

__all__ = ["load_manifest", "parameters_digest", "check_simulated", "record_simulated"]


def load_manifest(path: str | Path | None = None) -> dict:
    """Read the manifest with ``yaml.safe_load``; ``path`` empty or None means the repository's."""
    path = Path(path) if path else paths.MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"data manifest {path} is missing; it ships with the repository")
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict) or "simulated" not in data:
        raise ValueError(f"{path} is not a data manifest (no 'simulated' section)")
    return data


def parameters_digest(parameters: dict) -> str:
    """SHA-256 of a parameter mapping in canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(parameters, sort_keys=True, default=str).encode()).hexdigest()


def check_simulated(manifest: dict, name: str, parameters: dict, files: dict[str, Path],
                    generator_version: str) -> list[dict]:
    """Compare freshly generated files with the manifest entry ``simulated.<name>``.

    Returns
    -------
    list of dict
        One row per file: ``file``, ``status`` (``match``, ``drift``,
        ``not comparable`` or ``not declared``), ``expected``, ``actual``, ``note``.
    """
    entry = (manifest.get("simulated") or {}).get(name)
    rows = []
    for key, path in files.items():
        actual = sha256_file(path)
        row = {"file": key, "actual": actual, "expected": None, "status": "not declared", "note": ""}
        if entry:
            expected = (entry.get("files") or {}).get(key, {}).get("sha256")
            row["expected"] = expected
            if entry.get("parameters_sha256") != parameters_digest(parameters):
                row["status"] = "not comparable"
                row["note"] = "the generator parameters differ from the declared ones"
            elif entry.get("generator_version") != generator_version:
                row["status"] = "not comparable"
                row["note"] = (f"declared for generator {entry.get('generator_version')}, "
                               f"this is {generator_version}")
            elif expected is None:
                row["status"] = "not declared"
            else:
                row["status"] = "match" if expected == actual else "drift"
                if row["status"] == "drift":
                    row["note"] = ("same parameters, different bytes: numerical libraries or "
                                   "processor differ, or the generator changed without a version bump")
        rows.append(row)
    return rows


def record_simulated(name: str, parameters: dict, seed: int, generator: str,
                     generator_version: str, files: dict[str, Path], description: str,
                     path: str | Path | None = None) -> None:
    """Write (or replace) the entry ``simulated.<name>`` with the files' checksums."""
    path = Path(path) if path else paths.MANIFEST
    data = load_manifest(path)
    data["simulated"][name] = {
        "description": description,
        "generator": generator,
        "generator_version": generator_version,
        "seed": seed,
        "parameters_sha256": parameters_digest(parameters),
        "files": {k: {"sha256": sha256_file(p), "size_bytes": Path(p).stat().st_size}
                  for k, p in files.items()},
    }
    header = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("#") or not line.strip():
                header.append(line)
            else:
                break
    body = yaml.safe_dump(data, sort_keys=False, width=100)
    write_text(path, "\n".join(header) + ("\n" if header else "") + body)
