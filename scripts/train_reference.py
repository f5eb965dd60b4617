"""Train the reference ensemble that ships in data/reference/ (helpers.reference).

Chapter 03 loads these members instead of training when its run would train exactly them: the
same cleaned training set (by content), split, architecture, training code, seeds and number of
members. The settings are those of chapter 03 under ``--profile`` (default ``reference``:
``params/reference.yaml``); the training set is the one chapter 02 wrote in the run ``--data-run``
(default ``default``: run ``make book`` or ``python -m helpers.pipeline --to 02`` first).

Resumable: finished members are kept (checked by their fit digest), a member killed mid-training
resumes from its last epoch, and after every member the record ``reference.json`` and the manifest
entries (SHA-256 of every file) are rewritten, so each finished member can be committed at once::

    python scripts/train_reference.py                      # all members, on a local Dask cluster
    python scripts/train_reference.py --scheduler cluster.yaml
    python scripts/train_reference.py --declare-only       # rewrite record and manifest from the files
    python scripts/train_reference.py --accept-existing    # keep members trained on this set as made elsewhere

``--accept-existing`` is for a training set regenerated on a processor that rounds differently (its
content digest differs in the last bits): the members already in ``--out`` are kept when their
record's fit digest is reproduced from its own content digest with this run's rows and training
code (so rows, split and training code are the same), the kept test spectra are equal within the
sketch tolerance, and the label scaling is the same. The record then names both training sets
(the one they were trained on, and this one, whose sketch it keeps) and the checks that tied them;
missing members are trained on this one.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from helpers import ensemble, pipeline, paths, reference
from helpers import model as M
from helpers.dataset import content_digest, content_sketch, n_spectra, read_dataset, write_sketch
from helpers.fileio import sha256_file
from helpers.records import git_commit, machine_info, package_versions

NOTEBOOK = "03_train_ensemble"
#: Test-part spectra kept with the members' outputs for the regression test (tests/test_reference.py).
N_CHECK = 8


def settings(profile: str) -> dict:
    """Chapter 03's parameters under ``profile``, as the pipeline would pass them."""
    nbs = pipeline.discover_notebooks()
    values = pipeline.resolve_parameters(nbs, pipeline.load_profile(profile), {})
    return values[NOTEBOOK]


def plan(p: dict, data_path: Path):
    """Rows, scaler and key exactly as chapter 03 derives them."""
    n = n_spectra(data_path)
    train_rows, val_rows, _ = ensemble.split_rows(n, p["test_fraction"], p["val_fraction"], p["seed"])
    fit = ensemble.fit_rows(train_rows, p["n_train_max"], p["seed"])
    y = read_dataset(data_path, rows=fit).labels("survey")
    scaler = M.LabelScaler.fit(y)
    cfg = ensemble.model_config(p)
    digest = content_digest(data_path)
    key = reference.run_key(data_path, fit, val_rows, cfg, p["seed"], p["n_models"])
    return fit, val_rows, scaler, cfg, key, digest, n


def accept_existing(earlier: dict, key: dict, p: dict, fit, val, scaler, x_check, out: Path) -> tuple[dict, dict]:
    """The key and evidence that keep the members of ``earlier`` (another processor's training set)
    for this one; raises SystemExit naming the check that failed."""
    from helpers.dataset import SKETCH_TOLERANCE

    old_key = earlier.get("key") or {}
    old_set = earlier.get("training_set") or {}
    diffs = reference._differences(key, old_key)
    if diffs:
        raise SystemExit("--accept-existing: the existing reference differs in " + "; ".join(diffs))
    if M.fit_digest(old_set.get("content_digest", ""), fit, val) != old_key.get("fit_digest"):
        raise SystemExit("--accept-existing: the existing members' fit digest is not reproduced from their training "
                         "set's content digest with this run's rows and training code: rows, split or code differ")
    kept = np.load(out / reference.CHECK_FILE, allow_pickle=False)["x"]
    dx = float(np.max(np.abs(kept - np.asarray(x_check, np.float32)[..., 0])))
    if dx > SKETCH_TOLERANCE["flux"]:
        raise SystemExit(f"--accept-existing: the kept test spectra differ by {dx:.2e} (tolerance {SKETCH_TOLERANCE['flux']:g})")
    first = sorted(earlier.get("members") or {})[0]
    rec0 = json.loads((out / f"{first}.json").read_text(encoding="utf-8"))
    lo, hi = np.asarray(rec0["scaler"]["lo"]), np.asarray(rec0["scaler"]["hi"])
    ds = float(max(np.max(np.abs(lo - scaler.lo) / (hi - lo)), np.max(np.abs(hi - scaler.hi) / (hi - lo))))
    if ds > SKETCH_TOLERANCE["catalogue"]:
        raise SystemExit(f"--accept-existing: the label scaling differs by {ds:.2e} of its range")
    new_key = {**key, "fit_digest": old_key["fit_digest"],
               "equivalent_fit_digests": sorted(set(old_key.get("equivalent_fit_digests", [])) | {key["fit_digest"]})}
    evidence = {"fit_digest_reproduced_from_rows_and_code": True, "check_spectra_max_abs_difference": dx,
                "label_scaling_max_relative_difference": ds, "members_kept": sorted(earlier.get("members") or {})}
    return new_key, evidence


def write_record(out: Path, key: dict, p: dict, digest: str, n: int, n_fit: int, n_val: int, profile: str,
                 wall_hours: float, scheduler: str, accepted: dict | None = None) -> dict:
    """``reference.json`` from the members finished so far."""
    members, sums = reference.finished_members(out, key)
    sketch = out / reference.SKETCH_FILE
    if sketch.exists():
        sums[sketch.name] = sha256_file(sketch)
    record = {
        "key": key, "profile": profile, "parameters": {k: p[k] for k in ("test_fraction", "val_fraction",
                                                                         "n_train_max", "seed", "n_models")},
        "training_set": {"content_digest": digest, "n_spectra": n, "n_fit": n_fit, "n_val": n_val,
                         "made_by": "chapter 02 of the default profile", "sketch": reference.SKETCH_FILE,
                         **({"accepted_as_equal": accepted} if accepted else {})},
        "members": members, "complete": len(members) == key["n_models"], "sha256": sums,
        "worker_hours": round(sum(m["hours"] for m in members.values()), 2),
        "wall_hours": round(wall_hours, 2),
        "machine": machine_info(), "scheduler": scheduler, "packages": package_versions(),
        "code_commit": git_commit(), "backend": M.backend(),
    }
    reference.write_record(out, record)
    return record


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="reference", help="profile whose chapter-03 settings are trained")
    ap.add_argument("--data-run", default="default", help="run folder (runs/NAME) holding chapter 02's output")
    ap.add_argument("--out", type=Path, default=paths.REFERENCE, help="where the members go")
    ap.add_argument("--scheduler", default="local", help="where members train (helpers.parallel)")
    ap.add_argument("--declare-only", action="store_true", help="rewrite record and manifest, train nothing")
    ap.add_argument("--first", type=int, default=None, metavar="N",
                    help="train only up to the first N members of the plan this time (the record still plans all)")
    ap.add_argument("--accept-existing", action="store_true",
                    help="keep the members in --out, trained on this training set as another processor made it")
    args = ap.parse_args(argv)

    p = settings(args.profile)
    data_path = paths.run_dir(args.data_run) / p["in_training"]
    if not data_path.exists():
        print(f"error: {data_path} is missing; run `python -m helpers.pipeline --profile {args.data_run} --to 02` "
              "first", file=sys.stderr)
        return 2
    fit, val, scaler, cfg, key, digest, n = plan(p, data_path)
    _, _, test = ensemble.split_rows(n, p["test_fraction"], p["val_fraction"], p["seed"])
    check = read_dataset(data_path, rows=np.sort(test)[:N_CHECK])
    x_check = M.prepare_inputs(check.flux, check.ivar)
    args.out.mkdir(parents=True, exist_ok=True)
    write_sketch(args.out / reference.SKETCH_FILE, content_sketch(data_path))  # the training set at a tolerance
    print(f"reference: {key['n_models']} members, {len(fit)} training and {len(val)} validation spectra of "
          f"{data_path} (content {digest[:12]}), at most {cfg.epochs} epochs, patience {cfg.patience}", flush=True)
    t0 = time.time()
    earlier = reference.read_record(args.out) or {}
    accepted = (earlier.get("training_set") or {}).get("accepted_as_equal")
    trained_on = digest
    if args.accept_existing or accepted:
        if args.accept_existing:
            key, evidence = accept_existing(earlier, key, p, fit, val, scaler, x_check, args.out)
            accepted = {"content_digest": digest, "machine": machine_info(), **evidence,
                        "how": "scripts/train_reference.py --accept-existing"}
        else:  # kept from an earlier --accept-existing
            key = {**key, "fit_digest": earlier["key"]["fit_digest"],
                   "equivalent_fit_digests": earlier["key"]["equivalent_fit_digests"]}
        trained_on = earlier["training_set"]["content_digest"]
        print(f"  keeping the members trained on {trained_on[:12]} (equal within the sketch tolerance)", flush=True)
    # wall time of earlier runs of this script for the same reference (a record of another key is replaced)
    same = {k: v for k, v in (earlier.get("key") or {}).items() if k not in ("equivalent_fit_digests", "rows_digest")}
    before = earlier.get("wall_hours", 0.0) if same == {k: v for k, v in key.items()
                                                          if k not in ("equivalent_fit_digests", "rows_digest")} else 0.0

    def record(*_):
        rec = write_record(args.out, key, p, trained_on, n, len(fit), len(val), args.profile,
                           before + (time.time() - t0) / 3600, args.scheduler, accepted)
        if rec["members"]:
            reference.write_check(args.out, x_check, sorted(rec["members"]))
        if args.out.resolve() == paths.REFERENCE.resolve():
            reference.declare(args.out)
        print(f"  recorded {len(rec['members'])} of {key['n_models']} members", flush=True)

    if not args.declare_only:
        upto = key["n_models"] if args.first is None else max(0, min(args.first, key["n_models"]))
        M.train_ensemble(data_path, fit, val, n_models=upto, cfg=cfg, seed=p["seed"], out_dir=args.out,
                         scaler=scaler, log=lambda s: print(s, flush=True), scheduler=args.scheduler,
                         on_member=record, accept_digests=reference.fit_digests(key))
    record()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
