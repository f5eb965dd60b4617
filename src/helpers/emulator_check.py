"""The emulator against syntheses it never saw: accuracy by region, and single-label responses.

Everything here compares :class:`helpers.emulator.Emulator` output with grid
spectra held out from its training and from every choice made while training
(:func:`helpers.grid.split_of`), at the grid's base resolution.
"""
from __future__ import annotations

import numpy as np

from .grid import GRID_LABELS, RESPONSE_STEPS, GridData

__all__ = ["REGIONS", "region_of", "accuracy_summary", "response_check", "LINE_WINDOWS", "held_out_test",
           "reference_line_table", "reference_line_summary", "write_line_table",
           "accuracy_verdict", "curve_verdict"]

#: Regions of the label space, in the order tables show them: name -> test on (teff, logg, feh).
REGIONS = {
    "FGK dwarfs and subgiants": lambda t, g, z: (g >= 3.5) & (t >= 5000),
    "cool dwarfs (< 5000 K)": lambda t, g, z: (g >= 3.5) & (t < 5000),
    "giants, [Fe/H] ≥ −1": lambda t, g, z: (g < 3.5) & (t >= 4400) & (z >= -1),
    "metal-poor giants": lambda t, g, z: (g < 3.5) & (t >= 4400) & (z < -1),
    "cool giants (< 4400 K)": lambda t, g, z: (g < 3.5) & (t < 4400),
}
#: Windows [Å] around the lines each single-label step is about (for the response check).
LINE_WINDOWS = {
    "mg_fe": ((5527.9, 5528.9), (8712.2, 8713.2), (8717.3, 8718.3), (8735.5, 8736.5),
              (8805.8, 8807.8)),
    "al_fe": ((8772.4, 8774.4),),
}


def region_of(labels) -> np.ndarray:
    """Region name of each row of grid labels (n, 7)."""
    labels = np.atleast_2d(labels)
    out = np.full(len(labels), "other", dtype=object)
    for name, test in REGIONS.items():
        out[test(labels[:, 0], labels[:, 1], labels[:, 2])] = name
    return out.astype(str)


def _stats(err: np.ndarray) -> dict:
    a = np.abs(err)
    per_star = np.sqrt(np.mean(err ** 2, axis=1))
    return {"n_stars": int(len(err)), "median_abs": float(np.median(a)),
            "p99_abs": float(np.percentile(a, 99)), "max_abs": float(a.max()),
            "rms": float(np.sqrt(np.mean(err ** 2))),
            "worst_star_rms": float(per_star.max())}


def accuracy_summary(emu, data: GridData, by_region: bool = False) -> dict:
    """Per-pixel errors of the emulator on grid spectra: all stars and, optionally, by region.

    Returns
    -------
    dict
        ``all`` (and one entry per non-empty region) with ``n_stars``,
        ``median_abs``, ``p99_abs``, ``max_abs``, ``rms`` (flux units) and
        ``worst_star_rms``.
    """
    pred = emu.predict(data.labels, check=False)
    err = pred.astype(np.float64) - data.flux
    out = {"all": _stats(err)}
    if by_region:
        reg = region_of(data.labels)
        for name in list(REGIONS) + ["other"]:
            m = reg == name
            if m.any():
                out[name] = _stats(err[m])
    return out


def held_out_test(emu, data: GridData) -> GridData:
    """The grid's test stars the emulator was scored on (the names in its record)."""
    names = emu.record.get("test_names")
    if not names:
        raise KeyError("the emulator's record lists no test stars; retrain it with "
                       "scripts/train_emulator.py")
    return data.named(names)


def _windows_mask(wave, windows):
    m = np.zeros(wave.shape, bool)
    for lo, hi in windows:
        m |= (wave >= lo) & (wave <= hi)
    return m


def response_check(emu, resp: GridData, wave=None) -> list[dict]:
    """Single-label responses of the synthesis against the emulator's.

    For every response star ``r-<star>-base`` and each step of
    :data:`helpers.grid.RESPONSE_STEPS` the synthesis difference
    Δ_syn = synth(step) − synth(base) is compared with the emulator's
    difference Δ_emu and with its Jacobian at the midpoint times the step
    (Δ_jac, the exact derivative of the network).

    Returns
    -------
    list of dict
        ``star``, ``label``, ``step``, ``rms_syn`` (size of the synthesis response),
        ``rms_diff_emu`` and ``rms_diff_jac`` (rms of Δ_emu − Δ_syn and Δ_jac − Δ_syn),
        ``gain_emu`` (least-squares slope of Δ_emu on Δ_syn: 1 means the right amplitude)
        and, for [Mg/Fe] and [Al/Fe], the same in the element's line windows (``*_lines``).
    """
    if wave is None:
        from .spectra import giraffe_grid
        wave = giraffe_grid().wave
    names = [str(n) for n in resp.names]
    by = dict(zip(names, range(len(names))))
    rows = []
    for name in names:
        if not name.endswith("-base"):
            continue
        star = name[2:-5]
        b = by[name]
        for suffix, key, step in RESPONSE_STEPS:
            other = f"r-{star}-{suffix}"
            if other not in by:
                continue
            s = by[other]
            d_syn = resp.flux[s].astype(float) - resp.flux[b]
            pred = emu.predict(resp.labels[[b, s]], check=False).astype(float)
            d_emu = pred[1] - pred[0]
            mid = 0.5 * (resp.labels[b] + resp.labels[s])
            j = GRID_LABELS.index(key)
            d_jac = emu.jacobian(mid[None], check=False)[0, :, j] * step
            row = {"star": star, "label": key, "step": float(step),
                   "rms_syn": float(np.sqrt(np.mean(d_syn ** 2))),
                   "rms_diff_emu": float(np.sqrt(np.mean((d_emu - d_syn) ** 2))),
                   "rms_diff_jac": float(np.sqrt(np.mean((d_jac - d_syn) ** 2))),
                   "gain_emu": float(np.dot(d_emu, d_syn) / max(np.dot(d_syn, d_syn), 1e-30))}
            if key in LINE_WINDOWS:
                m = _windows_mask(wave, LINE_WINDOWS[key])
                ds, de = d_syn[m], d_emu[m]
                row.update({"max_syn_lines": float(np.abs(ds).max()),
                            "rms_diff_emu_lines": float(np.sqrt(np.mean((de - ds) ** 2))),
                            "gain_emu_lines": float(np.dot(de, ds) / max(np.dot(ds, ds), 1e-30))})
            rows.append(row)
    return rows


def reference_line_table(emu, data: GridData, ref_lines, wave=None, half_width: float = 0.35,
                         strong_half_width: float = 2.5) -> list[dict]:
    """Depths and equivalent widths of the reference lines: emulator against synthesis.

    For every held-out star of ``data`` and every line of ``ref_lines`` (the
    85-line table, :func:`helpers.lines.load_reference_lines`) that lies on the
    grid, the central depth (1 − the lowest flux within ±0.1 Å of the line) and
    the equivalent width (∫ (1 − F) dλ over ±``half_width`` Å, ±``strong_half_width``
    for lines deeper than 0.5 in the synthesis) are measured in the same way on
    both spectra, at the grid's base resolution. Blends enter both equally.

    Returns
    -------
    list of dict
        ``star``, ``wave`` [Å], ``species``, ``depth_syn``, ``depth_emu``,
        ``ew_syn_mA``, ``ew_emu_mA`` [mÅ].
    """
    if wave is None:
        from .spectra import giraffe_grid
        wave = giraffe_grid().wave
    step = float(wave[1] - wave[0])
    pred = emu.predict(data.labels, check=False).astype(float)
    rows = []
    for r in ref_lines:
        w0 = r["wavelength_air_A"]
        if not (wave[0] + 3 < w0 < wave[-1] - 3) or np.min(np.abs(wave - w0)) > step:
            continue
        core = np.abs(wave - w0) <= 0.1
        for k, name in enumerate(data.names):
            syn = data.flux[k].astype(float)
            d_syn = 1 - syn[core].min()
            hw = strong_half_width if d_syn > 0.5 else half_width
            win = np.abs(wave - w0) <= hw
            rows.append({"star": str(name), "wave": float(w0), "species": r["species"],
                         "depth_syn": float(d_syn), "depth_emu": float(1 - pred[k][core].min()),
                         "ew_syn_mA": float(1000 * step * np.sum(1 - syn[win])),
                         "ew_emu_mA": float(1000 * step * np.sum(1 - pred[k][win]))})
    return rows


def reference_line_summary(rows: list[dict], min_ew_mA: float = 5.0) -> list[dict]:
    """Depth differences and log10 EW ratios (emulator/synthesis), by species group.

    Median absolute and rms values of each; lines with a synthesis EW below
    ``min_ew_mA`` enter the depth statistics only.
    """
    groups = {"Mg I": lambda s: s == "Mg I", "Al I": lambda s: s == "Al I",
              "Fe I, Fe II": lambda s: s in ("Fe I", "Fe II"),
              "other": lambda s: s not in ("Mg I", "Al I", "Fe I", "Fe II")}
    out = []
    for name, test in groups.items():
        sel = [r for r in rows if test(r["species"])]
        if not sel:
            continue
        dd = np.array([r["depth_emu"] - r["depth_syn"] for r in sel])
        ew = [(r["ew_emu_mA"], r["ew_syn_mA"]) for r in sel if r["ew_syn_mA"] >= min_ew_mA]
        lr = np.array([np.log10(max(a, 0.1) / b) for a, b in ew])
        out.append({"group": name, "n": len(sel), "rms_depth": float(np.sqrt(np.mean(dd ** 2))),
                    "med_depth": float(np.median(np.abs(dd))), "n_ew": len(ew),
                    "rms_log_ew": float(np.sqrt(np.mean(lr ** 2))) if len(lr) else float("nan"),
                    "med_log_ew": float(np.median(np.abs(lr))) if len(lr) else float("nan")})
    return out


def write_line_table(path, rows: list[dict]) -> None:
    """Write :func:`reference_line_table` rows as CSV, atomically."""
    import csv
    import io

    from .fileio import write_text

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["star"])
    w.writeheader()
    w.writerows(rows)
    write_text(path, buf.getvalue())


def accuracy_verdict(summary: dict, median_aim: float = 0.002, p99_aim: float = 0.01) -> str:
    """Which of the two accuracy aims (median and 99th percentile of |error|) ``summary`` meets."""
    ok_med, ok_p99 = summary["median_abs"] <= median_aim, summary["p99_abs"] <= p99_aim
    if ok_med and ok_p99:
        return "both aims are met"
    if ok_med:
        return "the median aim is met, the 99th-percentile aim is not"
    if ok_p99:
        return "the 99th-percentile aim is met, the median aim is not"
    return "neither aim is met"


def curve_verdict(curve: list[dict], still_helps: float = 0.1) -> str:
    """Whether the last step of a learning curve still lowered the 99th percentile by ``still_helps``."""
    if len(curve) < 2:
        return "no learning curve was recorded for this emulator"
    a, b = curve[-2], curve[-1]
    gain = 1 - b["p99_abs"] / a["p99_abs"]
    return (f"from {a['n_train']} to {b['n_train']} training syntheses the 99th percentile falls by "
            f"{gain:.0%}, so " + ("a larger grid would still help" if gain > still_helps
                                  else "the accuracy has levelled off"))
