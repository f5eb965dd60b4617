"""The reference ensemble: members trained once at full settings and shipped with the project.

Training ten networks on the whole training set of the default survey until early stopping takes
hours on a laptop. ``scripts/train_reference.py`` does it once (resumable member by member, on any
:mod:`helpers.parallel` scheduler) and writes the members into ``data/reference/`` with a record,
``reference.json``; every file is declared with its SHA-256 in ``data_manifest.yaml`` (section
``reference_ensemble``). Chapter 03 takes the members from there **only when they are what it would
train itself**: the same training-set content, the same fit and validation rows, the same
architecture, training code, seeds and number of members (:func:`match`). Otherwise it trains, and
says why the reference did not apply.

"The same content" is bit for bit where it can be, else at the tolerance of
:data:`helpers.dataset.SKETCH_TOLERANCE`: the same generator makes data that differ in the last
bit on processors whose numerical libraries round differently, so the reference keeps a sketch of
its training set (:func:`helpers.dataset.content_sketch`) and a run whose training set differs from
it by less than that tolerance, with the same rows and everything else equal, is served too (and
says so).

"The same spectra" is the last thing that can differ: chapter 02's t-SNE map follows the last bits
of the data, so on another processor its cleaning can keep a few other spectra, and the split,
drawn from their number, differs entirely. :func:`near_reference` serves such a run when at most
:data:`NEAR_MAX_FRACTION` of the spectra differ and the rest are equal within the tolerance: it
carries the reference's split over onto the run's spectra (stars recognised by their catalogue
numbers) and puts the spectra only the run holds into the test part, which the members never saw.

Layout of ``data/reference/``::

    reference.json          what, on what, how long (this module writes and reads it)
    training_sketch.npz     the training set's content at a tolerance (helpers.dataset)
    member_00.keras/.json   the members, in the format of helpers.model
    ...
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from . import paths
from .fileio import write_json

__all__ = ["REFERENCE_VERSION", "reference_key", "run_key", "SKETCH_FILE", "fit_digests", "read_record", "write_record", "match", "adopt",
           "use_if_it_applies", "near_reference", "NEAR_MAX_FRACTION", "chapter_text", "summary_sentence",
           "declare", "verify_shipped", "finished_members", "write_check", "ReferenceError"]

#: Version of ``reference.json``; a reader refuses other versions.
REFERENCE_VERSION = 1
#: Manifest section of the shipped members.
SECTION = "reference_ensemble"


class ReferenceError(ValueError):
    """A shipped reference member that is missing or does not match its checksum."""


def reference_key(fit_digest: str, cfg, seed: int, n_models: int) -> dict:
    """What a set of members is: fit digest (data content, rows, training code), architecture,
    seed of the run and number of members (the members' seeds follow from the last two)."""
    from . import model as M

    return {"fit_digest": fit_digest, "architecture": cfg.as_dict(), "seed": int(seed), "n_models": int(n_models),
            "member_seeds": [M.member_seed(seed, i) for i in range(n_models)]}


def run_key(data_path, fit_rows, val_rows, cfg, seed: int, n_models: int) -> dict:
    """The key of the members a run would train on the data set ``data_path``: :func:`reference_key`
    plus ``rows_digest``, the fit digest without the data's content (rows and training code only),
    which the tolerant match (:func:`match`) needs."""
    from . import model as M
    from .dataset import content_digest

    key = reference_key(M.fit_digest(content_digest(data_path), fit_rows, val_rows), cfg, seed, n_models)
    key["rows_digest"] = M.fit_digest("", fit_rows, val_rows)
    return key


#: The reference training set's sketch (helpers.dataset.content_sketch).
SKETCH_FILE = "training_sketch.npz"


def read_record(folder=None) -> dict | None:
    """``reference.json`` of ``folder`` (default ``data/reference``), or None if there is none.

    Raises
    ------
    ReferenceError
        If the record is unreadable or of another version.
    """
    path = Path(folder or paths.REFERENCE) / "reference.json"
    if not path.exists():
        return None
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ReferenceError(f"{path} is not valid JSON ({exc}); restore it with git or re-run "
                             "scripts/train_reference.py") from exc
    if rec.get("reference_version") != REFERENCE_VERSION:
        raise ReferenceError(f"{path} has reference_version {rec.get('reference_version')!r}; this code reads "
                             f"version {REFERENCE_VERSION}: re-run scripts/train_reference.py")
    return rec


def write_record(folder, record: dict) -> Path:
    """Write ``reference.json`` atomically (with ``reference_version``)."""
    path = Path(folder) / "reference.json"
    write_json(path, {"reference_version": REFERENCE_VERSION, **record})
    return path


def _differences(key: dict, rec_key: dict) -> list[str]:
    """What differs between two keys, the training set's content left out."""
    out = []
    if rec_key.get("architecture") != key["architecture"]:
        a, b = rec_key.get("architecture") or {}, key["architecture"]
        changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        out.append("other network settings (" + ", ".join(f"{k}: {a.get(k)} there, {b.get(k)} here" for k in changed)
                   + ")")
    if rec_key.get("seed") != key["seed"]:
        out.append(f"another seed ({rec_key.get('seed')} there, {key['seed']} here)")
    if (rec_key.get("member_seeds") or [])[:key["n_models"]] != key["member_seeds"][:len(rec_key.get("member_seeds") or [])]:
        out.append("other member seeds")
    return out


def _same_data(key: dict, rec: dict, folder: Path, data_path) -> tuple[bool, str]:
    """Whether the run's training set is the reference's: bit for bit (the fit digests agree), or
    with the same rows and training code and a content within the sketch tolerance."""
    rec_key = rec.get("key") or {}
    if rec_key.get("fit_digest") == key["fit_digest"]:
        return True, "bit for bit"
    if key["fit_digest"] in rec_key.get("equivalent_fit_digests", []):
        return True, ("bit for bit the set as this reference's record makes it here, which "
                      "`scripts/train_reference.py --accept-existing` found equal within the stated tolerance to "
                      "the set as made on the processor its first members were trained on")
    if not key.get("rows_digest") or rec_key.get("rows_digest") != key["rows_digest"]:
        return False, "the training set, its split or the training code differ"
    sketch_name = (rec.get("training_set") or {}).get("sketch")
    if data_path is None or not sketch_name:
        return False, ("the training set's content differs (the reference keeps no sketch to compare it at a "
                       "tolerance)" if not sketch_name else "the training set's content differs")
    from .dataset import compare_sketches, content_sketch, read_sketch

    path = folder / sketch_name
    _check_file(path, rec, folder)
    ok, said, _ = compare_sketches(read_sketch(path), content_sketch(data_path))
    if not ok:
        return False, f"the training set differs from the reference's: {said}"
    return True, ("equal to the reference's within the stated tolerance, not bit for bit (the numbers were "
                  f"rounded differently where it was made; {said})")


def match(key: dict, folder=None, data_path=None) -> tuple[bool, str]:
    """Whether the reference in ``folder`` holds the ensemble ``key`` describes, and why not.

    Member ``i`` depends only on the settings, the run's seed and ``i``, so a run asking for
    ``n`` members is served by the first ``n`` of a reference trained with the same settings
    (the reference may hold more, or be planned for more and not yet complete). The training set
    must be the reference's bit for bit, or (given ``data_path``, the run's training set, and a
    key from :func:`run_key`) have the same rows and a content within the sketch tolerance.

    Returns
    -------
    applies : bool
    reason : str
        One sentence: what was found, or what differs.
    """
    folder = Path(folder or paths.REFERENCE)
    rec = read_record(folder)
    if rec is None:
        return False, "no reference ensemble is shipped"
    diffs = _differences(key, rec.get("key") or {})
    same, how = _same_data(key, rec, folder, data_path)
    if not same:
        diffs.insert(0, how)
    if diffs:
        return False, "the shipped reference ensemble was trained with " + "; ".join(diffs)
    have = rec.get("members") or {}
    first = next((i for i in range(key["n_models"]) if f"member_{i:02d}" not in have), key["n_models"])
    if first < key["n_models"]:
        return False, (f"the shipped reference ensemble holds the first {first} of the {key['n_models']} members "
                       "this run asks for")
    return True, (f"the shipped reference ensemble matches this run (its first {key['n_models']} of "
                  f"{len(have)} finished members; training set {how})")


def _check_file(path: Path, rec: dict, folder: Path) -> None:
    """Refuse a reference file that is missing or does not match its declared SHA-256."""
    from .fileio import sha256_file

    if not path.exists():
        raise ReferenceError(f"{path} is missing; restore it (git checkout data/reference) or re-run "
                             "scripts/train_reference.py")
    shipped = folder.resolve() == paths.REFERENCE.resolve()
    declared = _declared(path.name) if shipped else (rec.get("sha256") or {}).get(path.name)
    if declared != sha256_file(path):
        raise ReferenceError(f"{path} does not match its checksum in "
                             f"{'data_manifest.yaml' if shipped else 'reference.json'} "
                             f"(section {SECTION}); it was altered or damaged: restore it (git checkout "
                             "data/reference) or re-run scripts/train_reference.py")


def _declared(name: str) -> str | None:
    from .manifest import load_manifest

    return ((load_manifest().get(SECTION) or {}).get("parts") or {}).get(name)


def adopt(key: dict, out_dir, folder=None, data_path=None) -> dict:
    """Copy the reference members into ``out_dir`` after checking every file against its SHA-256
    in the manifest; :func:`helpers.model.train_ensemble` then finds them finished (given the
    reference's fit digest in ``accept_digests`` when the match was at a tolerance).

    Returns
    -------
    dict
        The reference record.

    Raises
    ------
    ReferenceError
        If the reference does not :func:`match` ``key``, or a file is missing or altered (nothing
        is copied then).
    """
    folder = Path(folder or paths.REFERENCE)
    ok, why = match(key, folder, data_path)
    if not ok:
        raise ReferenceError(why)
    rec = read_record(folder)
    _copy_members(rec, folder, key["n_models"], out_dir)
    return rec


def _copy_members(rec: dict, folder: Path, n_models: int, out_dir) -> None:
    """Copy the first ``n_models`` members into ``out_dir``, every file checked first (nothing is
    copied if one is missing or altered)."""
    files = [folder / f"member_{i:02d}{ext}" for i in range(n_models) for ext in (".keras", ".json")]
    for f in files:
        _check_file(f, rec, folder)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for f in files:
        tmp = out_dir / f".{f.name}.{os.getpid()}.tmp"
        shutil.copyfile(f, tmp)
        os.replace(tmp, out_dir / f.name)


#: The largest share of a run's training spectra that may be missing from the reference's training
#: set or the other way round for :func:`near_reference` to serve it (0.5 %).
NEAR_MAX_FRACTION = 0.005


def near_reference(in_reference: str, data_path, split: dict, cfg, n_models: int, out_dir=None,
                   max_fraction: float = NEAR_MAX_FRACTION):
    """The reference for a run whose training set holds almost the same spectra as the reference's.

    Chapter 02's cleaning decides per spectrum from a t-SNE map; on a processor whose numerical
    libraries round differently, the map and so a few decisions come out differently, and the
    cleaned training set then holds a few other spectra. Its split (drawn from the number of
    spectra) and its content then differ from the reference's, and :func:`match` refuses. This
    function serves such a run when everything else is the reference's and the spectra both sets
    hold are equal within :data:`helpers.dataset.SKETCH_TOLERANCE`: it carries the reference's
    split over onto the run's rows (stars recognised by their catalogue numbers,
    :func:`helpers.dataset.match_sketch_rows`), puts the spectra only the run holds into the test
    part (the members never saw them, so the test stays out of sample) and hands back the
    members' label scaling. At most :data:`NEAR_MAX_FRACTION` of the spectra may differ.

    Parameters
    ----------
    in_reference : str
        The reference's ``reference.json`` ("": none).
    data_path : path-like
        The run's (cleaned) training set.
    split : dict
        The run's ``seed``, ``test_fraction``, ``val_fraction`` and ``n_train_max``.
    cfg : helpers.model.ModelConfig
    n_models : int
    out_dir : path-like, optional
        Where to copy the members (after checking each against its checksum) when it applies.
    max_fraction : float
        The largest share of the run's spectra that may differ (default :data:`NEAR_MAX_FRACTION`).

    Returns
    -------
    plan : dict or None
        ``rows`` (``train``, ``val``, ``test``, ``fit``: rows of the run's set), ``scaler``
        (:class:`helpers.model.LabelScaler` of the members), ``record``, ``reason`` (a sentence
        part for the chapter), ``n_only_run``, ``n_only_reference``; None when it does not apply.
    why_not : str
        Why it does not apply ("" when it does).
    """
    from . import model as M
    from .dataset import compare_sketches, content_sketch, match_sketch_rows, read_sketch, sketch_rows
    from .ensemble import fit_rows, split_rows

    if not in_reference:
        return None, "no reference was asked for"
    folder = Path(in_reference).parent
    rec = read_record(folder)
    if rec is None:
        return None, "no reference ensemble is shipped"
    rec_key = rec.get("key") or {}
    diffs = _differences(reference_key("", cfg, split["seed"], n_models), rec_key)
    params = rec.get("parameters") or {}
    other = [k for k in ("seed", "test_fraction", "val_fraction", "n_train_max") if params.get(k) != split[k]]
    if other:
        diffs.append("another split (" + ", ".join(f"{k}: {params.get(k)} there, {split[k]} here" for k in other) + ")")
    have = rec.get("members") or {}
    if any(f"member_{i:02d}" not in have for i in range(n_models)):
        diffs.append(f"fewer than the {n_models} members this run asks for")
    sketch_name = (rec.get("training_set") or {}).get("sketch")
    n_ref = (rec.get("training_set") or {}).get("n_spectra")
    if not sketch_name or not n_ref:
        diffs.append("no record of its training set's spectra")
    if diffs:
        return None, "; ".join(diffs)
    tr, va, te = split_rows(int(n_ref), split["test_fraction"], split["val_fraction"], split["seed"])
    fi = fit_rows(tr, split["n_train_max"], split["seed"])
    if M.fit_digest("", fi, va) != rec_key.get("rows_digest"):
        return None, "its rows are not the split this code draws for its training set (other split or training code)"
    _check_file(folder / sketch_name, rec, folder)
    ref_sketch, run_sketch = read_sketch(folder / sketch_name), content_sketch(data_path)
    to_run = match_sketch_rows(ref_sketch, run_sketch)
    n_run = len(run_sketch["flux_proj"])
    common = np.flatnonzero(to_run >= 0)
    n_only_ref, n_only_run = int(n_ref) - common.size, n_run - common.size
    if n_only_ref + n_only_run > max_fraction * n_run:
        return None, (f"{n_only_run} of this run's {n_run} training spectra are not in its training set and "
                      f"{n_only_ref} of its {n_ref} not in this run's (more than {100 * max_fraction:g} %)")
    ok, said, _ = compare_sketches(sketch_rows(ref_sketch, common), sketch_rows(run_sketch, to_run[common]))
    if not ok:
        return None, f"the spectra both training sets hold differ: {said}"

    def carried(rows):  # the reference's rows, in its order, as rows of this run's set (where it has them)
        r = to_run[np.asarray(rows, np.int64)]
        return r[r >= 0]

    only_run = np.setdiff1d(np.arange(n_run), to_run[common])
    rows = {"train": np.sort(carried(tr)), "val": carried(va), "fit": carried(fi),
            "test": np.sort(np.concatenate([carried(te), only_run]))}
    _check_file(folder / "member_00.json", rec, folder)
    first = json.loads((folder / "member_00.json").read_text(encoding="utf-8"))
    scaler = M.LabelScaler.from_json(first["scaler"])
    pct = 100 * (n_only_ref + n_only_run) / n_run
    reason = (f"this run's training set holds {n_only_run} spectra that the reference's does not and lacks "
              f"{n_only_ref} that it holds ({pct:.2f} % of {n_run}: chapter 02's cleaning, whose t-SNE map follows "
              f"the last bits of the data, decided differently for them), and the {common.size} spectra both hold are equal within the stated "
              f"tolerance ({said}). The reference's split is carried over onto this run's spectra, and the "
              f"{n_only_run} spectra only this run holds join the test part, which the members never saw")
    if out_dir is not None:
        _copy_members(rec, folder, n_models, out_dir)
    return {"rows": rows, "scaler": scaler, "record": rec, "reason": reason, "n_only_run": n_only_run,
            "n_only_reference": n_only_ref}, ""


def declare(folder=None, manifest_path=None) -> dict:
    """Declare every member file of ``folder`` and its record in the manifest (SHA-256 each)."""
    from .fileio import sha256_file
    from .manifest import record_grid_part, record_section_info

    folder = Path(folder or paths.REFERENCE)
    rec = read_record(folder)
    if rec is None:
        raise ReferenceError(f"{folder}/reference.json is missing; run scripts/train_reference.py")
    record_section_info(SECTION, {"description": "reference CNN ensemble of the default survey (chapter 03)",
                                  "generator": "scripts/train_reference.py",
                                  "record": str((folder / "reference.json").relative_to(paths.REPO))},
                        path=manifest_path)
    sums = {}
    files = [f for f in sorted(folder.glob("member_*")) if f.suffix in (".keras", ".json") and f.name in rec["sha256"]]
    files += [f for f in (folder / CHECK_FILE, folder / SKETCH_FILE, folder / "reference.json") if f.exists()]
    for f in files:
        sums[f.name] = sha256_file(f)
        record_grid_part(f.name, sums[f.name], path=manifest_path, section=SECTION, replace=True)
    return sums


def summary_sentence(rec: dict) -> str:
    """Where and how long the reference was trained, in one sentence for chapter 03."""
    m = rec.get("machine") or {}
    members = rec.get("members") or {}
    epochs = [v["epochs"] for v in members.values()]
    early = sum(bool(v.get("stopped_early")) for v in members.values())
    return (f"trained by scripts/train_reference.py on {m.get('cpu', 'an unrecorded machine')} "
            f"({m.get('cpu_count', '?')} cores) in {rec.get('worker_hours', float('nan')):.1f} worker-hours, "
            f"{len(members)} members of {int(np.min(epochs)) if epochs else 0}–{int(np.max(epochs)) if epochs else 0} "
            f"epochs, {early} of them stopped early")


def use_if_it_applies(in_reference: str, key: dict, out_dir, data_path=None) -> tuple[bool, str, dict | None]:
    """Chapter 03's step: adopt the reference whose record is ``in_reference`` when it
    :func:`match`-es ``key`` (for the run's training set ``data_path``); ``""`` asks for none.

    Returns
    -------
    used : bool
    reason : str
        Why it was or was not used (a sentence for the chapter).
    record : dict or None
        The reference record, when one was found.

    Raises
    ------
    ReferenceError
        If it applies but a file is missing or altered: a damaged reference is never silently
        replaced by a fresh training (restore it, or set ``in_reference = ""``).
    """
    if not in_reference:
        return False, 'no reference ensemble was asked for (`in_reference = ""`)', None
    folder = Path(in_reference).parent
    rec = read_record(folder)
    ok, why = match(key, folder, data_path)
    if not ok:
        return False, why, rec
    return True, why, adopt(key, out_dir, folder, data_path)


def chapter_text(used: bool, reason: str, rec: dict | None, members: list[dict], cfg, near: bool = False) -> str:
    """Chapter 03's paragraph on where its members come from and whether they converged
    (``near``: served by :func:`near_reference`, on almost the same spectra)."""
    n = len(members)
    early = sum(len(m["history"]["val_loss"]) < cfg.epochs for m in members)
    if used:
        would = ("This run would have trained them on almost the same spectra, with the same network, training "
                 "code and seeds: " if near else
                 "This run would have trained exactly them (the same training-set content, split, network, "
                 "training code and seeds): ")
        return ("**These members were not trained in this run.** They are the reference ensemble shipped "
                f"with the project (`data/reference/`), {summary_sentence(rec)}. {would}"
                f"{reason}. It loaded them after checking every file against its checksum in "
                "`data_manifest.yaml`. To train "
                "them yourself, run `python scripts/train_reference.py --out my_reference` (it took "
                f"{rec.get('wall_hours', float('nan')):.1f} hours from start to end there) or this chapter with "
                '`in_reference = ""`.')
    conv = (f"all {n} members stopped early, when their validation loss had not improved for "
            f"{cfg.patience} epochs" if early == n else
            f"**{n - early} of {n} members stopped at the epoch limit ({cfg.epochs}), not by early stopping**: "
            "their validation loss was still falling, so these networks are not converged and the accuracy "
            "below is that of undertrained networks")
    return f"The members were trained in this run ({reason}); {conv}."


def fit_digests(key: dict) -> list[str]:
    """The fit digests a reference's members may carry: the key's, and those of training sets
    accepted as equal to its own at the sketch tolerance (``equivalent_fit_digests``: the same
    generator's output made on a processor that rounds differently)."""
    return [key["fit_digest"], *key.get("equivalent_fit_digests", [])]


def finished_members(folder, key: dict) -> tuple[dict, dict]:
    """The members of ``folder`` trained for ``key`` (by their fit digest, :func:`fit_digests`): a
    summary per member and the SHA-256 of each of their files."""
    from .fileio import sha256_file

    folder = Path(folder)
    members, sums = {}, {}
    for i in range(key["n_models"]):
        name = f"member_{i:02d}"
        j, k = folder / f"{name}.json", folder / f"{name}.keras"
        if not (j.exists() and k.exists()):
            continue
        rec = json.loads(j.read_text(encoding="utf-8"))
        if rec.get("fit_digest") not in fit_digests(key) or rec.get("seed") != key["member_seeds"][i]:
            continue
        hist = rec["history"]["val_loss"]
        members[name] = {"seed": rec["seed"], "epochs": len(hist), "best_epoch": int(np.argmin(hist)) + 1,
                         "best_val_loss": float(min(hist)), "hours": round(rec["train_seconds"] / 3600, 3),
                         "stopped_early": len(hist) < key["architecture"]["epochs"]}
        for f in (k, j):
            sums[f.name] = sha256_file(f)
    return members, sums


#: Spectra (and each member's raw outputs for them) kept with the reference, for the regression test.
CHECK_FILE = "check.npz"


def write_check(folder, x, member_names: list[str]) -> Path:
    """Keep ``x`` (a few input spectra, shape (n, n_pixels, 1)) and each named member's outputs
    for them (before unscaling) in ``check.npz``, atomically; ``tests/test_reference.py`` checks
    that the shipped members still give them under every installed backend."""
    from . import model as M
    from .fileio import atomic_path

    folder = Path(folder)
    outs = []
    for name in member_names:
        m, _ = M.load_member(folder / f"{name}.keras")
        outs.append(np.asarray(m.predict(np.asarray(x, np.float32), verbose=0), np.float32))
    path = folder / CHECK_FILE
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, x=np.asarray(x, np.float32)[..., 0], outputs=np.stack(outs),
                     members=np.array(member_names))
    return path


def verify_shipped() -> list[str]:
    """Check every file of the shipped reference against its SHA-256 in the manifest; returns
    the names checked.

    Raises
    ------
    ReferenceError
        Naming the first file that is missing or altered.
    """
    from .fileio import sha256_file
    from .manifest import load_manifest

    parts = (load_manifest().get(SECTION) or {}).get("parts") or {}
    for name, sha in parts.items():
        f = paths.REFERENCE / name
        if not f.exists():
            raise ReferenceError(f"{f} is declared in data_manifest.yaml but missing; git checkout data/reference")
        if sha256_file(f) != sha:
            raise ReferenceError(f"{f} does not match its checksum in data_manifest.yaml (section {SECTION}); "
                                 "restore it (git checkout data/reference) or re-run scripts/train_reference.py")
    return sorted(parts)
