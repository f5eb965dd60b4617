"""Fit the forward model's constants to Turbospectrum line depths of three reference stars.

The reference is ``lines_strong.csv``: central depths at GIRAFFE resolution that
Turbospectrum (LTE, vmic 1.5 km/s, Gaussian LSF) gives for a Sun-like dwarf
(5777/4.44/0.0), a giant (4500/2.5/0.0) and a metal-poor giant (4800/2.0/-1.0,
[α/Fe] = +0.3). Free parameters: the strength zero point per setup, the
line-forming temperature fraction, the electron-pressure zero point and its
gravity exponent, the saturation depth, the van der Waals scale, and one
astrophysical log gf correction per reference line (held near zero by a prior
of ``--offset-prior`` dex), as spectroscopists calibrate gf values on the Sun.

Writes ``src/helpers/data/simulator_calibration.json``; the rms depth difference
per star and setup that results is recomputed in chapter 01 and in the tests.

Usage::

    python scripts/calibrate_simulator.py
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from scipy.optimize import least_squares
from scipy.sparse import lil_matrix

from helpers import paths
from helpers.fileio import write_json
from helpers.lines import load_linelist, load_reference_lines
from helpers.simulate import Calibration, load_calibration
from helpers.spectra import giraffe_grid
from helpers import simulate as vs

GLOBALS = ("zp_hr10", "zp_hr21", "t_frac", "log_pe0", "pe_logg", "d_max", "log_vdw")


def to_cal(x, base: Calibration, ref_ids) -> Calibration:
    g = dict(zip(GLOBALS, x[:len(GLOBALS)]))
    return Calibration(
        zero_point={"HR10": g["zp_hr10"], "HR21": g["zp_hr21"]}, t_frac=g["t_frac"],
        log_pe0=g["log_pe0"], pe_logg=g["pe_logg"], d_max=g["d_max"], log_vdw=g["log_vdw"],
        alpha_coupling=base.alpha_coupling, hydrogen_offset=base.hydrogen_offset,
        stark_log_a=base.stark_log_a,
        line_offsets={int(k): float(v) for k, v in zip(ref_ids, x[len(GLOBALS):])})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--offset-prior", type=float, default=0.5, help="prior σ of log gf corrections (dex)")
    ap.add_argument("--ew-weight", type=float, default=0.2,
                    help="weight of log10 equivalent-width differences against depth differences")
    ap.add_argument("--max-nfev", type=int, default=200)
    args = ap.parse_args(argv)

    grid = giraffe_grid()
    lines = load_linelist()
    ref = load_reference_lines()
    base = load_calibration()
    targets = vs.reference_targets(ref, grid)
    ref_ids = sorted({t["ref"] for t in targets})
    x0 = np.array([base.zero_point["HR10"], base.zero_point["HR21"], base.t_frac, base.log_pe0,
                   base.pe_logg, base.d_max, base.log_vdw]
                  + [base.line_offsets.get(k, 0.0) for k in ref_ids])
    lo = np.array([-5, -5, 0.75, 0.0, 0.2, 0.5, 6.0] + [-1.5] * len(ref_ids))
    hi = np.array([20, 20, 1.0, 2.0, 0.7, 1.0, 11.0] + [1.5] * len(ref_ids))
    x0 = np.clip(x0, lo + 1e-6, hi - 1e-6)
    n_g = len(GLOBALS)

    def resid(x):
        cal = to_cal(x, base, ref_ids)
        model, ew = vs.model_depths(targets, grid=grid, lines=lines, cal=cal, with_ew=True)
        obs = np.array([t["depth"] for t in targets])
        obs_ew = np.array([t["ew"] for t in targets])
        ew_term = args.ew_weight * (np.log10(np.maximum(ew, 1e-5)) - np.log10(obs_ew))
        prior = x[n_g:] / args.offset_prior * 0.05
        return np.concatenate([model - obs, ew_term, prior])

    # sparsity: a depth depends on all globals and on the offsets of lines within 1.5 Å
    n_t = len(targets)
    S = lil_matrix((2 * n_t + len(ref_ids), len(x0)), dtype=int)
    for i, t in enumerate(targets):
        for row in (i, n_t + i):
            S[row, :n_g] = 1
            S[row, n_g + ref_ids.index(t["ref"])] = 1
    for j in range(len(ref_ids)):
        S[2 * n_t + j, n_g + j] = 1
    t0 = time.perf_counter()
    r0 = resid(x0)[:n_t]
    print(f"start: rms depth difference {np.sqrt(np.mean(r0**2)):.4f} over {n_t} depths")
    sol = least_squares(resid, x0, bounds=(lo, hi), jac_sparsity=S, max_nfev=args.max_nfev,
                        x_scale="jac", verbose=1)
    cal = to_cal(sol.x, base, ref_ids)
    r = sol.fun[:n_t]
    ew_r = sol.fun[n_t:2 * n_t] / args.ew_weight
    cal.fit = {"method": "scipy.optimize.least_squares on isolated central depths and log EW",
               "reference": "lines_strong.csv depth_* and ew_*_mA columns (Turbospectrum)",
               "rms_log_ew_dex": float(np.sqrt(np.mean(ew_r ** 2))), "ew_weight": args.ew_weight,
               "n_depths": int(n_t), "rms_depth": float(np.sqrt(np.mean(r ** 2))),
               "offset_prior_dex": args.offset_prior, "seconds": round(time.perf_counter() - t0, 1)}
    write_json(paths.CALIBRATION, cal.to_json())
    print(f"done: rms depth difference {cal.fit['rms_depth']:.4f}; globals "
          + ", ".join(f"{k}={v:.3f}" for k, v in zip(GLOBALS, sol.x[:n_g])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
