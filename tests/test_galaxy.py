"""Galactocentric coordinates and the planted chemistry of the mock Milky Way."""
from __future__ import annotations

import numpy as np
import pytest
from astropy.coordinates import SkyCoord, Galactic
import astropy.units as u

from helpers import galaxy


def test_sun_and_galactic_centre_positions():
    # a star 1 pc from the Sun sits at the Sun's radius and height
    g = galaxy.galactocentric([10.0], [20.0], [1.0])
    assert g["R"][0] == pytest.approx(galaxy.FRAME.galcen_distance_kpc, abs=1e-3)
    assert g["z"][0] == pytest.approx(galaxy.FRAME.z_sun_pc / 1000, abs=2e-3)
    # Sgr A* direction at the centre's distance lands near R = 0
    c = SkyCoord(l=0 * u.deg, b=0 * u.deg, frame=Galactic).icrs
    g = galaxy.galactocentric([c.ra.deg], [c.dec.deg], [galaxy.FRAME.galcen_distance_kpc * 1000])
    assert g["R"][0] < 0.05


def test_planted_thin_disc_gradient_is_recovered():
    model = galaxy.GalaxyModel()
    s = galaxy.sample_field_stars(20000, np.random.default_rng(5), model)
    m = (s["population"] == "thin") & (s["R_kpc"] < model.r_flat) & (np.abs(s["z_kpc"]) < 0.3)
    slope = np.polyfit(s["R_kpc"][m], s["feh"][m] - model.grad_z_thin * np.abs(s["z_kpc"][m]), 1)[0]
    assert slope == pytest.approx(model.grad_r_thin, abs=0.015)


def test_two_alpha_sequences():
    s = galaxy.sample_field_stars(8000, np.random.default_rng(6))
    at = lambda pop: np.median(s["mg_fe"][(s["population"] == pop) & (np.abs(s["feh"] + 0.7) < 0.15)])
    assert at("thick") - at("thin") > 0.1  # high-alpha above low-alpha at [Fe/H] = -0.7
    assert set(np.unique(s["state"])) <= {"MS", "TO", "SGB", "RGB", "RC"}
    assert np.all((s["teff"] >= 3900) & (s["teff"] <= 7000))


def test_each_element_has_its_own_chemistry():
    from helpers.galaxy import GalaxyModel, sample_field_stars

    rng = np.random.default_rng(11)
    s = sample_field_stars(20000, rng, GalaxyModel())
    thin = s["population"] == "thin"
    # within the thin disc, [Al/Fe] and [α/Fe] are not copies of [Mg/Fe]
    for col, rho_max in (("al_fe", 0.5), ("alpha_fe", 0.8)):
        r = np.corrcoef(s["mg_fe"][thin], s[col][thin])[0, 1]
        assert r < rho_max, (col, r)
    # accreted halo stars are Al-poor against in-situ halo and thick-disc stars
    acc, halo, thick = (s["population"] == p for p in ("accreted", "halo", "thick"))
    assert acc.sum() > 10 and halo.sum() > 10
    assert np.median(s["al_fe"][acc]) < np.median(s["al_fe"][halo]) - 0.2
    assert np.median(s["al_fe"][thick]) > np.median(s["al_fe"][thin]) + 0.1


@pytest.mark.parametrize("kw, name", [
    ({"scatter_al": -0.1}, "scatter_al"),
    ({"state_fractions": {"MS": 0.0, "RGB": 0.0}}, "state_fractions"),
    ({"state_fractions": {"XX": 1.0}}, "state_fractions"),
    ({"accreted_fraction": 1.5}, "accreted_fraction"),
    ({"rho_mg_al": 0.9, "rho_mg_alpha": 0.9}, "rho_mg_al"),
    ({"v_bright": 18.0}, "v_bright"),
])
def test_impossible_galaxy_parameters_are_refused(kw, name):
    from helpers.galaxy import GalaxyModel

    with pytest.raises(ValueError, match=name):
        GalaxyModel(**kw)
