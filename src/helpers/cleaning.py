"""Finding bad spectra with PCA, t-SNE and per-spectrum outlier scores (chapter 02).

The recipe, every step a parameter of :class:`CleaningConfig`:

1. **PCA.** Flux clipped to [−0.5, 2.5], masked pixels (``ivar = 0``) filled
   with the median spectrum so that gaps do not become principal components;
   a randomised PCA is fitted on a random subset and applied to all spectra.
2. **t-SNE.** openTSNE's FFT-accelerated t-SNE of the first ``n_pca``
   components gives a 2-D map in which spectra of one kind gather.
3. **Groups.** DBSCAN finds the dense groups of the map (scale-free radius).
4. **Scores per spectrum** (all in units of the spectrum's own noise, with a
   model floor ``model_floor`` added in quadrature):
   ``recon_chi2``, the mean squared residual from its own PCA reconstruction,
   counting masked pixels against the reconstruction (gaps, broken pixels);
   ``spike_z``, the 4th-largest absolute residual (isolated spikes); and
   ``neighbour_chi2``, the mean of the largest 1 % of squared residuals from
   the spectrum expected for its survey labels (the PCA coefficients of its ``n_label_neighbours``
   nearest stars in Teff, log g, [Fe/H], median-combined); and ``continuum_z``,
   the largest mean of that residual over ``continuum_bin`` pixels (a broken
   continuum normalisation).
5. **Decision.** A whole group goes if its median ``neighbour_chi2`` exceeds
   ``group_threshold`` (its spectra do not look like stars with their labels);
   a single spectrum goes if ``recon_chi2``, ``spike_z`` or ``continuum_z``
   exceed their limits.
   The main body of normal stars has neighbour scores near 1 and stays.

The same settings and seed give the same removed list (tested).
"""
from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, replace

import numpy as np

from . import seeds

__all__ = ["CleaningConfig", "pca_features", "embed", "find_groups", "outlier_scores",
           "decide", "clean", "removal_metrics", "halves", "choose_thresholds", "THRESHOLDS",
           "THRESHOLD_FACTORS", "LOST_WEIGHT"]


@dataclass
class CleaningConfig:
    """Settings of the cleaning (see the module docstring).

    Attributes
    ----------
    n_pca : int
        Principal components kept (t-SNE input).
    pca_fit_size : int
        Spectra the PCA is fitted on (a random subset; all if fewer).
    perplexity : float
        t-SNE perplexity.
    early_exaggeration_iter, n_iter : int
        t-SNE iterations with and after early exaggeration.
    n_interpolation_points : int
        openTSNE FFT interpolation points per interval (3 is openTSNE's default).
    min_group_size : int
        DBSCAN ``min_samples``: the smallest group.
    eps_factor : float
        DBSCAN radius in units of the median distance to the 10th neighbour on the map.
    n_label_neighbours : int
        Stars that define the spectrum expected for a label set.
    tail_fraction : float
        ``neighbour_chi2`` averages the largest squared residuals over this
        fraction of the pixels, so that defects confined to a few lines
        (emission cores) are not diluted by thousands of clean pixels.
    group_threshold : float
        Median ``neighbour_chi2`` above which a whole group is removed.
    recon_chi2_max, spike_z_max, continuum_z_max : float
        Per-spectrum limits.
    continuum_bin : int
        Pixels per bin of the continuum score.
    model_floor : float
        Flux error added in quadrature to each pixel's noise in every score: what a
        PCA reconstruction or a label-neighbour spectrum cannot match even in a
        perfect spectrum, so that bright stars (S/N ≳ 100) are not scored on the
        model's shortcomings.
    seed : int
    n_jobs : int
        Threads for t-SNE.
    """

    n_pca: int = 50
    pca_fit_size: int = 4000
    perplexity: float = 30.0
    early_exaggeration_iter: int = 250
    n_iter: int = 250
    n_interpolation_points: int = 3
    min_group_size: int = 10
    eps_factor: float = 1.5
    n_label_neighbours: int = 20
    tail_fraction: float = 0.01
    group_threshold: float = 30.0
    recon_chi2_max: float = 2.0
    spike_z_max: float = 9.0
    continuum_bin: int = 200
    continuum_z_max: float = 45.0
    model_floor: float = 0.005
    seed: int = 42
    n_jobs: int = 2

    def as_dict(self) -> dict:
        return asdict(self)


def _prepared(flux, ivar, fill):
    x = np.clip(flux, -0.5, 2.5)
    return np.where(ivar > 0, x, fill)


def pca_features(flux, ivar, cfg: CleaningConfig):
    """Fit the PCA on a random subset and project every spectrum.

    Returns
    -------
    Z : ndarray, (n, n_pca)
    pca : sklearn.decomposition.PCA
    fill : ndarray
        Median spectrum used for masked pixels.
    """
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(cfg.seed)
    n = len(flux)
    sub = np.sort(rng.choice(n, size=min(cfg.pca_fit_size, n), replace=False))
    fill = np.median(np.clip(flux[sub], -0.5, 2.5), axis=0)
    n_comp = min(cfg.n_pca, len(sub) - 1)
    pca = PCA(n_comp, svd_solver="randomized", random_state=cfg.seed)
    pca.fit(_prepared(flux[sub], ivar[sub], fill))
    Z = np.concatenate([pca.transform(_prepared(flux[i:i + 2048], ivar[i:i + 2048], fill))
                        for i in range(0, n, 2048)])
    return Z, pca, fill


def embed(Z, cfg: CleaningConfig) -> np.ndarray:
    """2-D openTSNE embedding of the PCA features (FFT-accelerated gradients)."""
    from openTSNE import TSNE

    perplexity = min(cfg.perplexity, max(2.0, (len(Z) - 1) / 3.0))
    tsne = TSNE(perplexity=perplexity, n_iter=cfg.n_iter, early_exaggeration_iter=cfg.early_exaggeration_iter,
                n_interpolation_points=cfg.n_interpolation_points, n_jobs=cfg.n_jobs,
                random_state=cfg.seed, verbose=False)
    return np.asarray(tsne.fit(Z))


def find_groups(embedding, cfg: CleaningConfig) -> np.ndarray:
    """DBSCAN groups of the map (−1: not in any group).

    The neighbourhood radius is ``eps_factor`` times the median distance of a
    point to its 10th neighbour, so the setting does not depend on the map's
    scale (which grows with the number of spectra).
    """
    from sklearn.cluster import DBSCAN
    from sklearn.neighbors import NearestNeighbors

    k = min(10, len(embedding) - 1)
    dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(embedding).kneighbors(embedding)
    eps = cfg.eps_factor * float(np.median(dist[:, k]))
    return DBSCAN(eps=eps, min_samples=cfg.min_group_size).fit_predict(embedding)


def outlier_scores(flux, ivar, Z, pca, fill, labels, cfg: CleaningConfig, block: int = 2048) -> dict:
    """Per-spectrum scores ``recon_chi2``, ``spike_z`` and ``neighbour_chi2`` (see the module docstring).

    Parameters
    ----------
    labels : ndarray, (n, 3)
        Survey Teff [K], log g, [Fe/H] for the label-neighbour reference
        (scaled by 100 K, 0.1 dex and 0.05 dex before the neighbour search).
    """
    from sklearn.neighbors import NearestNeighbors

    n = len(flux)
    scaled = np.asarray(labels, float) / np.array([100.0, 0.1, 0.05])
    ok = np.all(np.isfinite(scaled), axis=1)
    k = min(cfg.n_label_neighbours, max(1, ok.sum() - 1))
    Zref = Z.copy()
    if ok.sum() > k:
        nn = NearestNeighbors(n_neighbors=k + 1).fit(scaled[ok])
        _, idx = nn.kneighbors(scaled[ok])
        rows = np.nonzero(ok)[0]
        Zref[rows] = np.median(Z[rows][idx[:, 1:]], axis=1)
    out = {"recon_chi2": np.empty(n), "spike_z": np.empty(n), "neighbour_chi2": np.empty(n),
           "continuum_z": np.empty(n)}
    B = cfg.continuum_bin
    comps, mean = pca.components_, pca.mean_
    for i in range(0, n, block):
        sl = slice(i, i + block)
        x = np.clip(flux[sl], -0.5, 2.5).astype(np.float64)
        iv = ivar[sl]
        sig = np.where(iv > 0, 1.0 / np.sqrt(np.maximum(iv, 1e-30)), np.nan)
        med = np.nanmedian(sig, axis=1)
        med = np.where(np.isfinite(med), med, 1.0)
        sig = np.sqrt(np.where(iv > 0, sig, med[:, None]) ** 2 + cfg.model_floor ** 2)
        med = np.sqrt(med ** 2 + cfg.model_floor ** 2)
        r = np.abs(x - (Z[sl] @ comps + mean)) / sig
        out["recon_chi2"][sl] = np.mean(r ** 2, axis=1)
        out["spike_z"][sl] = -np.partition(-r, 3, axis=1)[:, 3]
        resid = x - (Zref[sl] @ comps + mean)
        rn2 = (resid / sig) ** 2
        n_top = max(1, int(round(cfg.tail_fraction * rn2.shape[1])))
        out["neighbour_chi2"][sl] = np.mean(-np.partition(-rn2, n_top, axis=1)[:, :n_top], axis=1)
        # continuum: the largest mean residual over B-pixel bins, in units of its noise
        resid = np.where(iv > 0, resid, np.nan)
        nb = resid.shape[1] // B
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)  # bins that are entirely masked
            bins = np.nanmean(resid[:, :nb * B].reshape(len(resid), nb, B), axis=2)
            out["continuum_z"][sl] = np.nan_to_num(np.nanmax(np.abs(bins), axis=1), nan=0.0) / (med / np.sqrt(B))
    return out


def decide(groups, scores, cfg: CleaningConfig) -> tuple[np.ndarray, np.ndarray]:
    """Which spectra to remove, and why.

    Returns
    -------
    remove : ndarray of bool
    reason : ndarray of str ('' where kept)
    """
    n = len(groups)
    reason = np.full(n, "", dtype=object)
    for g in np.unique(groups[groups >= 0]):
        m = groups == g
        med = float(np.median(scores["neighbour_chi2"][m]))
        if med > cfg.group_threshold:
            reason[m] = f"t-SNE group {g}: median neighbour chi2 {med:.1f}"
    single = reason == ""
    bad = single & (scores["recon_chi2"] > cfg.recon_chi2_max)
    reason[bad] = "poor PCA reconstruction (gaps or broken pixels)"
    bad = (reason == "") & (scores["spike_z"] > cfg.spike_z_max)
    reason[bad] = "isolated spikes"
    bad = (reason == "") & (scores["continuum_z"] > cfg.continuum_z_max)
    reason[bad] = "continuum off the expectation for its labels"
    reason = reason.astype(str)
    return reason != "", reason


def clean(flux, ivar, labels, cfg: CleaningConfig) -> dict:
    """Run the whole recipe; return the map, groups, scores, decisions (``reason``: str array, ''
    where kept) and timings [s]: arrays, dicts and numbers only, so :func:`helpers.steps.cached`
    can store it."""
    t0 = time.perf_counter()
    Z, pca, fill = pca_features(flux, ivar, cfg)
    t1 = time.perf_counter()
    emb = embed(Z, cfg)
    t2 = time.perf_counter()
    groups = find_groups(emb, cfg)
    scores = outlier_scores(flux, ivar, Z, pca, fill, labels, cfg)
    remove, reason = decide(groups, scores, cfg)
    t3 = time.perf_counter()
    return {"embedding": emb, "groups": groups, "scores": scores, "remove": remove, "reason": reason.astype(str),
            "pca": Z, "seconds": {"pca": t1 - t0, "tsne": t2 - t1, "groups_and_scores": t3 - t2}}


#: The decision's thresholds that :func:`choose_thresholds` may change.
THRESHOLDS = ("group_threshold", "recon_chi2_max", "spike_z_max", "continuum_z_max")
#: Factors on each threshold that :func:`choose_thresholds` tries, and the weight of lost good spectra.
THRESHOLD_FACTORS = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
LOST_WEIGHT = 5.0


def halves(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed random split of ``n`` rows into two halves (sorted indices): choose on one, score on the other."""
    perm = seeds.rng(seed, "cleaning_halves").permutation(n)
    return np.sort(perm[: n // 2]), np.sort(perm[n // 2:])


def choose_thresholds(groups, scores, defect, rows, cfg: CleaningConfig,
                      factors=THRESHOLD_FACTORS, lost_weight: float = LOST_WEIGHT,
                      ignore=("low_snr",)):
    """Thresholds of the decision chosen on the spectra ``rows`` with known defects.

    Every combination of :data:`THRESHOLDS` scaled by ``factors`` is tried; the one
    that maximises (recall of the defects, except the kinds in ``ignore``) −
    ``lost_weight`` × (fraction of good spectra lost) on ``rows`` is returned, as a
    new config, with that objective. Score the result on other spectra only.
    """
    from itertools import product

    defect = np.asarray(defect).astype(str)[rows]
    bad = ~np.isin(defect, ("none",) + tuple(ignore))
    good = defect == "none"
    if not bad.any() or not good.any():
        raise ValueError("choose_thresholds needs both defective and good spectra among the rows")
    sub_groups = np.asarray(groups)[rows]
    sub_scores = {k: np.asarray(v)[rows] for k, v in scores.items()}
    best = None
    for f in product(factors, repeat=len(THRESHOLDS)):
        c = replace(cfg, **{k: getattr(cfg, k) * x for k, x in zip(THRESHOLDS, f)})
        remove, _ = decide(sub_groups, sub_scores, c)
        obj = remove[bad].mean() - lost_weight * remove[good].mean()
        if best is None or obj > best[0] + 1e-12:
            best = (obj, c)
    return best[1], float(best[0])


def removal_metrics(defect, remove) -> list[dict]:
    """Precision and recall of the removal per injected defect kind and overall.

    Recall of kind K: the fraction of spectra with defect K that were removed.
    Precision (overall): the fraction of removed spectra that had any defect.
    The row ``none`` gives the fraction of good spectra lost.
    """
    defect = np.asarray(defect).astype(str)
    remove = np.asarray(remove, bool)
    rows = []
    for kind in sorted(set(defect) - {"none"}):
        m = defect == kind
        rows.append({"kind": kind, "n": int(m.sum()), "removed": int(remove[m].sum()),
                     "recall": float(remove[m].mean())})
    bad = defect != "none"
    good = ~bad
    rows.append({"kind": "all defects", "n": int(bad.sum()), "removed": int(remove[bad].sum()),
                 "recall": float(remove[bad].mean()) if bad.any() else float("nan"),
                 "precision": float(bad[remove].mean()) if remove.any() else float("nan")})
    rows.append({"kind": "none (good lost)", "n": int(good.sum()), "removed": int(remove[good].sum()),
                 "recall": float(remove[good].mean()) if good.any() else float("nan")})
    return rows


def cleaning_benefit(flux, ivar, survey_labels, reference_labels, remove, *, n_train: int, n_test: int,
                     model_cfg, seed: int, log=print) -> list[dict]:
    """What the cleaning buys: one small network trained with and one without it.

    Both networks get ``n_train`` spectra (10 % of them for early stopping) and the
    same seed; the raw one draws from all spectra, bad ones included at their
    natural rate, the clean one only from the spectra the cleaning kept. Both are
    scored on the same ``n_test`` kept spectra against ``reference_labels`` (the
    truth for the simulated survey, else the survey labels).

    Returns
    -------
    list of dict
        Per label: ``label``, ``scatter_raw``, ``scatter_clean`` (robust σ of network
        minus reference) and ``ratio`` (clean / raw), plus a row ``n_bad_in_raw``.
    """
    from . import LABELS
    from . import model as M
    from .precision import robust_scatter

    rng = np.random.default_rng(seed)
    n = len(flux)
    kept = np.nonzero(~remove)[0]
    test = np.sort(rng.choice(kept, size=min(n_test, kept.size // 3), replace=False))
    pool = np.setdiff1d(np.arange(n), test)
    pool_clean = np.setdiff1d(kept, test)
    n_tr = min(n_train, pool_clean.size)
    variants = {"raw": np.sort(rng.choice(pool, size=n_tr, replace=False)),
                "clean": np.sort(rng.choice(pool_clean, size=n_tr, replace=False))}
    x_test = M.prepare_inputs(flux[test], ivar[test])
    out = {}
    for name, rows in variants.items():
        rows = rng.permutation(rows)
        n_val = max(1, len(rows) // 10)
        scaler = M.LabelScaler.fit(survey_labels[rows])
        y = scaler.scale(survey_labels[rows])
        x = M.prepare_inputs(flux[rows], ivar[rows])
        log(f"training on the {name} set ({len(rows)} spectra)")
        model, _, _ = M.train_member(x[n_val:], y[n_val:], x[:n_val], y[:n_val], model_cfg, seed,
                                     log_every=0)
        pred = scaler.unscale(model.predict(x_test, verbose=0))
        out[name] = [robust_scatter(pred[:, j] - reference_labels[test, j]) for j in range(len(LABELS))]
        out[f"n_bad_{name}"] = int(np.sum(remove[variants[name]]))
        import keras

        keras.backend.clear_session()
    rows = [{"label": k, "scatter_raw": out["raw"][j], "scatter_clean": out["clean"][j],
             "ratio": out["clean"][j] / out["raw"][j]} for j, k in enumerate(LABELS)]
    rows.append({"label": "flagged spectra in the training sample", "scatter_raw": float(out["n_bad_raw"]),
                 "scatter_clean": float(out["n_bad_clean"]), "ratio": float("nan")})
    return rows
