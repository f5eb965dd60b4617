"""Two label pipelines side by side on the same stars (chapter 07: the CNN against The Cannon).

Every function takes label arrays of shape (N, 5) in the order of :data:`helpers.LABELS` and
returns plain rows (lists of dicts) for tables, figures and the verdict text.
"""
from __future__ import annotations

import numpy as np

from . import LABEL_TEX, LABELS
from .precision import robust_scatter

__all__ = ["snr_bins", "binned_precision", "summary_rows", "edge_masks", "edge_rows", "speed_rows",
           "faster_or_slower", "verdict"]

#: Units of each label as written in the text.
UNITS = {"teff": "K", "logg": "", "feh": "dex", "mg_fe": "dex", "al_fe": "dex"}


def snr_bins(snr, n_bins: int = 6, min_per_bin: int = 30) -> np.ndarray:
    """Edges of S/N bins holding equal numbers of stars (quantiles), at least ``min_per_bin`` each."""
    snr = np.asarray(snr, float)
    snr = snr[np.isfinite(snr)]
    n_bins = max(1, min(n_bins, len(snr) // max(min_per_bin, 1)))
    edges = np.quantile(snr, np.linspace(0, 1, n_bins + 1))
    edges[-1] = np.nextafter(edges[-1], np.inf)
    return np.unique(edges)


def binned_precision(err, snr, edges, min_count: int = 10) -> dict:
    """Robust scatter and median of errors (N, 5) in S/N bins.

    Returns
    -------
    dict
        ``mid`` (bin centres, geometric), ``count``, ``scatter`` (n_bins, 5), ``bias`` (n_bins, 5);
        NaN where a bin has fewer than ``min_count`` stars.
    """
    err, snr = np.asarray(err, float), np.asarray(snr, float)
    nb = len(edges) - 1
    idx = np.digitize(snr, edges) - 1
    scatter = np.full((nb, err.shape[1]), np.nan)
    bias = np.full((nb, err.shape[1]), np.nan)
    count = np.zeros(nb, int)
    for b in range(nb):
        m = idx == b
        count[b] = int(m.sum())
        for j in range(err.shape[1]):
            e = err[m, j]
            e = e[np.isfinite(e)]
            if len(e) >= min_count:
                scatter[b, j] = robust_scatter(e)
                bias[b, j] = float(np.median(e))
    return {"mid": np.sqrt(edges[1:] * edges[:-1]), "count": count, "scatter": scatter, "bias": bias}


def summary_rows(methods: dict, references: dict) -> list[dict]:
    """Scatter and bias of each method against each reference, per label.

    Parameters
    ----------
    methods : dict
        ``{name: labels (N, 5)}``, e.g. ``{"CNN": ..., "Cannon": ...}``.
    references : dict
        ``{name: labels (N, 5)}``, e.g. ``{"truth": ..., "survey": ...}`` (same stars).

    Returns
    -------
    list of dict
        One row per label: ``label``, and ``{method}_{ref}_scatter``, ``{method}_{ref}_bias`` (median
        of method − reference), plus ``ratio_{ref}`` = scatter of the second method / the first.
    """
    names = list(methods)
    rows = []
    for j, k in enumerate(LABELS):
        row = {"label": k}
        for ref, y in references.items():
            for name in names:
                d = np.asarray(methods[name], float)[:, j] - np.asarray(y, float)[:, j]
                d = d[np.isfinite(d)]
                row[f"{name}_{ref}_scatter"] = robust_scatter(d) if len(d) else np.nan
                row[f"{name}_{ref}_bias"] = float(np.median(d)) if len(d) else np.nan
            if len(names) == 2:
                a, b = row[f"{names[0]}_{ref}_scatter"], row[f"{names[1]}_{ref}_scatter"]
                row[f"ratio_{ref}"] = b / a if a > 0 else np.nan
        rows.append(row)
    return rows


def edge_masks(labels, metal_poor: float = -1.0, hot: float = 6200.0, cool: float = 4300.0,
               giant_logg: float = 2.5) -> dict:
    """Stars at the edges of the label space, by the reference labels (N, 5).

    Returns ``{"bulk": ..., "metal-poor ([Fe/H] < -1)": ..., "hot (Teff > 6500 K)": ...,
    "cool giants (Teff < 4300 K, log g < 2.5)": ...}`` boolean masks; "bulk" is none of the others.
    """
    y = np.asarray(labels, float)
    teff, logg, feh = y[:, 0], y[:, 1], y[:, 2]
    masks = {
        f"metal-poor ([Fe/H] < {metal_poor:g})": feh < metal_poor,
        f"hot (Teff > {hot:g} K)": teff > hot,
        f"cool giants (Teff < {cool:g} K, log g < {giant_logg:g})": (teff < cool) & (logg < giant_logg),
    }
    edge = np.zeros(len(y), bool)
    for m in masks.values():
        edge |= m
    return {"bulk": ~edge & np.all(np.isfinite(y), axis=1), **masks}


def edge_rows(methods: dict, reference, masks: dict, labels=LABELS) -> list[dict]:
    """Scatter and bias of each method against ``reference`` in each region of ``masks``."""
    ref = np.asarray(reference, float)
    rows = []
    for region, m in masks.items():
        row = {"region": region, "n": int(np.sum(m))}
        for name, y in methods.items():
            y = np.asarray(y, float)
            for k in labels:
                j = LABELS.index(k)
                d = (y[m, j] - ref[m, j])
                d = d[np.isfinite(d)]
                row[f"{name}_{k}_scatter"] = robust_scatter(d) if len(d) >= 5 else np.nan
                row[f"{name}_{k}_bias"] = float(np.median(d)) if len(d) >= 5 else np.nan
        rows.append(row)
    return rows


def speed_rows(timings: dict) -> list[dict]:
    """Rows of a speed table from ``{method: {"train_s": ..., "n_train": ..., "infer_s": ..., "n_infer": ...}}``.

    Adds spectra per second for training and inference, and each method's time relative to the first.
    """
    names = list(timings)
    base = timings[names[0]]
    rows = []
    for name in names:
        t = timings[name]
        rows.append({
            "method": name, "train_min": t["train_s"] / 60.0,
            "train_rel": t["train_s"] / base["train_s"] if base["train_s"] > 0 else np.nan,
            "infer_rate": t["n_infer"] / t["infer_s"] if t["infer_s"] > 0 else np.nan,
            "infer_rel": (t["n_infer"] / t["infer_s"]) / (base["n_infer"] / base["infer_s"])
            if t["infer_s"] > 0 and base["infer_s"] > 0 else np.nan,
        })
    return rows


def _name(k: str) -> str:
    """The label as written in text (LaTeX math for Teff and log g), without its unit."""
    return LABEL_TEX[k].split(" [")[0]


def faster_or_slower(ratio: float) -> str:
    """``ratio`` = other time / this time, in words: "12 times faster" or "1.5 times slower"."""
    if not np.isfinite(ratio) or ratio <= 0:
        return "(not measured)"
    return f"{ratio:.2g} times faster" if ratio >= 1 else f"{1 / ratio:.2g} times slower"


def _fmt(k: str, v: float) -> str:
    return f"{v:.0f} K" if k == "teff" else (f"{v:.3f} dex" if UNITS[k] == "dex" else f"{v:.3f}")


def verdict(summary: list[dict], edges: list[dict], speed: list[dict], reference: str = "truth",
            names=("CNN", "Cannon"), tie: float = 0.05, tilts: dict | None = None) -> str:
    """A verdict paragraph written from the measured numbers (Markdown).

    A label is a win for one method when its scatter against ``reference`` is lower by more than
    ``tie`` (relative); the same rule compares the absolute median offsets (bias); edges count the
    regions where one method's scatter is lower for the label. ``tilts`` (``{name: r}`` for both
    methods and ``reference``) compares the correlation of [Mg/Fe] with [Fe/H].
    """
    a, b = names
    wins = {a: [], b: [], "tie": []}
    for r in summary:
        sa, sb = r[f"{a}_{reference}_scatter"], r[f"{b}_{reference}_scatter"]
        if not (np.isfinite(sa) and np.isfinite(sb)):
            continue
        ratio = sb / sa
        key = a if ratio > 1 + tie else (b if ratio < 1 - tie else "tie")
        wins[key].append((r["label"], sa, sb, ratio))

    def describe(items):
        return "; ".join(f"{_name(k)} ({_fmt(k, sa)} against {_fmt(k, sb)})" for k, sa, sb, _ in items)

    parts = []
    against = "the truth" if reference == "truth" else "the survey labels"
    if wins[a]:
        parts.append(f"the {a} is more precise for {describe(wins[a])}")
    if wins[b]:
        parts.append(f"the {b} is more precise for {describe(wins[b])}")
    if wins["tie"]:
        parts.append(f"the two agree within {tie:.0%} for {describe(wins['tie'])}")
    if parts:
        parts = [f"Measured against {against} on the test stars (robust scatter, {a} first), "
                 + "; and ".join(parts) + "."]
    bias_wins = {a: [], b: []}
    for r in summary:
        ba, bb = abs(r[f"{a}_{reference}_bias"]), abs(r[f"{b}_{reference}_bias"])
        if np.isfinite(ba) and np.isfinite(bb) and max(ba, bb) > 0:
            if ba < (1 - tie) * bb:
                bias_wins[a].append((r["label"], r[f"{a}_{reference}_bias"], r[f"{b}_{reference}_bias"]))
            elif bb < (1 - tie) * ba:
                bias_wins[b].append((r["label"], r[f"{a}_{reference}_bias"], r[f"{b}_{reference}_bias"]))
    for who in (a, b):
        if bias_wins[who]:
            items = "; ".join(f"{_name(k)} ({_fmt(k, va)} against {_fmt(k, vb)})" for k, va, vb in bias_wins[who])
            parts.append(f"The {who} is less biased (median offset, {a} first) for {items}.")
    edge_notes = []
    for row in edges:
        if row["region"] == "bulk" or row["n"] < 5:
            continue
        better = [k for k in LABELS if np.isfinite(row.get(f"{a}_{k}_scatter", np.nan))
                  and row[f"{a}_{k}_scatter"] < row[f"{b}_{k}_scatter"]]
        n_ok = sum(np.isfinite(row.get(f"{a}_{k}_scatter", np.nan)) for k in LABELS)
        if n_ok:
            edge_notes.append(f"{row['region']}: {a} better for {len(better)} of {n_ok} labels")
    if edge_notes:
        parts.append("At the edges of the label space (" + "; ".join(edge_notes) + ").")
    if tilts and reference in tilts and a in tilts and b in tilts:
        da, db = abs(tilts[a] - tilts[reference]), abs(tilts[b] - tilts[reference])
        closer = a if da < db else b
        parts.append(f"In the [Mg/Fe]–[Fe/H] plane the correlation of the two is {tilts[a]:+.2f} from the {a}, "
                     f"{tilts[b]:+.2f} from the {b} and {tilts[reference]:+.2f} from {against}: the {closer}'s "
                     "plane is closer in tilt.")
    sp = {r["method"]: r for r in speed}
    if a in sp and b in sp:
        tr = sp[b]["train_min"] / sp[a]["train_min"] if sp[a]["train_min"] > 0 else np.nan
        ir = sp[a]["infer_rate"] / sp[b]["infer_rate"] if sp[b]["infer_rate"] > 0 else np.nan
        train_word = f"trains in {tr:.2g} of the {a}'s time" if tr < 1 else f"takes {tr:.2g} times the {a}'s training time"
        infer_word = (f"the {a} labels {ir:.2g} times as many spectra per second" if ir >= 1
                      else f"the {b} labels {1 / ir:.2g} times as many spectra per second")
        parts.append(f"On this machine the {b} {train_word}, and {infer_word}.")
    return " ".join(parts)
