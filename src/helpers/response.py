"""Single-label response: does an estimator follow a label when only that label changes?

The most direct test of "does the network measure Mg and Al as elements": take
a star, make its spectrum, change one label by a known step (everything else,
[α/Fe], vmic, rotation and the noise draw included, held fixed), make the
spectrum again, and ask the estimator for both. Its **response** to label *i*
is the change of its prediction of *i* over the true step (1: it follows the
label; 0: it does not see it). Its **cross-talk** into label *j* is the change
of its prediction of *j*, in units of *j*'s own standard step (so the numbers
are comparable across labels: 0.1 means *j* moved by a tenth of its step).

Spectra are noise-free (but resampled through the detector's pixels, as every
observed spectrum is) and at the given S/N values (the survey's noise model,
:mod:`helpers.noise`, with the same draw for the base and the stepped
spectrum, so the difference isolates the response; the spread over draws is
reported). The stars and steps are those of the synthesis grid's response set
(:data:`helpers.grid.RESPONSE_STARS`, :data:`helpers.grid.RESPONSE_STEPS`).

Units: K for Teff, dex otherwise; response and cross-talk are dimensionless.
"""
from __future__ import annotations

import numpy as np

from . import LABELS, seeds
from .grid import RESPONSE_STARS, RESPONSE_STEPS, default_vmic
from .noise import SKY_V_MAG, NoiseModel, counts_for_snr

__all__ = ["STEP_OF", "RESPONSE_SNR", "response_set", "measure_response", "summarise",
           "response_verdict", "side_by_side", "read_rows"]

#: The standard step of each label (the unit of cross-talk).
STEP_OF = {key: step for _, key, step in RESPONSE_STEPS}
#: S/N values of the noisy response spectra (besides noise-free).
RESPONSE_SNR = (50.0, 100.0)
#: Sky counts relative to the star's for a V = 15.5 star (a typical survey target).
_SKY_RATIO = 10 ** (-0.4 * (SKY_V_MAG - 15.5))


def response_set(fm, stars=RESPONSE_STARS, steps=RESPONSE_STEPS, vsini: float = 3.0):
    """Noise-free base and one-label-stepped spectra of ``stars``.

    Returns
    -------
    dict
        ``names`` (star names), ``labels`` (n_stars, 5), ``alpha`` (n_stars,),
        ``steps`` (list of (label, step)), ``base`` (n_stars, n_pixels) and
        ``stepped`` (n_stars, n_steps, n_pixels) flux.
    """
    names = [s[0] for s in stars]
    lab7 = np.array([s[1:] for s in stars], float)  # teff, logg, feh, mg, al, alpha
    labels, alpha = lab7[:, :5], lab7[:, 5]
    nuis = np.column_stack([default_vmic(labels[:, 0], labels[:, 1]), np.full(len(labels), vsini),
                            np.zeros(len(labels))])
    base = fm.render(labels, nuis, alpha_fe=alpha)
    stepped = np.empty((len(labels), len(steps), base.shape[1]), np.float32)
    for k, (_, key, step) in enumerate(steps):
        lab = labels.copy()
        lab[:, LABELS.index(key)] += step
        stepped[:, k] = fm.render(lab, nuis, alpha_fe=alpha)
    return {"names": names, "labels": labels, "alpha": alpha,
            "steps": [(key, step) for _, key, step in steps], "base": base, "stepped": stepped}


def measure_response(predict, rset: dict, noise_model: NoiseModel, snrs=RESPONSE_SNR,
                     n_draws: int = 10, seed: int = 0) -> list[dict]:
    """Response and cross-talk of an estimator on a :func:`response_set`.

    Parameters
    ----------
    predict : callable
        ``predict(flux, ivar) -> (n, 5)`` labels in label units.
    rset : dict
        From :func:`response_set`.
    noise_model : NoiseModel
    snrs : sequence of float
        S/N values; the noise-free case (``inf``) is always included.
    n_draws : int
        Noise draws per star and S/N.
    seed : int

    Returns
    -------
    list of dict
        One row per star, S/N and stepped label: ``star``, ``snr``, ``label``,
        ``step``, ``response`` and ``response_sd`` (over draws), and for every
        other label ``x_<label>`` (cross-talk, mean over draws).
    """
    base, stepped = rset["base"], rset["stepped"]
    n_stars, n_steps, n_pix = stepped.shape
    rows = []
    for s_i, snr in enumerate([np.inf] + [float(s) for s in snrs]):
        draws = 1 if not np.isfinite(snr) else n_draws
        # every spectrum of this S/N: base then each step, per star and draw
        flux = np.concatenate([base[:, None, :], stepped], axis=1)  # (n_stars, 1 + n_steps, n_pix)
        flux = np.repeat(flux[:, None], draws, axis=1)  # (n_stars, draws, 1 + n_steps, n_pix)
        flat = flux.reshape(-1, n_pix)
        if np.isfinite(snr):
            counts = counts_for_snr(np.full(len(flat), snr), np.zeros(len(flat)))
            sky = counts * _SKY_RATIO
            counts = counts_for_snr(np.full(len(flat), snr), sky)
            noisy = np.empty_like(flat, dtype=np.float32)
            ivar = np.empty_like(flat, dtype=np.float32)
            per = 1 + n_steps
            for k in range(0, len(flat), per):  # the same draw for a base and its steps
                star, draw = divmod(k // per, draws)
                for j in range(per):
                    rng = seeds.rng(seed, "response_noise", s_i, star, draw)
                    noisy[k + j], ivar[k + j] = noise_model.observe(flat[k + j:k + j + 1],
                                                                    counts[k:k + 1], sky[k:k + 1], rng)
        else:  # resampled through the detector's pixels like every observed spectrum, no noise
            noisy = noise_model.to_grid(noise_model.to_native(flat)).astype(np.float32)
            ivar = np.ones_like(flat, dtype=np.float32)
        pred = np.asarray(predict(noisy, ivar), float).reshape(n_stars, draws, 1 + n_steps, len(LABELS))
        delta = pred[:, :, 1:, :] - pred[:, :, :1, :]  # (n_stars, draws, n_steps, 5)
        for st in range(n_stars):
            for k, (key, step) in enumerate(rset["steps"]):
                i = LABELS.index(key)
                r = delta[st, :, k, i] / step
                row = {"star": rset["names"][st], "snr": snr, "label": key, "step": step,
                       "response": float(r.mean()), "response_sd": float(r.std(ddof=1)) if draws > 1 else 0.0}
                for j, other in enumerate(LABELS):
                    if other != key:
                        row[f"x_{other}"] = float(delta[st, :, k, j].mean() / STEP_OF[other])
                rows.append(row)
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Per label and S/N: median response over stars, its range, and the largest |cross-talk|."""
    out = []
    for snr in sorted({r["snr"] for r in rows}):
        for key in LABELS:
            sel = [r for r in rows if r["snr"] == snr and r["label"] == key]
            if not sel:
                continue
            resp = np.array([r["response"] for r in sel])
            xt = [(abs(r[f"x_{o}"]), o) for r in sel for o in LABELS if o != key]
            worst = max(xt)
            out.append({"label": key, "snr": snr, "n_stars": len(sel), "response_median": float(np.median(resp)),
                        "response_min": float(resp.min()), "response_max": float(resp.max()),
                        "crosstalk_max": float(worst[0]), "crosstalk_into": worst[1]})
    return out


def response_verdict(summary: list[dict], label: str, lo: float = 0.9, hi: float = 1.1,
                     crosstalk: float = 0.1, snr_min: float = 50.0) -> str:
    """A sentence on one label: does the estimator follow it (response within [lo, hi] for every
    star and cross-talk ≤ ``crosstalk``) at every S/N ≥ ``snr_min``?"""
    rows = [r for r in summary if r["label"] == label and r["snr"] >= snr_min]
    if not rows:
        return f"{label}: not measured"
    ok_resp = all(lo <= r["response_min"] and r["response_max"] <= hi for r in rows)
    ok_x = all(r["crosstalk_max"] <= crosstalk for r in rows)
    med = ", ".join(f"{r['response_median']:.2f} at S/N {r['snr']:.0f}" if np.isfinite(r["snr"])
                    else f"{r['response_median']:.2f} noise-free" for r in rows)
    xt = max(rows, key=lambda r: r["crosstalk_max"])
    if ok_resp and ok_x:
        head = "follows it"
    elif ok_resp:
        head = "follows it in its own label but leaks into others"
    elif min(r["response_median"] for r in rows) < 0.5:
        head = "does not follow it"
    else:
        head = "follows it only in part"
    return (f"{head} (median response {med}; aim {lo}–{hi} for every star; largest cross-talk "
            f"{xt['crosstalk_max']:.2f} into {xt['crosstalk_into']}, aim ≤ {crosstalk})")


def side_by_side(summaries: dict) -> list[dict]:
    """Rows of label × S/N with each estimator's median response and largest cross-talk.

    ``summaries`` maps an estimator's name to its :func:`summarise` output.
    """
    keys = None
    for rows in summaries.values():
        k = [(r["label"], r["snr"]) for r in rows]
        keys = k if keys is None else [x for x in keys if x in k]
    out = []
    for label, snr in keys or []:
        row = {"label": label, "snr": snr}
        for name, rows in summaries.items():
            r = next(r for r in rows if r["label"] == label and r["snr"] == snr)
            row[f"{name}_response"] = r["response_median"]
            row[f"{name}_crosstalk"] = r["crosstalk_max"]
        out.append(row)
    return out


def read_rows(path) -> list[dict]:
    """Rows written by chapter 03 (CSV of :func:`measure_response`), numbers as floats."""
    import csv

    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise ValueError(f"{path} holds no response rows; re-run chapter 03")
    out = []
    for r in rows:
        out.append({k: (v if k in ("star", "label") else float(v)) for k, v in r.items() if v != ""})
    return out
