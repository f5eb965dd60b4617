"""What a survey pipeline reports for a simulated star: labels with real-looking errors.

Real survey labels are not the truth plus independent Gaussian noise. A
spectroscopic pipeline (Gaia-ESO's nodes, then its homogenisation) gives

* **random errors that depend on S/N and on the kind of star** (cool dwarfs,
  hot stars and metal-poor giants are harder) and that are **correlated**:
  excitation and ionisation balance tie Teff, log g and [Fe/H] together (a
  Teff too high comes with a log g and an [Fe/H] too high), and an [X/Fe]
  inherits minus the [Fe/H] error;
* **systematic offsets that vary across the HR diagram** (giants against
  dwarfs, metal-poor stars, hot stars): :func:`planted_offsets`;
* **a small fraction of outliers** (a wrong solution along the Teff–log g–[Fe/H]
  degeneracy);
* for clusters, **node-to-node-like offsets**: every cluster was analysed by one
  of a few nodes, each with its own zero points.

Only the random part is in the quoted error ``survey_e_*``, as in a real
catalogue. The magnitudes are ASSUMED, chosen of the size seen between
Gaia-ESO nodes and against the Gaia FGK benchmarks (tens of K to ~100 K in
Teff, 0.1–0.2 dex in log g for giants, ≲ 0.1 dex in abundances; Hourihane et
al. 2023); every number is a module constant, and chapter 01 shows what was
planted.

Units: K for Teff, dex otherwise.
"""
from __future__ import annotations

import numpy as np

from . import LABELS

__all__ = ["ERROR_FLOOR", "ERROR_SCALE", "ERROR_CORRELATION", "OUTLIER_FRACTION", "NODE_SCATTER",
           "N_NODES", "planted_offsets", "quoted_errors", "survey_labels", "KINDS", "kind_of",
           "systematics_rows"]

#: Quoted error = (floor + scale / S/N) × type factor, per label (Teff, log g, [Fe/H], [Mg/Fe], [Al/Fe]).
ERROR_FLOOR = np.array([45.0, 0.08, 0.04, 0.04, 0.05])
ERROR_SCALE = np.array([2200.0, 3.0, 1.6, 1.6, 2.6])
#: Correlation of the random errors (label order as :data:`helpers.LABELS`).
ERROR_CORRELATION = np.array([
    [1.0, 0.6, 0.5, 0.0, 0.0],
    [0.6, 1.0, 0.4, 0.0, 0.0],
    [0.5, 0.4, 1.0, -0.3, -0.3],
    [0.0, 0.0, -0.3, 1.0, 0.1],
    [0.0, 0.0, -0.3, 0.1, 1.0]])
#: Share of stars with a catastrophic solution (not flagged, as in a real catalogue).
OUTLIER_FRACTION = 0.02
#: Number of analysis nodes clusters are shared among, and the scatter of their zero points.
N_NODES = 4
NODE_SCATTER = np.array([40.0, 0.08, 0.04, 0.03, 0.05])


def _weights(teff, logg, feh):
    """Smooth memberships: giant, cool dwarf, hot star, metal-poor."""
    teff, logg, feh = (np.asarray(a, float) for a in (teff, logg, feh))
    giant = np.clip((3.6 - logg) / 1.0, 0.0, 1.0)
    cool_dwarf = (logg > 3.8) * np.clip((5000.0 - teff) / 600.0, 0.0, 1.0)
    hot = np.clip((teff - 6000.0) / 800.0, 0.0, 1.0)
    metal_poor = np.clip((-1.0 - feh) / 1.0, 0.0, 1.0)
    return giant, cool_dwarf, hot, metal_poor


def planted_offsets(teff, logg, feh) -> np.ndarray:
    """Systematic offsets of the survey labels across the HR diagram, (n, 5).

    Teff: +50 K for hot stars, −60 K for metal-poor giants; log g: +0.10 for
    giants (+0.08 more if metal-poor), −0.06 for hot stars; [Fe/H]: −0.06 for
    metal-poor stars, +0.04 for cool dwarfs, −0.02 for giants; [Mg/Fe]: +0.04
    for cool dwarfs, +0.02 for giants, −0.03 for metal-poor giants; [Al/Fe]:
    +0.07 for giants (an LTE/NLTE-like giant–dwarf difference), +0.05 for cool
    dwarfs. Each term grows smoothly with the star's membership (giant: log g
    from 3.6 to 2.6; cool dwarf: Teff from 5000 to 4400 K at log g > 3.8; hot:
    Teff from 6000 to 6800 K; metal-poor: [Fe/H] from −1 to −2).
    """
    g, cd, h, mp = _weights(teff, logg, feh)
    return np.column_stack([
        50.0 * h - 60.0 * mp * g,
        0.10 * g + 0.08 * mp * g - 0.06 * h,
        -0.06 * mp + 0.04 * cd - 0.02 * g,
        0.04 * cd + 0.02 * g - 0.03 * mp * g,
        0.07 * g + 0.05 * cd])


def quoted_errors(teff, logg, feh, snr) -> np.ndarray:
    """The pipeline's quoted (random) errors, (n, 5): larger at low S/N and for hard stars.

    Cool dwarfs ×1.4, hot stars ×1.3 and metal-poor giants ×1.2 (smoothly, by membership).
    """
    g, cd, h, mp = _weights(teff, logg, feh)
    factor = 1.0 + 0.4 * cd + 0.3 * h + 0.2 * mp * g
    snr = np.asarray(snr, float)
    return (ERROR_FLOOR[None, :] + ERROR_SCALE[None, :] / snr[:, None]) * factor[:, None]


def survey_labels(truth, snr, rng: np.random.Generator, worse=None, cluster=None) -> dict:
    """Survey labels for true labels ``truth`` (n, 5) at S/N ``snr``.

    Parameters
    ----------
    truth : (n, 5) true labels in :data:`helpers.LABELS` order
    snr : (n,) continuum S/N per pixel
    rng : numpy Generator
    worse : (n,) float, optional
        Factor on the random error (e.g. 2.5 for a defective spectrum).
    cluster : (n,) str, optional
        Cluster name ('' for none); members of one cluster share a node's offsets.

    Returns
    -------
    dict
        ``labels`` (n, 5), ``quoted`` (n, 5) quoted errors, ``offset`` (n, 5) the planted
        systematic part (HR-diagram and node offsets), ``outlier`` (n,) bool, ``node``
        (n,) int (−1 outside clusters).
    """
    truth = np.asarray(truth, float)
    n = len(truth)
    teff, logg, feh = truth[:, 0], truth[:, 1], truth[:, 2]
    quoted = quoted_errors(teff, logg, feh, snr)
    z = rng.multivariate_normal(np.zeros(len(LABELS)), ERROR_CORRELATION, size=n, method="cholesky")
    w = np.ones(n) if worse is None else np.asarray(worse, float)
    random = z * quoted * w[:, None]
    offset = planted_offsets(teff, logg, feh)
    node = np.full(n, -1)
    if cluster is not None:
        cluster = np.asarray(cluster).astype(str)
        zero_points = rng.normal(0.0, 1.0, (N_NODES, len(LABELS))) * NODE_SCATTER
        names = sorted(set(cluster) - {""})
        assigned = rng.integers(0, N_NODES, len(names))
        for name, k in zip(names, assigned):
            m = cluster == name
            node[m] = k
            offset[m] += zero_points[k]
    outlier = rng.random(n) < OUTLIER_FRACTION
    k = int(outlier.sum())
    jump = np.zeros((n, len(LABELS)))
    if k:
        dt = rng.choice([-1.0, 1.0], k) * rng.uniform(300.0, 700.0, k)
        jump[outlier, 0] = dt
        jump[outlier, 1] = 1.5e-3 * dt          # along the Teff–log g–[Fe/H] degeneracy
        jump[outlier, 2] = 0.5e-3 * dt
        jump[outlier, 3] = rng.choice([-1.0, 1.0], k) * rng.uniform(0.15, 0.4, k)
        jump[outlier, 4] = rng.choice([-1.0, 1.0], k) * rng.uniform(0.15, 0.4, k)
    return {"labels": truth + offset + random + jump, "quoted": quoted * w[:, None],
            "offset": offset, "outlier": outlier, "node": node}


#: Kinds of star the systematics summary is split by.
KINDS = ("dwarfs and turn-off", "cool dwarfs", "hot stars", "giants", "metal-poor giants")


def kind_of(teff, logg, feh) -> np.ndarray:
    """The :data:`KINDS` name of each star (by true labels)."""
    teff, logg, feh = (np.asarray(a, float) for a in (teff, logg, feh))
    out = np.full(teff.shape, KINDS[0], dtype=object)
    out[(logg > 3.8) & (teff < 4800)] = KINDS[1]
    out[teff > 6400] = KINDS[2]
    out[logg < 3.4] = KINDS[3]
    out[(logg < 3.4) & (feh < -1.3)] = KINDS[4]
    return out.astype(str)


def systematics_rows(cat: dict) -> list[dict]:
    """Median survey − truth per kind of star and label, against the planted offset (catalogue columns)."""
    kind = kind_of(cat["truth_teff"], cat["truth_logg"], cat["truth_feh"])
    rows = []
    for name in KINDS:
        m = kind == name
        if not m.any():
            continue
        row = {"kind": name, "n": int(m.sum())}
        for k in LABELS:
            d = np.asarray(cat[f"survey_{k}"], float)[m] - np.asarray(cat[f"truth_{k}"], float)[m]
            row[f"{k}_median"] = float(np.nanmedian(d)) if np.isfinite(d).any() else float("nan")
            row[f"{k}_planted"] = float(np.median(np.asarray(cat[f"survey_offset_{k}"], float)[m]))
        rows.append(row)
    return rows
