"""The physical limit of precision (Cramér–Rao bound) and precision tables.

For a forward model with Gaussian noise of known σ per pixel, the Fisher
information of the labels is F = Jᵀ Σ⁻¹ J with J = ∂flux/∂labels; no unbiased
method can do better than σ_min = sqrt(diag(F⁻¹)) (Sandford, Weisz & Ting 2020
use it to forecast abundance precision for spectrographs).
"""
from __future__ import annotations

import numpy as np

__all__ = ["cramer_rao", "robust_scatter", "calibration_fractions", "error_over_bound",
           "marginal_fisher", "bounds_from_fisher", "van_trees", "prior_only_baseline"]


def cramer_rao(J, sigma, mask=None) -> np.ndarray:
    """Cramér–Rao lower bound per star and label.

    Parameters
    ----------
    J : ndarray, (n_stars, n_pixels, n_labels)
        ∂flux/∂label (per label unit: 1/K, 1/dex).
    sigma : ndarray, (n_stars,) or (n_stars, n_pixels)
        Flux noise per pixel (1/S/N for normalised spectra).
    mask : ndarray of bool, optional
        Pixels to use (True), e.g. unmasked ones.

    Returns
    -------
    ndarray, (n_stars, n_labels)
        σ_min in label units (K, dex).
    """
    J = np.asarray(J, float)
    sigma = np.asarray(sigma, float)
    if sigma.ndim == 1:
        sigma = np.broadcast_to(sigma[:, None], J.shape[:2])
    w = 1.0 / sigma ** 2
    if mask is not None:
        w = w * np.asarray(mask, float)
    F = np.einsum("npi,np,npj->nij", J, w, J)
    cov = np.linalg.inv(F)
    return np.sqrt(np.clip(np.diagonal(cov, axis1=1, axis2=2), 0, None))


def robust_scatter(x) -> float:
    """1.4826 × median absolute deviation (a σ robust to outliers); NaNs ignored."""
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan")
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


def calibration_fractions(error, sigma, levels=(1.0, 2.0)) -> dict:
    """Fraction of |error| within k·σ for each k (a Gaussian gives 0.683 and 0.954)."""
    error = np.asarray(error, float)
    sigma = np.asarray(sigma, float)
    ok = np.isfinite(error) & np.isfinite(sigma) & (sigma > 0)
    z = np.abs(error[ok] / sigma[ok])
    return {k: float(np.mean(z <= k)) if z.size else float("nan") for k in levels}


def error_over_bound(err, bound) -> float:
    """The book's one measure of an estimator against a bound: the robust scatter
    (1.4826 × MAD about the median) of error / bound over stars (1: at the bound)."""
    err = np.asarray(err, float)
    bound = np.asarray(bound, float)
    ok = np.isfinite(err) & np.isfinite(bound) & (bound > 0)
    return robust_scatter(err[ok] / bound[ok])


def marginal_fisher(F, n_labels: int = 5, ridge: float = 1e-12) -> np.ndarray:
    """Fisher information of the first ``n_labels`` parameters with the others unknown.

    The Schur complement F_ll − F_ln F_nn⁻¹ F_nl per star (a pseudo-inverse for
    F_nn, so a nuisance the data say nothing about, such as v sin i near 0, costs
    nothing). ``F`` has shape (n, p, p) with the labels first.
    """
    F = np.asarray(F, float)
    ll, ln, nn = F[:, :n_labels, :n_labels], F[:, :n_labels, n_labels:], F[:, n_labels:, n_labels:]
    if nn.shape[1] == 0:
        return ll
    scale = np.maximum(np.abs(np.diagonal(nn, axis1=1, axis2=2)).max(axis=1), 1e-300)[:, None, None]
    inv = np.linalg.pinv(nn / scale, rcond=1e-10, hermitian=True) / scale
    return ll - ln @ inv @ np.swapaxes(ln, 1, 2)


def bounds_from_fisher(F) -> np.ndarray:
    """σ_min = sqrt(diag(F⁻¹)) per star, (n, k) from (n, k, k)."""
    return np.sqrt(np.clip(np.diagonal(np.linalg.inv(np.asarray(F, float)), axis1=1, axis2=2), 0, None))


def van_trees(F_labels, prior_cov, per_star: bool = True) -> np.ndarray:
    """The Bayesian (van Trees) bound on the root-mean-square error over a population.

    J_prior = Σ_prior⁻¹ is the information of a Gaussian prior of covariance
    ``prior_cov`` (k, k), e.g. that of the training labels. Unlike the unbiased
    bound it limits estimators that shrink towards the prior, as a network trained
    on a loss does. With ``per_star`` (the default) the bound is taken star by
    star, (F_i + J_prior)⁻¹, and its mean over the stars returned as an rms: the
    van Trees bound of a population stratified by what sets each star's
    information (its S/N and type), which is what a comparison with the rms error
    of the same stars needs. Without it, (E[F] + J_prior)⁻¹ for the whole
    population, which is lower (Jensen) because bright stars dominate E[F].
    Returns σ per label (k,).
    """
    F = np.asarray(F_labels, float)
    J = np.linalg.inv(np.asarray(prior_cov, float))
    if per_star:
        var = np.diagonal(np.linalg.inv(F + J[None]), axis1=1, axis2=2)
        return np.sqrt(np.mean(var, axis=0))
    return np.sqrt(np.diag(np.linalg.inv(F.mean(axis=0) + J)))


def prior_only_baseline(train_labels, test_labels) -> dict:
    """How well each label follows from the others alone, without its own lines.

    For every label, a quadratic least-squares fit on the other labels of the
    training set (``train_labels``, (n, k)), applied to the other labels of the
    test stars (``test_labels``, (m, k)): returns per label index the robust
    scatter and rms of prediction − truth, and those of predicting the training
    mean (the prior alone).
    """
    tr = np.asarray(train_labels, float)
    te = np.asarray(test_labels, float)
    tr = tr[np.all(np.isfinite(tr), axis=1)]
    te = te[np.all(np.isfinite(te), axis=1)]
    k = tr.shape[1]
    mu, sd = tr.mean(axis=0), tr.std(axis=0)
    out = {}

    def design(x):
        z = (x - mu[others]) / sd[others]
        iu, ju = np.triu_indices(z.shape[1])
        return np.column_stack([np.ones(len(z)), z, z[:, iu] * z[:, ju]])

    for j in range(k):
        others = [i for i in range(k) if i != j]
        coef, *_ = np.linalg.lstsq(design(tr[:, others]), tr[:, j], rcond=None)
        err = design(te[:, others]) @ coef - te[:, j]
        mean_err = mu[j] - te[:, j]
        out[j] = {"from_others_scatter": robust_scatter(err), "from_others_rms": float(np.sqrt(np.mean(err ** 2))),
                  "prior_scatter": robust_scatter(mean_err), "prior_rms": float(np.sqrt(np.mean(mean_err ** 2)))}
    return out
