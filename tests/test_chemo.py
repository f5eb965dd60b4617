"""Chapter 06 helpers: the α split, gradients with a planted answer, the Sun's position."""
from __future__ import annotations

import numpy as np
import pytest

from helpers import chemo
from helpers.galaxy import FRAME, galactocentric, high_alpha_mg, low_alpha_mg


def test_a_planted_gradient_is_recovered_within_its_error():
    rng = np.random.default_rng(0)
    n = 3000
    R = rng.uniform(5, 12, n)
    z = rng.normal(0, 0.6, n)
    feh = 0.05 - 0.064 * (R - 8.122) - 0.30 * np.abs(z) + rng.normal(0, 0.15, n)
    g = chemo.fit_gradients(R, z, feh, n_boot=300, seed=1)
    assert g["n"] == n
    assert abs(g["grad_R"] + 0.064) < 3 * g["grad_R_err"] and g["grad_R_err"] < 0.005
    assert abs(g["grad_z"] + 0.30) < 3 * g["grad_z_err"]
    assert g["a"] == pytest.approx(0.05, abs=0.02)
    rows = chemo.gradient_rows(R, z, {"truth": {"feh": feh}}, {"all": np.ones(n, bool)}, (5, 12), 2.0, 100)
    assert len(rows) == 1 and rows[0]["grad_R"] == pytest.approx(g["grad_R"], abs=1e-3)
    assert np.isnan(chemo.fit_gradients(R[:5], z[:5], feh[:5])["grad_R"])


def test_alpha_split_separates_two_clean_sequences():
    rng = np.random.default_rng(1)
    f_lo = rng.uniform(-0.8, 0.3, 2000)
    f_hi = rng.uniform(-1.0, -0.2, 600)
    feh = np.concatenate([f_lo, f_hi])
    mg = np.concatenate([low_alpha_mg(f_lo), high_alpha_mg(f_hi)]) + rng.normal(0, 0.02, 2600)
    truth_high = np.r_[np.zeros(2000, bool), np.ones(600, bool)]
    s = chemo.AlphaSplit(feh, mg, seed=0)(feh, mg)
    assert np.mean(s["high_alpha"] == truth_high) > 0.95
    q = chemo.split_quality(s["high_alpha"], np.where(truth_high, "thick", "thin"))
    assert q["purity"] > 0.9 and q["completeness"] > 0.9 and q["high"] == pytest.approx(600 / 2600, abs=0.03)
    assert np.all((s["p_high"] >= 0) & (s["p_high"] <= 1))
    with pytest.raises(ValueError, match="at least 20"):
        chemo.AlphaSplit(feh[:5], mg[:5])


def test_the_sun_sits_where_the_frame_puts_it():
    pos = galactocentric(np.array([10.0, 200.0]), np.array([-30.0, 45.0]), np.array([1e-3, 1e-3]))
    assert np.allclose(pos["R"], FRAME.galcen_distance_kpc, atol=1e-3)
    assert np.allclose(pos["z"], FRAME.z_sun_pc / 1000, atol=1e-3)


def test_literature_values_have_sources():
    rows = {r["quantity"]: r for r in chemo.load_literature_gradients()}
    assert rows["thin_disc_radial_feh"]["value"] == -0.064 and "Spina" in rows["thin_disc_radial_feh"]["source"]


def test_gradient_decomposition_names_the_ingredient_that_flattens():
    from helpers.chemo import gradient_decomposition

    rng = np.random.default_rng(0)
    n = 6000
    R = rng.uniform(5, 12, n)
    z = rng.uniform(-0.5, 0.5, n)
    thin = rng.random(n) < 0.8
    truth = np.where(thin, -0.06 * (R - 8.122), -0.5)
    shrunk = 0.5 * truth + rng.normal(0, 0.02, n)  # a method that shrinks by half, perfect selection
    rows = gradient_decomposition(R, z, {"truth": {"feh": truth}, "M": {"feh": shrunk}}, thin, thin,
                                  method="M", n_boot=20)
    ref, sel, lab, both = rows
    assert ref["grad_R"] == pytest.approx(-0.06, abs=1e-6)
    assert sel["diff_R"] == pytest.approx(0.0, abs=1e-6)  # selection is perfect
    assert lab["diff_R"] == pytest.approx(0.03, abs=0.003)  # the labels halve the gradient
    assert lab["shrinkage"] == pytest.approx(0.5, abs=0.02)


def _two_discs(n_thin=3000, n_thick=1000, seed=2):
    rng = np.random.default_rng(seed)
    f = np.r_[rng.uniform(-0.8, 0.3, n_thin), rng.uniform(-1.0, -0.2, n_thick)]
    pop = np.r_[np.full(n_thin, "thin"), np.full(n_thick, "thick")]
    mg = np.r_[low_alpha_mg(f[:n_thin]), high_alpha_mg(f[n_thin:])] + rng.normal(0, 0.02, f.size)
    al = np.where(pop == "thick", 0.25, 0.05) + rng.normal(0, 0.03, f.size)
    return f, mg, al, pop


def test_split_decomposition_separates_shrinkage_from_scatter():
    f, mg, _, pop = _two_discs()
    mean = mg.mean()
    squeezed = mean + 0.3 * (mg - mean)  # a method that only shrinks [Mg/Fe], without scatter
    rows = chemo.split_decomposition({"truth": {"feh": f, "mg_fe": mg}, "M": {"feh": f, "mg_fe": squeezed}}, pop, "M")
    by = {r["case"]: r for r in rows}
    assert by["reference"]["completeness"] > 0.9
    assert by["[Fe/H] only"]["diff_completeness"] == 0.0  # the method's [Fe/H] is the truth
    assert by["[Mg/Fe] shrinkage only"]["slope"] == pytest.approx(0.3, abs=1e-9)
    # the residuals are zero, so "scatter only" is the reference, and "shrinkage only" is the method
    assert by["[Mg/Fe] scatter only"]["completeness"] == by["reference"]["completeness"]
    assert by["[Mg/Fe] shrinkage only"]["completeness"] == by["[Mg/Fe] only"]["completeness"] == by["both"]["completeness"]
    # scatter as large as the gap between the sequences blurs the split
    noisy = mg + np.random.default_rng(3).normal(0, 0.15, mg.size)
    rows = chemo.split_decomposition({"truth": {"feh": f, "mg_fe": mg}, "M": {"feh": f, "mg_fe": noisy}}, pop, "M")
    assert rows[2]["diff_completeness"] < -0.1 or rows[2]["diff_purity"] < -0.1
    assert rows[3]["slope"] == pytest.approx(1.0, abs=0.05)


def test_al_separation_and_its_decomposition_have_known_answers():
    f, mg, al, pop = _two_discs()
    thick = pop == "thick"
    sep = chemo.al_separation(f, al, thick, ~thick)
    assert sep["separation"] == pytest.approx(0.20, abs=0.01) and sep["n_bins"] >= 5
    assert np.isnan(chemo.al_separation(f, al, thick, ~thick, feh_range=(0.5, 0.8))["separation"])
    half = 0.5 * al  # the method halves [Al/Fe]; its α classes are the true ones
    rows = chemo.al_decomposition({"truth": {"feh": f, "al_fe": al}, "M": {"feh": f, "al_fe": half}}, thick, pop, "M")
    ref, sel, lab, shrink, scatter, both = rows
    assert sel["diff"] == pytest.approx(0.0, abs=1e-12)  # perfect selection
    assert lab["separation"] == pytest.approx(0.5 * ref["separation"], rel=1e-9)
    assert shrink["slope"] == pytest.approx(0.5, abs=1e-9) and shrink["separation"] == pytest.approx(lab["separation"], rel=1e-9)
    assert scatter["diff"] == pytest.approx(0.0, abs=1e-12)
    verdict = chemo.decomposition_verdict(rows, "diff", "the [Al/Fe] separation", " dex", singles=(1, 2))
    assert "one ingredient, the M's labels" in verdict and "criterion" in verdict
    rows[1]["diff"] = rows[2]["diff"]  # two equal causes
    assert "No single ingredient" in chemo.decomposition_verdict(rows, "diff", "x", singles=(1, 2))


def test_decomposition_verdict_says_when_ingredients_do_not_add():
    rows = [{"case": "ref", "d": 0.0}, {"case": "a", "ingredient": "A", "d": -0.01},
            {"case": "b", "ingredient": "B", "d": -0.09}, {"case": "both", "d": -0.30}]
    v = chemo.decomposition_verdict(rows, "d", "the share", singles=(1, 2))
    assert "one ingredient, B" in v and "do not simply add" in v and "-0.100" in v
    rows[-1]["d"] = -0.10
    assert "do not simply add" not in chemo.decomposition_verdict(rows, "d", "the share", singles=(1, 2))


def test_bin_trends_measure_the_shares_and_the_sentence_follows_them():
    from helpers import chemo

    rng = np.random.default_rng(0)
    n = 20000
    R, z = rng.uniform(3, 15, n), rng.uniform(-3, 3, n)
    inner_high = (R < 6) & (np.abs(z) >= 1)
    high = rng.random(n) < np.where(inner_high, 0.8, 0.1)
    feh = np.where(high, -0.5, 0.3 - 0.05 * (R - 3)) + rng.normal(0, 0.01, n)
    t = chemo.bin_trends(feh, high, R, z)
    assert abs(t["high_share"][2, 0] - 0.8) < 0.05 and abs(t["high_share"][0, 3] - 0.1) < 0.05
    assert t["n"].sum() == n
    assert abs(t["low_feh_plane"][0] - (0.3 - 0.05 * 1.5)) < 0.01  # median R of the 3-6 kpc bin: 4.5
    text = chemo.bin_trends_sentence(t)
    assert "R 3–6 kpc, |z| 1–3 kpc" in text and "as in the Milky Way" in text and "it falls outwards" in text
    flipped = chemo.bin_trends_sentence(chemo.bin_trends(-feh, ~high, R, z))
    assert "not the Milky Way's pattern" in flipped and "does not fall outwards" in flipped
