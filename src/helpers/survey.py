"""The simulated Gaia-ESO GIRAFFE survey: catalogue, defects, survey labels, spectra.

:func:`make_catalogue` draws the stars (field stars of :mod:`helpers.galaxy`,
open clusters, globular clusters with a Mg–Al anticorrelation, and the Gaia
FGK benchmark stars), assigns S/N, injected defects and "survey labels" (the
truth plus Gaia-ESO-like errors and flags). :func:`generate_survey` renders the
spectra with :mod:`helpers.simulate`, applies the defects and noise chunk by
chunk, and writes the observed set; :func:`select_training` applies the
training-set quality cuts.

Two kinds of labels are kept apart in every file: ``truth_*`` (what the
spectrum was made from) and ``survey_*`` (what a survey pipeline would have
reported, with ``survey_e_*`` errors and ``survey_flag`` bits).
"""
from __future__ import annotations

import csv
import time
from dataclasses import asdict, dataclass, field

import astropy.units as u
import numpy as np
from astropy.coordinates import Galactic, SkyCoord

from . import LABELS, __version__, parallel, paths, seeds
from .dataset import DatasetWriter
from .gaiaeso import cname
from .galaxy import (FRAME, GalaxyModel, abs_mag_v, galactocentric, halo_al, kiel_track,
                     low_alpha_alpha, low_alpha_mg, metallicity_shift, sample_field_stars, thin_al)
from .grid import DOMAIN, VMIC_BAND
from .grid import in_domain as grid_in_domain
from .noise import SKY_V_MAG, NoiseModel, counts_for_snr, snr_of
from .simulate import ForwardModel, default_vmic, grid_labels
from .survey_labels import survey_labels

__all__ = ["DEFECTS", "FLAG_BITS", "SurveyConfig", "make_catalogue", "generate_survey",
           "select_training", "GENERATOR", "inside_domain", "chemistry_summary",
           "CHEMISTRY_KEYS", "render_survey_file"]

#: Name of the generator written into every file's provenance.
GENERATOR = "helpers.survey"
#: Kinds of injected bad spectra (``none`` for a clean spectrum).
DEFECTS = ("spike", "continuum", "low_snr", "emission", "binary", "rv_error", "fast_rotator",
           "missing")
#: Bits of ``survey_flag``.
FLAG_BITS = {"no_al": 1, "no_mg": 2, "low_snr": 4}


@dataclass
class SurveyConfig:
    """Everything that shapes a simulated survey.

    Attributes
    ----------
    n_field : int
        Field stars.
    n_open_clusters, members_per_oc : int
    n_globular_clusters, members_per_gc : int
    benchmarks : bool
        Include every Gaia FGK benchmark star twice (survey S/N and S/N 250).
    snr_median, snr_min, snr_max : float
        Continuum S/N per native pixel: each star's follows from its V magnitude, its
        pointing's exposure and its fibre's throughput (:func:`_exposure`), with the
        survey's depth set so that the field stars' median is ``snr_median``; then
        clipped to [``snr_min``, ``snr_max``].
    bad_fraction : float
        Fraction of spectra given one injected defect, shared equally among :data:`DEFECTS`.
    train_snr_min : float
        Training-set cut on S/N.
    train_max_e_teff : float
        Training-set cut on the survey Teff error [K].
    seed : int
    chunk : int
        Stars rendered together (fixed, so that the same seed gives the same file).
    n_workers : int
        Processes rendering chunks in parallel (the result does not depend on it).
    galaxy : GalaxyModel
    """

    n_field: int = 1200
    n_open_clusters: int = 6
    members_per_oc: int = 15
    n_globular_clusters: int = 4
    members_per_gc: int = 20
    benchmarks: bool = True
    snr_median: float = 45.0
    snr_min: float = 8.0
    snr_max: float = 250.0
    bad_fraction: float = 0.08
    train_snr_min: float = 20.0
    train_max_e_teff: float = 200.0
    seed: int = 42
    chunk: int = 256
    n_workers: int = 2
    galaxy: GalaxyModel = field(default_factory=GalaxyModel)

    def __post_init__(self):
        checks = [
            ("n_field", self.n_field >= 1, "at least 1"),
            ("n_open_clusters", self.n_open_clusters >= 0, "0 or more"),
            ("members_per_oc", self.members_per_oc >= 1, "at least 1"),
            ("n_globular_clusters", 0 <= self.n_globular_clusters <= len(GLOBULARS),
             f"between 0 and {len(GLOBULARS)}"),
            ("members_per_gc", self.members_per_gc >= 1, "at least 1"),
            ("snr_min", 0 < self.snr_min < self.snr_max, "positive and below snr_max"),
            ("snr_median", self.snr_min <= self.snr_median <= self.snr_max, "within [snr_min, snr_max]"),
            ("bad_fraction", 0.0 <= self.bad_fraction <= 0.5, "between 0 and 0.5"),
            ("chunk", self.chunk >= 1, "at least 1"),
            ("n_workers", self.n_workers >= 1, "at least 1"),
        ]
        for name, ok, what in checks:
            if not ok:
                raise ValueError(f"survey parameter {name} = {getattr(self, name)!r} must be {what}")

    def as_dict(self) -> dict:
        """Parameters that shape the data (``n_workers`` does not, so it is left out)."""
        d = asdict(self)
        d.pop("n_workers")
        d["galaxy"] = self.galaxy.as_dict()
        return d


#: Open-cluster Galactocentric radii span [kpc].
OC_RADII = (6.0, 12.5)
#: Globular clusters: name, [Fe/H], log10 mass [M_sun].
GLOBULARS = (("GC-sim-1", -2.15, 5.9), ("GC-sim-2", -1.55, 5.6), ("GC-sim-3", -1.30, 5.2),
             ("GC-sim-4", -1.05, 5.75), ("GC-sim-5", -0.70, 5.3), ("GC-sim-6", -1.85, 5.0))


def gc_mgal_extent(feh, log_mass):
    """Extent of the [Al/Fe] spread in a globular cluster (dex).

    Grows with cluster mass and falls with metallicity (Pancino et al. 2017):
    about 1 dex for a massive metal-poor cluster, ~0.1 dex for a light metal-rich one.
    """
    return float(np.clip(0.55 + 0.7 * (log_mass - 5.4) - 0.45 * (feh + 1.5), 0.05, 1.1))


def _icrs_from_galactocentric(x, y, z):
    from astropy.coordinates import CartesianRepresentation

    gc = FRAME.frame()
    c = SkyCoord(CartesianRepresentation(x * u.kpc, y * u.kpc, z * u.kpc), frame=gc)
    icrs = c.transform_to("icrs")
    return icrs.ra.deg, icrs.dec.deg, icrs.distance.to_value(u.pc)


def _open_clusters(cfg: SurveyConfig, rng) -> dict:
    g = cfg.galaxy
    cols = {k: [] for k in ("teff", "logg", "feh", "mg_fe", "al_fe", "alpha_fe", "state", "ra",
                            "dec", "distance_pc", "cluster", "population")}
    radii = np.linspace(*OC_RADII, cfg.n_open_clusters) if cfg.n_open_clusters else []
    for i, R in enumerate(radii):
        phi = np.radians(180 + rng.uniform(-12, 12))  # near the Sun's azimuth (astropy x<0 side)
        x, y, z = R * np.cos(phi), R * np.sin(phi), rng.normal(0, 0.08)
        feh = g.feh_thin_sun + g.grad_r_thin * (min(R, g.r_flat) - g.r_sun_kpc) + rng.normal(0, 0.04)
        mg = float(low_alpha_mg(feh)) + rng.normal(0, 0.02)
        al = float(thin_al(feh)) + rng.normal(0, 0.03)
        alpha = float(low_alpha_alpha(feh)) + rng.normal(0, 0.02)
        ra, dec, dist = _icrs_from_galactocentric(x, y, z)
        n = cfg.members_per_oc
        state = rng.choice(["MS", "TO", "RGB", "RC"], size=n, p=[0.55, 0.2, 0.1, 0.15])
        teff, logg = kiel_track(state, rng)
        teff, state = metallicity_shift(state, teff, np.full(n, feh))
        cols["teff"] += list(teff)
        cols["logg"] += list(logg)
        cols["state"] += list(state)
        cols["feh"] += [feh] * n
        cols["mg_fe"] += [mg] * n
        cols["al_fe"] += [al] * n
        cols["alpha_fe"] += [alpha] * n
        cols["ra"] += list(ra + rng.normal(0, 0.05, n))
        cols["dec"] += list(dec + rng.normal(0, 0.05, n))
        cols["distance_pc"] += list(dist + rng.normal(0, 5, n))
        cols["cluster"] += [f"OC-sim-{i + 1}"] * n
        cols["population"] += ["thin"] * n
    return {k: np.array(v) for k, v in cols.items()}


def _globular_clusters(cfg: SurveyConfig, rng) -> dict:
    cols = {k: [] for k in ("teff", "logg", "feh", "mg_fe", "al_fe", "alpha_fe", "state", "ra",
                            "dec", "distance_pc", "cluster", "population")}
    for name, feh, logm in GLOBULARS[:cfg.n_globular_clusters]:
        n = cfg.members_per_gc
        extent = gc_mgal_extent(feh, logm)
        l, b = rng.uniform(0, 360), rng.uniform(15, 60) * rng.choice([-1, 1])
        dist = rng.uniform(3000, 9000)
        c = SkyCoord(l=l * u.deg, b=b * u.deg, frame=Galactic).icrs
        second = rng.random(n) < 0.65
        x = rng.random(n) ** 0.8
        al0 = float(halo_al(feh, False))  # first generation: in-situ halo chemistry
        al = np.where(second, al0 + x * extent, al0) + rng.normal(0, 0.04, n)
        mg = np.where(second, 0.33 - 0.35 * x * extent, 0.33) + rng.normal(0, 0.03, n)
        state = np.full(n, "RGB")
        teff, logg = kiel_track(state, rng)
        logg = np.clip(logg, 1.0, 3.2)
        teff = np.clip(4000 + 440 * (logg - 1.0) + rng.normal(0, 40, n), 3900, 7000)
        teff, state = metallicity_shift(state, teff, np.full(n, feh))
        cols["teff"] += list(teff)
        cols["logg"] += list(logg)
        cols["state"] += list(state)
        cols["feh"] += list(feh + rng.normal(0, 0.02, n))
        cols["mg_fe"] += list(mg)
        cols["al_fe"] += list(al)
        cols["alpha_fe"] += list(0.30 + rng.normal(0, 0.03, n))  # O–Na varies; Si, Ca, Ti do not
        cols["ra"] += list(c.ra.deg + rng.normal(0, 0.03, n))
        cols["dec"] += list(c.dec.deg + rng.normal(0, 0.03, n))
        cols["distance_pc"] += [dist] * n
        cols["cluster"] += [name] * n
        cols["population"] += ["halo"] * n
    return {k: np.array(v) for k, v in cols.items()}


def load_benchmarks(path=paths.BENCHMARKS) -> list[dict]:
    """Gaia FGK benchmark stars (name, Teff [K], log g, [Fe/H]) from the shipped CSV."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    out = []
    for r in rows:
        try:
            out.append({"name": r["star"], "teff": float(r["teff_K"]), "logg": float(r["logg"]),
                        "feh": float(r["feh"])})
        except ValueError:
            continue
    return out


def _benchmarks(rng) -> dict:
    rows = load_benchmarks()
    n = len(rows)
    feh = np.array([r["feh"] for r in rows])
    # ASSUMED: the benchmark series gives no Mg or Al; put the stars on the disc sequences
    thin = feh > -0.7
    mg = np.where(thin, low_alpha_mg(feh), 0.30)
    al = np.where(thin, thin_al(feh), halo_al(feh, False))
    alpha = np.where(thin, low_alpha_alpha(feh), 0.28)
    nan = np.full(n, np.nan)
    return {"teff": np.array([r["teff"] for r in rows]), "logg": np.array([r["logg"] for r in rows]),
            "feh": feh, "mg_fe": mg, "al_fe": al, "alpha_fe": alpha, "state": np.full(n, "benchmark"),
            "ra": nan, "dec": nan, "distance_pc": nan,
            "cluster": np.array([r["name"] for r in rows]), "population": np.full(n, "benchmark")}


def make_catalogue(cfg: SurveyConfig) -> dict:
    """Draw the whole survey catalogue (no spectra yet).

    Returns
    -------
    dict of ndarray
        One entry per column; see :mod:`helpers.dataset` for how it is stored.
    """
    rng = seeds.rng(cfg.seed, "survey_catalogue")
    field_stars = sample_field_stars(cfg.n_field, rng, cfg.galaxy)
    parts = [("field", {**{k: field_stars[k] for k in ("teff", "logg", "feh", "mg_fe", "al_fe",
                                                        "alpha_fe", "state", "ra", "dec",
                                                        "distance_pc", "population", "vmag")},
                        "pointing": field_stars["field_id"],
                        "cluster": np.full(cfg.n_field, "")})]
    if cfg.n_open_clusters:
        parts.append(("open_cluster", _open_clusters(cfg, rng)))
    if cfg.n_globular_clusters:
        parts.append(("globular_cluster", _globular_clusters(cfg, rng)))
    if cfg.benchmarks:
        b = _benchmarks(rng)
        parts.append(("benchmark", b))
        parts.append(("benchmark", {k: v.copy() for k, v in b.items()}))
    cat: dict[str, list] = {}
    group = []
    next_pointing = cfg.galaxy.n_fields
    for name, p in parts:
        n = len(p["teff"])
        group += [name] * n
        if "vmag" not in p:  # clusters: from the distance; benchmarks: none (S/N set below)
            mass = np.where(np.isin(p["state"], ["RGB", "RC"]), 1.2, 1.0)
            p["vmag"] = abs_mag_v(p["teff"], p["logg"], mass) + 5 * np.log10(p["distance_pc"] / 10)
        if "pointing" not in p:  # each cluster is one pointing
            names, inv = np.unique(p["cluster"], return_inverse=True)
            p["pointing"] = next_pointing + inv
            next_pointing += len(names)
        for k, v in p.items():
            cat.setdefault(k, []).append(np.asarray(v))
    cat = {k: np.concatenate(v) for k, v in cat.items()}
    n = len(cat["teff"])
    cat["group"] = np.array(group)

    # positions
    gcen = galactocentric(np.nan_to_num(cat["ra"]), np.nan_to_num(cat["dec"]),
                          np.nan_to_num(cat["distance_pc"], nan=1.0))
    has_pos = np.isfinite(cat["ra"])
    cat["R_kpc"] = np.where(has_pos, gcen["R"], np.nan)
    cat["z_kpc"] = np.where(has_pos, gcen["z"], np.nan)

    # S/N from magnitude and exposure (photon, sky and read noise; :mod:`helpers.noise`)
    counts, sky = _exposure(cat, cfg, rng)
    nm_snr = snr_of(counts, sky)
    is_b = cat["group"] == "benchmark"
    first_b = np.zeros(n, bool)
    if is_b.any():  # benchmarks: once at S/N 250, once at a survey-like S/N
        idx = np.nonzero(is_b)[0]
        first_b[idx[: len(idx) // 2]] = True
        second = idx[len(idx) // 2:]
        nm_snr[second] = cfg.snr_median * np.exp(rng.normal(0, 0.5, len(second)))
    nm_snr = np.where(first_b, 250.0, nm_snr)
    snr = np.clip(nm_snr, cfg.snr_min, cfg.snr_max)
    # nuisances (vmic kept inside the emulator's vmic band and the grid's range)
    vmic0 = default_vmic(cat["teff"], cat["logg"])
    vmic = np.clip(vmic0 + np.clip(rng.normal(0, 0.1, n), -VMIC_BAND + 0.05, VMIC_BAND - 0.05),
                   DOMAIN["vmic"][0] + 0.05, DOMAIN["vmic"][1] - 0.05)
    dwarf_hot = (cat["logg"] > 3.5) & (cat["teff"] > 6200)
    vsini = np.abs(rng.normal(0, 2.5, n)) + np.where(dwarf_hot, rng.uniform(0, 12, n), 0.0)
    rv = rng.normal(0, 1.0, n)

    # injected defects (benchmarks and cluster stars are left clean)
    defect = np.full(n, "none", dtype=object)
    eligible = np.nonzero(cat["group"] == "field")[0]
    n_bad = int(round(cfg.bad_fraction * len(eligible)))
    bad = rng.choice(eligible, size=n_bad, replace=False) if n_bad else np.array([], int)
    defect[bad] = np.array(DEFECTS)[np.arange(n_bad) % len(DEFECTS)]
    defect = defect.astype(str)
    snr = np.where(defect == "low_snr", rng.uniform(2.0, 6.0, n), snr)
    counts = np.where(np.isclose(snr, snr_of(counts, sky)), counts, counts_for_snr(snr, sky))
    vsini = np.where(defect == "fast_rotator", rng.uniform(40, 150, n), vsini)
    rv = np.where(defect == "rv_error", rng.choice([-1, 1], n) * rng.uniform(15, 80, n), rv)

    # survey labels: a pipeline's errors, systematics and outliers (helpers.survey_labels);
    # defective spectra are measured worse
    worse = np.where(defect == "none", 1.0, 2.5)
    truth = np.column_stack([cat[k] for k in LABELS])
    rep = survey_labels(truth, snr, rng, worse=worse, cluster=cat["cluster"])
    survey, err = rep["labels"], rep["quoted"]
    flag = np.zeros(n, int)
    no_al = (cat["teff"] > 6400) | (cat["feh"] < -2.0) | (snr < 12)
    no_mg = snr < 10
    flag |= np.where(no_al, FLAG_BITS["no_al"], 0) | np.where(no_mg, FLAG_BITS["no_mg"], 0)
    flag |= np.where(snr < 10, FLAG_BITS["low_snr"], 0)
    survey[no_al, 4] = np.nan
    err[no_al, 4] = np.nan
    survey[no_mg, 3] = np.nan
    err[no_mg, 3] = np.nan

    out = {
        "star_id": np.array([f"SIM-{i:06d}" for i in range(n)]),
        "cname": cname(cat["ra"], cat["dec"]),
        "group": cat["group"], "cluster": cat["cluster"], "population": cat["population"],
        "state": cat["state"], "benchmark_mg_al_assumed": is_b,
    }
    for j, k in enumerate(LABELS):
        out[f"truth_{k}"] = truth[:, j]
    out["truth_alpha_fe"] = cat["alpha_fe"]
    out.update({"truth_vmic": vmic, "truth_vsini": vsini, "truth_rv": rv})
    for j, k in enumerate(LABELS):
        out[f"survey_{k}"] = survey[:, j]
        out[f"survey_e_{k}"] = err[:, j]
        out[f"survey_offset_{k}"] = rep["offset"][:, j]
    out.update({"survey_outlier": rep["outlier"], "survey_node": rep["node"],
                "vmag": cat["vmag"], "pointing": cat["pointing"], "counts_e": counts, "sky_e": sky,
                "exptime_s": cat["exptime_s"]})
    out.update({"survey_flag": flag, "snr": snr, "defect": defect, "ra": cat["ra"],
                "dec": cat["dec"], "distance_pc": cat["distance_pc"], "R_kpc": cat["R_kpc"],
                "z_kpc": cat["z_kpc"]})
    # the spectral model covers only the synthesis grid's domain: stars outside it are not drawn
    keep = inside_domain(out)
    return {k: v[keep] for k, v in out.items()}


#: Exposure of a pointing: 1, 2 or 3 observing blocks of 1500 s (probabilities).
EXPOSURE_BLOCKS = ((1500.0, 0.3), (3000.0, 0.5), (4500.0, 0.2))
#: Scatter (natural log) of the light a fibre collects, star to star (seeing, positioning).
THROUGHPUT_SCATTER = 0.3


def _exposure(cat: dict, cfg: SurveyConfig, rng) -> tuple[np.ndarray, np.ndarray]:
    """Star and sky continuum counts per native pixel [e⁻] from V magnitude and exposure.

    Each pointing gets an exposure (:data:`EXPOSURE_BLOCKS`), each star a throughput
    (log-normal, :data:`THROUGHPUT_SCATTER`); the count rate of a V = 15 star is set
    so that the field stars' median S/N is ``cfg.snr_median`` (the survey's depth).
    Writes ``exptime_s`` into ``cat``.
    """
    n = len(cat["teff"])
    times = np.array([t for t, _ in EXPOSURE_BLOCKS])
    prob = np.array([q for _, q in EXPOSURE_BLOCKS])
    pointing = np.asarray(cat["pointing"], int)
    t_point = rng.choice(times, size=pointing.max() + 1, p=prob / prob.sum())
    cat["exptime_s"] = t_point[pointing]
    throughput = np.exp(rng.normal(0.0, THROUGHPUT_SCATTER, n))
    vmag = np.where(np.isfinite(cat["vmag"]), cat["vmag"], 15.0)
    star = cat["exptime_s"] * throughput * 10 ** (-0.4 * (vmag - 15.0))
    sky = cat["exptime_s"] * throughput * 10 ** (-0.4 * (SKY_V_MAG - 15.0))
    field = cat["group"] == "field"
    lo, hi = -6.0, 6.0  # log10 of the count rate of a V = 15 star [e⁻/s/pixel]
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if np.median(snr_of(10 ** mid * star[field], 10 ** mid * sky[field])) < cfg.snr_median:
            lo = mid
        else:
            hi = mid
    rate = 10 ** (0.5 * (lo + hi))
    return rate * star, rate * sky


def inside_domain(cat: dict) -> np.ndarray:
    """True for catalogue rows whose true labels lie inside the emulator's domain.

    The domain is the synthesis grid's (:data:`helpers.grid.DOMAIN` where
    :func:`helpers.grid.in_star_region` holds); :func:`make_catalogue` leaves out
    the few stars beyond it (the coolest giants, the most metal-poor benchmark
    stars) rather than extrapolate the emulator.
    """
    labels = np.column_stack([cat[f"truth_{k}"] for k in LABELS])
    return grid_in_domain(grid_labels(labels, cat["truth_vmic"], cat["truth_alpha_fe"]))


# --------------------------------------------------------------------------- spectra
def _apply_defects(flux, ivar, defects, wave, rng):
    """Modify rendered, noisy spectra in place for the spectrum-level defects."""
    n_pix = flux.shape[1]
    for i, kind in enumerate(defects):
        if kind == "spike":
            k = rng.integers(3, 15)
            pos = rng.integers(0, n_pix - 2, k)
            amp = rng.uniform(0.4, 3.0, k)
            flux[i, pos] += amp
            flux[i, pos + 1] += 0.3 * amp
        elif kind == "missing":
            for _ in range(rng.integers(1, 4)):
                start = rng.integers(0, n_pix - 600)
                width = rng.integers(60, 600)
                flux[i, start:start + width] = 0.0
                ivar[i, start:start + width] = 0.0


def _continuum_and_emission(flux, defects, wave, rng):
    """Defects applied to the noise-free flux: broken continuum and emission lines."""
    x = (wave - wave.mean()) / np.ptp(wave)
    for i, kind in enumerate(defects):
        if kind == "continuum":
            c = 1 + rng.uniform(0.08, 0.3) * rng.choice([-1, 1]) * x \
                + rng.uniform(-0.25, 0.25) * (x ** 2 - 0.08) \
                + rng.uniform(0.02, 0.08) * np.sin(2 * np.pi * rng.uniform(3, 12) * x + rng.uniform(0, 6))
            flux[i] *= c
        elif kind == "emission":
            centres = [8498.02, 8542.09, 8662.14]  # chromospheric Ca II triplet cores
            extra = list(rng.uniform(wave.min(), wave.max(), rng.integers(0, 4)))
            for c0 in centres + extra:
                flux[i] += rng.uniform(0.3, 1.2) * np.exp(-0.5 * ((wave - c0) / rng.uniform(0.15, 0.5)) ** 2)


#: The forward model the worker processes use (set before they are forked, so the
#: emulator's weights are not sent with every task).
_NOISE: dict = {}


def _noise_model(grid) -> NoiseModel:
    """One :class:`helpers.noise.NoiseModel` per grid and process."""
    key = grid.digest
    if key not in _NOISE:
        _NOISE[key] = NoiseModel(grid)
    return _NOISE[key]


def _render_survey_chunk(task):
    """Render, damage and add noise to one chunk (a top-level function, so workers can run it).

    Its random numbers come from the survey's seed and the chunk's index only, so the result does
    not depend on which worker renders it, or on how many there are."""
    fm, seed, c, sl, labels, alpha, nuis, defects, counts, sky, chunk = task
    rng = seeds.rng(seed, "survey_chunk", c)
    flux = fm.render(labels, nuis, alpha_fe=alpha, chunk=chunk)
    binary = np.nonzero(defects == "binary")[0]
    if binary.size:
        comp = labels[binary].copy()
        comp[:, 0] = comp[:, 0] - rng.uniform(0, 900, binary.size)
        comp[:, 1] = comp[:, 1] + rng.uniform(0, 0.4, binary.size)
        cn = nuis[binary].copy()
        cn[:, 2] += rng.choice([-1, 1], binary.size) * rng.uniform(25, 70, binary.size)
        # a companion beyond the emulator's domain becomes a twin of the primary
        outside = ~fm.in_domain(comp, cn, alpha[binary])
        comp[outside] = labels[binary][outside]
        ratio = rng.uniform(0.4, 1.0, binary.size)[:, None]
        flux[binary] = (flux[binary] + ratio * fm.render(comp, cn, alpha_fe=alpha[binary],
                                                         chunk=chunk)) / (1 + ratio)
    _continuum_and_emission(flux, defects, fm.grid.wave, rng)
    noisy, ivar = _noise_model(fm.grid).observe(flux, counts, sky, rng)
    _apply_defects(noisy, ivar, defects, fm.grid.wave, rng)
    return sl, noisy, ivar


def generate_survey(cfg: SurveyConfig, out_path, fm: ForwardModel | None = None, log=print,
                    overwrite: bool = True, scheduler="local") -> dict:
    """Render and write the simulated survey (the observed set) to ``out_path``.

    The stars are rendered in chunks of ``cfg.chunk``, one task per chunk on the scheduler
    (:mod:`helpers.parallel`); each chunk draws its noise and defects from the seed and its own
    index, so the file is the same for any scheduler and number of workers. Chunks are written as
    they arrive into a temporary file that replaces ``out_path`` only when all are in.

    Parameters
    ----------
    cfg : SurveyConfig
    out_path : path-like
    fm : ForwardModel, optional
        Default: the shipped emulator on the HR10 + HR21 grid.
    log : callable, optional
        Gets the scheduler's description (None: silent); progress goes to the terminal
        (:func:`helpers.parallel.progress_stream`).
    overwrite : bool
    scheduler : str or helpers.parallel.Scheduler
        A ``scheduler`` value (``"local"`` uses ``cfg.n_workers`` processes) or an open scheduler.

    Returns
    -------
    dict
        ``catalogue`` (the columns written), ``seconds`` (wall time of rendering and
        writing), ``path``, ``scheduler`` (its description).
    """
    fm = fm or ForwardModel()
    t0 = time.perf_counter()
    cat = make_catalogue(cfg)
    n = len(cat["star_id"])
    labels = np.column_stack([cat[f"truth_{k}"] for k in LABELS])
    nuis = np.column_stack([cat["truth_vmic"], cat["truth_vsini"], cat["truth_rv"]])
    alpha = cat["truth_alpha_fe"]
    provenance = {"generator": GENERATOR, "generator_version": __version__, "source": "simulated",
                  "seed": cfg.seed, "parameters": cfg.as_dict(),
                  "spectral_model": "emulator of PySME 1D LTE syntheses (helpers.emulator)",
                  "emulator_sha256": fm.emulator.record.get("sha256", ""),
                  "grid_stars": fm.emulator.record.get("grid_stars")}

    n_chunks = (n + cfg.chunk - 1) // cfg.chunk
    with parallel.scheduler_of(scheduler, n_workers=cfg.n_workers, log=log) as sched, DatasetWriter(out_path, fm.grid, n, provenance, overwrite=overwrite) as w:
        w.write_catalogue(cat)
        fm_ref = fm if sched.client is None else sched.client.scatter(fm, broadcast=True, hash=False)
        tasks, keys = [], []
        for c in range(n_chunks):
            sl = slice(c * cfg.chunk, min((c + 1) * cfg.chunk, n))
            tasks.append((fm_ref, cfg.seed, c, sl, labels[sl], alpha[sl], nuis[sl], cat["defect"][sl],
                          cat["counts_e"][sl], cat["sky_e"][sl], cfg.chunk))
            keys.append(f"survey-chunk-{c}")

        def write(_, res):
            sl, noisy, ivar = res
            w.write_rows(sl.start, noisy, ivar)

        parallel.run_tasks(sched, _render_survey_chunk, tasks, keys=keys, on_result=write,
                           label="rendering spectra")
        desc = str(sched)
    return {"catalogue": cat, "seconds": time.perf_counter() - t0, "path": out_path, "scheduler": desc}


def render_survey_file(cfg: SurveyConfig, out_path, fm: ForwardModel | None = None,
                       scheduler="local") -> dict:
    """:func:`generate_survey` as a stored step (:func:`helpers.steps.cached_file`): writes
    ``out_path`` and returns what is worth keeping of how it went, as JSON.

    Returns
    -------
    dict
        ``seconds`` (rendering and writing [s]), ``scheduler`` (its description), ``n_stars``.
        The catalogue is in the file (:func:`helpers.dataset.read_catalogue`).
    """
    res = generate_survey(cfg, out_path, fm=fm, log=None, scheduler=scheduler)
    return {"seconds": res["seconds"], "scheduler": res["scheduler"], "n_stars": len(res["catalogue"]["star_id"])}


def select_training(cat: dict, cfg: SurveyConfig) -> np.ndarray:
    """Rows that pass the training-set quality cuts (sorted indices).

    Field and open-cluster stars with all five survey labels, S/N at least
    ``cfg.train_snr_min`` and a survey Teff error below ``cfg.train_max_e_teff``.
    Globular-cluster and benchmark stars are kept out of training: chapter 05
    validates on them.
    """
    complete = np.all(np.column_stack([np.isfinite(cat[f"survey_{k}"]) for k in LABELS]), axis=1)
    ok = (complete & (cat["snr"] >= cfg.train_snr_min)
          & (cat["survey_e_teff"] < cfg.train_max_e_teff)
          & np.isin(cat["group"], ["field", "open_cluster"]))
    return np.nonzero(ok)[0]


#: Keys of :func:`chemistry_summary`.
CHEMISTRY_KEYS = ("rho_mg_al", "rho_mg_alpha", "r_thin_mg_al", "al_accreted", "al_insitu", "al_thick",
                  "al_thin")


def chemistry_summary(cat: dict, galaxy: GalaxyModel | None = None) -> dict:
    """What the field stars' true chemistry shows: planted residual correlations, the thin
    disc's correlation of [Mg/Fe] and [Al/Fe], the median [Al/Fe] per population (dex)."""
    g = galaxy or GalaxyModel()
    field = np.asarray(cat["group"]) == "field"
    pop = np.asarray(cat["population"])
    mg, al = np.asarray(cat["truth_mg_fe"], float), np.asarray(cat["truth_al_fe"], float)

    def med(name):
        m = field & (pop == name)
        return float(np.median(al[m])) if m.any() else float("nan")

    thin = field & (pop == "thin")
    return {"rho_mg_al": g.rho_mg_al, "rho_mg_alpha": g.rho_mg_alpha,
            "r_thin_mg_al": float(np.corrcoef(mg[thin], al[thin])[0, 1]) if thin.sum() > 2 else float("nan"),
            "al_accreted": med("accreted"), "al_insitu": med("halo"), "al_thick": med("thick"),
            "al_thin": med("thin")}


def counts(cat: dict) -> dict:
    """Number of spectra per group, per injected defect and per population."""
    out = {"total": int(len(cat["star_id"]))}
    for col in ("group", "defect", "population"):
        vals, n = np.unique(cat[col], return_counts=True)
        out[col] = {str(v): int(k) for v, k in zip(vals, n)}
    return out


def defect_examples(cat: dict, rng_seed: int = 0) -> dict:
    """Row index of one example spectrum per defect kind present (plus a clean one as ``none``)."""
    rng = np.random.default_rng(rng_seed)
    out = {}
    for kind in ("none",) + DEFECTS:
        rows = np.nonzero(cat["defect"] == kind)[0]
        if rows.size:
            out[kind] = int(rng.choice(rows))
    return out


def survey_config_from_parameters(p: dict) -> SurveyConfig:
    """Build a :class:`SurveyConfig` from notebook parameters (names as in notebook 01)."""
    return SurveyConfig(
        n_field=p["n_field"], n_open_clusters=p["n_open_clusters"],
        members_per_oc=p["members_per_oc"], n_globular_clusters=p["n_globular_clusters"],
        members_per_gc=p["members_per_gc"], benchmarks=p["include_benchmarks"],
        snr_median=p["snr_median"], snr_min=p["snr_min"], snr_max=p["snr_max"],
        bad_fraction=p["bad_fraction"], train_snr_min=p["train_snr_min"],
        train_max_e_teff=p["train_max_e_teff"], seed=p["seed"], n_workers=p["n_workers"])
