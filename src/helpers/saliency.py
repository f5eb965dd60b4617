"""Input gradients of the ensemble (chapter 04): which pixels does each label depend on?

For every kept model and label, d(scaled output)/d(flux pixel) is averaged over a
homogeneous sub-sample of stars (as Ambrosch et al. 2023 did for solar twins), and
the result is tested against the line list: what share of the gradient's power
(sum of squares) falls in narrow windows around every line of the label's own
element that is visible in the sub-sample's spectrum, compared with the share
in windows around lines of *other* species matched one by one in depth and
excitation potential (:func:`matched_null`): the fair chance level, since any
visible line carries information about Teff, log g and [Fe/H].
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["gradients_file", "SubSample", "DEFAULT_SUBSAMPLES", "select_subsample", "mean_gradients", "line_mask",
           "OWN_SPECIES", "power_share", "line_depths", "visible_lines", "matched_null",
           "species_enrichment", "verdict"]


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


_WORKER_MODELS: dict = {}


def _gradient_task(task: dict) -> np.ndarray:
    """Mean input gradients of one member over one set of rows (a task for a Dask worker)."""
    from . import model as M
    from .dataset import read_dataset

    M._pin_tf_threads()
    if task["member"] not in _WORKER_MODELS:
        _WORKER_MODELS.clear()  # one member at a time per worker keeps the memory small
        _WORKER_MODELS[task["member"]] = M.load_member(task["member"])[0]
    data = read_dataset(task["data"], rows=np.asarray(task["rows"]))
    x = M.prepare_inputs(data.flux, data.ivar)
    return mean_gradients([_WORKER_MODELS[task["member"]]], x, batch_size=task["batch_size"])[0]


def gradients_file(member_paths, data_path, rows_by_name: dict, *, batch_size: int = 128,
                   scheduler="synchronous", log=None) -> dict:
    """:func:`mean_gradients` of every member for several sets of rows of a data set file, one
    task per member and set (workers read the members and the rows themselves).

    Parameters
    ----------
    member_paths : list of path-like
    data_path : path-like
    rows_by_name : dict
        ``{name: sorted row indices}``.
    batch_size : int
    scheduler : str or helpers.parallel.Scheduler
    log : callable, optional

    Returns
    -------
    dict
        ``{name: ndarray (n_models, n_labels, n_pixels)}``, per unit of normalised flux.
    """

    from . import parallel

    names = list(rows_by_name)
    tasks, keys = [], []
    for name in names:  # member-major within a name: a worker keeps its member for consecutive tasks
        for j, p in enumerate(member_paths):
            tasks.append({"member": str(p), "data": str(data_path), "rows": np.asarray(rows_by_name[name]),
                          "batch_size": batch_size})
            keys.append(f"gradients-{name}-member-{j}".replace(" ", "_"))
    with parallel.scheduler_of(scheduler, log=log) as sched:
        parts = parallel.run_tasks(sched, _gradient_task, tasks, keys=keys, label="input gradients")
    k = len(member_paths)
    return {name: np.stack(parts[i * k:(i + 1) * k]) for i, name in enumerate(names)}


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


def line_depths(wave, flux, lines: list[dict]) -> np.ndarray:
    """Depth 1 − flux at each line's pixel in a (mean) spectrum; NaN off the grid."""
    wave = np.asarray(wave, float)
    flux = np.asarray(flux, float)
    w = np.array([float(r["wavelength_air_A"]) for r in lines])
    i = np.clip(np.searchsorted(wave, w), 1, wave.size - 1)
    i = np.where(np.abs(wave[i - 1] - w) < np.abs(wave[i] - w), i - 1, i)
    d = 1.0 - flux[i]
    step = np.median(np.diff(wave))
    return np.where(np.abs(wave[i] - w) <= step, d, np.nan)


def visible_lines(lines: list[dict], depths, min_depth: float) -> list[dict]:
    """The lines at least ``min_depth`` deep, each with its ``depth``."""
    return [dict(r, depth=float(d)) for r, d in zip(lines, depths) if np.isfinite(d) and d >= min_depth]


def matched_null(grad, wave, lines: list[dict], species, half_width: float, n_draws: int = 500,
                 seed: int = 0, depth_factor: float = 1.5, excit_tol: float = 1.0):
    """Shares collected by windows around lines of other species matched to the label's own.

    For every line of ``species`` in ``lines`` (which carry a ``depth``, see
    :func:`visible_lines`), the candidates are lines of other species within a factor
    ``depth_factor`` in depth and ``excit_tol`` eV in excitation potential, farther than
    one window width (2 × ``half_width``) from any own line, so that no null window
    overlaps an own one (for an element with hundreds of lines, such as Fe, few
    lines qualify: ``n_matched`` says how many own lines found a match). Each draw picks one candidate per own line
    (a candidate once per draw while others remain, tried up to eight times) and measures the share of the
    gradient's power in their windows.

    Returns
    -------
    null : ndarray (n_draws,), and a dict with ``n_own`` and ``n_matched`` (own lines
    that had candidates; the others are left out of both the share and the null),
    and ``own_mask`` (the windows of the matched own lines).
    """
    species = (species,) if isinstance(species, str) else tuple(species)
    wave = np.asarray(wave, float)
    p = np.asarray(grad, float) ** 2
    tot = p.sum()
    step = float(np.median(np.diff(wave)))
    hw = int(round(half_width / step))
    own = [r for r in lines if r["species"] in species]
    other = [r for r in lines if r["species"] not in species]
    ow = np.array([r["wavelength_air_A"] for r in own])
    xw = np.array([r["wavelength_air_A"] for r in other])
    xd = np.log(np.array([r["depth"] for r in other])) if other else np.array([])
    xc = np.array([r["excitation_eV"] for r in other])
    far = (np.min(np.abs(xw[:, None] - ow[None, :]), axis=1) > 2 * half_width) if len(own) and len(other) \
        else np.ones(len(other), bool)
    cands, matched = [], []
    for r in own:
        c = np.nonzero(far & (np.abs(xd - np.log(r["depth"])) <= np.log(depth_factor))
                       & (np.abs(xc - r["excitation_eV"]) <= excit_tol))[0]
        if c.size:
            cands.append(c)
            matched.append(r)
    info = {"n_own": len(own), "n_matched": len(matched)}

    def windows(centres):
        m = np.zeros(wave.size, bool)
        idx = np.searchsorted(wave, centres)
        for off in range(-hw, hw + 1):
            j = idx + off
            m[j[(j >= 0) & (j < wave.size)]] = True
        return m

    info["own_mask"] = windows(np.array([r["wavelength_air_A"] for r in matched])) if matched else \
        np.zeros(wave.size, bool)
    if not matched or tot <= 0:
        return np.full(n_draws, np.nan), info
    rng = np.random.default_rng(seed)
    null = np.empty(n_draws)
    for k in range(n_draws):
        used: set = set()
        pick = []
        for i in rng.permutation(len(cands)):  # a candidate once per draw where others remain
            c = cands[i]
            for _ in range(8):
                j = int(c[rng.integers(c.size)])
                if j not in used:
                    break
            used.add(j)
            pick.append(j)
        null[k] = p[windows(xw[np.array(pick)])].sum() / tot
    return null, info


def verdict(share: float, null: np.ndarray, min_enrichment: float = 2.0, alpha: float = 0.01) -> dict:
    """Enrichment over chance and a verdict.

    Returns ``share``, ``chance`` (mean of the null), ``enrichment`` (share / chance), ``p``
    (fraction of null draws that collect at least ``share``; with ``len(null)`` draws the
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

