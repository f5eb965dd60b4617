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

__all__ = ["load_manifest", "parameters_digest", "check_simulated", "record_simulated",
           "ChecksumError", "resolve_data_path", "real_entry", "verify_file", "register_real",
           "verify_real_files", "sha256_of", "record_grid_part", "record_section_info",
           "declare_shipped_file", "verify_shipped_file"]


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
                    generator_version: str, root: str | Path | None = None) -> list[dict]:
    """Compare freshly generated files with the manifest entry ``simulated.<name>``.

    The comparison uses :func:`helpers.dataset.content_digest` (the data, not the HDF5 container,
    whose bytes change with the library version); where the digests differ and the entry declares
    a sketch of the file (:func:`helpers.dataset.content_sketch`), the content is compared at
    :data:`helpers.dataset.SKETCH_TOLERANCE`: processors whose numerical libraries round
    differently make the same data up to the last bits.

    Parameters
    ----------
    root : path-like, optional
        The manifest's folder, against which sketch paths are taken (default: the repository).

    Returns
    -------
    list of dict
        One row per file: ``file``, ``status`` (``match``, ``match at tolerance``, ``drift``,
        ``not comparable`` or ``not declared``), ``expected``, ``actual``, ``note``.
    """
    from .dataset import compare_sketches, content_digest, content_sketch, read_sketch

    entry = (manifest.get("simulated") or {}).get(name)
    rows = []
    for key, path in files.items():
        actual = content_digest(path)
        row = {"file": key, "actual": actual, "expected": None, "status": "not declared", "note": ""}
        if entry:
            declared = (entry.get("files") or {}).get(key, {})
            expected = declared.get("content_sha256")
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
            elif expected == actual:
                row["status"] = "match"
            elif declared.get("sketch"):
                sk_path = Path(root or paths.REPO) / declared["sketch"]
                if not sk_path.exists() or sha256_file(sk_path) != declared.get("sketch_sha256"):
                    row["status"] = "drift"
                    row["note"] = (f"bits differ and the declared sketch {declared['sketch']} is missing or "
                                   "altered: restore it (git checkout) to compare at the stated tolerance")
                else:
                    ok, said, _ = compare_sketches(read_sketch(sk_path), content_sketch(path))
                    row["status"] = "match at tolerance" if ok else "drift"
                    row["note"] = (("bits differ (this processor's numerical libraries round differently); " + said)
                                   if ok else said)
            else:
                row["status"] = "drift"
                row["note"] = ("same parameters, different data: numerical libraries or "
                               "processor differ, or the generator changed without a version bump")
        rows.append(row)
    return rows


def record_simulated(name: str, parameters: dict, seed: int, generator: str,
                     generator_version: str, files: dict[str, Path], description: str,
                     path: str | Path | None = None, sketches: str | Path | None = None) -> None:
    """Write (or replace) the entry ``simulated.<name>`` with the files' content checksums and,
    with ``sketches`` (a folder beside the manifest or below, e.g. ``data/sketches``), a sketch of
    each file for the comparison at a tolerance (``<sketches>/<name>/<file>.npz``, its path taken
    relative to the manifest's folder)."""
    from .dataset import content_digest, content_sketch, write_sketch

    path = Path(path) if path else paths.MANIFEST
    data = load_manifest(path)
    out = {}
    for k, p in files.items():
        out[k] = {"content_sha256": content_digest(p)}
        if sketches is not None:
            sk = write_sketch(Path(sketches) / name / f"{Path(k).stem}.npz", content_sketch(p))
            out[k]["sketch"] = str(sk.resolve().relative_to(path.resolve().parent))
            out[k]["sketch_sha256"] = sha256_file(sk)
    data["simulated"][name] = {
        "description": description,
        "generator": generator,
        "generator_version": generator_version,
        "seed": seed,
        "parameters_sha256": parameters_digest(parameters),
        "files": out,
    }
    _write_manifest(path, data)


def _write_manifest(path: Path, data: dict) -> None:
    """Write the manifest atomically, keeping its comment header."""
    header = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("#") or not line.strip():
                header.append(line)
            else:
                break
    body = yaml.safe_dump(data, sort_keys=False, width=100)
    write_text(path, "\n".join(header) + ("\n" if header else "") + body)


def sha256_of(path: str | Path) -> str:
    """SHA-256 of a file's bytes (for shipped chunks, whose bytes are the artefact)."""
    from .fileio import sha256_file

    return sha256_file(path)


def record_grid_part(name: str, sha256: str, path: str | Path | None = None,
                     section: str = "grid", replace: bool = False) -> None:
    """Declare one shipped file (``<section>.parts.<name>``) with its SHA-256 in the manifest.

    A grid chunk already declared with another checksum is refused (shipped
    syntheses are never silently replaced); ``replace=True`` is for files that a
    generator legitimately supersedes (a retrained emulator).
    """
    path = Path(path) if path else paths.MANIFEST
    data = load_manifest(path)
    entry = data.setdefault(section, {})
    parts = entry.setdefault("parts", {})
    if name in parts and parts[name] != sha256 and not replace:
        raise ChecksumError(f"{section} part {name} is already declared with another checksum; "
                            "pack into a new part instead of replacing a shipped one")
    parts[name] = sha256
    _write_manifest(path, data)


def record_section_info(section: str, info: dict, path: str | Path | None = None) -> None:
    """Write descriptive keys (generator, parameters, record file) of a shipped-data section."""
    path = Path(path) if path else paths.MANIFEST
    data = load_manifest(path)
    entry = data.setdefault(section, {})
    parts = entry.pop("parts", {})
    entry.update(info)
    entry["parts"] = parts  # checksums last, where a reader looks for them
    _write_manifest(path, data)


def declare_shipped_file(section: str, path, info: dict) -> None:
    """Declare a small shipped file made by a script (``info``: description, generator, source):
    its folder and SHA-256 under ``section`` of the manifest (a regenerated file replaces it)."""
    path = Path(path)
    record_section_info(section, {**info, "folder": str(path.parent.resolve().relative_to(paths.REPO))})
    record_grid_part(path.name, sha256_of(path), section=section, replace=True)


def verify_shipped_file(section: str, path, how: str) -> Path:
    """Refuse a shipped file that is missing or does not match its declared SHA-256.

    ``how`` says how to regenerate it. Files outside the package's data folder (a user's
    own) are not checked. Returns the path.
    """
    path = Path(path)
    if not path.exists():
        raise RuntimeError(f"{path} is missing; {how}")
    if path.parent == paths.PACKAGE_DATA:
        declared = ((load_manifest().get(section) or {}).get("parts") or {}).get(path.name)
        if declared != sha256_of(path):
            raise RuntimeError(f"{path} does not match its checksum in data_manifest.yaml "
                               f"(section {section}); {how}")
    return path


# --------------------------------------------------------------------------- real data
class ChecksumError(ValueError):
    """A data file whose content does not match the checksum declared in the manifest."""


def resolve_data_path(root, relative) -> Path:
    """``root / relative``, refusing any path that escapes ``root`` (absolute paths, ``..``, links)."""
    root = Path(root).resolve()
    rel = Path(relative)
    if rel.is_absolute():
        raise ValueError(f"data path {relative} must be relative to the data folder {root}")
    target = (root / rel).resolve()
    if target != root and root not in target.parents:
        raise ValueError(f"data path {relative} escapes the data folder {root}; refused")
    return target


def real_entry(manifest: dict, name: str) -> dict:
    """The manifest's entry ``real.<name>``, with a clear error if it is not declared."""
    entries = manifest.get("real") or {}
    if name not in entries:
        raise KeyError(f"data set '{name}' is not declared in the manifest; declared: {sorted(entries)}")
    return entries[name]


def verify_file(path, name: str, entry: dict, relative: str | None = None) -> str:
    """Check one real data file against the manifest (SHA-256 computed with pooch).

    Returns ``verified`` (checksum matches), or ``no checksum declared``.

    Raises
    ------
    FileNotFoundError
        With the manifest's instructions for obtaining the data.
    ChecksumError
        If a declared checksum does not match: the file is refused.
    """
    import pooch

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing. How to get '{name}':\n{entry.get('how_to_get', '').strip()}")
    expected = (entry.get("sha256") or {}).get(relative or path.name)
    if not expected:
        return "no checksum declared"
    actual = pooch.file_hash(str(path), alg="sha256")
    if actual != expected:
        raise ChecksumError(f"{path} has SHA-256 {actual[:16]}..., the manifest declares {expected[:16]}...; "
                            "the file is refused (re-download it, or re-register a new release with "
                            "scripts/register_real_data.py)")
    return "verified"


def register_real(name: str, folder, pattern: str, path: str | Path | None = None) -> int:
    """Record the SHA-256 of every file of a downloaded real data set in the manifest (pooch hashes)."""
    import pooch

    mpath = Path(path) if path else paths.MANIFEST
    data = load_manifest(mpath)
    entry = real_entry(data, name)
    files = sorted(Path(folder).glob(pattern))
    entry["sha256"] = {f.name: pooch.file_hash(str(f), alg="sha256") for f in files}
    header = [ln for ln in mpath.read_text(encoding="utf-8").splitlines() if ln.startswith("#")]
    write_text(mpath, "\n".join(header) + "\n" + yaml.safe_dump(data, sort_keys=False, width=100))
    return len(files)


def verify_real_files(manifest: dict, name: str, folder) -> list[dict]:
    """Verify every file of real data set ``name`` found in ``folder`` (see :func:`verify_file`).

    Returns one row per file (``file``, ``status``); raises on the first checksum mismatch.
    """
    entry = real_entry(manifest, name)
    files = sorted(Path(folder).glob(entry.get("pattern", "*")))
    if not files:
        raise FileNotFoundError(f"no files matching {entry.get('pattern')} in {folder}. How to get "
                                f"'{name}':\n{entry.get('how_to_get', '').strip()}")
    # every file must lie inside the data folder (a link pointing elsewhere is refused)
    return [{"file": f.name, "status": verify_file(resolve_data_path(folder, f.name), name, entry, f.name)}
            for f in files]
