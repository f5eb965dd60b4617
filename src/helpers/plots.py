"""House style and reusable figures.

Every function returns the :class:`matplotlib.figure.Figure` it made, so a
notebook cell stays one line. Colours are from the colour-blind-safe
Okabe–Ito palette; sizes suit both the HTML book and print.
"""
from __future__ import annotations

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np

from . import LABEL_TEX, LABELS

__all__ = ["use_style", "COLUMN_PX", "MIN_TEXT_PT", "displayed_pt", "smallest_text_pt", "overlapping_ticks",
           "make_legible", "SPECIES_COLOURS", "spectra_with_lines", "line_response",
           "emulator_errors", "response_pairs", "line_check", "kiel", "label_histograms", "snr_histogram", "defect_gallery",
           "galactic_positions", "abundance_plane", "survey_vs_truth", "unavailable", "tsne_maps",
           "tsne_by_category", "group_gallery", "mg_al_by_cluster", "training_curves", "member_selection",
           "one_to_one", "residuals_vs_snr", "calibration", "gradients_under_spectrum", "gradient_zooms",
           "ZOOM_WINDOWS", "enrichment_matrix",
           "benchmark_offsets", "cluster_means", "mg_al_clusters", "density_planes", "planes_in_bins",
           "radial_profiles", "chemistry_planes", "survey_error_vs_truth", "noise_correlation",
           "snr_vs_magnitude", "response_by_star"]

OKABE_ITO = ["#000000", "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7"]
#: Colours of the species marked on spectra.
SPECIES_COLOURS = {"Mg I": "#D55E00", "Al I": "#0072B2", "Fe I": "#009E73", "Fe II": "#009E73",
                   "Ca II": "#CC79A7", "Ca I": "#CC79A7", "H I": "#E69F00"}


def use_style() -> None:
    """Apply the book's matplotlib style (call once per notebook)."""
    mpl.rcParams.update({
        "figure.dpi": 110, "savefig.dpi": 150, "figure.figsize": (8, 4.5),
        "font.size": 10, "axes.labelsize": 10, "axes.titlesize": 10, "legend.fontsize": 8,
        "axes.spines.top": False, "axes.spines.right": False,
        "axes.prop_cycle": mpl.cycler(color=OKABE_ITO[1:] + OKABE_ITO[:1]),
        "image.cmap": "viridis", "figure.constrained_layout.use": True,
        "text.usetex": False,
    })


#: Width [CSS px] at which the book shows a figure that is wider: measured by the browser test
#: (tests/browser.py) in a 1280 px window, where figures fill 660 px of the text column.
COLUMN_PX = 660
#: Smallest text a figure may show there [pt, CSS: 1 pt = 4/3 px].
MIN_TEXT_PT = 8.0


def displayed_pt(fig, column_px: int = COLUMN_PX) -> float:
    """CSS points on the page per point of text in ``fig``: the notebook renders it at
    ``fig.dpi``, the page shows it at its natural width or shrunk to the column, whichever is
    narrower."""
    width_px = fig.get_size_inches()[0] * fig.dpi
    return fig.dpi / 72 * min(1.0, column_px / width_px) * 0.75


def _texts(fig):
    return [t for t in fig.findobj(mpl.text.Text) if t.get_visible() and t.get_text().strip()
            and t.get_figure() is not None]


def smallest_text_pt(fig, column_px: int = COLUMN_PX) -> float:
    """The smallest text of ``fig`` as the page shows it [CSS pt] (drawing the figure first)."""
    fig.canvas.draw()
    sizes = [t.get_fontsize() for t in _texts(fig)]
    return min(sizes) * displayed_pt(fig, column_px) if sizes else float("inf")


def _crowded_axes(fig) -> list:
    """The axes (``matplotlib.axis.Axis``) whose neighbouring tick labels inside the view are closer
    than half an em, with the number of such pairs."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    out = []
    for ax in fig.axes:
        for axis, lo in ((ax.xaxis, 0), (ax.yaxis, 1)):
            lo_v, hi_v = sorted(axis.get_view_interval())
            ticks = [t for t in axis.get_major_ticks()
                     if lo_v <= t.get_loc() <= hi_v and t.label1.get_visible() and t.label1.get_text().strip()]
            if len(ticks) < 2:
                continue
            em = ticks[0].label1.get_fontsize() * fig.dpi / 72  # [px]
            rot = ticks[0].label1.get_rotation() % 180
            if lo == 0 and 10 < rot < 170:  # slanted labels: their lines must not touch
                xs = sorted(renderer_x for renderer_x in
                            (ax.transData.transform((t.get_loc(), 0))[0] for t in ticks))
                n = sum((b - a) * abs(np.sin(np.radians(rot))) < 1.1 * em for a, b in zip(xs, xs[1:]))
            else:
                boxes = sorted((t.label1.get_window_extent(renderer) for t in ticks), key=lambda b: (b.x0, b.y0)[lo])
                n = sum((b.x0 - a.x1 if lo == 0 else b.y0 - a.y1) < 0.5 * em for a, b in zip(boxes, boxes[1:]))
            if n:
                out.append((axis, n))
    return out


def overlapping_ticks(fig) -> int:
    """Number of neighbouring tick labels closer than half an em (or overlapping), over every axis
    of ``fig`` (ticks inside the view only)."""
    return sum(n for _, n in _crowded_axes(fig))


def _wrap_long_labels(fig) -> None:
    """Break an axis label that is longer than its axes into two lines (at the space nearest its
    middle, outside TeX), so that neighbouring panels' labels do not run into each other."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        box = ax.get_window_extent(renderer)
        for label, room, along in ((ax.xaxis.label, box.width, "width"), (ax.yaxis.label, box.height, "height")):
            text = label.get_text()
            if "\n" in text or " " not in text or getattr(label.get_window_extent(renderer), along) <= room:
                continue
            spaces = [i for i, c in enumerate(text) if c == " " and text[:i].count("$") % 2 == 0]
            if spaces:
                i = min(spaces, key=lambda k: abs(k - len(text) / 2))
                label.set_text(text[:i] + "\n" + text[i + 1:])


def make_legible(fig, column_px: int = COLUMN_PX, min_pt: float = MIN_TEXT_PT):
    """Enlarge ``fig``'s text until its smallest is ``min_pt`` on the page (:func:`smallest_text_pt`)
    and thin out the ticks of linear axes until neighbouring labels no longer overlap.

    Every figure of the book goes through it (:func:`helpers.report.glue_figure`), so a wide
    figure of many panels stays readable at the column's width. Returns ``fig``.
    """
    scale = displayed_pt(fig, column_px)
    smallest = smallest_text_pt(fig, column_px) / scale
    factor = min_pt / scale / smallest if np.isfinite(smallest) else 1.0
    if factor > 1.0:
        ticks = set()
        for ax in fig.axes:
            for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
                labels = axis.get_ticklabels(which="both")
                ticks.update(id(t) for t in labels)
                size = labels[0].get_fontsize() if labels else mpl.rcParams["xtick.labelsize"]
                size = size if isinstance(size, (int, float)) else mpl.rcParams["font.size"]
                ax.tick_params(axis=name, which="both", labelsize=size * factor)
        for t in _texts(fig):
            if id(t) not in ticks:
                t.set_fontsize(t.get_fontsize() * factor)
    _wrap_long_labels(fig)
    for _ in range(4):  # fewer ticks on the axes where labels collide
        crowded = _crowded_axes(fig)
        if not crowded:
            break
        for axis, _n in crowded:
            if isinstance(axis.get_major_locator(), (mpl.ticker.AutoLocator, mpl.ticker.MaxNLocator)):
                lo_v, hi_v = sorted(axis.get_view_interval())
                inside = sum(lo_v <= v <= hi_v for v in axis.get_majorticklocs())
                axis.set_major_locator(mpl.ticker.MaxNLocator(nbins=max(1, inside - 2),
                                                              steps=[1, 2, 2.5, 3, 4, 5, 6, 8, 10]))
    return fig


def _mark_lines(ax, lines, species, ymin, ymax):
    lo, hi = ax.get_xlim()
    for r in lines:
        if r["species"] in species and lo <= r["wavelength_air_A"] <= hi:
            ax.axvline(r["wavelength_air_A"], ymin=0.0, ymax=0.08, color=SPECIES_COLOURS.get(r["species"], "k"),
                       lw=1.5)


def spectra_with_lines(wave, fluxes, names, windows, ref_lines, offset=0.6):
    """Example spectra in several wavelength windows with key lines marked.

    Parameters
    ----------
    wave : ndarray, Å
    fluxes : list of ndarray
    names : list of str
        Legend entries.
    windows : list of (float, float, str)
        (start Å, end Å, title) of each panel.
    ref_lines : list of dict
        Rows of ``lines_strong.csv``; Mg I, Al I, Fe I, Ca II and H I are marked.
    """
    fig, axes = plt.subplots(len(windows), 1, figsize=(9, 2.3 * len(windows)))
    axes = np.atleast_1d(axes)
    for ax, (a, b, title) in zip(axes, windows):
        m = (wave >= a) & (wave <= b)
        for k, (f, name) in enumerate(zip(fluxes, names)):
            ax.plot(wave[m], f[m] + offset * (len(fluxes) - 1 - k), lw=0.7, label=name)
        ax.set_xlim(a, b)
        ax.set_title(title, loc="left")
        ax.set_ylabel("flux + offset")
        _mark_lines(ax, ref_lines, SPECIES_COLOURS, 0, 1)
        for r in ref_lines:
            if r["species"] in ("Mg I", "Al I", "Ca II", "H I") and a <= r["wavelength_air_A"] <= b:
                ax.annotate(r["species"], (r["wavelength_air_A"], ax.get_ylim()[0]), fontsize=7,
                            color=SPECIES_COLOURS[r["species"]], rotation=90, va="bottom",
                            xytext=(2, 12), textcoords="offset points")
    axes[-1].set_xlabel("air wavelength [Å]")
    axes[0].legend(loc="upper right", ncol=len(names))
    return fig


def line_response(wave, panels):
    """Small multiples: how a line region responds to one label.

    Parameters
    ----------
    panels : list of dict
        Each with ``window`` (a, b), ``title``, ``fluxes`` (list of arrays) and
        ``labels`` (legend entries).
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.0))
    for ax, p in zip(np.atleast_1d(axes), panels):
        a, b = p["window"]
        m = (wave >= a) & (wave <= b)
        cmap = plt.get_cmap("viridis")
        for k, (f, lab) in enumerate(zip(p["fluxes"], p["labels"])):
            ax.plot(wave[m], f[m], color=cmap(k / max(1, len(p["fluxes"]) - 1)), lw=1, label=lab)
        ax.set_title(p["title"], loc="left")
        ax.set_xlabel("wavelength [Å]")
        ax.legend(fontsize=7)
    np.atleast_1d(axes)[0].set_ylabel("normalised flux")
    return fig


def emulator_errors(wave, err, setups):
    """Emulator minus synthesis on held-out spectra: median and 99th percentile of |error| per pixel.

    Parameters
    ----------
    wave : (n_pixels,) Å
    err : (n_stars, n_pixels) emulator − synthesis
    setups : list of (name, slice)
    """
    a = np.abs(err)
    fig, axes = plt.subplots(1, len(setups), figsize=(8, 3.2), sharey=True,
                             gridspec_kw={"width_ratios": [s.stop - s.start for _, s in setups]})
    for ax, (name, sl) in zip(np.atleast_1d(axes), setups):
        ax.plot(wave[sl], np.percentile(a[:, sl], 99, axis=0), color="#D55E00", lw=0.6,
                label="99th percentile")
        ax.plot(wave[sl], np.median(a[:, sl], axis=0), color="#0072B2", lw=0.6, label="median")
        ax.set_yscale("log")
        ax.set_title(name, loc="left")
        ax.set_xlabel("wavelength [Å]")
    ax0 = np.atleast_1d(axes)[0]
    ax0.axhline(0.002, color="0.4", ls=":", lw=1)
    ax0.set_ylabel("|emulator − synthesis|")
    ax0.legend(loc="upper left")
    return fig


def response_pairs(wave, panels):
    """Single-label responses: the synthesis's change of flux and the emulator's, per window.

    Parameters
    ----------
    panels : list of dict
        Each with ``window`` (a, b) Å, ``title``, ``syn`` and ``emu`` (flux changes).
    """
    ncol = min(2, len(panels))
    nrow = (len(panels) + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(8, 2.8 * nrow), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, p in zip(axes.flat, panels):
        a, b = p["window"]
        m = (wave >= a) & (wave <= b)
        ax.plot(wave[m], p["syn"][m], color="0.2", lw=1.6, label="synthesis")
        ax.plot(wave[m], p["emu"][m], color="#D55E00", lw=1.0, ls="--", label="emulator")
        ax.axhline(0, color="0.7", lw=0.5)
        ax.set_title(p["title"], loc="left")
        ax.set_xlabel("wavelength [Å]")
    for row in axes:
        row[0].set_ylabel("Δ normalised flux")
    axes.flat[0].legend()
    return fig


def line_check(rows: list[dict]):
    """Reference-line depths and equivalent widths: emulator against synthesis (held-out stars)."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.4))
    ds = np.array([r["depth_syn"] for r in rows])
    de = np.array([r["depth_emu"] for r in rows])
    es = np.array([r["ew_syn_mA"] for r in rows])
    ee = np.array([r["ew_emu_mA"] for r in rows])
    sp = np.array([r["species"] for r in rows])
    for name, colour in (("other", "0.6"), ("Fe I", "#009E73"), ("Mg I", "#D55E00"),
                         ("Al I", "#0072B2")):
        m = ~np.isin(sp, ["Fe I", "Mg I", "Al I"]) if name == "other" else sp == name
        axes[0].scatter(ds[m], de[m] - ds[m], s=4, color=colour, label=name)
        ok = m & (es > 5)
        axes[1].scatter(es[ok], np.log10(np.maximum(ee[ok], 0.1) / es[ok]), s=4, color=colour)
    axes[0].set_xlabel("central depth, synthesis")
    axes[0].set_ylabel("emulator − synthesis")
    axes[1].set_xscale("log")
    axes[1].set_xlabel("equivalent width, synthesis [mÅ]")
    axes[1].set_ylabel("log10 EW emulator / synthesis")
    for ax in axes:
        ax.axhline(0, color="0.4", lw=0.6)
    axes[0].legend(markerscale=3)
    return fig


def kiel(teff, logg, colour, colour_label, ax=None, s=3):
    """Kiel diagram (Teff against log g, both axes reversed).

    A boolean ``colour`` (a flag) is drawn in two colours with a legend ("colour_label" and
    "not colour_label"), not with a continuous colour bar.
    """
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 4))
    c = np.asarray(colour)
    if c.dtype == bool:
        ax.scatter(np.asarray(teff)[~c], np.asarray(logg)[~c], s=s, c="0.7", rasterized=True,
                   label=f"not {colour_label} ({(~c).sum():,})")
        ax.scatter(np.asarray(teff)[c], np.asarray(logg)[c], s=3 * s, c="C3", rasterized=True,
                   label=f"{colour_label} ({c.sum():,})")
        ax.legend(loc="lower left", markerscale=3)
    else:
        sc = ax.scatter(teff, logg, c=colour, s=s, rasterized=True)
        plt.colorbar(sc, ax=ax, label=colour_label)
    ax.set_xlim(7200, 3700)
    ax.set_ylim(5.0, 0.5)
    ax.set_xlabel(LABEL_TEX["teff"])
    ax.set_ylabel(LABEL_TEX["logg"])
    return fig or ax.figure


def label_histograms(label_sets: dict):
    """Histograms of the five labels for several samples (``{name: (n, 5) array}``)."""
    fig, axes = plt.subplots(1, 5, figsize=(12, 2.6))
    for j, (ax, k) in enumerate(zip(axes, LABELS)):
        for name, lab in label_sets.items():
            v = lab[:, j][np.isfinite(lab[:, j])]
            ax.hist(v, bins=40, histtype="step", density=True, label=name)
        ax.set_xlabel(LABEL_TEX[k])
    axes[0].set_ylabel("density")
    axes[0].legend()
    return fig


def snr_histogram(snr_sets: dict, cut=None):
    """S/N per pixel histograms on a log axis, with the training cut marked."""
    fig, ax = plt.subplots(figsize=(5, 3))
    bins = np.geomspace(1, 300, 40)
    for name, snr in snr_sets.items():
        ax.hist(snr, bins=bins, histtype="step", label=name)
    if cut is not None:
        ax.axvline(cut, color="k", ls="--", lw=0.8, label=f"training cut S/N ≥ {cut:g}")
    ax.set_xscale("log")
    ax.set_xlabel("S/N per pixel")
    ax.set_ylabel("spectra")
    ax.legend()
    return fig


def defect_gallery(wave, examples: dict, clean=None, window=(8480, 8900)):
    """One example spectrum per injected defect kind (``{kind: flux}``) in a window."""
    kinds = list(examples)
    ncol = 2
    nrow = int(np.ceil(len(kinds) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(10, 1.7 * nrow), sharex=True)
    m = (wave >= window[0]) & (wave <= window[1])
    for ax, k in zip(axes.ravel(), kinds):
        if clean is not None:
            ax.plot(wave[m], clean[m], color="0.7", lw=0.6)
        ax.plot(wave[m], examples[k][m], lw=0.6)
        ax.set_title(k, loc="left")
        ax.set_ylim(-0.1, 2.0)
    for ax in axes.ravel()[len(kinds):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("wavelength [Å]")
    return fig


def galactic_positions(R, z, population):
    """Galactocentric R–z positions coloured by population."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for pop in ("thin", "thick", "halo", "accreted"):
        m = population == pop
        if not m.any():
            continue
        ax.scatter(R[m], z[m], s=2, label=f"{pop} ({m.sum()})", rasterized=True)
    ax.set_xlabel("R [kpc]")
    ax.set_ylabel("z [kpc]")
    ax.legend(markerscale=4)
    return fig


def abundance_plane(feh, xfe, ylabel, colour=None, ax=None, title=None):
    """[X/Fe] against [Fe/H] as a 2-D histogram (or points coloured by ``colour``)."""
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.5, 3.5))
    m = np.isfinite(feh) & np.isfinite(xfe)
    if colour is None:
        ax.hexbin(feh[m], xfe[m], gridsize=45, mincnt=1, bins="log", extent=(-2.6, 0.6, -0.4, 0.8))
    else:
        ax.scatter(feh[m], xfe[m], c=colour[m], s=3)
    ax.set_xlabel(LABEL_TEX["feh"])
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, loc="left")
    return fig or ax.figure


def survey_vs_truth(truth, survey):
    """Survey label minus truth for the five labels (histograms, with the robust scatter)."""
    fig, axes = plt.subplots(1, 5, figsize=(12, 2.4))
    for j, (ax, k) in enumerate(zip(axes, LABELS)):
        d = (survey[:, j] - truth[:, j])
        d = d[np.isfinite(d)]
        lim = np.percentile(np.abs(d), 99) if d.size else 1
        ax.hist(d, bins=50, range=(-lim, lim), histtype="stepfilled", alpha=0.7)
        ax.set_xlabel("survey − truth, " + LABEL_TEX[k])
    axes[0].set_ylabel("stars")
    return fig


def chemistry_planes(feh, abundances: dict, population, populations=None):
    """[X/Fe] against [Fe/H], one row per element (``{label: values}``), one column per population."""
    population = np.asarray(population)
    pops = [p for p in (populations or ("thin", "thick", "halo", "accreted")) if np.any(population == p)]
    names = {"thin": "thin disc", "thick": "thick disc", "halo": "in-situ halo", "accreted": "accreted halo"}
    fig, axes = plt.subplots(len(abundances), len(pops), figsize=(2.9 * len(pops), 2.3 * len(abundances)),
                             sharex=True, sharey="row", squeeze=False)
    for i, (label, x) in enumerate(abundances.items()):
        for j, pop in enumerate(pops):
            m = population == pop
            ax = axes[i, j]
            ax.scatter(np.asarray(feh)[m], np.asarray(x)[m], s=2, alpha=0.5, rasterized=True)
            ax.set_xlim(-2.6, 0.6)
            if i == 0:
                ax.set_title(f"{names.get(pop, pop)} ({m.sum()})", loc="left")
            if j == 0:
                ax.set_ylabel(label)
            if i == len(abundances) - 1:
                ax.set_xlabel(LABEL_TEX["feh"])
    return fig


def survey_error_vs_truth(truth, survey, offset):
    """Survey − truth against true Teff and log g for each label, with the planted offset (line)."""
    fig, axes = plt.subplots(2, 5, figsize=(13, 4.6), sharex="row")
    for j, k in enumerate(LABELS):
        d = survey[:, j] - truth[:, j]
        ok = np.isfinite(d)
        lim = np.percentile(np.abs(d[ok]), 98) if ok.any() else 1
        for r, (col, name) in enumerate(((0, "true Teff [K]"), (1, "true log g"))):
            ax = axes[r, j]
            ax.scatter(truth[ok, col], d[ok], s=1.5, alpha=0.3, rasterized=True, color="0.5")
            order = np.argsort(truth[ok, col])
            ax.plot(truth[ok, col][order], offset[ok, j][order], ".", ms=1.5, color="#D55E00")
            ax.set_ylim(-lim, lim)
            ax.set_xlabel(name)
            if r == 0:
                ax.set_title("survey − truth, " + LABEL_TEX[k].split(" [")[0], loc="left", fontsize=9)
    axes[0, 0].set_ylabel("Teff axis")
    axes[1, 0].set_ylabel("log g axis")
    return fig


def noise_correlation(acf: dict, lags):
    """Autocorrelation of the noise on the delivered grid, one line per setup (``{setup: acf}``)."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for name, a in acf.items():
        ax.plot(lags, a, "o-", label=name)
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set_xlabel("lag [pixels of 0.05 Å]")
    ax.set_ylabel("correlation of the noise")
    ax.legend()
    return fig


def snr_vs_magnitude(vmag, snr, exptime):
    """S/N against V magnitude, coloured by exposure time."""
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ok = np.isfinite(vmag) & np.isfinite(snr)
    sc = ax.scatter(vmag[ok], snr[ok], c=np.asarray(exptime)[ok] / 60, s=3, cmap="viridis", rasterized=True)
    ax.set_yscale("log")
    ax.set_xlabel("V [mag]")
    ax.set_ylabel("S/N per pixel")
    fig.colorbar(sc, ax=ax, label="exposure [min]")
    return fig


def response_by_star(rows: list[dict], labels=LABELS):
    """Single-label response per star (x) for each label (panel) and S/N (marker), ±1 sd of draws."""
    stars = list(dict.fromkeys(r["star"] for r in rows))
    snrs = sorted({r["snr"] for r in rows})
    fig, axes = plt.subplots(1, len(labels), figsize=(2.6 * len(labels), 3.8), sharey=True, squeeze=False)
    x = np.arange(len(stars))
    for ax, key in zip(axes[0], labels):
        for k, snr in enumerate(snrs):
            sel = {r["star"]: r for r in rows if r["label"] == key and r["snr"] == snr}
            y = np.array([sel[s]["response"] if s in sel else np.nan for s in stars])
            e = np.array([sel[s]["response_sd"] if s in sel else np.nan for s in stars])
            name = "noise-free" if not np.isfinite(snr) else f"S/N {snr:.0f}"
            ax.errorbar(x + 0.15 * (k - 1), y, yerr=e, fmt="o", ms=3, label=name)
        ax.axhspan(0.9, 1.1, color="0.9", zorder=0)
        ax.axhline(0, color="0.6", lw=0.8)
        ax.set_xticks(x)
        ax.set_xticklabels(stars, rotation=60, ha="right", fontsize=7)
        ax.set_title(LABEL_TEX[key].split(" [")[0], loc="left")
    axes[0, 0].set_ylabel("predicted / true change")
    axes[0, -1].legend(fontsize=7)
    return fig


def unavailable(message: str, figsize=(6, 1.2)):
    """A small figure that states why a panel cannot be drawn for this data (e.g. no truth)."""
    fig, ax = plt.subplots(figsize=figsize)
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    return fig


def tsne_maps(embedding, colours: dict, removed=None, s=1.5):
    """The t-SNE map in several panels, each coloured by one quantity (``{title: values}``)."""
    n = len(colours)
    ncol = min(n, 2)
    nrow = int(np.ceil(n / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.2 * ncol, 4.3 * nrow))
    for ax, (title, c) in zip(np.ravel(axes), colours.items()):
        sc = ax.scatter(embedding[:, 0], embedding[:, 1], c=c, s=s, rasterized=True,
                        norm=mpl.colors.LogNorm() if title.startswith("S/N") else None)
        if removed is not None:
            ax.scatter(embedding[removed, 0], embedding[removed, 1], s=6, facecolors="none",
                       edgecolors="r", linewidths=0.4, label="removed")
        plt.colorbar(sc, ax=ax, label=title)
        ax.set_xticks([]); ax.set_yticks([])
    for ax in np.ravel(axes)[n:]:
        ax.axis("off")
    return fig


def tsne_by_category(embedding, category, order=None, s=2):
    """The t-SNE map coloured by a categorical column (e.g. the injected defect kind)."""
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    cats = order or sorted(set(category))
    for c in cats:
        m = category == c
        if not m.any():
            continue
        ax.scatter(embedding[m, 0], embedding[m, 1], s=s if c == "none" else 5,
                   c="0.8" if c == "none" else None, label=f"{c} ({m.sum()})", rasterized=True)
    ax.legend(markerscale=3, fontsize=7, loc="best")
    ax.set_xticks([]); ax.set_yticks([])
    return fig


def group_gallery(wave, groups: dict, window=(8480, 8700)):
    """Example spectra of each removed group: ``{title: (n, n_pixels) flux array}`` (3 shown each)."""
    n = len(groups)
    fig, axes = plt.subplots(n, 1, figsize=(9, 1.5 * n + 0.5), sharex=True, squeeze=False)
    m = (wave >= window[0]) & (wave <= window[1])
    for ax, (title, fl) in zip(axes[:, 0], groups.items()):
        for k, f in enumerate(fl[:3]):
            ax.plot(wave[m], f[m] + 0.7 * k, lw=0.5)
        ax.set_title(title, loc="left", fontsize=8)
        ax.set_yticks([])
    axes[-1, 0].set_xlabel("wavelength [Å]")
    return fig


def mg_al_by_cluster(al_fe, mg_fe, feh, cluster):
    """[Mg/Fe] against [Al/Fe] for the stars of each cluster, labelled with its mean [Fe/H]."""
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    for name in np.unique(cluster):
        m = cluster == name
        ax.scatter(al_fe[m], mg_fe[m], s=8, label=f"{name} ([Fe/H] {np.nanmean(feh[m]):+.1f})")
    ax.set_xlabel(LABEL_TEX["al_fe"])
    ax.set_ylabel(LABEL_TEX["mg_fe"])
    ax.legend(fontsize=7)
    return fig


def training_curves(members: list[dict], kept):
    """Training and validation loss of every member against epoch; dropped members dashed."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), sharey=True)
    for i, m in enumerate(members):
        style = "-" if i in set(np.asarray(kept).tolist()) else "--"
        c = OKABE_ITO[1 + i % 7]
        for ax, key in zip(axes, ("loss", "val_loss")):
            ax.plot(np.arange(1, len(m["history"][key]) + 1), m["history"][key], style, color=c, lw=1.2,
                    label=f"member {i}" if key == "loss" else None)
    axes[0].set_title("training loss (MSE on scaled labels + L2)", loc="left")
    axes[1].set_title("validation loss", loc="left")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.set_yscale("log")
    axes[0].set_ylabel("loss")
    axes[0].legend(ncol=2, frameon=False)
    return fig


def member_selection(val_losses, threshold, kept):
    """Best validation loss per member, the percentile cut, and which members are kept."""
    v = np.asarray(val_losses, float)
    keep = np.isin(np.arange(len(v)), kept)
    fig, ax = plt.subplots(figsize=(6, 2.8))
    ax.bar(np.arange(len(v))[keep], v[keep], color=OKABE_ITO[5], label="kept")
    ax.bar(np.arange(len(v))[~keep], v[~keep], color=OKABE_ITO[6], label="dropped")
    ax.axhline(threshold, color="k", lw=1, ls=":", label="percentile cut")
    ax.set_xlabel("member")
    ax.set_ylabel("best validation loss")
    ax.set_ylim(0.9 * v.min(), 1.05 * v.max())
    ax.legend(frameon=False)
    return fig


def one_to_one(reference, cnn, snr, reference_name: str):
    """CNN label against a reference label (one panel per label), coloured by S/N."""
    fig, axes = plt.subplots(1, 5, figsize=(13, 2.9))
    for j, (ax, k) in enumerate(zip(axes, LABELS)):
        r, c = reference[:, j], cnn[:, j]
        ok = np.isfinite(r) & np.isfinite(c)
        lo, hi = np.percentile(np.concatenate([r[ok], c[ok]]), [0.5, 99.5])
        sc = ax.scatter(r[ok], c[ok], c=snr[ok], s=2, cmap="viridis", norm=mpl.colors.LogNorm(), rasterized=True)
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel(f"{reference_name} {LABEL_TEX[k]}")
        ax.set_title("CNN", loc="left")
    fig.colorbar(sc, ax=axes, label="S/N", shrink=0.9)
    return fig


def residuals_vs_snr(err, snr, crb=None, crb_snr=None, ylabel="CNN − truth"):
    """Residual against S/N per label, with the running robust scatter and, if given,
    the Cramér–Rao bound of individual stars (grey points)."""
    from .precision import robust_scatter

    fig, axes = plt.subplots(1, 5, figsize=(13, 2.9))
    bins = np.geomspace(max(np.nanmin(snr), 3), np.nanmax(snr), 10)
    mid = np.sqrt(bins[1:] * bins[:-1])
    for j, (ax, k) in enumerate(zip(axes, LABELS)):
        e = err[:, j]
        ok = np.isfinite(e)
        lim = np.percentile(np.abs(e[ok]), 99) if ok.any() else 1
        ax.scatter(snr[ok], e[ok], s=1.5, color=OKABE_ITO[5], alpha=0.4, rasterized=True)
        idx = np.digitize(snr, bins) - 1
        sc = [robust_scatter(e[ok & (idx == b)]) if np.sum(ok & (idx == b)) >= 10 else np.nan
              for b in range(len(mid))]
        ax.plot(mid, sc, "k-", lw=1.5, label="robust σ")
        ax.plot(mid, -np.asarray(sc), "k-", lw=1.5)
        if crb is not None:
            ax.scatter(crb_snr, crb[:, j], s=3, color="0.5", label="Cramér–Rao bound")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(mpl.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(mpl.ticker.NullFormatter())
        ax.set_ylim(-lim, lim)
        ax.set_xlabel("S/N")
        ax.set_title(LABEL_TEX[k], loc="left")
    axes[0].set_ylabel(ylabel)
    axes[0].legend(frameon=False, loc="lower right")
    return fig


def calibration(z: dict):
    """Histograms of (CNN − truth)/ensemble σ per label against a unit Gaussian."""
    fig, axes = plt.subplots(1, len(z), figsize=(13, 2.6), sharey=True)
    grid = np.linspace(-6, 6, 200)
    for ax, (k, v) in zip(np.atleast_1d(axes), z.items()):
        v = v[np.isfinite(v)]
        ax.hist(np.clip(v, -6, 6), bins=48, range=(-6, 6), density=True, histtype="stepfilled", alpha=0.7)
        ax.plot(grid, np.exp(-0.5 * grid ** 2) / np.sqrt(2 * np.pi), "k-", lw=1, label="calibrated")
        ax.set_xlabel(f"error / σ_ens, {LABEL_TEX[k].split(' [')[0]}")
    np.atleast_1d(axes)[0].legend(frameon=False)
    return fig


def gradients_under_spectrum(wave, spectrum, grads: dict, spread: dict, lines, setups, title=""):
    """Mean spectrum of a sub-sample (top) and, below it, each label's input gradient (ensemble
    mean, band = spread over models), one column per setup, lines marked by species colour.

    ``grads`` and ``spread``: ``{label: ndarray (n_pixels,)}``; ``setups``: ``[(name, wmin, wmax)]``.
    """
    n = 1 + len(grads)
    fig, axes = plt.subplots(n, len(setups), figsize=(9, 1.3 * n + 0.6), sharex="col",
                             gridspec_kw={"width_ratios": [s[2] - s[1] for s in setups]})
    axes = np.atleast_2d(axes)
    for c, (name, lo, hi) in enumerate(setups):
        sel = (wave >= lo) & (wave <= hi)
        ax = axes[0, c]
        ax.plot(wave[sel], spectrum[sel], "k-", lw=0.5)
        ax.set_title(name, loc="left")
        ax.set_ylim(min(0.3, np.nanmin(spectrum[sel]) - 0.05), 1.08)
        for r, k in enumerate(grads, start=1):
            ax = axes[r, c]
            g, s = grads[k][sel], spread[k][sel]
            scale = np.nanmax(np.abs(grads[k])) or 1.0
            ax.fill_between(wave[sel], (g - s) / scale, (g + s) / scale, color="0.75", lw=0)
            ax.plot(wave[sel], g / scale, "-", color=OKABE_ITO[5], lw=0.6)
            ax.set_ylim(-1.1, 1.1)
            ax.set_yticks([-1, 0, 1])  # scaled gradients: three ticks keep the short panels legible
            if c == 0:
                ax.set_ylabel(LABEL_TEX[k].split(" [")[0], rotation=0, ha="right", va="center")
        for r in range(n):
            ax = axes[r, c]
            ax.set_xlim(lo, hi)
            y0, y1 = ax.get_ylim()
            for ln in lines:
                w = float(ln["wavelength_air_A"])
                if lo <= w <= hi and ln["species"] in SPECIES_COLOURS:
                    ax.axvline(w, color=SPECIES_COLOURS[ln["species"]], lw=0.6, alpha=0.6, zorder=0)
            ax.set_ylim(y0, y1)
        axes[-1, c].set_xlabel("wavelength [Å]")
    handles = [mpl.lines.Line2D([], [], color=v, lw=1.5, label=k) for k, v in SPECIES_COLOURS.items()
               if k not in ("Fe II", "Ca I")]
    fig.legend(handles=handles, loc="upper right", ncol=len(handles), frameon=False, fontsize=7)
    if title:
        fig.suptitle(title, x=0.01, ha="left")
    return fig


#: Windows of :func:`gradient_zooms`: the strongest Mg and Al features of HR10 and HR21
#: (name, centre [Å]); each window spans ±4 Å.
ZOOM_WINDOWS = (("Mg I 5528", 5528.41), ("Mg I 8736", 8736.02), ("Al I 8773 doublet", 8773.38),
                ("Mg I 8807", 8806.76))


def gradient_zooms(wave, spectrum, grads: dict, spread: dict, lines, windows=ZOOM_WINDOWS,
                   half_width: float = 4.0, title=""):
    """Zooms of :func:`gradients_under_spectrum` on the lines the test is about: one column per
    window (±``half_width`` Å around each centre), the mean spectrum on top and each label's
    gradient below, on the same scale as the full figure (its largest value over the whole
    spectrum), so a zoom shows how much of the gradient sits at that line.
    """
    n = 1 + len(grads)
    fig, axes = plt.subplots(n, len(windows), figsize=(2.6 * len(windows) + 1.2, 1.25 * n + 0.6),
                             sharex="col", squeeze=False)
    for c, (name, centre) in enumerate(windows):
        sel = (wave >= centre - half_width) & (wave <= centre + half_width)
        axes[0, c].plot(wave[sel], spectrum[sel], "k-", lw=0.8)
        axes[0, c].set_title(name, loc="left")
        axes[0, c].set_ylim(min(0.3, np.nanmin(spectrum[sel]) - 0.05) if sel.any() else 0.3, 1.08)
        for r, k in enumerate(grads, start=1):
            ax = axes[r, c]
            scale = np.nanmax(np.abs(grads[k])) or 1.0
            g, s = grads[k][sel] / scale, spread[k][sel] / scale
            ax.fill_between(wave[sel], g - s, g + s, color="0.75", lw=0)
            ax.plot(wave[sel], g, "-", color=OKABE_ITO[5], lw=0.9)
            ax.set_ylim(-1.1, 1.1)
            ax.set_yticks([-1, 0, 1])
            if c == 0:
                ax.set_ylabel(LABEL_TEX[k].split(" [")[0], rotation=0, ha="right", va="center")
        for r in range(n):
            ax = axes[r, c]
            ax.set_xlim(centre - half_width, centre + half_width)
            for ln in lines:
                w = float(ln["wavelength_air_A"])
                if abs(w - centre) <= half_width and ln["species"] in SPECIES_COLOURS:
                    ax.axvline(w, color=SPECIES_COLOURS[ln["species"]], lw=0.8, alpha=0.7, zorder=0)
        axes[-1, c].set_xlabel("wavelength [Å]")
        axes[-1, c].xaxis.set_major_locator(mpl.ticker.MaxNLocator(3))
    if title:
        fig.suptitle(title, x=0.01, ha="left")
    return fig


def enrichment_matrix(matrix: dict, title=""):
    """Heat map of gradient-power enrichment: labels (rows) × line species (columns)."""
    labels = list(matrix)
    groups = list(next(iter(matrix.values())))
    m = np.array([[matrix[k][g] for g in groups] for k in labels])
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(groups), 0.5 + 0.45 * len(labels)))
    im = ax.imshow(np.log10(np.clip(m, 1e-2, None)), cmap="RdBu_r", vmin=-1.2, vmax=1.2, aspect="auto")
    for i in range(len(labels)):
        for j in range(len(groups)):
            ax.text(j, i, f"{m[i, j]:.1f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(groups)), groups, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), [LABEL_TEX[k].split(" [")[0] for k in labels])
    fig.colorbar(im, ax=ax, label="log10 enrichment")
    if title:
        ax.set_title(title, loc="left")
    return fig


def benchmark_offsets(rows: list[dict], labels=("teff", "logg", "feh")):
    """CNN − reference against reference for benchmark spectra; filled: high S/N, open: survey S/N."""
    fig, axes = plt.subplots(1, len(labels), figsize=(12, 3.0))
    for ax, k in zip(axes, labels):
        for regime, face in (("high S/N", None), ("survey S/N", "none")):
            rr = [r for r in rows if r["regime"] == regime]
            if not rr:
                continue
            x = np.array([r[f"ref_{k}"] for r in rr])
            d = np.array([r[f"d_{k}"] for r in rr])
            e = np.array([r[f"cnn_e_{k}"] for r in rr])
            ax.errorbar(x, d, yerr=e, fmt="o", ms=4, mfc=face, color=OKABE_ITO[5] if face is None else OKABE_ITO[6],
                        lw=0.8, label=regime)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xlabel("reference " + LABEL_TEX[k])
        ax.set_title("CNN − reference", loc="left")
    axes[0].legend(frameon=False)
    return fig


def cluster_means(rows: list[dict], labels, simulated: bool):
    """Mean CNN label per cluster (member dispersion as error bar) against the input mean."""
    fig, axes = plt.subplots(1, len(labels), figsize=(11, 3.2))
    for ax, k in zip(axes, labels):
        y = np.array([r[f"mean_{k}"] for r in rows])
        e = np.array([r[f"sd_{k}"] for r in rows])
        x = np.array([r[f"true_{k}"] for r in rows]) if simulated else np.arange(len(rows))
        ax.errorbar(x, y, yerr=e, fmt="o", ms=4, color=OKABE_ITO[5], lw=0.8)
        if simulated:
            lo, hi = min(x.min(), (y - e).min()), max(x.max(), (y + e).max())
            ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
            ax.set_xlabel("input " + LABEL_TEX[k])
        else:
            ax.set_xlabel("cluster")
        ax.set_ylabel("CNN " + LABEL_TEX[k])
    return fig


def mg_al_clusters(table, clusters, simulated: bool):
    """[Mg/Fe] against [Al/Fe] per cluster: input (grey) and CNN (blue)."""
    n = max(len(clusters), 1)
    ncol = min(n, 3)
    nrow = int(np.ceil(n / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 3.0 * nrow), squeeze=False)
    name = np.asarray(table["cluster"])
    for ax, c in zip(axes.flat, clusters):
        m = name == c
        if simulated:
            ax.scatter(table["truth_al_fe"][m], table["truth_mg_fe"][m], s=8, color="0.6", label="input")
        ax.scatter(table["cnn_al_fe"][m], table["cnn_mg_fe"][m], s=8, color=OKABE_ITO[5], label="CNN")
        ax.set_title(c, loc="left")
        ax.set_xlabel(LABEL_TEX["al_fe"])
        ax.set_ylabel(LABEL_TEX["mg_fe"])
    for ax in list(axes.flat)[len(clusters):]:
        ax.axis("off")
    axes.flat[0].legend(frameon=False)
    return fig


def density_planes(sources: dict, ylabel_key: str, split: dict | None = None, extent=((-2.0, 0.6), (-0.3, 0.6)),
                   errors: dict | None = None):
    """[X/Fe] against [Fe/H] as log-density maps, one panel per label source (``{name: (feh, xfe)}``);
    ``split`` (``{name: high_alpha mask}``) draws the high-α stars' density as contours;
    ``errors`` (``{name: (σ[Fe/H], σ[X/Fe])}``) draws a typical error bar in the corner."""
    fig, axes = plt.subplots(1, len(sources), figsize=(4.0 * len(sources), 3.3), sharex=True, sharey=True)
    axes = np.atleast_1d(axes)
    (x0, x1), (y0, y1) = extent
    for ax, (name, (feh, xfe)) in zip(axes, sources.items()):
        feh, xfe = np.asarray(feh, float), np.asarray(xfe, float)
        ok = np.isfinite(feh) & np.isfinite(xfe)
        h, xe, ye = np.histogram2d(feh[ok], xfe[ok], bins=(70, 60), range=((x0, x1), (y0, y1)))
        ax.imshow(np.log10(h.T + 1), origin="lower", extent=(x0, x1, y0, y1), aspect="auto", cmap="Greys")
        if split is not None and name in split:
            hi = ok & np.asarray(split[name], bool)
            hh, _, _ = np.histogram2d(feh[hi], xfe[hi], bins=(35, 30), range=((x0, x1), (y0, y1)))
            if hh.max() > 0:
                ax.contour(np.linspace(x0, x1, 35), np.linspace(y0, y1, 30), hh.T,
                           levels=np.array([0.1, 0.3, 0.6]) * hh.max(), colors=OKABE_ITO[6], linewidths=0.8)
        if errors is not None and name in errors:
            ex, ey = errors[name]
            ax.errorbar(x0 + 0.12 * (x1 - x0), y1 - 0.12 * (y1 - y0), xerr=ex, yerr=ey, color="k", capsize=2, lw=1)
            ax.text(x0 + 0.2 * (x1 - x0), y1 - 0.12 * (y1 - y0), "median σ", va="center", fontsize=7)
        ax.set_title(name, loc="left")
        ax.set_xlabel(LABEL_TEX["feh"])
    axes[0].set_ylabel(LABEL_TEX[ylabel_key])
    return fig


def planes_in_bins(feh, xfe, R, z, ylabel_key: str, r_edges=(3, 6, 9, 12, 15), z_edges=(0, 0.5, 1.0, 3.0)):
    """[X/Fe]–[Fe/H] planes in bins of R (columns) and |z| (rows, highest on top)."""
    feh, xfe, R, az = (np.asarray(a, float) for a in (feh, xfe, R, np.abs(np.asarray(z, float))))
    nr, nz = len(r_edges) - 1, len(z_edges) - 1
    fig, axes = plt.subplots(nz, nr, figsize=(2.6 * nr, 2.2 * nz), sharex=True, sharey=True, squeeze=False)
    for i in range(nz):
        for j in range(nr):
            ax = axes[nz - 1 - i, j]
            m = (R >= r_edges[j]) & (R < r_edges[j + 1]) & (az >= z_edges[i]) & (az < z_edges[i + 1])
            m &= np.isfinite(feh) & np.isfinite(xfe)
            ax.scatter(feh[m], xfe[m], s=1, color=OKABE_ITO[5], alpha=0.5, rasterized=True)
            ax.text(0.03, 0.95, f"{r_edges[j]}–{r_edges[j + 1]} kpc\n|z| {z_edges[i]}–{z_edges[i + 1]}\n{m.sum()} stars",
                    transform=ax.transAxes, va="top", fontsize=8)
            ax.set_xlim(-2.0, 0.6)
            ax.set_ylim(-0.3, 0.6)
    for ax in axes[-1]:
        ax.set_xlabel(LABEL_TEX["feh"])
    for ax in axes[:, 0]:
        ax.set_ylabel(LABEL_TEX[ylabel_key])
    return fig


def radial_profiles(R, sources: dict, masks: dict, key: str, r_edges=np.arange(4, 14.1, 1.0)):
    """Median of a label in bins of R for each source (with its own population mask)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    mid = 0.5 * (r_edges[1:] + r_edges[:-1])
    R = np.asarray(R, float)
    for (name, y), c in zip(sources.items(), OKABE_ITO[5:] + OKABE_ITO[1:5]):
        y = np.asarray(y, float)
        m = np.asarray(masks[name], bool)
        med = [np.nanmedian(y[m & (R >= a) & (R < b)]) if np.sum(m & (R >= a) & (R < b)) >= 10 else np.nan
               for a, b in zip(r_edges[:-1], r_edges[1:])]
        ax.plot(mid, med, "o-", color=c, label=name, ms=4)
    ax.set_xlabel("R [kpc]")
    ax.set_ylabel("median " + LABEL_TEX[key])
    ax.legend(frameon=False)
    return fig


def precision_vs_snr_compare(binned: dict, crb=None, crb_snr=None, reference="truth"):
    """Robust scatter of each method against ``reference`` in S/N bins, one panel per label, with the
    Cramér–Rao bound of individual stars (grey points) where given.

    ``binned``: ``{method: helpers.compare.binned_precision(...)}``.
    """
    fig, axes = plt.subplots(1, 5, figsize=(13, 2.9))
    colours = [OKABE_ITO[5], OKABE_ITO[1], OKABE_ITO[3]]
    for j, (ax, k) in enumerate(zip(axes, LABELS)):
        for c, (name, b) in zip(colours, binned.items()):
            ax.plot(b["mid"], b["scatter"][:, j], "o-", color=c, ms=3, lw=1.3, label=name)
        if crb is not None:
            ax.scatter(crb_snr, crb[:, j], s=3, color="0.6", label="Cramér–Rao bound", zorder=0)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_major_formatter(mpl.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(mpl.ticker.NullFormatter())
        ax.set_xlabel("S/N")
        ax.set_title(LABEL_TEX[k], loc="left")
    axes[0].set_ylabel(f"robust σ (method − {reference})")
    axes[0].legend(frameon=False, fontsize=7)
    return fig


def bias_vs_label(ref, methods: dict, reference="truth", n_bins=8):
    """Median of method − reference in bins of the reference label, one panel per label."""
    ref = np.asarray(ref, float)
    fig, axes = plt.subplots(1, 5, figsize=(13, 2.7))
    colours = [OKABE_ITO[5], OKABE_ITO[1], OKABE_ITO[3]]
    for j, (ax, k) in enumerate(zip(axes, LABELS)):
        x = ref[:, j]
        ok = np.isfinite(x)
        edges = np.quantile(x[ok], np.linspace(0, 1, n_bins + 1))
        mid = 0.5 * (edges[1:] + edges[:-1])
        idx = np.clip(np.digitize(x, edges) - 1, 0, n_bins - 1)
        for c, (name, y) in zip(colours, methods.items()):
            d = np.asarray(y, float)[:, j] - x
            med = [np.nanmedian(d[ok & (idx == b)]) if np.sum(ok & (idx == b)) >= 10 else np.nan for b in range(n_bins)]
            ax.plot(mid, med, "o-", color=c, ms=3, lw=1.3, label=name)
        ax.axhline(0, color="0.5", lw=0.8)
        ax.set_xlabel(f"{reference} {LABEL_TEX[k]}")
    axes[0].set_ylabel(f"median (method − {reference})")
    axes[0].legend(frameon=False, fontsize=7)
    return fig
