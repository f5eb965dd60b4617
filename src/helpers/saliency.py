"""Input gradients of the ensemble (chapter 04): which pixels does each label depend on?

For every kept model and label, d(scaled output)/d(flux pixel) is averaged over a
homogeneous sub-sample of stars (as Ambrosch et al. 2023 did for solar twins), and
the result is tested against the line list: what share of the gradient's power
(sum of squares) falls in narrow windows around the lines of the label's own
element, compared with windows of the same total width placed at random
(the same windows shifted along the spectrum).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SubSample", "DEFAULT_SUBSAMPLES", "select_subsample", "mean_gradients", "line_mask",
           "OWN_SPECIES", "power_share", "shift_null", "species_enrichment", "verdict"]


@dataclass(frozen=True)
class SubSample:
    """A box in label space (inclusive limits; K and dex)."""

    name: str
    teff: tuple
    logg: tuple
    feh: tuple

    def contains(self, teff, logg, feh) -> np.ndarray:
        t, g, f = (np.asarray(a, float) for a in (teff, logg, feh))
        return ((t >= self.teff[0]) & (t <= self.teff[1]) & (g >= self.logg[0]) & (g <= self.logg[1])
                & (f >= self.feh[0]) & (f <= self.feh[1]))


#: Sub-samples of chapter 04. The paper's solar twins are 5752-5802 K, 4.34-4.54, |[Fe/H]| < 0.05;
#: our box is wider so that a simulated survey of 20 000 stars holds enough of them.
DEFAULT_SUBSAMPLES = (
    SubSample("solar-type dwarfs", (5600.0, 5950.0), (4.2, 4.65), (-0.15, 0.15)),
    SubSample("red-clump giants", (4550.0, 5050.0), (2.2, 2.9), (-0.3, 0.2)),
    SubSample("metal-poor giants", (4300.0, 5300.0), (1.0, 3.0), (-2.5, -1.0)),
)

#: Species whose lines a label should be read from (log g: the pressure-sensitive Ca II
#: triplet and Fe II lines; Teff: Fe I excitation and the hydrogen Paschen lines).
OWN_SPECIES = {
    "teff": ("Fe I", "H I"),
    "logg": ("Ca II", "Fe II"),
    "feh": ("Fe I", "Fe II"),
    "mg_fe": ("Mg I",),
    "al_fe": ("Al I",),
}


def select_subsample(sub: SubSample, teff, logg, feh, n_max: int, seed: int, snr=None, snr_min=0.0):
    """Indices (sorted) of at most ``n_max`` stars inside ``sub``, chosen at random with ``seed``."""
    ok = sub.contains(teff, logg, feh)
    if snr is not None:
        ok &= np.asarray(snr, float) >= snr_min
    idx = np.nonzero(ok)[0]
    if idx.size > n_max:
        idx = np.sort(np.random.default_rng(seed).choice(idx, n_max, replace=False))
    return idx


def mean_gradients(models, x, batch_size: int = 128) -> np.ndarray:
    """Gradient of each scaled label w.r.t. each pixel, averaged over the spectra ``x``.

    Returns
    -------
    ndarray, shape (n_models, n_labels, n_pixels)
        Per unit of normalised flux.
    """
    from .model import input_gradients

    n_labels = int(models[0].output_shape[-1])
    out = np.empty((len(models), n_labels, x.shape[1]))
    for i, m in enumerate(models):
        for j in range(n_labels):
            out[i, j] = input_gradients(m, x, j, batch_size=batch_size).mean(axis=0)
    return out


def line_mask(wave, lines: list[dict], species, half_width: float) -> np.ndarray:
    """Pixels within ``half_width`` Å of any line of ``species`` (a name or a tuple of names)."""
    species = (species,) if isinstance(species, str) else tuple(species)
    wave = np.asarray(wave, float)
    mask = np.zeros(wave.size, bool)
    for r in lines:
        if r["species"] in species:
            mask |= np.abs(wave - float(r["wavelength_air_A"])) <= half_width
    return mask


def power_share(grad, mask) -> float:
    """Share of the gradient's power (sum of squares) in the pixels of ``mask``."""
    p = np.asarray(grad, float) ** 2
    tot = p.sum()
    return float(p[mask].sum() / tot) if tot > 0 else float("nan")


def shift_null(grad, mask, n_shifts: int = 500, seed: int = 0, min_shift: int = 40) -> np.ndarray:
    """Shares of the same windows shifted along the spectrum (circularly, by at least
    ``min_shift`` pixels): what windows of the same total width collect by chance."""
    rng = np.random.default_rng(seed)
    n = mask.size
    shifts = rng.integers(min_shift, n - min_shift, n_shifts)
    p = np.asarray(grad, float) ** 2
    tot = p.sum()
    if tot <= 0:
        return np.full(n_shifts, np.nan)
    return np.array([p[np.roll(mask, s)].sum() / tot for s in shifts])


def verdict(share: float, null: np.ndarray, min_enrichment: float = 2.0, alpha: float = 0.01) -> dict:
    """Enrichment over chance and a verdict.

    Returns ``share``, ``chance`` (mean of the null), ``enrichment`` (share / chance), ``p``
    (fraction of shifted windows that collect at least ``share``; with ``len(null)`` shifts the
    smallest value is 1/(len(null)+1)) and ``reads_own_lines`` (enrichment ≥ ``min_enrichment`` and
    p ≤ ``alpha``).
    """
    chance = float(np.nanmean(null))
    p = float((np.sum(null >= share) + 1) / (null.size + 1))
    if chance > 0:
        enrich = share / chance
    else:  # no shifted window collects anything: infinitely enriched if the real ones do
        enrich = float("inf") if share > 0 else float("nan")
    return {"share": share, "chance": chance, "enrichment": enrich, "p": p,
            "reads_own_lines": bool(enrich >= min_enrichment and p <= alpha)}


def species_enrichment(grad_by_label: dict, wave, lines: list[dict], species_groups: dict,
                       half_width: float) -> dict:
    """Enrichment (share / pixel fraction of the windows) of every label's gradient in the
    windows of every species group: ``{label: {group: enrichment}}``. A label that leans on
    another element's lines shows it here."""
    out = {}
    for k, g in grad_by_label.items():
        out[k] = {}
        for name, species in species_groups.items():
            m = line_mask(wave, lines, species, half_width)
            out[k][name] = power_share(g, m) / m.mean() if m.any() else float("nan")
    return out

