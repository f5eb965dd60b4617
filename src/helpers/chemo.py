"""Galactic chemical evolution from the labels (chapter 06): low-/high-α populations and
radial and vertical abundance gradients.

Positions come from :func:`helpers.galaxy.galactocentric` (astropy, frame parameters in
:data:`helpers.galaxy.FRAME`). Abundances in dex, R and z in kpc.
"""
from __future__ import annotations

import csv

import numpy as np

from . import paths

__all__ = ["bin_trends", "bin_trends_sentence", "R_EDGES", "Z_EDGES", "gradient_decomposition",
           "split_decomposition", "al_separation", "al_decomposition", "decomposition_verdict", "AlphaSplit", "split_quality", "fit_gradients", "gradient_rows", "load_literature_gradients"]


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


def _shrink_and_noise(truth, own, seed: int):
    """Split a method's labels into a linear response and a residual: ``own ≈ a + s·truth + r``.

    Returns the labels with the response only (``a + s·truth``), the labels with the residual only
    (``truth + r`` with the residuals permuted over stars, so they no longer depend on the true
    label), and the slope ``s``.
    """
    truth, own = np.asarray(truth, float), np.asarray(own, float)
    ok = np.isfinite(truth) & np.isfinite(own)
    s, a = np.polyfit(truth[ok], own[ok], 1) if ok.sum() > 2 else (np.nan, np.nan)
    shrink = a + s * truth
    resid = np.full(truth.size, np.nan)
    r = own[ok] - (a + s * truth[ok])
    resid[np.flatnonzero(ok)] = np.random.default_rng(seed).permutation(r)
    return shrink, truth + resid, float(s)


def split_decomposition(labels: dict, population, method: str = "CNN", seed: int = 0,
                        feh_range=(-1.2, 0.4)) -> list[dict]:
    """Why a method's α split finds fewer (or more) thick-disc stars than the truth's: one ingredient
    at a time.

    The Gaussian-mixture split (:class:`AlphaSplit`) is re-fitted on six label sets: the true
    [Fe/H] and [Mg/Fe] (the reference); the method's [Fe/H] with true [Mg/Fe]; true [Fe/H] with the
    method's [Mg/Fe]; true [Fe/H] with only the **shrinkage** of the method's [Mg/Fe] (its linear
    response ``a + s·truth``); true [Fe/H] with only its **scatter** (true [Mg/Fe] plus the method's
    residuals about that line, permuted over stars); and the method's labels for both.

    Parameters
    ----------
    labels : dict
        ``{"truth": {"feh": ..., "mg_fe": ...}, method: {...}}`` [dex].
    population : array_like of str
        True population of every star (``thin``, ``thick``, ``halo``, ``accreted``).
    method : str
    seed : int
        Seeds the mixtures and the permutation of residuals.
    feh_range : tuple of float
        [Fe/H] range where each mixture is fitted [dex].

    Returns
    -------
    list of dict
        One row per case: ``case``, ``feh``, ``mg_fe`` (where each label came from), the
        :func:`split_quality` numbers, and ``diff_completeness``, ``diff_purity`` (case − reference).
    """
    tf, tm = (np.asarray(labels["truth"][k], float) for k in ("feh", "mg_fe"))
    of, om = (np.asarray(labels[method][k], float) for k in ("feh", "mg_fe"))
    shrink, noise, slope = _shrink_and_noise(tm, om, seed)
    cases = (("reference", "truth", "truth", tf, tm, "none"),
             ("[Fe/H] only", method, "truth", of, tm, f"the {method}'s [Fe/H]"),
             ("[Mg/Fe] only", "truth", method, tf, om, f"the {method}'s [Mg/Fe]"),
             ("[Mg/Fe] shrinkage only", "truth", f"{slope:.2f} × truth", tf, shrink,
              f"the shrinkage of the {method}'s [Mg/Fe]"),
             ("[Mg/Fe] scatter only", "truth", f"truth + {method} residuals", tf, noise,
              f"the scatter of the {method}'s [Mg/Fe]"),
             ("both", method, method, of, om, f"all of the {method}'s labels"))
    rows = []
    for name, sf, sm, f, m, ingredient in cases:
        high = AlphaSplit(f, m, seed=seed, feh_range=feh_range)(f, m)["high_alpha"]
        rows.append({"case": name, "feh": sf, "mg_fe": sm, "ingredient": ingredient,
                     **split_quality(high, population)})
    for r in rows:
        r["diff_completeness"] = r["completeness"] - rows[0]["completeness"]
        r["diff_purity"] = r["purity"] - rows[0]["purity"]
    rows[3]["slope"] = slope
    return rows


def al_separation(feh, al_fe, high, low, feh_range=(-0.8, 0.0), bin_width: float = 0.1,
                  min_stars: int = 10) -> dict:
    """How far apart the two sequences lie in [Al/Fe] at fixed [Fe/H].

    In [Fe/H] bins of ``bin_width`` across ``feh_range`` [dex], the median [Al/Fe] of the ``high``
    stars minus that of the ``low`` stars, where both have at least ``min_stars``; averaged over
    those bins (weighted by the smaller of the two counts).

    Returns
    -------
    dict
        ``separation`` [dex] (NaN with no usable bin) and ``n_bins``.
    """
    f, a = np.asarray(feh, float), np.asarray(al_fe, float)
    high, low = np.asarray(high, bool), np.asarray(low, bool)
    ok = np.isfinite(f) & np.isfinite(a)
    edges = np.arange(feh_range[0], feh_range[1] + bin_width / 2, bin_width)
    diffs, weights = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        b = ok & (f >= lo) & (f < hi)
        nh, nl = int((b & high).sum()), int((b & low).sum())
        if min(nh, nl) >= min_stars:
            diffs.append(np.median(a[b & high]) - np.median(a[b & low]))
            weights.append(min(nh, nl))
    sep = float(np.average(diffs, weights=weights)) if diffs else float("nan")
    return {"separation": sep, "n_bins": len(diffs)}


def al_decomposition(labels: dict, split_high, population, method: str = "CNN", seed: int = 0,
                     feh_range=(-0.8, 0.0)) -> list[dict]:
    """Why the two sequences lie closer (or farther) in a method's [Al/Fe]–[Fe/H] plane than in
    the truth's: one ingredient at a time.

    The separation of :func:`al_separation` measured with true labels of the true thin and thick
    discs (the reference); true labels of the method's low-/high-α classes (**selection**); the
    method's labels of the true discs (**labels**), split further into the shrinkage of its
    [Al/Fe] alone (its linear response ``a + s·truth``, true [Fe/H]) and its scatter alone (true
    [Al/Fe] plus the permuted residuals); and the method's labels of its own classes (**both**).

    Parameters
    ----------
    labels : dict
        ``{"truth": {"feh": ..., "al_fe": ...}, method: {...}}`` [dex].
    split_high : array_like of bool
        The method's high-α class (its complement is the low-α class).
    population : array_like of str
    method : str
    seed : int
        Seeds the permutation of residuals.
    feh_range : tuple of float
        [Fe/H] range over which the separation is averaged [dex].

    Returns
    -------
    list of dict
        ``case``, ``separation`` [dex], ``n_bins``, ``diff`` (case − reference) and, on the
        shrinkage row, ``slope``.
    """
    tf, ta = (np.asarray(labels["truth"][k], float) for k in ("feh", "al_fe"))
    of, oa = (np.asarray(labels[method][k], float) for k in ("feh", "al_fe"))
    pop = np.asarray(population)
    thick, thin = pop == "thick", pop == "thin"
    sh = np.asarray(split_high, bool)
    disc = thick | thin
    shrink, noise, slope = _shrink_and_noise(ta, oa, seed)
    cases = (("reference: true labels, true discs", tf, ta, thick & disc, thin & disc, "none"),
             (f"selection: true labels, {method}'s α classes", tf, ta, sh, ~sh,
              f"the selection by the {method}'s α classes"),
             (f"labels: {method} labels, true discs", of, oa, thick & disc, thin & disc, f"the {method}'s labels"),
             (f"[Al/Fe] shrinkage only ({slope:.2f} × truth), true discs", tf, shrink, thick & disc, thin & disc,
              f"the shrinkage of the {method}'s [Al/Fe]"),
             ("[Al/Fe] scatter only, true discs", tf, noise, thick & disc, thin & disc,
              f"the scatter of the {method}'s [Al/Fe]"),
             (f"both: {method} labels, {method}'s α classes", of, oa, sh, ~sh, "everything"))
    rows = []
    for name, f, a, hi, lo, ingredient in cases:
        rows.append({"case": name, "ingredient": ingredient, **al_separation(f, a, hi, lo, feh_range)})
    for r in rows:
        r["diff"] = r["separation"] - rows[0]["separation"]
    rows[3]["slope"] = slope
    return rows


def decomposition_verdict(rows: list[dict], key: str, what: str, unit: str = "",
                          fmt: str = "+.3f", singles: tuple = (1, 2)) -> str:
    """One generated sentence naming the single ingredient that moves a statistic most.

    ``rows`` is the output of one of the decompositions (row 0 the reference, the last row
    everything swapped; each row's ``ingredient`` names what it swaps); ``key`` the column of differences from the reference; ``singles`` the
    indices of the rows that swap one ingredient each. The criterion: the ingredient with the
    largest |difference| is named as the main cause when it is at least twice any other single one;
    otherwise the sentence says none dominates. When everything swapped together differs from the
    sum of the single changes by more than the largest single change, a second sentence says that
    the ingredients do not add.
    """
    d = {rows[i].get("ingredient", rows[i]["case"]): float(rows[i][key]) for i in singles}
    if not all(np.isfinite(v) for v in d.values()):
        return f"The decomposition of {what} is not defined in this run (too few stars in a case)."
    order = sorted(d, key=lambda k: -abs(d[k]))
    first, rest = order[0], order[1:]
    total = float(rows[-1][key])
    parts = "; ".join(f"{k}: {format(v, fmt)}{unit}" for k, v in d.items())
    if all(abs(d[first]) >= 2 * abs(d[k]) for k in rest):
        lead = f"Most of the change in {what} comes from one ingredient, {first}"
    else:
        lead = f"No single ingredient dominates the change in {what}"
    out = (f"{lead} ({parts}; all swapped together: {format(total, fmt)}{unit}; criterion: the largest single "
           "change at least twice every other).")
    added = sum(d.values())
    if abs(total - added) > max(abs(v) for v in d.values()):
        out += (f" The single changes add up to {format(added, fmt)}{unit}, against {format(total, fmt)}{unit} "
                "together: the ingredients do not simply add (e.g. a shrunk label narrows the gap between the "
                "sequences, so the same scatter blurs them more).")
    return out


#: The bins of chapter 06's planes (Galactocentric radius and height [kpc]), shared with the figure.
R_EDGES = (3.0, 6.0, 9.0, 12.0, 15.0)
Z_EDGES = (0.0, 0.5, 1.0, 3.0)


def bin_trends(feh, high_alpha, R, z, r_edges=R_EDGES, z_edges=Z_EDGES, min_stars: int = 30) -> dict:
    """What the planes in bins of R and |z| show, as numbers.

    Parameters
    ----------
    feh : array_like
        [Fe/H] [dex].
    high_alpha : array_like of bool
        The α class of each star (e.g. from :class:`AlphaSplit`).
    R, z : array_like
        Galactocentric radius and height [kpc].
    min_stars : int
        Bins with fewer stars get NaN.

    Returns
    -------
    dict
        ``high_share`` (n_z, n_r): share of high-α stars per bin; ``n`` (n_z, n_r): stars per bin;
        ``low_feh_plane`` (n_r,): median [Fe/H] of the low-α stars with |z| below ``z_edges[1]``
        per radial bin [dex]; the edges.
    """
    feh, R, az = (np.asarray(a, float) for a in (feh, R, np.abs(np.asarray(z, float))))
    high = np.asarray(high_alpha, bool)
    nr, nz = len(r_edges) - 1, len(z_edges) - 1
    share, n = np.full((nz, nr), np.nan), np.zeros((nz, nr), int)
    low_plane = np.full(nr, np.nan)
    ok = np.isfinite(feh)
    for j in range(nr):
        in_r = ok & (R >= r_edges[j]) & (R < r_edges[j + 1])
        for i in range(nz):
            m = in_r & (az >= z_edges[i]) & (az < z_edges[i + 1])
            n[i, j] = m.sum()
            if n[i, j] >= min_stars:
                share[i, j] = high[m].mean()
        m = in_r & (az < z_edges[1]) & ~high
        if m.sum() >= min_stars:
            low_plane[j] = np.median(feh[m])
    return {"high_share": share, "n": n, "low_feh_plane": low_plane, "r_edges": tuple(r_edges),
            "z_edges": tuple(z_edges)}


def bin_trends_sentence(t: dict, who: str = "the network's labels") -> str:
    """Chapter 06's caption sentence for the planes in bins, from :func:`bin_trends`: where the
    high-α share is largest and smallest, and whether the low-α [Fe/H] near the plane falls
    outwards (criterion: outermost filled bin below the innermost one), in numbers."""
    share, r, zz = t["high_share"], t["r_edges"], t["z_edges"]
    if not np.isfinite(share).any():
        return f"Too few stars per bin in {who} to compare the bins."

    def where(i, j):
        return f"R {r[j]:g}–{r[j + 1]:g} kpc, |z| {zz[i]:g}–{zz[i + 1]:g} kpc"

    hi = np.unravel_index(np.nanargmax(share), share.shape)
    lo = np.unravel_index(np.nanargmin(share), share.shape)
    inner_high = hi[1] == 0 or hi[0] == share.shape[0] - 1
    text = (f"In {who} the high-α share is largest, {share[hi]:.0%}, at {where(*hi)}, and smallest, "
            f"{share[lo]:.0%}, at {where(*lo)}"
            + ("; it is largest in the inner Galaxy or far from the plane, as in the Milky Way. " if inner_high and
               (lo[1] > hi[1] or lo[0] < hi[0]) else "; that is not the Milky Way's pattern (largest in the inner "
               "Galaxy and far from the plane). "))
    lp = t["low_feh_plane"]
    filled = np.nonzero(np.isfinite(lp))[0]
    if len(filled) >= 2:
        a, b = filled[0], filled[-1]
        text += (f"Near the plane (|z| < {zz[1]:g} kpc) the median [Fe/H] of the low-α stars is {lp[a]:+.2f} at "
                 f"R {r[a]:g}–{r[a + 1]:g} kpc and {lp[b]:+.2f} at R {r[b]:g}–{r[b + 1]:g} kpc: "
                 + ("it falls outwards." if lp[b] < lp[a] else "it does not fall outwards."))
    return text
