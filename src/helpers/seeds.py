"""Named random streams: every random draw of the pipeline comes from the run's ``seed``, a tag
named here, and the indices of what is drawn (a chunk, a member, an epoch, a star).

Two draws share a stream only if they share a tag, so no draw can repeat another's numbers by
accident (before this table, ensemble member 3 drew from the stream of the train/test split).
Tags are fixed numbers: changing one changes every result that depends on it, so they are only
ever added, never renumbered. The entropy is ``[seed, tag, number of indices, *indices]``.
"""
from __future__ import annotations

import numpy as np

__all__ = ["TAGS", "sequence", "rng"]

#: The tag of each stream (the second entropy word after the seed).
TAGS = {
    "survey_catalogue": 0,   # stars, positions, chemistry, survey labels (helpers.survey)
    "survey_chunk": 1,       # noise and defects of one chunk of spectra, by chunk index
    "split": 3,              # train / validation / test split of the cleaned set (helpers.ensemble)
    "fit_rows": 4,           # the subsample a model is fitted on
    "crb_rows": 5,           # test stars whose bound chapter 03 computes
    "cannon_crb_rows": 7,    # test stars whose bound chapter 07 computes
    "cleaning_halves": 11,   # the halves that choose and score the cleaning thresholds
    "member": 1001,          # ensemble member i's seed, by member index
    "response_noise": 1002,  # noise of the single-label response test, by S/N, star and draw
    "member_layers": 1003,   # a member's initial weights and dropout (seed: the member's own)
    "member_epochs": 1004,   # the order of a member's training spectra, by epoch (seed: the member's own)
}


def sequence(seed: int, tag: str, *index: int) -> np.random.SeedSequence:
    """The :class:`numpy.random.SeedSequence` of stream ``tag`` (a name of :data:`TAGS`)."""
    if tag not in TAGS:
        raise KeyError(f"unknown random stream {tag!r}; the streams are {sorted(TAGS)} (helpers.seeds)")
    # the number of indices goes in too: SeedSequence pads its entropy with zeros, so [s, t] and
    # [s, t, 0] would otherwise be the same stream
    return np.random.SeedSequence([int(seed), TAGS[tag], len(index), *(int(i) for i in index)])


def rng(seed: int, tag: str, *index: int) -> np.random.Generator:
    """A generator on stream ``tag`` of ``seed``, for the item ``index``."""
    return np.random.default_rng(sequence(seed, tag, *index))
