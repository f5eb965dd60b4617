"""Figures are legible at the book's column width: text at least MIN_TEXT_PT there, tick labels
apart."""
from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from helpers import paths, plots  # noqa: E402


def _labels(n=400, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 5)) * [300, 0.5, 0.3, 0.1, 0.1] + [5000, 3, -0.3, 0.1, 0.1]


def test_a_wide_figure_of_many_panels_is_made_legible():
    plots.use_style()
    fig = plots.label_histograms({"a": _labels(), "b": _labels(seed=1)})  # 12 in wide, five panels
    assert plots.smallest_text_pt(fig) < plots.MIN_TEXT_PT  # as drawn: too small at the column width
    plots.make_legible(fig)
    assert plots.smallest_text_pt(fig) >= plots.MIN_TEXT_PT - 1e-9
    assert plots.overlapping_ticks(fig) == 0
    plt.close(fig)


def test_crowded_tick_labels_are_thinned_and_a_legible_figure_is_left_alone():
    plots.use_style()
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 123456789], [0, 1])
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(nbins=12))
    assert plots.overlapping_ticks(fig) > 0
    sizes = {t.get_fontsize() for t in fig.findobj(matplotlib.text.Text)}
    plots.make_legible(fig)
    assert plots.overlapping_ticks(fig) == 0
    assert {t.get_fontsize() for t in fig.findobj(matplotlib.text.Text)} == sizes  # 3 in: already legible
    plt.close(fig)


def test_every_figure_of_the_book_goes_through_glue_figure():
    """glue_figure makes a figure legible; a figure glued with plain glue() would skip that."""
    for nb in sorted(paths.NOTEBOOKS.glob("*.ipynb")):
        cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
        src = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        assert 'glue("fig_' not in src and "glue('fig_" not in src, nb.name
        assert "glue_figure(" in src, nb.name


def test_an_axis_label_longer_than_its_panel_is_broken_in_two():
    plots.use_style()
    fig, axes = plt.subplots(1, 5, figsize=(13, 2.9))
    for ax in axes:
        ax.plot([0, 1], [0, 1])
        ax.set_xlabel("truth [Mg/Fe] of the test stars [dex]")
    axes[0].set_ylabel("median (method − truth) over the bins")
    plots.make_legible(fig)
    assert all("\n" in ax.get_xlabel() for ax in axes) and "\n" in axes[0].get_ylabel()
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    boxes = [ax.xaxis.label.get_window_extent(r) for ax in axes]
    assert not any(a.x1 > b.x0 for a, b in zip(boxes, boxes[1:]))  # neighbours' labels apart
    plt.close(fig)


def test_gradient_figures_of_chapter_04_leave_no_crowded_tick_labels():
    """Six rows of short panels over HR10 and HR21 (the gradient figure) and the line zooms: after
    make_legible their text is 8 pt at the column width and no tick labels crowd (the 13-inch
    version had every gradient panel's y labels touching)."""
    plots.use_style()
    rng = np.random.default_rng(3)
    wave = np.concatenate([np.linspace(5334.0, 5611.0, 3000), np.linspace(8475.0, 8982.0, 5000)])
    spectrum = 1.0 - 0.5 * rng.random(wave.size) ** 8
    labels = ("teff", "logg", "feh", "mg_fe", "al_fe")
    grads = {k: rng.normal(size=wave.size) for k in labels}
    spread = {k: np.full(wave.size, 0.2) for k in labels}
    lines = [{"wavelength_air_A": 5528.41, "species": "Mg I"}, {"wavelength_air_A": 8773.38, "species": "Al I"}]
    setups = [("HR10", 5334.0, 5611.0), ("HR21", 8475.0, 8982.0)]
    for fig in (plots.gradients_under_spectrum(wave, spectrum, grads, spread, lines, setups, title="giants"),
                plots.gradient_zooms(wave, spectrum, {k: grads[k] for k in labels[2:]},
                                     {k: spread[k] for k in labels[2:]}, lines, title="giants")):
        plots.make_legible(fig)
        assert plots.smallest_text_pt(fig) >= plots.MIN_TEXT_PT - 1e-9
        assert plots.overlapping_ticks(fig) == 0
        plt.close(fig)
