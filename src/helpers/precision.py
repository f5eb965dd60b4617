"""The physical limit of precision (Cramér–Rao bound) and precision tables.

For a forward model with Gaussian noise of known σ per pixel, the Fisher
information of the labels is F = Jᵀ Σ⁻¹ J with J = ∂flux/∂labels; no unbiased
method can do better than σ_min = sqrt(diag(F⁻¹)) (Sandford, Weisz & Ting 2020
use it to forecast abundance precision for spectrographs).
"""
from __future__ import annotations

import numpy as np

__all__ = ["cramer_rao", "robust_scatter", "calibration_fractions"]


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
