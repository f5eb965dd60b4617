"""Helpers for the runnable companion to Ambrosch et al. (2023, A&A 672, A46).

The package is organised one module per concern (see ``DESIGN.md`` in the
repository): :mod:`helpers.simulate` (forward model), :mod:`helpers.galaxy`
(mock Milky Way), :mod:`helpers.survey` (the simulated Gaia-ESO survey),
:mod:`helpers.dataset` (data-set files), :mod:`helpers.cleaning` (t-SNE
cleaning), :mod:`helpers.model` (the CNN: building, training, saving),
:mod:`helpers.inference` (evaluating the ensemble fast),
:mod:`helpers.reference` (the shipped reference ensemble),
:mod:`helpers.ensemble` (training workflow, prediction tables, precision),
:mod:`helpers.cannon` (The Cannon baseline), :mod:`helpers.compare` (two label
pipelines side by side),
:mod:`helpers.precision` (Cramér–Rao bound), :mod:`helpers.saliency` (input
gradients against the line list), :mod:`helpers.validation` (benchmarks,
clusters, extrapolation flags), :mod:`helpers.pipeline` (the notebook runner)
and :mod:`helpers.book` (the book build), among others.
"""

__version__ = "0.3.0"

#: Label names in their fixed order; units K, dex, dex, dex, dex.
LABELS = ("teff", "logg", "feh", "mg_fe", "al_fe")
#: Units of :data:`LABELS`, in the same order.
LABEL_UNITS = ("K", "dex", "dex", "dex", "dex")
#: Labels as they are written in figures (LaTeX via matplotlib mathtext).
LABEL_TEX = {
    "teff": r"$T_\mathrm{eff}$ [K]",
    "logg": r"$\log g$ [dex]",
    "feh": r"[Fe/H] [dex]",
    "mg_fe": r"[Mg/Fe] [dex]",
    "al_fe": r"[Al/Fe] [dex]",
}
