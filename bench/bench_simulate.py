"""How fast is the simulated survey made? (issue: default survey in under 2 minutes on 2 cores)

Generates the survey of a profile (default: the `default` profile's size) with 1 and with 2
worker processes, side by side in one run, and prints the wall times, spectra per second, the
speed-up of 2 workers over 1, and the ratio of the 2-worker time to the 120 s budget.

Usage::

    python bench/bench_simulate.py                 # default profile size (~20 000 spectra)
    python bench/bench_simulate.py --n-field 2000  # a quicker look
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from helpers import pipeline, survey
from helpers.simulate import ForwardModel


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="default")
    ap.add_argument("--n-field", type=int, default=None, help="override the number of field stars")
    ap.add_argument("--budget-s", type=float, default=120.0)
    ap.add_argument("--workers", default="1,2")
    args = ap.parse_args(argv)

    nbs = pipeline.discover_notebooks()
    values = pipeline.resolve_parameters(nbs, pipeline.load_profile(args.profile), {})[nbs[0].stem]
    if args.n_field:
        values["n_field"] = args.n_field
    fm = ForwardModel()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for w in [int(x) for x in args.workers.split(",")]:
            cfg = survey.survey_config_from_parameters({**values, "n_workers": w})
            out = Path(tmp) / f"obs_{w}.h5"
            t0 = time.perf_counter()
            res = survey.generate_survey(cfg, out, fm=fm, log=None)
            dt = time.perf_counter() - t0
            n = len(res["catalogue"]["star_id"])
            results[w] = {"seconds": round(dt, 1), "spectra": n, "pixels": fm.grid.n_pixels,
                          "spectra_per_s": round(n / dt, 1), "file_GB": round(out.stat().st_size / 1e9, 2)}
            out.unlink()
    ws = sorted(results)
    summary = {"profile": args.profile, "cpu_count": os.cpu_count(), "results": results}
    if len(ws) > 1:
        summary["speedup_2_over_1"] = round(results[ws[0]]["seconds"] / results[ws[-1]]["seconds"], 2)
    summary["time_over_budget"] = round(results[ws[-1]]["seconds"] / args.budget_s, 2)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
