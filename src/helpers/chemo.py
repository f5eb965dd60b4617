"""Galactic chemical evolution from the labels (chapter 06): low-/high-α populations and
radial and vertical abundance gradients.

Positions come from :func:`helpers.galaxy.galactocentric` (astropy, frame parameters in
:data:`helpers.galaxy.FRAME`). Abundances in dex, R and z in kpc.
"""
from __future__ import annotations

import csv

import numpy as np

from . import paths

__all__ = ["gradient_decomposition", "AlphaSplit", "split_quality", "fit_gradients", "gradient_rows", "load_literature_gradients"]


def load_literature_gradients(path=paths.PACKAGE_DATA / "literature_gradients.csv") -> list[dict]:
    """Literature gradients quoted in chapter 06 (value and error in dex/kpc, with the source)."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(r for r in fh if not r.startswith("#")))
    for r in rows:
        r["value"] = float(r["value"])
        r["error"] = float(r["error"]) if r["error"] else float("nan")
    return rows


class AlphaSplit:
    """Low-/high-α separation by a two-component Gaussian mixture in the [Fe/H]–[Mg/Fe] plane.

    The mixture is fitted to the stars with ``feh_range[0] < [Fe/H] < feh_range[1]`` (where both
    sequences exist); the component with the higher mean [Mg/Fe] is the high-α one. Stars are
    assigned by the larger posterior probability; those outside the fitting range are assigned
    by the same mixture, which extrapolates, so they are also flagged (``in_range``).

    Parameters
    ----------
    feh, mg_fe : array_like
    seed : int
    feh_range : tuple of float
    """

    def __init__(self, feh, mg_fe, seed: int = 0, feh_range=(-1.2, 0.4)):
        from sklearn.mixture import GaussianMixture

        X = np.column_stack([np.asarray(feh, float), np.asarray(mg_fe, float)])
        ok = np.all(np.isfinite(X), axis=1) & (X[:, 0] > feh_range[0]) & (X[:, 0] < feh_range[1])
        if ok.sum() < 20:
            raise ValueError(f"only {ok.sum()} stars with {feh_range[0]} < [Fe/H] < {feh_range[1]}; "
                             "the α split needs at least 20")
        self.feh_range = feh_range
        self.gmm = GaussianMixture(2, covariance_type="full", random_state=seed, n_init=3).fit(X[ok])
        self.high = int(np.argmax(self.gmm.means_[:, 1]))

    def p_high(self, feh, mg_fe) -> np.ndarray:
        """Posterior probability of the high-α component (NaN where a label is missing)."""
        X = np.column_stack([np.asarray(feh, float), np.asarray(mg_fe, float)])
        ok = np.all(np.isfinite(X), axis=1)
        out = np.full(len(X), np.nan)
        out[ok] = self.gmm.predict_proba(X[ok])[:, self.high]
        return out

    def __call__(self, feh, mg_fe) -> dict:
        p = self.p_high(feh, mg_fe)
        f = np.asarray(feh, float)
        return {"high_alpha": p > 0.5, "p_high": p,
                "in_range": (f > self.feh_range[0]) & (f < self.feh_range[1])}


def split_quality(high_alpha, population) -> dict:
    """How well a high-α class matches the true populations: ``high`` (fraction classed high-α),
    ``purity`` (share of true thick-disc stars among the disc stars classed high-α) and
    ``completeness`` (share of true thick-disc stars classed high-α)."""
    h = np.asarray(high_alpha, bool)
    pop = np.asarray(population)
    thick = pop == "thick"
    disc = np.isin(pop, ["thin", "thick"])
    return {"high": float(h.mean()),
            "purity": float(thick[h & disc].mean()) if (h & disc).any() else float("nan"),
            "completeness": float(h[thick].mean()) if thick.any() else float("nan")}


def fit_gradients(R, z, y, r0: float = 8.122, n_boot: int = 500, seed: int = 0) -> dict:
    """Radial and vertical gradients by least squares, y = a + b_R (R − r0) + b_z |z|.

    Fitting both at once matters: in a magnitude-limited survey the distant stars are both
    farther out (or in) and higher above the plane.

    Returns
    -------
    dict
        ``n``, ``a`` (value at R = r0, z = 0), ``grad_R`` [dex/kpc], ``grad_z`` [dex/kpc] and
        bootstrap standard errors ``grad_R_err``, ``grad_z_err``.
    """
    R, z, y = (np.asarray(a, float) for a in (R, z, y))
    ok = np.isfinite(R) & np.isfinite(z) & np.isfinite(y)
    R, z, y = R[ok], z[ok], y[ok]
    nan = float("nan")
    if y.size < 10:
        return {"n": int(y.size), "a": nan, "grad_R": nan, "grad_z": nan, "grad_R_err": nan, "grad_z_err": nan}
    A = np.column_stack([np.ones_like(R), R - r0, np.abs(z)])

    def fit(idx):
        return np.linalg.lstsq(A[idx], y[idx], rcond=None)[0]

    coef = fit(np.arange(y.size))
    rng = np.random.default_rng(seed)
    boots = np.array([fit(rng.integers(0, y.size, y.size)) for _ in range(n_boot)])
    return {"n": int(y.size), "a": float(coef[0]), "grad_R": float(coef[1]), "grad_z": float(coef[2]),
            "grad_R_err": float(boots[:, 1].std()), "grad_z_err": float(boots[:, 2].std())}


def gradient_rows(R, z, labels: dict, groups: dict, r_range=(5.0, 12.0), z_max: float = 2.0,
                  n_boot: int = 500, seed: int = 0, r0: float = 8.122) -> list[dict]:
    """Gradients of every label in every group of stars (e.g. populations × label sources).

    Parameters
    ----------
    labels : dict
        ``{source: {label: ndarray}}``, e.g. ``{"CNN": {"feh": ...}, "truth": {...}}``.
    groups : dict
        ``{name: boolean mask}``.
    r_range, z_max : float
        Only stars with ``r_range[0] ≤ R ≤ r_range[1]`` and ``|z| ≤ z_max`` [kpc].
    """
    R, z = np.asarray(R, float), np.asarray(z, float)
    window = (R >= r_range[0]) & (R <= r_range[1]) & (np.abs(z) <= z_max)
    rows = []
    for gname, mask in groups.items():
        for source, labs in labels.items():
            m = window & np.asarray(mask[source] if isinstance(mask, dict) else mask, bool)
            for k, y in labs.items():
                r = fit_gradients(R[m], z[m], np.asarray(y, float)[m], r0, n_boot, seed)
                rows.append({"group": gname, "source": source, "label": k, **r})
    return rows


def gradient_decomposition(R, z, labels: dict, split_low: dict, true_low, label: str = "feh",
                           method: str = "CNN", r_range=(5.0, 12.0), z_max: float = 2.0,
                           n_boot: int = 500, seed: int = 0, r0: float = 8.122) -> list[dict]:
    """Why a method's low-α radial gradient differs from the truth's: one ingredient at a time.

    Four fits of the same window: true labels of the true thin disc (the reference), true labels
    of the method's low-α stars (the **selection** alone), the method's labels of the true thin
    disc (the **labels** alone: their noise, shrinkage and systematics), and the method's labels of
    its own low-α stars (both). Each row carries its radial gradient, bootstrap error and the
    difference from the reference [dex/kpc]; the labels row also the slope of method against true
    label in that sample (the shrinkage: a slope s flattens a gradient to about s times itself).

    ``labels``: ``{"truth": {...}, method: {...}}``; ``split_low``: the method's low-α mask;
    ``true_low``: the true thin-disc mask.
    """
    R, z = np.asarray(R, float), np.asarray(z, float)
    window = (R >= r_range[0]) & (R <= r_range[1]) & (np.abs(z) <= z_max)
    truth = np.asarray(labels["truth"][label], float)
    own = np.asarray(labels[method][label], float)
    cases = (("reference: true labels, true thin disc", truth, true_low),
             (f"selection: true labels, {method}'s low-α stars", truth, split_low),
             (f"labels: {method} labels, true thin disc", own, true_low),
             (f"both: {method} labels, {method}'s low-α stars", own, split_low))
    rows = []
    for name, y, mask in cases:
        m = window & np.asarray(mask, bool) & np.isfinite(y)
        rows.append({"case": name, **fit_gradients(R[m], z[m], y[m], r0, n_boot, seed)})
    ref = rows[0]["grad_R"]
    for r in rows:
        r["diff_R"] = r["grad_R"] - ref
    m = window & np.asarray(true_low, bool) & np.isfinite(own) & np.isfinite(truth)
    rows[2]["shrinkage"] = float(np.polyfit(truth[m], own[m], 1)[0]) if m.sum() > 2 else float("nan")
    return rows
