"""Train the spectral emulator on the synthesis grid and ship it with its record.

Usage::

    .venv/bin/python scripts/train_emulator.py                 # packed, declared grid chunks
    .venv/bin/python scripts/train_emulator.py --epochs 50 --dry-run   # a quick look, writes nothing

The grid's design stars are split by :func:`helpers.grid.split_of`: the fit uses
the ``train`` stars, early stopping and every choice the ``validation`` stars (the
defaults here, 2 × 512 neurons and 250 principal components, were chosen on the
validation stars of a 400-star grid against 2 × 300, 120 components and larger batches);
the ``test`` stars and the single-label ``response`` set are held out from both
and only scored at the end (validation and test stars count only inside the
emulator's domain, :func:`helpers.grid.in_domain`; training uses every training star) (their numbers go into ``data/emulator/emulator.json``,
which chapter 01 shows). The weights go to ``data/emulator/emulator.npz`` and their
SHA-256 into ``data_manifest.yaml``.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from helpers import grid as G
from helpers.emulator import train
from helpers.emulator_check import accuracy_summary, response_check
from helpers.spectra import giraffe_grid


def _load(args) -> G.GridData:
    wave = giraffe_grid()
    if args.unpacked:  # development only: the generator's working files, without checksums
        return G.read_star_files(sorted(Path(args.unpacked).glob("*.npz")), wave.digest)
    return G.load_grid(wave_digest=wave.digest)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hidden", default="512,512", help="widths of the hidden layers")
    ap.add_argument("--components", type=int, default=250,
                    help="principal components the network predicts (0: every pixel; at most "
                         "the number of training stars)")
    ap.add_argument("--epochs", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--learning-rate", type=float, default=1e-3)
    ap.add_argument("--patience", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--learning-curve", default="0.5",
                    help="also fit on these fractions of the training stars (the first ones of the "
                         "design, which fill the space by themselves) and record the test accuracy "
                         "of each, to show how the accuracy grows with the grid ('' for none)")
    ap.add_argument("--unpacked", default="", help="(development) read star files from this folder")
    ap.add_argument("--dry-run", action="store_true", help="train and score, write nothing")
    args = ap.parse_args(argv)

    data = _load(args)
    # every training star is used; validation and test stars only inside the emulator's domain
    # (the first design spans all vmic, the domain keeps to a band about the vmic relation)
    tr, va_all, te_all = data.split("train"), data.split("validation"), data.split("test")
    va, te = va_all.inside(), te_all.inside()
    resp = data.split("response")
    print(f"grid: {len(data.names)} stars (train {len(tr.names)}, validation {len(va.names)}, "
          f"test {len(te.names)} inside the domain, {len(va_all.names) - len(va.names)} + "
          f"{len(te_all.names) - len(te.names)} outside; response {len(resp.names)})", flush=True)
    if len(tr.names) < 10 or len(va.names) < 2:
        raise SystemExit("too few grid stars to train on; synthesise more first")
    hidden = tuple(int(h) for h in args.hidden.split(","))
    t0 = time.perf_counter()
    n_comp = min(args.components, len(tr.names) - 1)
    emu = train(tr.labels, tr.flux, va.labels, va.flux, hidden=hidden, n_components=n_comp,
                epochs=args.epochs,
                batch_size=args.batch_size, learning_rate=args.learning_rate,
                patience=args.patience, seed=args.seed, wave_digest=giraffe_grid().digest)
    seconds = time.perf_counter() - t0
    rec = emu.record
    rec.update({
        "trained_seconds": seconds, "machine": G.cpu_name(), "cores": os.cpu_count(),
        "python": platform.python_version(),
        "n_train": int(len(tr.names)), "n_validation": int(len(va.names)),
        "n_test": int(len(te.names)), "grid_stars": int(len(data.names)),
        "n_outside_domain": {"validation": int(len(va_all.names) - len(va.names)),
                             "test": int(len(te_all.names) - len(te.names))},
        "test_names": [str(n) for n in te.names],
        "validation_names": [str(n) for n in va.names],
        "validation": accuracy_summary(emu, va),
    })
    if len(te.names):
        rec["test"] = accuracy_summary(emu, te, by_region=True)
    if len(resp.names):
        rec["response"] = response_check(emu, resp)
    curve = []
    for frac in [float(f) for f in args.learning_curve.split(",") if f.strip()]:
        order = np.argsort([int(str(n)[1:]) for n in tr.names])
        sub = tr.select(order[:max(10, int(round(frac * len(order))))])
        e = train(sub.labels, sub.flux, va.labels, va.flux, hidden=hidden,
                  n_components=min(n_comp, len(sub.names) - 1), epochs=args.epochs,
                  batch_size=args.batch_size, learning_rate=args.learning_rate,
                  patience=args.patience, seed=args.seed, wave_digest=giraffe_grid().digest)
        curve.append({"n_train": int(len(sub.names)), **accuracy_summary(e, te)["all"]})
        print(f"learning curve: {len(sub.names)} training stars -> test median "
              f"{curve[-1]['median_abs']:.4f}, p99 {curve[-1]['p99_abs']:.4f}", flush=True)
    if curve and len(te.names):
        curve.append({"n_train": int(len(tr.names)), **rec["test"]["all"]})
    rec["learning_curve"] = curve
    print(f"trained in {seconds / 60:.1f} min, {rec['epochs_run']} epochs", flush=True)
    for key in ("validation", "test"):
        if key in rec:
            s = rec[key]["all"]
            print(f"{key}: median |err| {s['median_abs']:.4f}, p99 {s['p99_abs']:.4f}, "
                  f"rms {s['rms']:.4f} ({s['n_stars']} stars)", flush=True)
    if args.dry_run:
        return 0
    path = emu.save()
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
