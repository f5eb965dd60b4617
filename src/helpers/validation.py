"""Validation of the CNN labels (chapter 05): benchmark stars, open clusters, globular
clusters, and a warning for stars outside the training label space.

All functions take the prediction table of chapter 03 (:func:`helpers.ensemble.read_predictions`)
or plain arrays; labels in K and dex.
"""
from __future__ import annotations

import numpy as np

from .precision import robust_scatter

__all__ = ["benchmark_over_bound", "gc_reading", "gc_verdict", "benchmark_rows", "benchmark_summary", "cluster_rows", "anticorrelation", "gc_rows",
           "ExtrapolationFlag", "flag_rows"]


def benchmark_rows(table, reference: dict, labels=("teff", "logg", "feh"), high_snr: float = 200.0) -> list[dict]:
    """One row per benchmark spectrum: reference and CNN labels, and the S/N regime.

    Parameters
    ----------
    table : Table
        Prediction table; benchmark spectra have ``group == "benchmark"`` and their name in
        ``cluster``.
    reference : dict
        ``{name: {"teff", "logg", "feh"}}`` reference values of the benchmark series.
    high_snr : float
        Spectra at or above this S/N are the "high S/N" set.
    """
    rows = []
    sel = np.nonzero(np.asarray(table["group"]) == "benchmark")[0]
    for i in sel:
        name = str(table["cluster"][i])
        if name not in reference:
            continue
        r = {"name": name, "row": int(i), "snr": float(table["snr"][i]),
             "regime": "high S/N" if table["snr"][i] >= high_snr else "survey S/N"}
        for k in labels:
            r[f"ref_{k}"] = float(reference[name][k])
            r[f"cnn_{k}"] = float(table[f"cnn_{k}"][i])
            r[f"cnn_e_{k}"] = float(table[f"cnn_e_{k}"][i])
            r[f"d_{k}"] = r[f"cnn_{k}"] - r[f"ref_{k}"]
        rows.append(r)
    return rows


def benchmark_summary(rows: list[dict], labels=("teff", "logg", "feh")) -> list[dict]:
    """Median offset and robust scatter of CNN − reference per label and S/N regime."""
    out = []
    for regime in ("high S/N", "survey S/N"):
        rr = [r for r in rows if r["regime"] == regime]
        for k in labels:
            d = np.array([r[f"d_{k}"] for r in rr], float)
            out.append({"regime": regime, "label": k, "n": int(d.size),
                        "offset": float(np.median(d)) if d.size else float("nan"),
                        "scatter": robust_scatter(d)})
    return out


def cluster_rows(table, clusters, labels=("feh", "mg_fe", "al_fe"), expected: dict | None = None,
                 min_members: int = 5) -> list[dict]:
    """Mean and dispersion of the CNN labels per cluster, beside the input (truth) values.

    ``expected``: ``{label: σ}``, the dispersion a chemically homogeneous cluster would show from
    measurement error alone (e.g. the robust scatter of CNN − truth on the test set);
    ``ratio`` = observed dispersion / expected (1: consistent with homogeneity).
    """
    rows = []
    name_col = np.asarray(table["cluster"])
    for c in clusters:
        m = name_col == c
        if m.sum() < min_members:
            continue
        r = {"cluster": c, "n": int(m.sum())}
        for k in labels:
            v = np.asarray(table[f"cnn_{k}"], float)[m]
            r[f"mean_{k}"] = float(np.mean(v))
            r[f"sd_{k}"] = float(np.std(v, ddof=1))
            if f"truth_{k}" in table.colnames:
                t = np.asarray(table[f"truth_{k}"], float)[m]
                r[f"true_{k}"] = float(np.mean(t))
                r[f"true_sd_{k}"] = float(np.std(t, ddof=1))
            if expected and k in expected:
                r[f"ratio_{k}"] = r[f"sd_{k}"] / expected[k]
        rows.append(r)
    return rows


def anticorrelation(al, mg, n_boot: int = 1000, seed: int = 0) -> dict:
    """Slope d[Mg/Fe]/d[Al/Fe] (least squares) and Pearson r, with bootstrap standard errors."""
    al, mg = np.asarray(al, float), np.asarray(mg, float)
    ok = np.isfinite(al) & np.isfinite(mg)
    al, mg = al[ok], mg[ok]
    if al.size < 4:
        nan = float("nan")
        return {"n": int(al.size), "slope": nan, "slope_err": nan, "r": nan, "r_err": nan}

    def stats(a, b):
        if np.std(a) == 0 or np.std(b) == 0:
            return np.nan, np.nan
        return np.polyfit(a, b, 1)[0], np.corrcoef(a, b)[0, 1]

    slope, r = stats(al, mg)
    rng = np.random.default_rng(seed)
    boots = np.array([stats(al[i], mg[i]) for i in (rng.integers(0, al.size, al.size) for _ in range(n_boot))])
    return {"n": int(al.size), "slope": float(slope), "slope_err": float(np.nanstd(boots[:, 0])),
            "r": float(r), "r_err": float(np.nanstd(boots[:, 1]))}


def gc_rows(table, clusters, n_boot: int = 1000, seed: int = 0, min_members: int = 5) -> list[dict]:
    """Mg–Al anticorrelation per cluster from the CNN labels (``cnn_*``) and, where the table has
    them, the input labels (``true_*``): slope, correlation and their bootstrap errors."""
    name = np.asarray(table["cluster"])
    rows = []
    for i, c in enumerate(clusters):
        m = name == c
        if m.sum() < min_members:
            continue
        row = {"cluster": c, "n": int(m.sum()), "feh": float(np.median(np.asarray(table["cnn_feh"], float)[m]))}
        for prefix, col in (("cnn", "cnn"), ("true", "truth")):
            if f"{col}_al_fe" in table.colnames:
                r = anticorrelation(np.asarray(table[f"{col}_al_fe"])[m], np.asarray(table[f"{col}_mg_fe"])[m],
                                    n_boot, seed + i)
                row.update({f"{prefix}_{k}": v for k, v in r.items() if k != "n"})
        rows.append(row)
    return rows


class ExtrapolationFlag:
    """Flags labels that fall outside the label space of the training set.

    A star is flagged if any label lies outside the training range (min–max, widened by
    ``margin`` of the range), or if its distance to the ``k``-th nearest training star in
    min–max scaled label space exceeds the ``quantile`` of the training stars' own such
    distances (an empty region inside the box, e.g. metal-poor dwarfs when training holds
    only metal-poor giants).
    """

    def __init__(self, train_labels, k: int = 10, quantile: float = 0.99, margin: float = 0.0):
        from sklearn.neighbors import NearestNeighbors

        y = np.asarray(train_labels, float)
        y = y[np.all(np.isfinite(y), axis=1)]
        self.lo, self.hi = y.min(axis=0), y.max(axis=0)
        self.span = np.where(self.hi > self.lo, self.hi - self.lo, 1.0)
        self.margin = margin
        self.k = k
        self._nn = NearestNeighbors(n_neighbors=k + 1).fit(self._scale(y))
        d, _ = self._nn.kneighbors(self._scale(y))
        self.threshold = float(np.quantile(d[:, k], quantile))  # column 0 is the star itself

    def _scale(self, y):
        return (np.asarray(y, float) - self.lo) / self.span

    def __call__(self, labels) -> dict:
        """``outside_box``, ``sparse`` and ``flag`` (either) for each row of ``labels``."""
        y = np.asarray(labels, float)
        finite = np.all(np.isfinite(y), axis=1)
        lo, hi = self.lo - self.margin * self.span, self.hi + self.margin * self.span
        outside = ~finite | np.any((y < lo) | (y > hi), axis=1)
        sparse = np.zeros(len(y), bool)
        if finite.any():
            d, _ = self._nn.kneighbors(self._scale(y[finite]), n_neighbors=self.k)
            sparse[finite] = d[:, -1] > self.threshold
        return {"outside_box": outside, "sparse": sparse, "flag": outside | sparse}


def flag_rows(table, flag, groups=("field", "open_cluster", "globular_cluster", "benchmark")) -> list[dict]:
    """Per group of stars: spectra, flagged fraction and, with true labels in the table, the robust
    error of Teff and [Fe/H] for unflagged and flagged stars (NaN with fewer than 3 flagged)."""
    group = np.asarray(table["group"])
    flag = np.asarray(flag, bool)
    truth = "truth_teff" in table.colnames
    rows = []
    for g in groups:
        m = group == g
        r = {"group": g.replace("_", " "), "n": int(m.sum()),
             "flagged": float(flag[m].mean()) if m.any() else float("nan")}
        if truth:
            for k in ("teff", "feh"):
                err = np.asarray(table[f"cnn_{k}"], float) - np.asarray(table[f"truth_{k}"], float)
                r[f"err_ok_{k}"] = robust_scatter(err[m & ~flag])
                r[f"err_flag_{k}"] = robust_scatter(err[m & flag]) if (m & flag).sum() >= 3 else float("nan")
        rows.append(r)
    return rows


def benchmark_over_bound(rows: list[dict], bounds: dict, labels=("teff", "logg", "feh")) -> list[dict]:
    """Per S/N regime and label: the benchmark errors in units of each spectrum's own bound.

    ``bounds`` maps a row of the prediction table (``row`` of :func:`benchmark_rows`) to its
    Cramér–Rao bound (5 labels). Uses :func:`helpers.precision.error_over_bound`.
    """
    from . import LABELS
    from .precision import error_over_bound

    out = []
    for regime in ("high S/N", "survey S/N"):
        sel = [r for r in rows if r["regime"] == regime and r["row"] in bounds]
        for k in labels:
            j = LABELS.index(k)
            err = np.array([r[f"d_{k}"] for r in sel])
            b = np.array([bounds[r["row"]][j] for r in sel])
            out.append({"regime": regime, "label": k, "n": len(sel),
                        "bound": float(np.median(b)) if len(b) else float("nan"),
                        "over_bound": error_over_bound(err, b) if len(b) > 2 else float("nan")})
    return out


def gc_reading(response_rows: list[dict], star: str = "gc_2g", snr: float = 50.0) -> str:
    """How to read the globular-cluster test, from the single-label response of chapter 03
    for a second-generation globular-cluster giant (response of [Al/Fe] and [Mg/Fe], and the
    cross-talk of a [Mg/Fe] step into [Al/Fe])."""
    sel = {r["label"]: r for r in response_rows if r["star"] == star and r["snr"] == snr}
    if "al_fe" not in sel or "mg_fe" not in sel:
        return "the single-label response of such a star was not measured in this run."
    al, mg = sel["al_fe"]["response"], sel["mg_fe"]["response"]
    leak = sel["mg_fe"].get("x_al_fe", float("nan"))
    facts = (f"for a second-generation globular-cluster giant at S/N {snr:.0f}, chapter 03 measured a "
             f"response of {al:.2f} to [Al/Fe] and {mg:.2f} to [Mg/Fe], and a [Mg/Fe] step moved "
             f"the predicted [Al/Fe] by {leak:.2f} of an [Al/Fe] step")
    if al < 0.5 or mg < 0.5:
        return (facts + ": the network barely follows these labels in such a star, so the "
                "correlation it reports in a cluster comes from what it learned elsewhere, not from "
                "the cluster's Mg and Al lines. A missed or inverted anticorrelation is then a "
                "finding about the network, not about the cluster.")
    return (facts + ": the network follows both labels in such a star, so the correlation it "
            "reports is read from the spectra.")


def gc_verdict(gc_rows: list[dict], simulated: bool) -> str:
    """Was the globular clusters' Mg–Al anticorrelation reproduced? A significant anticorrelation
    (r more than two bootstrap errors below zero) in every cluster whose input has one."""
    if not gc_rows:
        return "not tested (no globular cluster with enough members)"
    n = len(gc_rows)
    anti = sum(1 for r in gc_rows if r["cnn_r"] + 2 * r["cnn_r_err"] < 0)
    pos = sum(1 for r in gc_rows if r["cnn_r"] - 2 * r["cnn_r_err"] > 0)
    if simulated:
        want = sum(1 for r in gc_rows if r.get("true_r", 0.0) < 0)
        ok = anti >= want > 0
        head = "reproduced" if ok else "not reproduced"
        return (f"{head}: a significant anticorrelation in {anti} of {n} clusters (the input has one in "
                f"{want}), a significant positive correlation in {pos}")
    return f"a significant anticorrelation in {anti} of {n} clusters, a positive correlation in {pos}"
