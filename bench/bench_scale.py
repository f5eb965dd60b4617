"""The same work on 1 and 2 Dask workers, side by side in one run, and what 100 workers would take.

Measured here, each with ``--workers`` (default 1,2) local Dask worker processes of one thread (also for one)
(:mod:`helpers.parallel`):

* survey rendering: spectra per second (the quick profile's survey, or ``--n-field``);
* CNN inference over that file: spectra per second for ``--members`` networks of the paper's
  architecture (untrained: the speed does not depend on the weights);
* member training: members per hour at the default profile's size, from the measured time per
  spectrum and epoch of ``--train-members`` small members;
* grid synthesis: stars per hour per worker, read from the grid's own log
  (``data/grid/log/synth.log``; the synthesis code lives in its own environment).

It writes ``bench/results/scale.json`` and, from it, the arithmetic the reproduce page shows for
a 20-million-spectrum survey on 100 workers (an estimate: it assumes the per-task costs measured
here and that reading the spectra from the shared file system keeps up).

Usage::

    python bench/bench_scale.py                      # about 5 minutes on 2 cores
    python bench/bench_scale.py --n-field 3000 --workers 1,2
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from helpers import ensemble, paths, pipeline, survey
from helpers import model as M
from helpers import parallel
from helpers.dataset import n_spectra, read_dataset
from helpers.fileio import write_json

RESULTS = Path(__file__).resolve().parent / "results" / "scale.json"


def grid_rate(log_path: Path) -> dict:
    """Per-star synthesis time from the grid log (median seconds on one worker)."""
    if not log_path.exists():
        return {"stars": 0}
    secs = [float(m.group(1)) for m in re.finditer(r" (\d+\.\d+) s flags", log_path.read_text())]
    if not secs:
        return {"stars": 0}
    med = statistics.median(secs)
    return {"stars": len(secs), "median_s_per_star": round(med, 2), "stars_per_hour_per_worker": round(3600 / med, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="quick", help="whose survey size is rendered")
    ap.add_argument("--n-field", type=int, default=None)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--members", type=int, default=10)
    ap.add_argument("--train-members", type=int, default=2)
    ap.add_argument("--train-spectra", type=int, default=400)
    ap.add_argument("--train-epochs", type=int, default=2)
    ap.add_argument("--survey-size", type=float, default=20e6, help="spectra of the estimated survey")
    ap.add_argument("--estimate-workers", type=int, default=100)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    nbs = pipeline.discover_notebooks()
    prof = pipeline.load_profile(args.profile)
    values = pipeline.resolve_parameters(nbs, prof, {})[nbs[0].stem]
    if args.n_field:
        values["n_field"] = args.n_field
    default = pipeline.resolve_parameters(nbs, pipeline.load_profile("default"), {})
    d03 = default["03_train_ensemble"]
    workers = [int(w) for w in args.workers.split(",")]
    out = {"machine": {"cpu_count": os.cpu_count(), "cpu": platform.processor() or platform.machine()},
           "date": time.strftime("%Y-%m-%d"), "workers": workers, "survey": {}, "inference": {},
           "training": {}, "grid": grid_rate(paths.GRID / "log" / "synth.log")}
    cfg_train = M.ModelConfig(epochs=args.train_epochs, patience=args.train_epochs)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        obs = tmp / "obs.h5"
        for w in workers:
            cfg = survey.survey_config_from_parameters({**values, "n_workers": w})
            with parallel.open_scheduler("local", n_workers=w, log=None, single_in_process=False) as sched:
                t0 = time.perf_counter()
                res = survey.generate_survey(cfg, obs, log=None, scheduler=sched)
                dt = time.perf_counter() - t0
            n = len(res["catalogue"]["star_id"])
            out["survey"][w] = {"spectra": n, "seconds": round(dt, 1), "spectra_per_s": round(n / dt, 1)}
            print(f"survey, {w} worker(s): {n / dt:.1f} spectra/s", flush=True)
        data = read_dataset(obs, rows=slice(0, 1))
        paths_m = []
        for i in range(args.members):
            m = M.build_model(data.grid.n_pixels, 5, M.ModelConfig(), seed=i)
            paths_m.append(M.save_member(m, tmp / f"m{i:02d}", scaler=M.LabelScaler(np.zeros(5), np.ones(5)),
                                         grid=data.grid, cfg=M.ModelConfig(), seed=i, history={"val_loss": [1.0]},
                                         seconds=0.0))
        scaler = M.LabelScaler(np.zeros(5), np.ones(5))
        n_obs = n_spectra(obs)
        cat = read_dataset(obs).stars
        rows = survey.select_training(cat, survey.survey_config_from_parameters(values))
        fit, val = rows[:args.train_spectra], rows[args.train_spectra:args.train_spectra + 100]
        for w in workers:
            with parallel.open_scheduler("local", n_workers=w, log=None, single_in_process=False) as sched:
                ensemble.predict_file(paths_m, scaler, obs, block=512, scheduler=sched)  # warm the workers
                t0 = time.perf_counter()
                ensemble.predict_file(paths_m, scaler, obs, block=512, scheduler=sched)
                dt = time.perf_counter() - t0
                out["inference"][w] = {"spectra": n_obs, "members": args.members, "seconds": round(dt, 2),
                                       "spectra_per_s": round(n_obs / dt, 1)}
                print(f"inference ({args.members} networks), {w} worker(s): {n_obs / dt:.0f} spectra/s", flush=True)
                t0 = time.perf_counter()
                M.train_ensemble(obs, fit, val, n_models=args.train_members, cfg=cfg_train, seed=1,
                                       out_dir=tmp / f"train{w}", scaler=M.LabelScaler.fit(read_dataset(obs, rows=np.sort(fit)).labels("survey")),
                                       log=None, scheduler=sched, resume=False)
                dt = time.perf_counter() - t0
            spectrum_epochs = args.train_members * len(fit) * args.train_epochs
            per = dt / spectrum_epochs  # wall seconds per spectrum-epoch with w workers
            default_member = d03["n_train_max"] * d03["epochs"]
            out["training"][w] = {"members": args.train_members, "spectra": len(fit), "epochs": args.train_epochs,
                                  "seconds": round(dt, 1), "ms_per_spectrum_epoch": round(1e3 * per, 3),
                                  "default_members_per_hour": round(3600 / (per * default_member), 1)}
            print(f"training, {w} worker(s): {1e3 * per:.2f} ms per spectrum and epoch "
                  f"({out['training'][w]['default_members_per_hour']} default-profile members per hour)", flush=True)
    w1 = min(workers)
    wmax = max(workers)
    out["speedup"] = {k: round(out[k][wmax]["spectra_per_s"] / out[k][w1]["spectra_per_s"], 2)
                      for k in ("survey", "inference")}
    out["speedup"]["training"] = round(out["training"][w1]["ms_per_spectrum_epoch"]
                                       / out["training"][wmax]["ms_per_spectrum_epoch"], 2)
    per_worker = out["inference"][w1]["spectra_per_s"] / w1
    out["estimate"] = {"survey_spectra": args.survey_size, "workers": args.estimate_workers,
                       "per_worker_spectra_per_s": round(per_worker, 1),
                       "hours": round(args.survey_size / (per_worker * args.estimate_workers) / 3600, 2)}
    write_json(args.out, out)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
