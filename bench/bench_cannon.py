"""The Cannon against the CNN, and our Cannon against the TheCannon package: speed, side by side.

Measured in one run on the same spectra (the cleaned training set of a pipeline run):

* training: our vectorised Cannon (its scatter searched coarse then fine, and at every grid
  point), the ``TheCannon`` package (same model, Python loops over
  pixels), and one CNN member for ``--cnn-epochs`` epochs (the ensemble trains ``--members`` of them);
* inference: our Cannon, the package (``--package-stars`` stars), and the fused CNN ensemble of
  ``--members`` members;
* agreement of the two Cannon implementations (coefficients, labels) as a check that the same
  model is timed.

Printed: seconds, spectra per second, and every ratio.

Usage::

    python bench/bench_cannon.py [--run runs/quick] [--n-train 500] [--n-infer 512]
                                 [--package-stars 16] [--cnn-epochs 2] [--members 10]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from helpers import LABELS, cannon, ensemble
from helpers.dataset import read_dataset


def timed(fn, *args, **kw):
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, default=Path("runs/quick"), help="a pipeline run folder (chapters 02-03 done)")
    ap.add_argument("--n-train", type=int, default=500)
    ap.add_argument("--n-infer", type=int, default=512)
    ap.add_argument("--package-stars", type=int, default=16)
    ap.add_argument("--cnn-epochs", type=int, default=2)
    ap.add_argument("--members", type=int, default=10)
    args = ap.parse_args(argv)

    path = args.run / "artefacts" / "02_tsne_cleaning" / "training_clean.h5"
    summary_path = args.run / "artefacts" / "03_train_ensemble" / "ensemble.json"
    if not path.exists() or not summary_path.exists():
        print(f"error: {path} or {summary_path} is missing; run the pipeline first "
              "(python -m helpers.pipeline --profile quick)", file=sys.stderr)
        return 1
    data = read_dataset(path)
    split = json.loads(summary_path.read_text())["split"]
    train_rows, _, test_rows = ensemble.split_rows(len(data), split["test_fraction"], split["val_fraction"], split["seed"])
    fit = ensemble.fit_rows(train_rows, args.n_train, split["seed"])
    test = test_rows[:args.n_infer]
    flux, ivar, y = data.flux[fit].astype(float), data.ivar[fit].astype(float), data.labels("survey")[fit]
    tflux, tivar = data.flux[test].astype(float), data.ivar[test].astype(float)
    n_pix = flux.shape[1]
    print(f"{len(fit)} training spectra, {len(test)} test spectra, {n_pix} pixels")

    ours, t_ours_train = timed(cannon.train, flux, ivar, y, LABELS)
    every, t_every_train = timed(cannon.train, flux, ivar, y, LABELS, coarse=1)
    res, t_ours_infer = timed(cannon.infer, ours, tflux, tivar)
    rows = [("ours: train", t_ours_train, len(fit)), ("ours: train, every scatter grid point", t_every_train, len(fit)),
            ("ours: infer", t_ours_infer, len(test))]
    print(f"coarse-then-fine scatter search against every grid point: max |Δ ln s| = "
          f"{np.max(np.abs(np.log(ours.scatter / every.scatter))):.1e}, max |Δθ| = {np.max(np.abs(ours.coeffs - every.coeffs)):.1e}")

    # the TheCannon package (its import switches matplotlib to LaTeX text: keep that local)
    try:
        import matplotlib

        with matplotlib.rc_context():
            from TheCannon.dataset import Dataset
            from TheCannon.model import CannonModel
    except ImportError:
        print("TheCannon package not installed (pip install TheCannon==0.7.3): its rows are skipped")
        CannonModel = None
    if CannonModel is not None:
        import contextlib
        import io

        k = args.package_stars
        ds = Dataset(data.grid.wave, np.arange(len(fit)).astype(str), flux.copy(), ivar.copy(), y,
                     np.arange(k).astype(str), tflux[:k].copy(), tivar[:k].copy())
        ds.set_label_names(list(LABELS))
        pkg = CannonModel(2, useErrors=False)
        with contextlib.redirect_stdout(io.StringIO()):  # it prints per step and per star
            _, t_pkg_train = timed(pkg.train, ds)
            _, t_pkg_infer = timed(pkg.infer_labels, ds)
        rows += [("TheCannon package: train", t_pkg_train, len(fit)), ("TheCannon package: infer", t_pkg_infer, k)]
        dcoef = np.max(np.abs(pkg.coeffs - ours.coeffs))
        dlab = np.median(np.abs(ds.test_label_vals - res["labels"][:k]), axis=0)
        print(f"agreement: max |Δθ| = {dcoef:.2e}; median |Δlabel| = "
              + ", ".join(f"{n} {v:.3g}" for n, v in zip(LABELS, dlab)))

    # the CNN: one member trained on the same spectra, the fused ensemble on the same test spectra
    from helpers import model as M
    from helpers import inference as I

    cfg = M.ModelConfig(epochs=args.cnn_epochs, patience=args.cnn_epochs, learning_rate=1e-3)
    scaler = M.LabelScaler.fit(y)
    x_fit, x_test = M.prepare_inputs(flux, ivar), M.prepare_inputs(tflux, tivar)
    y_fit = scaler.scale(y)
    y_val = scaler.scale(data.labels("survey")[test])
    member, _, t_cnn_member = M.train_member(x_fit, y_fit, x_test, y_val, cfg, seed=1, log_every=0)
    models = [member] + [M.build_model(n_pix, len(LABELS), cfg) for _ in range(args.members - 1)]
    engine = I.FusedEnsemble(models)
    I.ensemble_predict(models, x_test[:256], scaler, engine=engine)  # compile once
    _, t_cnn_infer = timed(I.ensemble_predict, models, x_test, scaler, engine=engine)
    rows += [(f"CNN: one member, {args.cnn_epochs} epochs", t_cnn_member, len(fit)),
             (f"CNN: {args.members}-member ensemble, infer", t_cnn_infer, len(test))]

    print(f"\n{'what':45s} {'seconds':>9s} {'spectra/s':>10s}")
    for name, t, n in rows:
        print(f"{name:45s} {t:9.2f} {n / t:10.1f}")
    rate = {name: n / t for name, t, n in rows}
    print("\nratios (side by side, this run):")
    print(f"  training, every scatter grid point / coarse then fine: {t_every_train / t_ours_train:8.2f}")
    if CannonModel is not None:
        print(f"  training, package time / ours:             {t_pkg_train / t_ours_train:8.1f}")
        print(f"  inference, ours rate / package rate:       {rate['ours: infer'] / rate['TheCannon package: infer']:8.1f}")
    print(f"  training, one CNN member ({args.cnn_epochs} epochs) / our Cannon: {t_cnn_member / t_ours_train:8.2f}")
    print(f"  inference, CNN ensemble rate / our Cannon: "
          f"{rate[f'CNN: {args.members}-member ensemble, infer'] / rate['ours: infer']:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
