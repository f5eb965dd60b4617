"""A mock Gaia-ESO Milky Way sample, and Galactocentric coordinates.

Structure and chemistry follow the numbers collected in the project's
reference notes (Jurić et al. 2008 discs; Bovy et al. 2016 for the compact
high-α disc; Spina et al. 2022 radial and Joshi et al. 2024 vertical [Fe/H]
gradients; Hayden et al. 2015 for the two [Mg/Fe] sequences). Every number
that shapes the mock is an attribute of :class:`GalaxyModel`, so the book can
print what was planted and chapter 06 can compare the recovered gradients.

Units: distances in pc (heliocentric) or kpc (Galactocentric R, z), angles
in degrees, temperatures in K, abundances in dex.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import astropy.units as u
import numpy as np
from astropy.coordinates import Galactic, Galactocentric, SkyCoord

__all__ = ["GalaxyModel", "FRAME", "galactocentric", "sample_field_stars", "kiel_track", "metallicity_shift",
           "low_alpha_mg", "high_alpha_mg", "accreted_mg", "low_alpha_alpha", "high_alpha_alpha",
           "thin_al", "thick_al", "halo_al", "abs_mag_v"]


@dataclass(frozen=True)
class FrameParameters:
    """The Galactocentric frame (astropy ``Galactocentric`` arguments).

    Attributes
    ----------
    galcen_distance_kpc : float
        Sun–Galactic-centre distance (GRAVITY Collaboration 2018 value used by astropy v4.0).
    z_sun_pc : float
        Height of the Sun above the plane (Bennett & Bovy 2019).
    v_sun_kms : tuple
        Solar velocity (U, V, W) in km/s relative to the Galactic centre.
    """

    galcen_distance_kpc: float = 8.122
    z_sun_pc: float = 20.8
    v_sun_kms: tuple = (12.9, 245.6, 7.78)

    def frame(self) -> Galactocentric:
        return Galactocentric(galcen_distance=self.galcen_distance_kpc * u.kpc,
                              z_sun=self.z_sun_pc * u.pc,
                              galcen_v_sun=list(self.v_sun_kms) * (u.km / u.s))


#: The frame used throughout the book.
FRAME = FrameParameters()


def galactocentric(ra_deg, dec_deg, distance_pc, frame: FrameParameters = FRAME) -> dict:
    """Galactocentric cylindrical R, z and azimuth from RA, Dec and distance.

    Parameters
    ----------
    ra_deg, dec_deg : array, deg (ICRS)
    distance_pc : array, pc (heliocentric)

    Returns
    -------
    dict
        ``x, y, z`` [kpc] (astropy's right-handed frame, Sun at x ≈ −R0),
        ``R`` [kpc] (cylindrical radius), ``phi`` [deg].
    """
    c = SkyCoord(ra=np.asarray(ra_deg) * u.deg, dec=np.asarray(dec_deg) * u.deg,
                 distance=np.asarray(distance_pc) * u.pc, frame="icrs")
    g = c.transform_to(frame.frame())
    x, y, z = (g.x.to_value(u.kpc), g.y.to_value(u.kpc), g.z.to_value(u.kpc))
    return {"x": x, "y": y, "z": z, "R": np.hypot(x, y), "phi": np.degrees(np.arctan2(y, x))}


def low_alpha_mg(feh):
    """[Mg/Fe] of the low-α (thin-disc) sequence at [Fe/H] (dex)."""
    feh = np.asarray(feh, float)
    return np.clip(-0.21 * feh, -0.08, 0.25)


def high_alpha_mg(feh):
    """[Mg/Fe] of the high-α (thick-disc) sequence: a +0.30 plateau declining above [Fe/H] = −0.6."""
    feh = np.asarray(feh, float)
    return np.where(feh < -0.6, 0.30, 0.30 - 0.30 * (feh + 0.6) / 0.75)


def accreted_mg(feh):
    """[Mg/Fe] of accreted halo stars (Gaia-Enceladus-like): lower than the in-situ plateau
    and falling with [Fe/H] above a knee near −1.6 (Hayes et al. 2018; Helmi et al. 2018)."""
    feh = np.asarray(feh, float)
    return np.clip(0.25 - 0.40 * (feh + 1.6), -0.05, 0.25)


def low_alpha_alpha(feh):
    """[α/Fe] (O, Si, S, Ca, Ti together) of the low-α sequence: Mg's shape, flatter (Ca, Ti)."""
    feh = np.asarray(feh, float)
    return np.clip(-0.16 * feh, -0.06, 0.20)


def high_alpha_alpha(feh):
    """[α/Fe] of the high-α sequence: a +0.25 plateau declining above [Fe/H] = −0.6."""
    feh = np.asarray(feh, float)
    return np.where(feh < -0.6, 0.25, 0.25 - 0.25 * (feh + 0.6) / 0.8)


def thin_al(feh):
    """[Al/Fe] of the thin disc: ≈ +0.03 at solar, rising slightly on both sides
    (+0.07 at [Fe/H] = −0.7 and at +0.4; APOGEE DR17, GALAH DR3 trends in LTE)."""
    feh = np.asarray(feh, float)
    return 0.03 + 0.10 * np.clip(feh, 0, None) + 0.06 * np.clip(-feh, 0, 1.0)


def thick_al(feh):
    """[Al/Fe] of the thick disc: a +0.25 plateau below [Fe/H] = −0.6, falling to +0.12 at solar."""
    feh = np.asarray(feh, float)
    return np.where(feh < -0.6, 0.25, 0.25 - 0.13 * (feh + 0.6) / 0.6)


def halo_al(feh, accreted):
    """[Al/Fe] of halo stars: in-situ stars ≈ +0.15 at [Fe/H] = −1 falling with metallicity
    (LTE); accreted stars low, ≈ −0.25 (Hawkins et al. 2015; Das et al. 2020)."""
    feh = np.asarray(feh, float)
    insitu = np.clip(0.15 + 0.25 * (feh + 1.0), -0.30, 0.20)
    acc = np.clip(-0.25 + 0.10 * (feh + 1.3), -0.40, -0.10)
    return np.where(accreted, acc, insitu)


def _residuals(rng, n, scatter, rho_mg_al, rho_mg_alpha):
    """Correlated residuals of [Mg/Fe], [Al/Fe], [α/Fe] about their sequences (n, 3)."""
    cor = np.array([[1.0, rho_mg_al, rho_mg_alpha], [rho_mg_al, 1.0, 0.0],
                    [rho_mg_alpha, 0.0, 1.0]])
    sd = np.asarray(scatter, float)
    return rng.multivariate_normal(np.zeros(3), cor * np.outer(sd, sd), size=n, method="cholesky")


@dataclass(frozen=True)
class GalaxyModel:
    """Parameters of the mock Milky Way (defaults from the reference notes).

    Attributes
    ----------
    r_sun_kpc : float
        Galactocentric radius of the Sun used for the density laws.
    thin_h_r, thin_h_z, thick_h_r, thick_h_z : float
        Exponential scale lengths and heights [kpc].
    thick_local_fraction : float
        Local thick/thin density ratio.
    halo_local_fraction : float
        Local halo/thin density ratio.
    feh_thin_sun : float
        Thin-disc [Fe/H] at the Sun.
    grad_r_thin : float
        Thin-disc radial [Fe/H] gradient [dex/kpc], flat beyond ``r_flat``.
    r_flat : float
        Radius [kpc] beyond which the thin-disc gradient flattens.
    grad_z_thin : float
        Thin-disc vertical [Fe/H] gradient [dex/kpc] in |z|.
    scatter_feh_thin : float
    feh_thick, scatter_feh_thick, feh_halo, scatter_feh_halo : float
    grad_r_thick : float
        Thick-disc radial gradient [dex/kpc] (near zero).
    scatter_mg, scatter_al, scatter_alpha : float
        Intrinsic scatter of [Mg/Fe], [Al/Fe] and [α/Fe] about their sequences in the discs [dex].
    scatter_halo_mg, scatter_halo_al, scatter_halo_alpha : float
        The same in the halo.
    rho_mg_al, rho_mg_alpha : float
        Correlation of the residuals of [Al/Fe] and of [α/Fe] with that of [Mg/Fe] (weak: the
        elements have their own sites).
    accreted_fraction : float
        Share of halo stars that are accreted (Gaia-Enceladus-like chemistry).
    state_fractions : dict
        Fractions of main-sequence, turn-off, subgiant, red-giant-branch and red-clump stars.
    v_bright, v_faint : float
        Apparent V-magnitude range of dwarf and subgiant targets.
    v_bright_giants, v_faint_giants : float
        The same for giants (Gaia-ESO selected giants brighter, in the infrared).
    min_abs_b, max_abs_b : float
        Pointings are uniform in |b| between these latitudes [deg].
    n_fields : int
        Number of pointings.
    """

    r_sun_kpc: float = 8.122
    thin_h_r: float = 2.6
    thin_h_z: float = 0.30
    thick_h_r: float = 2.2
    thick_h_z: float = 0.90
    thick_local_fraction: float = 0.12
    halo_local_fraction: float = 0.005
    feh_thin_sun: float = -0.02
    grad_r_thin: float = -0.064
    r_flat: float = 12.0
    grad_z_thin: float = -0.30
    scatter_feh_thin: float = 0.17
    feh_thick: float = -0.50
    scatter_feh_thick: float = 0.22
    grad_r_thick: float = 0.0
    feh_halo: float = -1.50
    scatter_feh_halo: float = 0.45
    scatter_mg: float = 0.035
    scatter_al: float = 0.05
    scatter_alpha: float = 0.03
    scatter_halo_mg: float = 0.06
    scatter_halo_al: float = 0.10
    scatter_halo_alpha: float = 0.05
    rho_mg_al: float = 0.2
    rho_mg_alpha: float = 0.3
    accreted_fraction: float = 0.3
    state_fractions: dict = field(default_factory=lambda: {
        "MS": 0.42, "TO": 0.16, "SGB": 0.08, "RGB": 0.24, "RC": 0.10})
    v_bright: float = 13.0
    v_faint: float = 17.0
    v_bright_giants: float = 11.0
    v_faint_giants: float = 14.0
    min_abs_b: float = 5.0
    max_abs_b: float = 35.0
    n_fields: int = 80

    def __post_init__(self):
        for name, value in asdict(self).items():
            if (name.startswith(("scatter_", "thin_h", "thick_h")) or name.endswith("_fraction")) \
                    and not (np.isfinite(value) and value >= 0):
                raise ValueError(f"galaxy parameter {name} = {value!r} must be zero or positive")
        for name in ("accreted_fraction",):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"galaxy parameter {name} = {getattr(self, name)!r} must lie in [0, 1]")
        for name in ("rho_mg_al", "rho_mg_alpha"):
            if not -1.0 < getattr(self, name) < 1.0:
                raise ValueError(f"galaxy parameter {name} = {getattr(self, name)!r} must lie in (-1, 1)")
        if self.rho_mg_al ** 2 + self.rho_mg_alpha ** 2 >= 1.0:
            raise ValueError("galaxy parameters rho_mg_al and rho_mg_alpha make an impossible "
                             "correlation matrix (their squares must sum to less than 1)")
        fr = self.state_fractions
        unknown = set(fr) - {"MS", "TO", "SGB", "RGB", "RC"}
        if unknown:
            raise ValueError(f"galaxy parameter state_fractions has unknown states {sorted(unknown)}; "
                             "known: MS, TO, SGB, RGB, RC")
        if any(not (np.isfinite(v) and v >= 0) for v in fr.values()) or sum(fr.values()) <= 0:
            raise ValueError(f"galaxy parameter state_fractions = {fr!r} must be non-negative and "
                             "not all zero (no stars could be drawn)")
        for lo, hi in (("v_bright", "v_faint"), ("v_bright_giants", "v_faint_giants"),
                       ("min_abs_b", "max_abs_b")):
            if not getattr(self, lo) < getattr(self, hi):
                raise ValueError(f"galaxy parameters {lo} = {getattr(self, lo)} and {hi} = "
                                 f"{getattr(self, hi)} leave an empty range")
        if self.n_fields < 1:
            raise ValueError(f"galaxy parameter n_fields = {self.n_fields} must be at least 1")
        if self.thin_h_z <= 0 or self.thin_h_r <= 0:
            raise ValueError("galaxy parameters thin_h_r and thin_h_z must be positive "
                             "(the thin disc would hold no stars)")

    def as_dict(self) -> dict:
        return asdict(self)


def kiel_track(state: np.ndarray, rng: np.random.Generator):
    """Draw Teff [K] and log g for evolutionary ``state`` (MS, TO, SGB, RGB, RC) at solar metallicity.

    A sketch of old-disc isochrones: the red giant branch runs from 5 100 K at
    log g 3.5 to 4 000 K at log g 1.0; the red clump sits at 4 750 K, log g
    2.45. :func:`metallicity_shift` then moves giants for their [Fe/H].
    """
    n = len(state)
    teff = np.empty(n)
    logg = np.empty(n)
    m = state == "MS"
    k = m.sum()
    teff[m] = 4300 + 2400 * rng.beta(2.2, 1.6, k)
    logg[m] = 4.68 - 0.28 * (teff[m] - 4300) / 2400 + rng.normal(0, 0.05, k)
    m = state == "TO"
    k = m.sum()
    teff[m] = rng.uniform(5700, 6900, k)
    logg[m] = rng.uniform(3.85, 4.25, k)
    m = state == "SGB"
    k = m.sum()
    teff[m] = rng.uniform(5000, 5900, k)
    logg[m] = 3.5 + 0.4 * (teff[m] - 5000) / 900 + rng.normal(0, 0.05, k)
    m = state == "RGB"
    k = m.sum()
    logg[m] = 3.55 - 2.5 * rng.beta(1.0, 1.6, k)
    teff[m] = 4000 + 440 * (logg[m] - 1.0) + rng.normal(0, 60, k)
    m = state == "RC"
    k = m.sum()
    teff[m] = rng.normal(4760, 70, k)
    logg[m] = rng.normal(2.45, 0.08, k)
    return np.clip(teff, 3900, 7000), np.clip(logg, 0.8, 4.75)


def metallicity_shift(state, teff, feh):
    """Giants are hotter at low metallicity: the RGB by ≈ 250 K per dex, the clump by 150 K per dex.

    Clump stars below [Fe/H] = −0.8 (where the real clump turns into a blue
    horizontal branch) are relabelled as RGB stars.

    Returns
    -------
    teff : ndarray, K
    state : ndarray of str
    """
    state = np.where((state == "RC") & (feh < -0.8), "RGB", state)
    shift = np.where(state == "RGB", -250.0 * np.clip(feh, -2.5, 0.4),
                     np.where(state == "RC", -150.0 * np.clip(feh, -0.8, 0.4), 0.0))
    return np.clip(teff + shift, 3900, 7000), state


def abs_mag_v(teff, logg, mass=1.0):
    """Absolute V magnitude from Teff [K], log g and mass [M_sun] (a simple bolometric correction)."""
    log_l = np.log10(mass) + 4 * np.log10(teff / 5772.0) - (logg - 4.438)
    bc = -8.5e-8 * (teff - 5900.0) ** 2 - 0.07
    return 4.74 - 2.5 * log_l - bc


def sample_field_stars(n: int, rng: np.random.Generator, model: GalaxyModel = GalaxyModel()) -> dict:
    """Draw ``n`` field stars: positions, populations, labels, nuisances.

    The order of draws: evolutionary state and a provisional Teff/log g; V
    magnitude in the target range; distance from the distance modulus (no
    extinction); a sky position in one of ``model.n_fields`` pointings;
    Galactocentric R, z; the population from the relative densities of thin
    disc, thick disc and halo there; then the chemistry of that population,
    with the planted gradients; finally the Kiel-diagram position again at
    the star's metallicity.

    Returns
    -------
    dict of ndarray
        ``population`` (thin, thick, halo, accreted), ``state``, ``teff``, ``logg``,
        ``feh``, ``mg_fe``, ``al_fe``, ``alpha_fe``, ``ra``, ``dec``, ``distance_pc``,
        ``R_kpc``, ``z_kpc``, ``vmag``, ``field_id`` (pointing index).
    """
    states = np.array(list(model.state_fractions))
    p = np.array(list(model.state_fractions.values()), float)
    state = rng.choice(states, size=n, p=p / p.sum())
    teff0, logg = kiel_track(state, rng)
    mass = np.where(np.isin(state, ["RGB", "RC"]), 1.2, 1.0)
    giant = np.isin(state, ["RGB", "RC"])
    bright = np.where(giant, model.v_bright_giants, model.v_bright)
    faint = np.where(giant, model.v_faint_giants, model.v_faint)
    vmag = faint - rng.exponential(1.2, n)
    vmag = np.where(vmag < bright, rng.uniform(bright, faint), vmag)
    dist = np.minimum(10.0 ** ((vmag - abs_mag_v(teff0, logg, mass) + 5) / 5), 25_000.0)

    # pointings: uniform in l and |b|; stars scatter ~1 deg around them
    nf = model.n_fields
    fl = rng.uniform(0, 360, nf)
    fb = rng.uniform(model.min_abs_b, model.max_abs_b, nf) * rng.choice([-1, 1], nf)
    field_id = rng.integers(0, nf, n)
    l = (fl[field_id] + rng.normal(0, 0.7, n)) % 360
    b = np.clip(fb[field_id] + rng.normal(0, 0.7, n), -89.9, 89.9)
    icrs = SkyCoord(l=l * u.deg, b=b * u.deg, frame=Galactic).icrs
    ra, dec = icrs.ra.deg, icrs.dec.deg
    gc = galactocentric(ra, dec, dist)
    R, z = gc["R"], gc["z"]

    r0 = model.r_sun_kpc
    rho_thin = np.exp(-(R - r0) / model.thin_h_r - np.abs(z) / model.thin_h_z)
    rho_thick = model.thick_local_fraction * np.exp(-(R - r0) / model.thick_h_r - np.abs(z) / model.thick_h_z)
    r_sph = np.sqrt(R ** 2 + (z / 0.7) ** 2)
    rho_halo = model.halo_local_fraction * (np.maximum(r_sph, 1.0) / r0) ** -2.8
    probs = np.column_stack([rho_thin, rho_thick, rho_halo])
    probs /= probs.sum(axis=1, keepdims=True)
    u01 = rng.random(n)
    pop_idx = (u01[:, None] > np.cumsum(probs, axis=1)).sum(axis=1)
    population = np.array(["thin", "thick", "halo"])[np.minimum(pop_idx, 2)]

    feh = np.empty(n)
    mg = np.empty(n)
    al = np.empty(n)
    alpha = np.empty(n)
    accreted = np.zeros(n, bool)
    disc_sd = (model.scatter_mg, model.scatter_al, model.scatter_alpha)
    halo_sd = (model.scatter_halo_mg, model.scatter_halo_al, model.scatter_halo_alpha)
    m = population == "thin"
    k = m.sum()
    r_eff = np.minimum(R[m], model.r_flat)
    feh[m] = (model.feh_thin_sun + model.grad_r_thin * (r_eff - r0) + model.grad_z_thin * np.abs(z[m])
              + rng.normal(0, model.scatter_feh_thin, k))
    res = _residuals(rng, k, disc_sd, model.rho_mg_al, model.rho_mg_alpha)
    mg[m] = low_alpha_mg(feh[m]) + res[:, 0]
    al[m] = thin_al(feh[m]) + res[:, 1]
    alpha[m] = low_alpha_alpha(feh[m]) + res[:, 2]
    m = population == "thick"
    k = m.sum()
    feh[m] = model.feh_thick + model.grad_r_thick * (R[m] - r0) + rng.normal(0, model.scatter_feh_thick, k)
    res = _residuals(rng, k, disc_sd, model.rho_mg_al, model.rho_mg_alpha)
    mg[m] = high_alpha_mg(feh[m]) + res[:, 0]
    al[m] = thick_al(feh[m]) + res[:, 1]
    alpha[m] = high_alpha_alpha(feh[m]) + res[:, 2]
    m = population == "halo"
    k = m.sum()
    feh[m] = model.feh_halo + rng.normal(0, model.scatter_feh_halo, k)
    acc = rng.random(k) < model.accreted_fraction
    accreted[m] = acc
    res = _residuals(rng, k, halo_sd, model.rho_mg_al, model.rho_mg_alpha)
    mg[m] = np.where(acc, accreted_mg(feh[m]), 0.30) + res[:, 0]
    al[m] = halo_al(feh[m], acc) + res[:, 1]
    alpha[m] = np.where(acc, 0.8 * accreted_mg(feh[m]), 0.28) + res[:, 2]
    feh = np.clip(feh, -2.5, 0.5)
    teff, state = metallicity_shift(state, teff0, feh)
    population = np.where(accreted, "accreted", population)
    return {"population": population, "state": state, "teff": teff, "logg": logg, "feh": feh,
            "mg_fe": np.clip(mg, -0.2, 0.5), "al_fe": np.clip(al, -0.5, 1.2),
            "alpha_fe": np.clip(alpha, -0.2, 0.5), "ra": ra, "dec": dec,
            "distance_pc": dist, "R_kpc": R, "z_kpc": z, "vmag": vmag, "field_id": field_id}
