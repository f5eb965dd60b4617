"""The Cannon: a data-driven spectral model, quadratic in the labels (Ness et al. 2015).

Each pixel's normalised flux is modelled as a second-order polynomial of the scaled labels,

    f_np = θ_p · ℓ(x_n) + noise,   ℓ(x) = [1, x_1..x_K, x_i x_j (i ≤ j)],
    noise variance σ_np² + s_p²,

with an intrinsic scatter ``s_p`` per pixel. Training fits θ_p and s_p pixel by pixel by weighted
least squares (the scatter by a grid in ln s refined with a parabola, as in Anna Ho's ``TheCannon``
package); the test step finds, for each spectrum, the labels that minimise χ² (Levenberg–Marquardt).
Labels are scaled as in ``TheCannon``: pivot = median, scale = (97.5th − 2.5th percentile) / 4.

This is our own vectorised implementation of the same model: training works on blocks of pixels
with matrix products, inference on blocks of stars. The test suite checks it against the
``TheCannon`` package on a small case, and that spectra exactly quadratic in the labels give back
their coefficients and labels. Why not the package itself: chapter 07 and ``bench/bench_cannon.py``
measure it (it loops over pixels and stars in Python, prints per star, and switches matplotlib to
LaTeX text on import).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .fileio import atomic_path

__all__ = ["CannonError", "CannonModel", "label_vector", "scaling", "train", "infer", "infer_file", "save", "load"]

#: Format tag of a saved model.
FORMAT = "cannon-quadratic-v1"


class CannonError(ValueError):
    """A Cannon model that does not match the data, or data it cannot use."""


def scaling(labels) -> tuple[np.ndarray, np.ndarray]:
    """Pivots (median) and scales ((97.5th − 2.5th percentile) / 4) of training labels, shape (K,)."""
    q = np.percentile(np.asarray(labels, float), (2.5, 50, 97.5), axis=0)
    scales = (q[2] - q[0]) / 4.0
    if np.any(scales <= 0):
        raise CannonError("a training label has no spread; The Cannon cannot scale it")
    return q[1], scales


def _pairs(k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(k)


def label_vector(x) -> np.ndarray:
    """The quadratic label vector ℓ(x) of scaled labels ``x`` (N, K): shape (N, 1 + K + K(K+1)/2)."""
    x = np.atleast_2d(np.asarray(x, float))
    i, j = _pairs(x.shape[1])
    return np.hstack([np.ones((len(x), 1)), x, x[:, i] * x[:, j]])


@dataclass
class CannonModel:
    """A trained Cannon model.

    Attributes
    ----------
    label_names : tuple of str
    pivots, scales : ndarray, shape (K,)
        Label scaling, in the labels' units.
    coeffs : ndarray, shape (P, Q)
        θ per pixel on the quadratic label vector (Q = 1 + K + K(K+1)/2).
    scatter : ndarray, shape (P,)
        Intrinsic scatter per pixel [normalised flux].
    grid_digest : str
        Digest of the wavelength grid it was trained on (``Grid.digest``).
    info : dict
        Training details (number of stars, time).
    """

    label_names: tuple
    pivots: np.ndarray
    scales: np.ndarray
    coeffs: np.ndarray
    scatter: np.ndarray
    grid_digest: str = ""
    info: dict = field(default_factory=dict)

    @property
    def n_labels(self) -> int:
        return len(self.label_names)

    def predict_flux(self, labels) -> np.ndarray:
        """Model spectra for physical labels (N, K): shape (N, P)."""
        x = (np.atleast_2d(np.asarray(labels, float)) - self.pivots) / self.scales
        return label_vector(x) @ self.coeffs.T

    def check(self, n_pixels: int, grid_digest: str | None = None, label_names=None) -> None:
        """Refuse data on another grid or with other labels, saying what to do."""
        if n_pixels != len(self.coeffs):
            raise CannonError(f"the Cannon model has {len(self.coeffs)} pixels but the spectra have {n_pixels}: "
                              "train it on spectra of this grid")
        if grid_digest and self.grid_digest and grid_digest != self.grid_digest:
            raise CannonError("the spectra are on another wavelength grid than the Cannon model was trained on "
                              f"(digest {grid_digest[:12]}… vs {self.grid_digest[:12]}…): resample them, or retrain")
        if label_names is not None and tuple(label_names) != tuple(self.label_names):
            raise CannonError(f"the Cannon model predicts {self.label_names}, not {tuple(label_names)}")


def _weights(ivar, scatter) -> np.ndarray:
    """Inverse variance including the intrinsic scatter: ivar / (1 + ivar s²)."""
    return ivar / (1.0 + ivar * scatter ** 2)


def _solve_block(L, LL, iu, ju, flux, w, ridge):
    """Weighted least squares for every pixel of a block: θ (P, Q)."""
    q = L.shape[1]
    a_flat = w.T @ LL                                   # (P, Q(Q+1)/2)
    a = np.empty((w.shape[1], q, q))
    a[:, iu, ju] = a_flat
    a[:, ju, iu] = a_flat
    a[:, np.arange(q), np.arange(q)] += ridge
    b = (w * flux).T @ L                                # (P, Q)
    return np.linalg.solve(a, b[..., None])[..., 0]


def _scatter_cost(L, LL, iu, ju, f, iv, s, ridge):
    """Per pixel of a block, −2 ln(likelihood) of the best coefficients at intrinsic scatter ``s``
    (a scalar or one value per pixel)."""
    w = _weights(iv, s)
    th = _solve_block(L, LL, iu, ju, f, w, ridge)
    r = f - L @ th.T
    with np.errstate(divide="ignore"):
        logw = np.where(w > 0, np.log(np.where(w > 0, w, 1.0)), 0.0)
    return np.sum(w * r * r, axis=0) - np.sum(logw, axis=0)


def train(flux, ivar, labels, label_names, grid_digest: str = "",
          ln_scatter=np.arange(np.log(1e-4), 0.0, 0.5), block: int = 1024, coarse: int = 3) -> CannonModel:
    """Train The Cannon on normalised spectra with known labels.

    Parameters
    ----------
    flux, ivar : array_like, shape (N, P)
        Continuum-normalised flux and its inverse variance; ``ivar == 0`` marks masked pixels.
    labels : array_like, shape (N, K)
        Training labels in their physical units (K, dex).
    label_names : sequence of str
    grid_digest : str
        ``Grid.digest`` of the spectra, stored with the model.
    ln_scatter : array_like
        Grid of ln(intrinsic scatter) searched per pixel (refined by a parabola around the best).
    block : int
        Pixels per block (memory ≈ 3 × N × block × 8 bytes).
    coarse : int
        The scatter grid is first searched at every ``coarse``-th point, then at the points within
        ``coarse − 1`` of each pixel's best coarse point: for a cost with one minimum along the grid
        this finds the same grid point, and the same neighbours for the parabola, as searching
        every point, in 7 + 4 instead of 19 solves (``coarse=1``: every point).

    Returns
    -------
    CannonModel
    """
    flux = np.asarray(flux, float)
    ivar = np.asarray(ivar, float)
    labels = np.asarray(labels, float)
    if flux.shape != ivar.shape or flux.ndim != 2:
        raise CannonError(f"flux {flux.shape} and ivar {ivar.shape} must be equal (N, P) arrays")
    if labels.shape != (len(flux), len(label_names)):
        raise CannonError(f"labels have shape {labels.shape}, expected ({len(flux)}, {len(label_names)})")
    if not np.all(np.isfinite(labels)):
        raise CannonError("training labels contain NaN: drop those stars first")
    good = ivar > 0
    if not np.all(np.isfinite(flux[good])):
        raise CannonError("training flux contains NaN or infinity at unmasked pixels")
    flux = np.where(good, flux, 1.0)
    ivar = np.where(good & np.isfinite(ivar), ivar, 0.0)
    pivots, scales = scaling(labels)
    L = label_vector((labels - pivots) / scales)
    q = L.shape[1]
    if len(flux) <= q:
        raise CannonError(f"{len(flux)} training spectra are too few for {q} coefficients per pixel")
    iu, ju = np.triu_indices(q)
    LL = L[:, iu] * L[:, ju]
    ridge = 1e-8 * float(np.median(ivar[good])) if good.any() else 1e-8
    ln_s = np.asarray(ln_scatter, float)
    step = int(coarse)
    if step < 1:
        raise CannonError(f"coarse must be a positive whole number, not {coarse!r}")
    n_pix = flux.shape[1]
    coeffs = np.empty((n_pix, q))
    scatter = np.empty(n_pix)
    for lo in range(0, n_pix, block):
        f, iv = flux[:, lo:lo + block], ivar[:, lo:lo + block]
        nb = f.shape[1]
        cost = np.full((len(ln_s), nb), np.inf)
        on_coarse = np.arange(0, len(ln_s), step)
        for g in on_coarse:  # every pixel at the same scatter
            cost[g] = _scatter_cost(L, LL, iu, ju, f, iv, np.exp(ln_s[g]), ridge)
        if step > 1:  # each pixel around its best coarse point
            best_c = on_coarse[np.argmin(cost[on_coarse], axis=0)]
            pix = np.arange(nb)
            for off in [o for k in range(1, step) for o in (-k, k)]:
                g = best_c + off
                ok = (g >= 0) & (g < len(ln_s))
                g = np.clip(g, 0, len(ln_s) - 1)
                c = _scatter_cost(L, LL, iu, ju, f, iv, np.exp(ln_s[g])[None, :], ridge)
                cost[g[ok], pix[ok]] = c[ok]
        best = np.argmin(cost, axis=0)
        s_best = np.exp(ln_s[best])
        inner = (best > 0) & (best < len(ln_s) - 1)
        if inner.any():  # parabola through the best grid point and its neighbours (in ln s)
            k = best[inner]
            cols = np.nonzero(inner)[0]
            y0, y1, y2 = cost[k - 1, cols], cost[k, cols], cost[k + 1, cols]
            h = ln_s[1] - ln_s[0]
            denom = y0 - 2 * y1 + y2
            shift = np.where(denom > 0, 0.5 * h * (y0 - y2) / np.where(denom > 0, denom, 1.0), 0.0)
            s_best[inner] = np.exp(ln_s[k] + np.clip(shift, -h, h))
        w = _weights(iv, s_best[None, :])
        coeffs[lo:lo + block] = _solve_block(L, LL, iu, ju, f, w, ridge)
        scatter[lo:lo + block] = s_best
    return CannonModel(tuple(label_names), pivots, scales, coeffs, scatter, grid_digest,
                       {"n_train": int(len(flux)), "n_pixels": int(n_pix)})


def _label_jacobian(x) -> np.ndarray:
    """∂ℓ/∂x of the quadratic label vector for a batch of scaled labels ``x`` (B, K): shape (B, Q, K)."""
    x = np.asarray(x, float)
    n, k = x.shape
    i, j = _pairs(k)
    c = 1 + k + np.arange(len(i))
    jac = np.zeros((n, 1 + k + len(i), k))
    jac[:, 1 + np.arange(k), np.arange(k)] = 1.0
    jac[:, c, i] += x[:, j]  # d(x_i x_j)/dx_i = x_j
    jac[:, c, j] += x[:, i]  # d(x_i x_j)/dx_j = x_i (together 2 x_i where i == j)
    return jac


def _projections(model: CannonModel, f, w):
    """The model's curvature for each star, A = θᵀWθ (B, Q, Q), and b = θᵀWf (B, Q).

    One matrix product over the pixels per batch; with :func:`_expansion` every later step of
    the fit costs O(Q²) per star instead of O(P·Q)."""
    q = model.coeffs.shape[1]
    iu, ju = np.triu_indices(q)
    rr = model.coeffs[:, iu] * model.coeffs[:, ju]                     # (P, Q(Q+1)/2)
    a_flat = w @ rr
    a = np.empty((len(f), q, q))
    a[:, iu, ju] = a_flat
    a[:, ju, iu] = a_flat
    return a, (w * f) @ model.coeffs


def _expansion(model: CannonModel, f, w, x_ref):
    """χ² about reference labels ``x_ref`` (B, K): with r₀ = f − θ ℓ(x_ref), c₀ = r₀ᵀWr₀ and
    b₀ = θᵀWr₀, χ²(x) = c₀ − 2 b₀·d + dᵀ A d for d = ℓ(x) − ℓ(x_ref), exactly.

    Expanding about a point near the minimum (not about zero flux, where c = fᵀWf is some 10⁸)
    keeps the cancellation in this sum far below the χ² changes the fit decides on."""
    v_ref = label_vector(x_ref)
    r0 = f - v_ref @ model.coeffs.T
    return v_ref, (w * r0) @ model.coeffs, np.sum(w * r0 * r0, axis=1)


def _fit_batch(a, v_ref, b, c, x0, n_iter, tol: float = 1e-3):
    """Levenberg–Marquardt for a batch of stars from start ``x0`` (B, K), on the χ² expansion of
    :func:`_projections` and :func:`_expansion`: returns x, χ², H (the Gauss–Newton curvature JᵀWJ = (∂ℓ/∂x)ᵀ A (∂ℓ/∂x)).

    The steps are those of Levenberg–Marquardt on the pixels (gradient JᵀW r and curvature JᵀWJ
    with J = θ ∂ℓ/∂x), computed without touching the pixels. Each star stops on its own when an
    accepted step lowers its χ² by less than ``tol`` (a change of labels far below their
    uncertainty) or its damping grows past 1e6 (no better point nearby); only the others go on.
    """
    k = x0.shape[1]
    x = x0.copy()
    lam = np.full(len(x), 1e-3)

    def chi2_of(xx, rows):
        d = label_vector(xx) - v_ref[rows]
        ad = np.einsum("bqr,br->bq", a[rows], d)
        return c[rows] - 2.0 * np.sum(b[rows] * d, axis=1) + np.sum(d * ad, axis=1), ad - b[rows]

    chi2, g = chi2_of(x, np.arange(len(x)))                 # g = A d − b₀ = −θᵀW r
    eye = np.eye(k)
    active = np.ones(len(x), bool)
    for _ in range(n_iter):
        rows = np.nonzero(active)[0]
        if not len(rows):
            break
        jac = _label_jacobian(x[rows])                       # (b, Q, K)
        h = np.einsum("bqk,bql->bkl", jac, a[rows] @ jac)    # (b, K, K)
        grad = -np.einsum("bqk,bq->bk", jac, g[rows])        # JᵀW r
        lr = lam[rows]
        step = np.linalg.solve(h + lr[:, None, None] * (h * eye), grad[..., None])[..., 0]
        x_new = x[rows] + step
        chi2_new, g_new = chi2_of(x_new, rows)
        better = chi2_new < chi2[rows]
        gain = np.where(better, chi2[rows] - chi2_new, np.inf)
        upd = rows[better]
        x[upd], chi2[upd], g[upd] = x_new[better], chi2_new[better], g_new[better]
        lam[rows] = np.where(better, lr / 10.0, lr * 10.0)
        done = (gain < tol) | (lam[rows] > 1e6)
        active[rows[done]] = False
    jac = _label_jacobian(x)
    h = np.einsum("bqk,bql->bkl", jac, a @ jac)
    return x, chi2, h


def infer(model: CannonModel, flux, ivar, grid_digest: str | None = None, n_iter: int = 30,
          batch: int = 128) -> dict:
    """Labels of spectra from a trained Cannon model (χ² minimisation per star, vectorised over stars).

    Each star's spectrum is projected on the model once (:func:`_projections`, one matrix product
    over the pixels for a batch of stars); the fit then runs on the projections. Two starts per star: the pivot (all scaled labels 0) and the linear part of the unconstrained
    least-squares solution for the whole label vector; the better fit is kept.

    Parameters
    ----------
    model : CannonModel
    flux, ivar : array_like, shape (N, P)
        Normalised flux and inverse variance on the model's grid (``ivar == 0``: masked).
    grid_digest : str, optional
        ``Grid.digest`` of the spectra, checked against the model's.
    n_iter : int
        Most Levenberg–Marquardt iterations.
    batch : int
        Stars per block (memory ≈ batch × P × 8 bytes × 4, plus P × Q(Q+1)/2 × 8 bytes once).

    Returns
    -------
    dict
        ``labels`` (N, K) in physical units, ``errors`` (N, K) formal 1σ from the curvature of χ²,
        ``chi2`` (N,), ``reduced_chi2`` (N,).
    """
    flux = np.asarray(flux, float)
    ivar = np.asarray(ivar, float)
    if flux.ndim != 2 or flux.shape != ivar.shape:
        raise CannonError(f"flux {flux.shape} and ivar {ivar.shape} must be equal (N, P) arrays")
    model.check(flux.shape[1], grid_digest)
    good = (ivar > 0) & np.isfinite(ivar)
    if not np.all(np.isfinite(flux[good])):
        raise CannonError("flux contains NaN or infinity at unmasked pixels: mask them (ivar = 0)")
    k = model.n_labels
    out_x = np.empty((len(flux), k))
    out_err = np.empty((len(flux), k))
    out_chi2 = np.empty(len(flux))
    n_good = good.sum(axis=1)
    for lo in range(0, len(flux), batch):
        sl = slice(lo, lo + batch)
        f = np.where(good[sl], flux[sl], 1.0)
        w = _weights(np.where(good[sl], ivar[sl], 0.0), model.scatter[None, :])
        a, b = _projections(model, f, w)
        # linear start: θ_rest · v = f − θ_0 for the whole label vector v, then its linear part
        a_rest = a[:, 1:, 1:] + 1e-9 * np.eye(a.shape[1] - 1)
        v = np.linalg.solve(a_rest, (b[:, 1:] - a[:, 1:, 0])[..., None])[..., 0]
        starts = [np.zeros((len(f), k)), np.clip(v[:, :k], -5.0, 5.0)]
        v_ref, b0, c0 = _expansion(model, f, w, starts[1])
        best = None
        for x0 in starts:
            x, chi2, h = _fit_batch(a, v_ref, b0, c0, x0, n_iter)
            if best is None:
                best = [x, chi2, h]
            else:
                better = chi2 < best[1]
                best[0][better], best[1][better], best[2][better] = x[better], chi2[better], h[better]
        x, _, h = best
        r = f - label_vector(x) @ model.coeffs.T  # the χ² reported: from the pixels themselves
        chi2 = np.sum(w * r * r, axis=1)
        try:
            cov = np.linalg.inv(h)
            err = np.sqrt(np.clip(np.diagonal(cov, axis1=1, axis2=2), 0, None))
        except np.linalg.LinAlgError:
            err = np.full_like(x, np.nan)
        out_x[sl] = model.pivots + model.scales * x
        out_err[sl] = err * model.scales
        out_chi2[sl] = chi2
    dof = np.maximum(n_good - k, 1)
    return {"labels": out_x, "errors": out_err, "chi2": out_chi2, "reduced_chi2": out_chi2 / dof}


def save(model: CannonModel, path) -> Path:
    """Write a model to ``.npz`` atomically (plain arrays, no pickle) with a JSON header."""
    path = Path(path)
    header = {"format": FORMAT, "label_names": list(model.label_names), "grid_digest": model.grid_digest,
              "info": model.info}
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:  # a file object: savez adds no suffix
        np.savez(fh, header=np.array(json.dumps(header)), pivots=model.pivots, scales=model.scales,
                 coeffs=model.coeffs, scatter=model.scatter)
    return path


def load(path, grid_digest: str | None = None, label_names=None) -> CannonModel:
    """Read a model written by :func:`save`; refuse another grid or other labels."""
    path = Path(path)
    if not path.exists():
        raise CannonError(f"{path} does not exist: run chapter 07 (or helpers.cannon.train) first")
    try:
        with np.load(path, allow_pickle=False) as z:
            header = json.loads(str(z["header"]))
            arrays = {k: z[k] for k in ("pivots", "scales", "coeffs", "scatter")}
    except (OSError, KeyError, ValueError) as exc:
        raise CannonError(f"{path} is not a readable Cannon model ({exc}); train it again") from exc
    if header.get("format") != FORMAT:
        raise CannonError(f"{path} has format {header.get('format')!r}, expected {FORMAT!r}")
    model = CannonModel(tuple(header["label_names"]), grid_digest=header.get("grid_digest", ""),
                        info=header.get("info", {}), **arrays)
    model.check(len(model.coeffs), grid_digest, label_names)
    return model


def _infer_block_task(task: dict):
    """Labels of one block of a data set file (a top-level function, so Dask workers can run it)."""
    import time
    from contextlib import nullcontext

    from threadpoolctl import threadpool_limits

    from .dataset import read_dataset

    model = load(task["model"], grid_digest=task["grid_digest"])
    data = read_dataset(task["data"], rows=slice(task["start"], task["stop"]))
    t0 = time.perf_counter()
    with threadpool_limits(task["threads"]) if task["threads"] else nullcontext():
        res = infer(model, data.flux, data.ivar, grid_digest=data.grid.digest, n_iter=task["n_iter"],
                    batch=task["batch"])
    res["seconds"] = time.perf_counter() - t0
    return res


def infer_file(model_path, data_path, *, n_iter: int = 30, batch: int = 128, block: int = 4096,
               scheduler="synchronous", log=None) -> dict:
    """:func:`infer` for every spectrum of a data set file, one task per block of rows.

    Workers read the saved model (:func:`save`) and their blocks from the files themselves (on a
    cluster: shared paths); results are gathered in the file's row order. Each star's fit uses only
    its own spectrum, but the BLAS sums of a block depend on the threads, so workers use one BLAS
    thread each and give the same labels for any number of workers.

    Returns
    -------
    dict
        As :func:`infer`, plus ``seconds`` (fitting time summed over workers), ``wall`` (end to end)
        and ``scheduler`` (where it ran).
    """
    import time

    from . import parallel
    from .dataset import n_spectra, read_grid

    t_wall = time.perf_counter()
    digest = read_grid(data_path).digest
    load(model_path, grid_digest=digest)  # refuse a mismatch here, not in every worker
    n = n_spectra(data_path)
    with parallel.scheduler_of(scheduler, log=log) as sched:
        threads = None if sched.client is None else sched.threads_per_worker
        tasks = [{"model": str(model_path), "data": str(data_path), "grid_digest": digest, "start": lo,
                  "stop": min(lo + block, n), "n_iter": n_iter, "batch": batch, "threads": threads}
                 for lo in range(0, n, block)]
        parts = parallel.run_tasks(sched, _infer_block_task, tasks,
                                   keys=[f"cannon-rows-{t['start']}-{t['stop']}" for t in tasks],
                                   label="Cannon labels")
        desc = str(sched)
    out = {k: np.concatenate([p[k] for p in parts]) for k in ("labels", "errors", "chi2", "reduced_chi2")}
    out.update(seconds=float(sum(p["seconds"] for p in parts)), wall=time.perf_counter() - t_wall,
               scheduler=desc)
    return out
