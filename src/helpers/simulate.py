"""A fast, physically motivated forward model of GIRAFFE HR10 + HR21 spectra.

Labels (Teff, log g, [Fe/H], [Mg/Fe], [Al/Fe]) and nuisances (microturbulence,
v sin i, radial-velocity residual) become continuum-normalised spectra on the
Gaia-ESO 0.05 Å grid. The model is deliberately simple enough to make 20 000
spectra in a minute, yet every label acts through physics:

Line strength
    For each line the ratio of line to continuum opacity is

    .. math::

        \\log\\eta = \\log gf + A(X) - 12 + \\log f_\\mathrm{stage}(T, P_e)
                    - \\theta\\chi + \\log(\\lambda/5000) - \\log\\kappa_c(T, P_e) + C

    with the Boltzmann factor (θ = 5040/T, χ the excitation potential in eV),
    the Saha ionisation balance of the element (first and second ionisation
    potentials), an H⁻ continuum opacity κ_c ∝ P_e θ^{5/2} 10^{0.754θ}, and an
    electron pressure that grows with gravity (P_e ∝ g^{1/3}), metallicity
    (electron donors) and temperature (hydrogen ionisation). The line-forming
    temperature is a fixed fraction of Teff. Neutral lines of ionised elements
    (Fe I, Mg I) are thus almost gravity-blind, ionised species (Fe II, Ti II)
    strengthen in giants, and hydrogen Paschen lines, with their 12.1 eV lower
    level, appear only in hot stars.
Curve of growth
    A line of centre opacity η0 = η/Δλ_D and damping parameter a has the
    Minnaert residual profile 1/d = 1/D_max + 1/(η0 H(a, x)) with the Voigt
    function H; its equivalent width follows from a pre-computed table: linear
    for weak lines, flat once saturated, and growing as sqrt(η a) on the
    damping wings of strong lines (Mg I 8806 Å, the Ca II triplet). Damping is
    radiative plus van der Waals (ABO cross-sections of the line list, scaled
    with gas pressure ∝ g^{2/3} Z^{-1/3}); Paschen lines get Stark widths ∝ P_e^{2/3}.
Observed profile
    The Gaussian core (thermal plus microturbulent Doppler width, widened by
    saturation) is convolved with the setup's Gaussian line-spread function
    (FWHM = λ/R) and a Gaussian stand-in for rotation (σ = 0.45 λ v sin i / c);
    damping wings stay Lorentzian. Overlapping lines multiply.

What it leaves out (and the book says so): molecular bands (CN in cool
giants), departures from LTE, a real model atmosphere, partition functions
(set to 1; constant offsets are absorbed by the calibration), isotopic and
hyperfine structure. Abundances of O, Si, S, Ca and Ti follow [Mg/Fe] times a
coupling factor (α elements move together in real stars); all other elements
scale with [Fe/H].

The global constants and per-line corrections (astrophysical log gf for the
85 reference lines) are fitted by ``scripts/calibrate_simulator.py`` to the
line depths that Turbospectrum gives for three reference stars, and shipped
as ``helpers/data/simulator_calibration.json``.
"""
from __future__ import annotations

import functools
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
from scipy.special import wofz

from . import LABELS, paths
from .lines import LineList, load_linelist
from .spectra import C_KMS, Grid, giraffe_grid

__all__ = [
    "NUISANCES", "Calibration", "load_calibration", "default_vmic", "atmosphere",
    "line_strengths", "equivalent_widths", "render", "jacobian", "add_noise",
    "ForwardModel",
]

#: Nuisance parameters: microturbulence [km/s], v sin i [km/s], radial-velocity residual [km/s].
NUISANCES = ("vmic", "vsini", "rv")
#: Elements whose [X/Fe] follows [Mg/Fe] times :attr:`Calibration.alpha_coupling`.
ALPHA_ELEMENTS = ("O", "Si", "S", "Ca", "Ti")
_SQRT_PI = np.sqrt(np.pi)
_SQRT_2PI = np.sqrt(2 * np.pi)
_C_ANGSTROM = 2.99792458e18  # speed of light in Å/s


@dataclass
class Calibration:
    """Constants of the forward model (see :mod:`helpers.simulate`).

    Attributes
    ----------
    zero_point : dict
        Strength zero point C per setup (dex).
    t_frac : float
        Line-forming temperature over Teff.
    log_pe0 : float
        log10 electron pressure [dyn cm^-2] of the line-forming layer of the Sun.
    pe_logg : float
        d log P_e / d log g.
    d_max : float
        Maximum intrinsic depth of a saturated line (Minnaert).
    log_vdw : float
        log10 van der Waals damping rate [s^-1] of a line with σ_ABO = 300 a0² in the Sun.
    alpha_coupling : float
        [X/Fe] of O, Si, S, Ca, Ti in units of [Mg/Fe].
    hydrogen_offset : float
        Extra strength zero point of hydrogen lines (dex).
    stark_log_a : float
        log10 damping parameter of Paschen lines in the Sun.
    line_offsets : dict
        Astrophysical log gf corrections (dex), keyed by the row in ``lines_strong.csv``.
    fit : dict
        How the calibration was made (free-form provenance).
    """

    zero_point: dict = field(default_factory=lambda: {"HR10": 10.0, "HR21": 10.0})
    t_frac: float = 0.88
    log_pe0: float = 1.0
    pe_logg: float = 1 / 3
    d_max: float = 0.85
    log_vdw: float = 8.3
    alpha_coupling: float = 0.8
    hydrogen_offset: float = -0.3
    stark_log_a: float = 1.0
    line_offsets: dict = field(default_factory=dict)
    fit: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        d = asdict(self)
        d["line_offsets"] = {str(k): float(v) for k, v in self.line_offsets.items()}
        return d

    @classmethod
    def from_json(cls, data: dict) -> "Calibration":
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown calibration keys {sorted(unknown)}")
        out = cls(**data)
        out.line_offsets = {int(k): float(v) for k, v in out.line_offsets.items()}
        return out


def load_calibration(path: Path = paths.CALIBRATION) -> Calibration:
    """Read the shipped calibration; fall back to the uncalibrated defaults if absent."""
    path = Path(path)
    if not path.exists():
        return Calibration()
    with open(path, encoding="utf-8") as fh:
        return Calibration.from_json(json.load(fh))


def default_vmic(teff, logg):
    """Microturbulence [km/s] from Teff [K] and log g, a smooth Gaia-ESO-like relation."""
    teff = np.asarray(teff, float)
    logg = np.asarray(logg, float)
    return np.clip(1.1 + 0.3e-3 * (teff - 5500.0) + 0.18 * (4.2 - logg), 0.6, 2.6)


# --------------------------------------------------------------------------- physics
def atmosphere(teff, logg, feh, cal: Calibration) -> dict:
    """Line-forming-layer state of each star.

    Parameters
    ----------
    teff : array, K
    logg : array, dex (cgs)
    feh : array, dex
    cal : Calibration

    Returns
    -------
    dict
        ``T`` [K], ``theta`` (5040/T), ``log_pe`` (log10 P_e [dyn cm^-2]),
        ``log_kappa`` (log10 of the relative H⁻ continuum opacity),
        ``log_pgas_rel`` (log10 gas pressure relative to the Sun).
    """
    teff = np.asarray(teff, float)
    logg = np.asarray(logg, float)
    feh = np.asarray(feh, float)
    T = cal.t_frac * teff
    theta = 5040.0 / T
    donors = 10.0 ** feh + 10.0 ** (2.5e-3 * (teff - 6500.0) - 1.3)  # metals + ionised H
    donors_sun = 1.0 + 10.0 ** (2.5e-3 * (5772.0 - 6500.0) - 1.3)
    log_pe = cal.log_pe0 + cal.pe_logg * (logg - 4.438) + 0.5 * np.log10(donors / donors_sun)
    log_kappa = log_pe + 2.5 * np.log10(theta) + 0.754 * theta
    log_pgas_rel = (2 / 3) * (logg - 4.438) - (1 / 3) * np.clip(feh, -2.5, 0.6)
    return {"T": T, "theta": theta, "log_pe": log_pe, "log_kappa": log_kappa,
            "log_pgas_rel": log_pgas_rel}


def _line_arrays(lines: LineList, cal: Calibration) -> dict:
    sym = lines.symbol
    el = {k: lines.element_array(k) for k in ("mass", "a_sun", "chi1", "chi2")}
    offsets = np.array([cal.line_offsets.get(int(r), 0.0) if r >= 0 else 0.0 for r in lines.ref])
    is_h = sym == "H"
    return {
        **el,
        "is_h": is_h,
        "is_mg": sym == "Mg",
        "is_al": sym == "Al",
        "is_alpha": np.isin(sym, ALPHA_ELEMENTS),
        "offset": offsets + np.where(is_h, cal.hydrogen_offset, 0.0),
        "zero_point": np.where(lines.wave < 7000, cal.zero_point["HR10"], cal.zero_point["HR21"]),
    }


def line_strengths(lines: LineList, labels: np.ndarray, nuis: np.ndarray,
                   cal: Calibration) -> dict:
    """Per-star, per-line strength, Doppler width and damping.

    Parameters
    ----------
    lines : LineList
    labels : ndarray, shape (n_stars, 5)
        Teff [K], log g, [Fe/H], [Mg/Fe], [Al/Fe] (dex).
    nuis : ndarray, shape (n_stars, 3)
        vmic, vsini, rv in km/s.
    cal : Calibration

    Returns
    -------
    dict of ndarray, shape (n_stars, n_lines)
        ``log_eta`` (line-to-continuum strength, dex), ``dlam_d`` (Doppler
        width, Å), ``a`` (Voigt damping parameter).
    """
    labels = np.atleast_2d(labels)
    nuis = np.atleast_2d(nuis)
    teff, logg, feh, mg_fe, al_fe = (labels[:, i:i + 1] for i in range(5))
    vmic = nuis[:, 0:1]
    la = _line_arrays(lines, cal)
    atm = atmosphere(teff, logg, feh, cal)
    theta, T, log_pe = atm["theta"], atm["T"], atm["log_pe"]

    xfe = (np.where(la["is_mg"], mg_fe, 0.0) + np.where(la["is_al"], al_fe, 0.0)
           + np.where(la["is_alpha"], cal.alpha_coupling * mg_fe, 0.0))
    abundance = np.where(la["is_h"], 12.0, la["a_sun"] + feh + xfe)

    # Saha: log(N_{j+1}/N_j) = 2.5 log T - 0.1762 - theta*chi - log Pe (partition functions = 1)
    base = 2.5 * np.log10(T) - 0.1762 - log_pe
    log_r1 = base - theta * la["chi1"]
    log_r2 = base - theta * la["chi2"]
    r1 = 10.0 ** np.clip(log_r1, -30, 30)
    r2 = 10.0 ** np.clip(log_r2, -30, 30)
    f0 = 1.0 / (1.0 + r1 + r1 * r2)
    f_stage = np.where(lines.ion == 0, f0, r1 * f0)
    log_eta = (lines.loggf + abundance - 12.0 + np.log10(np.maximum(f_stage, 1e-300))
               - theta * lines.chi + np.log10(lines.wave / 5000.0) - atm["log_kappa"]
               + la["zero_point"] + la["offset"])

    v_th2 = (0.12895 ** 2) * T / la["mass"]  # (km/s)^2, sqrt(2kT/m)
    dlam_d = lines.wave / C_KMS * np.sqrt(v_th2 + vmic ** 2)

    nu_d = _C_ANGSTROM * dlam_d / lines.wave ** 2  # Doppler width in Hz
    gamma6 = 10.0 ** (cal.log_vdw + atm["log_pgas_rel"]) * (lines.sigma_vdw / 300.0) \
        * (T / 5079.0) ** 0.3
    a = (lines.gamma_rad + gamma6) / (4 * np.pi * nu_d)
    a_h = 10.0 ** (cal.stark_log_a + (2 / 3) * (log_pe - cal.log_pe0))
    a = np.where(la["is_h"], a_h + a, a)
    return {"log_eta": log_eta, "dlam_d": dlam_d, "a": a}


@functools.lru_cache(maxsize=1)
def _cog_table():
    """Curve-of-growth integrals of the Minnaert profile, tabulated once per process.

    Returns ``(logq, loga, G, G0)``: ``G[i, j] = ∫ s/(1+s) dx`` with
    ``s = q H(a, x)``, and ``G0[i]`` the same for a = 0 (pure Doppler core).
    """
    logq = np.arange(-6.0, 10.01, 0.1)
    loga = np.arange(-5.0, 1.51, 0.1)
    x = np.concatenate([np.linspace(0, 8, 321)[:-1], np.geomspace(8, 3e5, 500)])
    wx = np.gradient(x)  # trapezoid-like weights on the non-uniform grid
    H = wofz(x[None, :] + 1j * (10.0 ** loga)[:, None]).real  # (n_a, n_x)
    H0 = np.exp(-x ** 2)
    q = 10.0 ** logq
    s = q[:, None, None] * H[None, :, :]
    G = 2 * np.sum(s / (1 + s) * wx, axis=-1)
    s0 = q[:, None] * H0[None, :]
    G0 = 2 * np.sum(s0 / (1 + s0) * wx, axis=-1)
    return logq, loga, G, G0


def _interp_table(logq, loga):
    tq, ta, G, G0 = _cog_table()
    fq = np.clip((logq - tq[0]) / 0.1, 0, len(tq) - 1.000001)
    fa = np.clip((loga - ta[0]) / 0.1, 0, len(ta) - 1.000001)
    iq, ia = fq.astype(int), fa.astype(int)
    wq, wa = fq - iq, fa - ia
    g = ((1 - wq) * (1 - wa) * G[iq, ia] + wq * (1 - wa) * G[iq + 1, ia]
         + (1 - wq) * wa * G[iq, ia + 1] + wq * wa * G[iq + 1, ia + 1])
    g0 = (1 - wq) * G0[iq] + wq * G0[iq + 1]
    # below the table the line is weak: G = sqrt(pi) q
    weak = logq < tq[0]
    g = np.where(weak, _SQRT_PI * 10.0 ** logq, g)
    g0 = np.where(weak, _SQRT_PI * 10.0 ** logq, g0)
    return g, g0


def equivalent_widths(strength: dict, cal: Calibration) -> dict:
    """Equivalent widths and profile shapes from :func:`line_strengths`.

    Returns
    -------
    dict of ndarray, shape (n_stars, n_lines)
        ``ew`` total equivalent width [Å]; ``ew_core`` and ``ew_wing`` its
        Doppler-core and damping-wing parts [Å]; ``sigma_core`` Gaussian σ of
        the intrinsic core [Å]; ``gamma`` Lorentzian half width of the wings [Å].
    """
    D = cal.d_max
    dlam = strength["dlam_d"]
    logq = strength["log_eta"] - np.log10(dlam) - np.log10(D)
    a = strength["a"]
    g, g0 = _interp_table(logq, np.log10(a))
    ew = D * dlam * g
    # Lorentzian share: the damping wings of saturated lines (G - G0), or, for weak
    # lines with large damping (Stark-broadened hydrogen), the pseudo-Voigt mixing
    # of Doppler and Lorentz widths (Thompson, Cox & Hastings 1987).
    f_l, f_g = 2 * a, 2 * np.sqrt(np.log(2))
    f_v = (f_g ** 5 + 2.69269 * f_g ** 4 * f_l + 2.42843 * f_g ** 3 * f_l ** 2
           + 4.47163 * f_g ** 2 * f_l ** 3 + 0.07842 * f_g * f_l ** 4 + f_l ** 5) ** 0.2
    r = f_l / f_v
    mix = np.clip(1.36603 * r - 0.47719 * r ** 2 + 0.11116 * r ** 3, 0.0, 1.0)
    share = np.maximum(np.clip((g - g0) / np.maximum(g, 1e-300), 0.0, 1.0), mix)
    share = np.where(share < 0.03, 0.0, share)  # a few per cent of wing: keep the line Gaussian
    ew_wing = share * ew
    ew_core = ew - ew_wing
    sigma_core = np.sqrt(0.5 * dlam ** 2 + (ew_core / (D * _SQRT_2PI)) ** 2)
    x_l = np.sqrt(10.0 ** np.clip(logq, -30, 30) * a / _SQRT_PI)
    gamma = np.maximum(np.maximum(x_l, a) * dlam, dlam)
    return {"ew": ew, "ew_core": ew_core, "ew_wing": ew_wing, "sigma_core": sigma_core,
            "gamma": gamma}


# --------------------------------------------------------------------------- rendering
def _render_chunk(grid: Grid, lines: LineList, labels, nuis, cal, min_depth) -> np.ndarray:
    n = labels.shape[0]
    flux = np.empty((n, grid.n_pixels), dtype=np.float32)
    step = grid.step
    for setup, (p0, p1) in zip(grid.setups, grid.bounds):
        margin = 5.0
        sel = (lines.wave > setup.wmin - margin) & (lines.wave < setup.wmax + margin)
        ll = lines.take(sel)
        st = line_strengths(ll, labels, nuis, cal)
        ew = equivalent_widths(st, cal)
        lam = ll.wave
        sig_inst = lam / (2.3548 * setup.resolving_power)
        sig_rot = 0.45 * lam * nuis[:, 1:2] / C_KMS
        sig = np.sqrt(ew["sigma_core"] ** 2 + sig_inst ** 2 + sig_rot ** 2)
        amp_g = (ew["ew_core"] / (_SQRT_2PI * sig)).astype(np.float32)
        gam = ew["gamma"]
        amp_l = (ew["ew_wing"] / (np.pi * gam)).astype(np.float32)
        centre = lam * (1.0 + nuis[:, 2:3] / C_KMS)
        peak = (amp_g + amp_l).max(axis=0)
        wave = grid.wave[p0:p1]
        tau = np.zeros((n, p1 - p0), dtype=np.float32)
        core_hw = 5.0 * sig.max(axis=0) + 3 * step + np.abs(nuis[:, 2]).max() * lam / C_KMS
        wing_w = np.sqrt((ew["ew_wing"] * gam).max(axis=0) / (np.pi * 1e-4))
        half = np.minimum(np.maximum(core_hw, np.where(amp_l.max(axis=0) > 1e-5, wing_w, 0)), 60.0)
        lo = np.clip(np.floor((lam - half - wave[0]) / step).astype(int), 0, p1 - p0)
        hi = np.clip(np.ceil((lam + half - wave[0]) / step).astype(int) + 1, 0, p1 - p0)
        inv_sig = (1.0 / sig).astype(np.float32)
        inv_gam = (1.0 / gam).astype(np.float32)
        for j in np.nonzero((peak > min_depth) & (hi > lo))[0]:
            x = (wave[lo[j]:hi[j]][None, :] - centre[:, j:j + 1]).astype(np.float32)
            u = x * inv_sig[:, j:j + 1]
            prof = amp_g[:, j:j + 1] * np.exp(np.float32(-0.5) * u * u)
            if amp_l[:, j].max() > 1e-5:
                v = x * inv_gam[:, j:j + 1]
                prof += amp_l[:, j:j + 1] / (np.float32(1.0) + v * v)
            if peak[j] > 0.05:  # strong lines combine multiplicatively; weak ones add
                prof = -np.log1p(-np.minimum(prof, np.float32(0.98)))
            tau[:, lo[j]:hi[j]] += prof
        flux[:, p0:p1] = np.exp(-tau)
    return flux


def render(labels, nuis=None, *, grid: Grid | None = None, lines: LineList | None = None,
           cal: Calibration | None = None, chunk: int = 512, n_threads: int = 1,
           min_depth: float = 2e-4) -> np.ndarray:
    """Noise-free, continuum-normalised spectra for the given labels.

    Parameters
    ----------
    labels : array_like, shape (n_stars, 5) or (5,)
        Teff [K], log g [dex], [Fe/H], [Mg/Fe], [Al/Fe] [dex].
    nuis : array_like, shape (n_stars, 3) or (3,), optional
        vmic, vsini, rv [km/s]; default: :func:`default_vmic`, 0, 0.
    grid : Grid, optional
        Default: :func:`helpers.spectra.giraffe_grid` (HR10 + HR21).
    lines : LineList, optional
        Default: the shipped line list.
    cal : Calibration, optional
        Default: the shipped calibration.
    chunk : int
        Stars rendered together (memory ~ chunk × 60 kB). Line windows are sized
        for the broadest star of a chunk, so results depend on the chunking at
        the 1e-3 level: keep ``chunk`` fixed for reproducible files.
    n_threads : int
        Threads working on separate chunks.
    min_depth : float
        Lines shallower than this for every star of a chunk are skipped.

    Returns
    -------
    ndarray, shape (n_stars, n_pixels), float32
    """
    labels = np.atleast_2d(np.asarray(labels, float))
    if labels.shape[1] != len(LABELS):
        raise ValueError(f"labels must have {len(LABELS)} columns {LABELS}, got {labels.shape}")
    if not np.all(np.isfinite(labels)):
        raise ValueError("labels contain NaN or infinity")
    if nuis is None:
        nuis = np.column_stack([default_vmic(labels[:, 0], labels[:, 1]),
                                np.zeros(len(labels)), np.zeros(len(labels))])
    nuis = np.atleast_2d(np.asarray(nuis, float))
    grid = grid or giraffe_grid()
    lines = lines or load_linelist()
    cal = cal or load_calibration()
    # Stars with broad or strongly shifted lines need wide windows; rendering them
    # apart keeps the windows of ordinary stars narrow (and the cost down).
    broad = (nuis[:, 1] > 20.0) | (np.abs(nuis[:, 2]) > 10.0)
    order = np.concatenate([np.nonzero(~broad)[0], np.nonzero(broad)[0]])
    tasks = []
    for group in (np.nonzero(~broad)[0], np.nonzero(broad)[0]):
        tasks += [group[i:i + chunk] for i in range(0, len(group), chunk)]

    def work(idx):
        return _render_chunk(grid, lines, labels[idx], nuis[idx], cal, min_depth)

    if n_threads > 1 and len(tasks) > 1:
        with ThreadPoolExecutor(n_threads) as ex:
            parts = list(ex.map(work, tasks))
    else:
        parts = [work(idx) for idx in tasks]
    out = np.empty((len(labels), grid.n_pixels), dtype=np.float32)
    out[order] = np.concatenate(parts, axis=0)
    return out


#: Finite-difference steps of :func:`jacobian` for the five labels.
JACOBIAN_STEPS = np.array([20.0, 0.02, 0.01, 0.01, 0.01])


def jacobian(labels, nuis=None, *, steps=JACOBIAN_STEPS, **kw) -> np.ndarray:
    """∂flux/∂label by central finite differences of the noise-free model.

    Returns
    -------
    ndarray, shape (n_stars, n_pixels, 5)
        Per unit of each label (1/K for Teff, 1/dex for the others).
    """
    labels = np.atleast_2d(np.asarray(labels, float))
    n = len(labels)
    if nuis is not None:
        nuis = np.atleast_2d(np.asarray(nuis, float))
        nuis_all = np.tile(nuis, (2 * len(steps), 1))
    else:
        nuis_all = None
    shifted = []
    for k, h in enumerate(steps):
        for sign in (+1, -1):
            x = labels.copy()
            x[:, k] += sign * h
            shifted.append(x)
    flux = render(np.concatenate(shifted), nuis_all, **kw).reshape(len(steps), 2, n, -1)
    J = (flux[:, 0].astype(np.float64) - flux[:, 1]) / (2 * np.asarray(steps)[:, None, None])
    return np.moveaxis(J, 0, -1)


def add_noise(flux, snr, rng: np.random.Generator):
    """Gaussian noise at signal-to-noise ``snr`` per pixel (σ = 1/snr of the continuum).

    Returns
    -------
    noisy : ndarray, float32
    sigma : ndarray, float32
        Per-pixel flux error (same shape as ``flux``).
    """
    snr = np.asarray(snr, float).reshape(-1, 1)
    sigma = np.broadcast_to((1.0 / snr).astype(np.float32), flux.shape).copy()
    noisy = flux + sigma * rng.standard_normal(flux.shape, dtype=np.float32)
    return noisy.astype(np.float32), sigma


class ForwardModel:
    """Convenience bundle of a grid, a line list and a calibration.

    Examples
    --------
    >>> fm = ForwardModel()
    >>> flux = fm.render([[5772, 4.44, 0.0, 0.0, 0.0]])
    >>> flux.shape
    (1, 15940)
    """

    def __init__(self, grid: Grid | None = None, lines: LineList | None = None,
                 cal: Calibration | None = None):
        self.grid = grid or giraffe_grid()
        self.lines = lines or load_linelist()
        self.cal = cal or load_calibration()

    def render(self, labels, nuis=None, **kw) -> np.ndarray:
        """See :func:`render`."""
        return render(labels, nuis, grid=self.grid, lines=self.lines, cal=self.cal, **kw)

    def jacobian(self, labels, nuis=None, **kw) -> np.ndarray:
        """See :func:`jacobian`."""
        return jacobian(labels, nuis, grid=self.grid, lines=self.lines, cal=self.cal, **kw)


# --------------------------------------------------------------------------- check against real synthesis
#: The three reference stars of ``lines_strong.csv``: name -> (labels, depth column).
REFERENCE_STARS = {
    "sun": ((5777.0, 4.44, 0.0, 0.0, 0.0), "depth_sun"),
    "giant": ((4500.0, 2.5, 0.0, 0.0, 0.0), "depth_giant"),
    "mp_giant": ((4800.0, 2.0, -1.0, 0.3, 0.3), "depth_mp_giant"),
}
#: Microturbulence of the reference synthesis [km/s].
REFERENCE_VMIC = 1.5


def reference_targets(ref_rows: list[dict], grid: Grid) -> list[dict]:
    """Reference depths that fall on ``grid``: one dict per (star, line).

    Each dict holds ``star``, ``ref`` (row), ``wave`` [Å], ``species``,
    ``setup`` and ``depth`` (Turbospectrum central depth).
    """
    out = []
    for star, (_, col) in REFERENCE_STARS.items():
        for k, r in enumerate(ref_rows):
            d = r[col]
            if not np.isfinite(d):
                continue
            on = [s.name for s in grid.setups if s.wmin + 1 <= r["wavelength_air_A"] <= s.wmax - 1]
            if on:
                ew_col = {"sun": "ew_sun_mA", "giant": "ew_giant_mA", "mp_giant": "ew_mp_giant_mA"}[star]
                out.append({"star": star, "ref": k, "wave": r["wavelength_air_A"],
                            "species": r["species"], "setup": on[0], "depth": d,
                            "ew": r[ew_col] / 1000.0})
    return out


def isolated_depths(labels, nuis, *, lines: LineList, cal: Calibration, grid: Grid) -> dict:
    """Central depth and equivalent width of each line on its own, at the setup's resolution.

    This is what a line-by-line synthesis gives (and what ``lines_strong.csv``
    lists): no blending with neighbours.

    Returns
    -------
    dict of ndarray, shape (n_stars, n_lines)
        ``depth`` (central depth, 0–1) and ``ew`` (equivalent width, Å).
    """
    labels = np.atleast_2d(np.asarray(labels, float))
    nuis = np.atleast_2d(np.asarray(nuis, float))
    st = line_strengths(lines, labels, nuis, cal)
    ew = equivalent_widths(st, cal)
    R = np.full(len(lines), np.nan)
    for s in grid.setups:
        R[(lines.wave > s.wmin - 5) & (lines.wave < s.wmax + 5)] = s.resolving_power
    R = np.where(np.isnan(R), 18_000.0, R)
    sig_inst = lines.wave / (2.3548 * R)
    sig_rot = 0.45 * lines.wave * nuis[:, 1:2] / C_KMS
    sig = np.sqrt(ew["sigma_core"] ** 2 + sig_inst ** 2 + sig_rot ** 2)
    peak = ew["ew_core"] / (_SQRT_2PI * sig) + ew["ew_wing"] / (np.pi * ew["gamma"])
    return {"depth": np.minimum(peak, 0.98), "ew": ew["ew"]}


def model_depths(targets: list[dict], *, lines: LineList | None = None,
                 cal: Calibration | None = None, grid: Grid | None = None,
                 with_ew: bool = False):
    """The forward model's isolated central depth for each target (star, reference line).

    With ``with_ew`` also return the equivalent widths [Å] as a second array.
    """
    lines = lines or load_linelist()
    cal = cal or load_calibration()
    grid = grid or giraffe_grid()
    stars = list(REFERENCE_STARS)
    labels = np.array([REFERENCE_STARS[s][0] for s in stars])
    nuis = np.column_stack([np.full(len(stars), REFERENCE_VMIC), np.zeros(len(stars)),
                            np.zeros(len(stars))])
    col = {int(r): j for j, r in enumerate(lines.ref) if r >= 0}
    missing = sorted({t["ref"] for t in targets} - set(col))
    if missing:
        raise ValueError(f"reference lines {missing} are not in the line list; re-extract it")
    idx = np.array(sorted(col.values()))
    iso = isolated_depths(labels, nuis, lines=lines.take(idx), cal=cal, grid=grid)
    pos = {int(lines.ref[j]): i for i, j in enumerate(idx)}
    depth = np.array([iso["depth"][stars.index(t["star"]), pos[t["ref"]]] for t in targets])
    if with_ew:
        ew = np.array([iso["ew"][stars.index(t["star"]), pos[t["ref"]]] for t in targets])
        return depth, ew
    return depth


def depth_comparison(**model_kw) -> list[dict]:
    """Model versus Turbospectrum depths of the reference lines, one dict per (star, line).

    Adds ``model`` (the forward model's depth) to each :func:`reference_targets` entry.
    """
    from .lines import load_reference_lines

    grid = model_kw.pop("grid", None) or giraffe_grid()
    targets = reference_targets(load_reference_lines(), grid)
    depths = model_depths(targets, grid=grid, **model_kw)
    return [{**t, "model": float(m)} for t, m in zip(targets, depths)]


def depth_rms_table(comparison: list[dict]) -> dict:
    """rms of (model − reference) depth per star and setup: ``{(star, setup): (rms, n)}``."""
    out = {}
    for star in REFERENCE_STARS:
        for setup in sorted({c["setup"] for c in comparison}):
            d = np.array([c["model"] - c["depth"] for c in comparison
                          if c["star"] == star and c["setup"] == setup])
            if d.size:
                out[(star, setup)] = (float(np.sqrt(np.mean(d ** 2))), int(d.size))
    return out


def write_depth_comparison(path, comparison: list[dict]) -> None:
    """Write :func:`depth_comparison` rows as CSV (atomically)."""
    import csv

    from .fileio import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["star", "setup", "ref_row", "species", "wave_A", "turbospectrum_depth", "model_depth"])
        for c in comparison:
            w.writerow([c["star"], c["setup"], c["ref"], c["species"], f"{c['wave']:.3f}",
                        f"{c['depth']:.4f}", f"{c['model']:.4f}"])
