"""Chapter 03's workflow around :mod:`helpers.model`: the fixed split, the prediction
table, and the precision numbers (ensemble spread, scatter against survey labels and
truth, the Cramér–Rao bound, calibration) that the chapter compares with the paper.

The prediction table is a FITS binary table (astropy), one row per observed
spectrum, with ``cnn_<label>`` (ensemble mean) and ``cnn_e_<label>`` (ensemble
standard deviation) in the units of :data:`helpers.LABEL_UNITS`.
"""
from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np

from . import LABELS, paths, seeds
from .fileio import atomic_path, sha256_file, write_json
from .precision import calibration_fractions, robust_scatter

__all__ = ["write_summary", "read_summary", "labelling_record", "SummaryError", "split_rows", "inheritance_rows", "inheritance_verdict", "INHERIT_MIN", "fit_rows", "PAPER_PRECISION", "load_paper_precision", "predictions_table",
           "write_predictions", "read_predictions", "precision_rows", "calibration_rows",
           "crb_for_rows", "fisher_for_rows", "bound_rows", "NUISANCE_PARAMETERS", "predict_file",
           "model_config"]

def model_config(parameters: dict):
    """Chapter 03's network settings from its parameters (the names of
    :class:`helpers.model.ModelConfig`'s fields; lists become tuples), as the chapter and
    ``scripts/train_reference.py`` both build them."""
    from dataclasses import fields

    from .model import ModelConfig

    return ModelConfig(**{f.name: tuple(parameters[f.name]) if isinstance(parameters[f.name], list)
                          else parameters[f.name] for f in fields(ModelConfig)})


#: Precision figures of Ambrosch et al. (2023), with their source (shipped CSV).
PAPER_PRECISION = paths.PAPER_PRECISION


#: Format of chapter 03's ensemble summary (``ensemble.json``), the hand-off to chapters 04 and 07.
SUMMARY_FORMAT = "ges-mgal-ensemble-summary"
SUMMARY_VERSION = 2
_SUMMARY_KEYS = ("members", "kept", "keep_percentile", "threshold", "split", "scaler", "architecture",
                 "backend", "training_digest", "prediction")
#: What the summary records of chapter 03's labelling of the observed spectra (its timing, for chapter 07).
_PREDICTION_KEYS = ("wall", "n_spectra", "data", "scheduler", "engine", "batch_size")


class SummaryError(ValueError):
    """An ensemble summary that is missing, of another format, or does not fit what it is used with."""


def write_summary(path, *, members: list[dict], kept, keep_percentile: float, threshold: float,
                  split: dict, rows: dict, scaler, architecture: dict, backend: str,
                  training_digest: str, prediction: dict) -> Path:
    """Write chapter 03's ensemble summary (the only writer of this format).

    Parameters
    ----------
    members : list of dict
        Per member: ``path`` (its ``.keras`` file), ``seed``, ``best_val_loss``, ``epochs``,
        ``seconds``; the SHA-256 of each member file is added here, so the summary changes
        whenever a member does and a replaced member file is noticed by :func:`read_summary`.
    kept : sequence of int
        Indices of the members kept.
    split : dict
        ``seed``, ``test_fraction``, ``val_fraction`` and the sizes.
    rows : dict
        ``train``, ``val``, ``test``, ``fit``: row indices of the training set (readers take the
        split from here instead of re-deriving it).
    scaler : helpers.model.LabelScaler
    training_digest : str
        :func:`helpers.dataset.content_digest` of the training set the rows index.
    prediction : dict
        How the kept members labelled the observed spectra (:func:`predict_file`): ``wall`` [s, end
        to end, reading included, the scheduler already open], ``n_spectra``, ``data`` (the file),
        ``scheduler`` and ``engine`` (descriptions) and ``batch_size``. Chapter 07 compares The
        Cannon's labelling time with this one instead of labelling everything a second time.

    Raises
    ------
    ValueError
        If ``prediction`` lacks one of those keys or its wall time is not a positive number.
    """
    missing = [k for k in _PREDICTION_KEYS if k not in prediction]
    if missing:
        raise ValueError(f"prediction record lacks {missing}")
    if not (np.isfinite(prediction["wall"]) and prediction["wall"] > 0):
        raise ValueError(f"prediction wall time must be a positive number of seconds, got {prediction['wall']!r}")
    out = {"format": SUMMARY_FORMAT, "version": SUMMARY_VERSION,
           "members": [{**{k: m[k] for k in ("path", "seed", "best_val_loss", "epochs", "seconds")},
                        "sha256": sha256_file(m["path"])} for m in members],
           "kept": [int(i) for i in kept], "keep_percentile": float(keep_percentile),
           "threshold": float(threshold), "split": dict(split),
           "rows": {k: [int(i) for i in v] for k, v in rows.items()},
           "scaler": scaler.to_json(), "architecture": architecture, "backend": backend,
           "training_digest": training_digest,
           "prediction": {"wall": float(prediction["wall"]), "n_spectra": int(prediction["n_spectra"]),
                          "data": str(prediction["data"]), "scheduler": str(prediction["scheduler"]),
                          "engine": str(prediction["engine"]), "batch_size": int(prediction["batch_size"])}}
    return write_json(path, out)


def read_summary(path, training=None) -> dict:
    """Read an ensemble summary, checking its format, its member files and (optionally) that it
    belongs to the training set ``training``.

    Returns
    -------
    dict
        As written by :func:`write_summary`, with ``rows`` as integer arrays and ``kept_paths``
        (the kept members' files).

    Raises
    ------
    SummaryError
        Missing file, another format or version, a member file missing or changed since chapter
        03 wrote the summary, or a summary made for another training set.
    """
    import json

    path = Path(path)
    if not path.exists():
        raise SummaryError(f"{path} does not exist; run notebook 03_train_ensemble first")
    try:
        s = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise SummaryError(f"{path} is not readable JSON ({exc}); re-run notebook 03_train_ensemble") from exc
    if s.get("format") != SUMMARY_FORMAT or s.get("version") != SUMMARY_VERSION:
        raise SummaryError(f"{path} is not an ensemble summary of version {SUMMARY_VERSION} "
                           f"(format {s.get('format')!r}, version {s.get('version')!r}); re-run notebook 03_train_ensemble")
    missing = [k for k in _SUMMARY_KEYS if k not in s]
    if missing:
        raise SummaryError(f"{path} lacks {missing}; re-run notebook 03_train_ensemble")
    for m in s["members"]:
        p = Path(m["path"])
        if not p.exists():
            raise SummaryError(f"member file {p} named in {path} is missing; re-run notebook 03_train_ensemble")
        if sha256_file(p) != m["sha256"]:
            raise SummaryError(f"member file {p} changed since {path} was written (checksum differs); "
                               "re-run notebook 03_train_ensemble")
    if training is not None:
        from .dataset import content_digest

        if content_digest(training) != s["training_digest"]:
            raise SummaryError(f"{path} was made for another training set than {training}: re-run chapter 03 "
                               "on this training set first")
    s["rows"] = {k: np.asarray(v, dtype=np.int64) for k, v in s["rows"].items()}
    s["kept_paths"] = [s["members"][i]["path"] for i in s["kept"]]
    return s


def labelling_record(summary: dict, data, n_spectra: int) -> dict:
    """Chapter 03's record of how its kept members labelled a data set, checked against ``data``.

    Parameters
    ----------
    summary : dict
        As read by :func:`read_summary`.
    data : path-like
        The data set the caller labels too (chapter 07: the observed spectra).
    n_spectra : int
        How many spectra it holds.

    Returns
    -------
    dict
        ``wall`` [s, from start to end, reading included], ``n_spectra``, ``data``, ``scheduler``,
        ``engine``, ``batch_size`` (see :func:`write_summary`).

    Raises
    ------
    SummaryError
        If chapter 03 labelled another file or another number of spectra.
    """
    import os

    rec = summary["prediction"]
    same = Path(rec["data"]).exists() and Path(data).exists() and os.path.samefile(rec["data"], data)
    if not same or rec["n_spectra"] != int(n_spectra):
        raise SummaryError(f"chapter 03 labelled {rec['n_spectra']} spectra of {rec['data']}, not the {n_spectra} "
                           f"of {data}: re-run chapter 03 on this file")
    return rec


_WORKER_ENGINES: dict = {}


def _worker_engine(member_paths: tuple, grid_digest: str, threads: int | None):
    """The members and their inference engine, built once per worker process."""
    from . import model as M
    from . import inference as I

    key = (member_paths, grid_digest, threads)
    if key not in _WORKER_ENGINES:
        _WORKER_ENGINES.clear()
        models = [M.load_member(p)[0] for p in member_paths]
        _WORKER_ENGINES[key] = (models, I.inference_engine(models, threads=threads))
    return _WORKER_ENGINES[key]


def _predict_block_task(task: dict):
    """Labels of one block of a data set file (a top-level function, so Dask workers can run it)."""
    from . import model as M
    from . import inference as I
    from .dataset import read_dataset

    models, engine = _worker_engine(task["members"], task["grid_digest"], task["threads"])
    data = read_dataset(task["data"], rows=slice(task["start"], task["stop"]))
    if data.grid.digest != task["grid_digest"]:
        raise ValueError(f"{task['data']} is on another wavelength grid than the ensemble")
    x = M.prepare_inputs(data.flux, data.ivar)
    t0 = time.perf_counter()
    mean, std, _ = I.ensemble_predict(models, x, M.LabelScaler.from_json(task["scaler"]),
                                      batch_size=task["batch_size"], engine=engine)
    return mean, std, time.perf_counter() - t0, I.engine_name(engine)


def predict_file(member_paths, scaler, path, *, grid=None, batch_size: int = 256, block: int = 4096,
                 scheduler="synchronous", threads: int | None = None, log=None) -> dict:
    """The ensemble's labels for every spectrum of a data set file, one task per block of rows.

    Each worker loads the members and builds its inference engine once
    (:func:`helpers.inference.inference_engine`), reads its blocks from the file itself (on a cluster:
    a shared path) and returns their labels, which are gathered in the file's row order. Every
    spectrum goes through the same arithmetic whichever worker takes it, so the labels are the
    same for any scheduler and number of workers.

    Parameters
    ----------
    member_paths : list of path-like
        The members' ``.keras`` files (their ``.json`` records beside them).
    scaler : helpers.model.LabelScaler
    path : path-like
        Data set (:mod:`helpers.dataset` format).
    grid : helpers.spectra.Grid, optional
        Refuse the file if its wavelength grid differs (default: the file's own).
    batch_size, block : int
        Spectra per forward pass and per task.
    scheduler : str or helpers.parallel.Scheduler
        Where the blocks run (:mod:`helpers.parallel`).
    threads : int, optional
        Threads of each engine (default: 1 in Dask workers, which share the cores; all cores
        with ``synchronous``).
    log : callable, optional
        Gets the scheduler's line; progress goes to the terminal (:func:`helpers.parallel.progress_stream`).

    Returns
    -------
    dict
        ``mean``, ``std`` (n, n_labels) in label units, in the file's row order; ``seconds`` spent
        predicting (reading excluded, summed over workers); ``wall`` (seconds end to end);
        ``engine``: its description; ``scheduler``: where it ran.
    """

    from . import parallel
    from .dataset import n_spectra, read_grid

    t_wall = time.perf_counter()
    file_grid = read_grid(path)
    if grid is not None and file_grid.digest != grid.digest:
        from .model import ModelMismatchError

        raise ModelMismatchError(f"{path} is on another wavelength grid ({file_grid.n_pixels} pixels) than the "
                         f"ensemble ({grid.n_pixels}); resample it or use matching models")
    n = n_spectra(path)
    if n == 0:
        raise ValueError(f"{path} holds no spectra")
    with parallel.scheduler_of(scheduler, log=log) as sched:
        engine_threads = threads if threads is not None else (None if sched.client is None else 1)
        tasks = [{"members": tuple(str(p) for p in member_paths), "grid_digest": file_grid.digest,
                  "threads": engine_threads, "data": str(path), "start": lo, "stop": min(lo + block, n),
                  "scaler": scaler.to_json(), "batch_size": batch_size} for lo in range(0, n, block)]
        parts = parallel.run_tasks(sched, _predict_block_task, tasks,
                                   keys=[f"predict-rows-{t['start']}-{t['stop']}" for t in tasks],
                                   label="labelling spectra")
        desc = str(sched)
    return {"mean": np.concatenate([p[0] for p in parts]), "std": np.concatenate([p[1] for p in parts]),
            "seconds": float(sum(p[2] for p in parts)), "wall": time.perf_counter() - t_wall,
            "engine": parts[0][3], "scheduler": desc}


def split_rows(n: int, test_fraction: float, val_fraction: float, seed: int):
    """One fixed random split of ``n`` rows into training, validation and test parts.

    The test part (``test_fraction`` of the rows) is never seen before the
    precision table; the validation part (``val_fraction`` of the rows) is what
    early stopping and member selection watch; the rest is the training part.
    The test rows depend only on ``n``, ``test_fraction`` and ``seed``.

    Returns
    -------
    train, val, test : sorted index arrays

    Raises
    ------
    ValueError
        If a fraction is outside (0, 1), they sum to 1 or more, or a part would be empty.
    """
    for name, f in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if not 0.0 < f < 1.0:
            raise ValueError(f"{name} must lie between 0 and 1, got {f}")
    if test_fraction + val_fraction >= 1.0:
        raise ValueError(f"test_fraction + val_fraction = {test_fraction + val_fraction} leaves no "
                         "training part; lower one of them")
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * val_fraction))
    if n_test < 1 or n_val < 1 or n_test + n_val >= n:
        raise ValueError(f"fractions {test_fraction} (test) and {val_fraction} (validation) of {n} "
                         "spectra leave one part empty; use more spectra or other fractions")
    perm = seeds.rng(seed, "split").permutation(n)
    return (np.sort(perm[n_test + n_val:]), np.sort(perm[n_test:n_test + n_val]),
            np.sort(perm[:n_test]))


def fit_rows(train_rows, n_max: int, seed: int) -> np.ndarray:
    """The rows a model is fitted on: all of ``train_rows``, or ``n_max`` of them drawn with ``seed``.

    Chapters 03 (the CNN) and 07 (The Cannon) call it with the same arguments, so both methods
    learn from the same spectra.
    """
    train_rows = np.asarray(train_rows)
    if not n_max or n_max >= len(train_rows):
        return train_rows
    rng = seeds.rng(seed, "fit_rows")
    return np.sort(rng.choice(train_rows, n_max, replace=False))


def load_paper_precision(path=PAPER_PRECISION) -> dict:
    """The paper's precision figures: ``{label: {"training_precision", "ensemble_spread", "source"}}``."""
    out = {}
    with open(path, newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(row for row in fh if not row.startswith("#")):
            out[r["label"]] = {"training_precision": float(r["training_precision"]),
                               "ensemble_spread": float(r["ensemble_spread"]), "unit": r["unit"],
                               "source": r["source"]}
    missing = set(LABELS) - set(out)
    if missing:
        raise ValueError(f"{path} lacks rows for {sorted(missing)}")
    return out


def predictions_table(stars: dict, mean, std, extra: dict | None = None, prefix: str = "cnn"):
    """An :class:`astropy.table.Table` of identifiers, survey/truth labels and a method's labels.

    Parameters
    ----------
    stars : dict of ndarray
        Catalogue of the predicted spectra (as read by :func:`helpers.dataset.read_catalogue`).
    mean, std : ndarray, (n, n_labels)
        Ensemble mean and standard deviation, label units.
    extra : dict, optional
        More columns (e.g. ``in_train``).
    prefix : str
        Column prefix of the method's labels: ``{prefix}_{label}`` and ``{prefix}_e_{label}``.
    """
    from astropy.table import Table

    keep = ["star_id", "cname", "group", "population", "cluster", "snr", "ra", "dec", "R_kpc", "z_kpc",
            "defect", "survey_flag"]
    keep += [f"survey_{k}" for k in LABELS] + [f"survey_e_{k}" for k in LABELS]
    keep += [f"truth_{k}" for k in LABELS] + [f"survey_offset_{k}" for k in LABELS]
    keep += ["truth_alpha_fe", "survey_outlier"]
    t = Table({k: np.asarray(stars[k]) for k in keep if k in stars})
    for j, k in enumerate(LABELS):
        t[f"{prefix}_{k}"] = np.asarray(mean)[:, j]
        t[f"{prefix}_e_{k}"] = np.asarray(std)[:, j]
    for k, v in (extra or {}).items():
        t[k] = np.asarray(v)
    return t


#: Smallest planted offset (label units) for which :func:`inheritance_rows` computes a share.
INHERIT_MIN = {"teff": 20.0, "logg": 0.03, "feh": 0.02, "mg_fe": 0.02, "al_fe": 0.02}


def inheritance_rows(table, rows, prefix: str = "cnn") -> list[dict]:
    """Does a method trained on survey labels inherit their planted systematics?

    For each kind of star (:func:`helpers.survey_labels.kind_of`) and label whose
    median planted offset among ``rows`` is at least :data:`INHERIT_MIN`: that
    offset, the median of survey − truth and of method − truth, and their
    ratio ``share`` (1: the method reproduces the survey's offset; 0: it
    recovers the truth). Simulated tables only (they need ``survey_offset_*``).
    """
    from .survey_labels import KINDS, kind_of

    rows = np.asarray(rows)
    g = lambda c: np.asarray(table[c], float)[rows]
    kind = kind_of(g("truth_teff"), g("truth_logg"), g("truth_feh"))
    out = []
    for name in KINDS:
        m = kind == name
        if m.sum() < 10:
            continue
        for k in LABELS:
            planted = float(np.median(g(f"survey_offset_{k}")[m]))
            if abs(planted) < INHERIT_MIN[k]:
                continue
            d_method = g(f"{prefix}_{k}")[m] - g(f"truth_{k}")[m]
            d_survey = g(f"survey_{k}")[m] - g(f"truth_{k}")[m]
            med = float(np.nanmedian(d_method))
            out.append({"kind": name, "label": k, "n": int(m.sum()), "planted": planted,
                        "survey": float(np.nanmedian(d_survey)), "method": med,
                        "share": med / planted})
    return out


def inheritance_verdict(rows: list[dict], lo: float = 0.5, hi: float = 1.5) -> str:
    """A sentence from :func:`inheritance_rows`: how many planted offsets the method repeats
    (share within [``lo``, ``hi``]), how many it leaves behind (share below ``lo``) and where
    its own bias is larger than the planted one and unrelated to it (above ``hi``, or of the
    opposite sign)."""
    if not rows:
        return "no kind of star in the test part carries a planted offset large enough to measure."
    shares = np.array([r["share"] for r in rows])
    n_rep = int(np.sum((shares >= lo) & (shares <= hi)))
    n_left = int(np.sum((shares >= 0) & (shares < lo)))
    n_own = len(rows) - n_rep - n_left
    parts = [f"of the {len(rows)} planted offsets the network repeats {n_rep} "
             f"(share {lo}–{hi}) and leaves {n_left} behind (share below {lo})"]
    if n_own:
        worst = max(rows, key=lambda r: abs(r["share"]))
        parts.append(f"in {n_own} its own bias is larger than the planted one or of the other sign "
                     f"(e.g. {worst['label']} of {worst['kind']}: {worst['method']:+.3g} against "
                     f"{worst['planted']:+.3g} planted), an error of its own rather than an inherited one")
    tail = ("; where it repeats them it has learned the survey's systematics as if they were physics."
            if n_rep else ".")
    return "; ".join(parts) + tail


def write_predictions(path, table, meta: dict | None = None, overwrite: bool = True) -> Path:
    """Write the prediction table as FITS, atomically (``meta`` goes into the header)."""
    import json

    table = table.copy(copy_data=False)
    for k, v in (meta or {}).items():
        table.meta[k[:8].upper()] = v if isinstance(v, (int, float, str)) else json.dumps(v)[:68]
    with atomic_path(path, overwrite=overwrite) as tmp:
        table.write(tmp, format="fits")
    return Path(path)


def read_predictions(path):
    """Read a prediction table written by :func:`write_predictions`.

    Raises
    ------
    FileNotFoundError
        If the file is missing (train the ensemble, notebook 03, first).
    ValueError
        If it lacks the CNN columns.
    """
    from astropy.table import Table

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; run notebook 03_train_ensemble first")
    t = Table.read(path, format="fits")
    missing = [f"cnn_{k}" for k in LABELS if f"cnn_{k}" not in t.colnames]
    if missing:
        raise ValueError(f"{path} is not a prediction table (no columns {missing})")
    for c in t.colnames:
        if t[c].dtype.kind == "S":  # FITS gives bytes for strings
            t[c] = np.char.decode(np.asarray(t[c]), "utf-8")
        elif t[c].dtype.kind == "f" and hasattr(t[c], "mask"):  # NaN-masked floats: plain NaN
            t[c] = np.asarray(t[c].filled(np.nan), float)
    return t


def precision_rows(table, train, test, paper: dict | None = None) -> list[dict]:
    """One row per label: the paper's figures beside ours.

    Parameters
    ----------
    table : Table
        From :func:`predictions_table`.
    train, test : ndarray of int
        Rows of ``table`` in the training and test sets.
    paper : dict, optional
        From :func:`load_paper_precision`.

    Returns
    -------
    list of dict
        ``spread`` (median ensemble σ, test set), ``train_vs_survey`` and ``test_vs_survey``
        (robust scatter of CNN − survey label), ``test_vs_truth`` (CNN − truth; NaN without
        truth). The bounds are in :func:`bound_rows`.
    """
    rows = []
    has_truth = "truth_teff" in table.colnames
    for k in LABELS:
        cnn, surv = np.asarray(table[f"cnn_{k}"], float), np.asarray(table[f"survey_{k}"], float)
        r = {"label": k,
             "spread": float(np.nanmedian(np.asarray(table[f"cnn_e_{k}"], float)[test])),
             "train_vs_survey": robust_scatter((cnn - surv)[train]),
             "test_vs_survey": robust_scatter((cnn - surv)[test]),
             "test_vs_truth": float("nan")}
        if has_truth:
            r["test_vs_truth"] = robust_scatter((cnn - np.asarray(table[f"truth_{k}"], float))[test])
        if paper:
            r["paper_training"] = paper[k]["training_precision"]
            r["paper_spread"] = paper[k]["ensemble_spread"]
        rows.append(r)
    return rows


def bound_rows(table, rows, crb_known, crb_marginal, van_trees_sigma=None, baseline=None,
               prefix: str = "cnn") -> list[dict]:
    """The estimator against the bounds that fit it, one row per label (simulated tables).

    ``rows``: the stars with bounds; ``crb_known`` / ``crb_marginal`` (len(rows), 5): the
    unbiased bound with the nuisances known / marginalised; ``van_trees_sigma`` (5,): the
    population Bayesian bound on the rms error; ``baseline``: :func:`helpers.precision.prior_only_baseline`.
    Returns ``scatter`` and ``rms`` of method − truth, the median bounds, ``over_bound``
    (:func:`helpers.precision.error_over_bound` with the marginalised bound), ``van_trees``,
    ``rms_over_vt`` and ``from_others`` (robust scatter of the label predicted from the others).
    """
    from .precision import error_over_bound

    rows = np.asarray(rows)
    out = []
    for j, k in enumerate(LABELS):
        err = (np.asarray(table[f"{prefix}_{k}"], float) - np.asarray(table[f"truth_{k}"], float))[rows]
        rms = float(np.sqrt(np.nanmean(err ** 2)))
        r = {"label": k, "scatter": robust_scatter(err), "rms": rms,
             "crb_known": float(np.median(crb_known[:, j])), "crb": float(np.median(crb_marginal[:, j])),
             "over_bound": error_over_bound(err, crb_marginal[:, j]),
             "van_trees": float("nan"), "rms_over_vt": float("nan"), "from_others": float("nan")}
        if van_trees_sigma is not None:
            r["van_trees"] = float(van_trees_sigma[j])
            r["rms_over_vt"] = rms / float(van_trees_sigma[j])
        if baseline is not None:
            r["from_others"] = baseline[j]["from_others_scatter"]
        out.append(r)
    return out


def calibration_rows(table, rows, reference: str = "truth") -> list[dict]:
    """How well the ensemble spread predicts the actual error, per label.

    ``within_1`` and ``within_2``: fraction of stars with |CNN − reference| within 1 and 2
    ensemble σ (a calibrated Gaussian σ gives 0.683 and 0.954); ``scale``: robust scatter of
    (CNN − reference)/σ (1 for a calibrated σ; the factor to inflate σ by otherwise).
    """
    out = []
    for k in LABELS:
        err = np.asarray(table[f"cnn_{k}"], float)[rows] - np.asarray(table[f"{reference}_{k}"], float)[rows]
        sig = np.asarray(table[f"cnn_e_{k}"], float)[rows]
        f = calibration_fractions(err, sig)
        ok = sig > 0
        out.append({"label": k, "within_1": f[1.0], "within_2": f[2.0],
                    "scale": robust_scatter(err[ok] / sig[ok])})
    return out


#: The parameters of :func:`fisher_for_rows` after the five labels.
NUISANCE_PARAMETERS = ("alpha_fe", "vmic", "vsini", "rv") + tuple(
    f"continuum_{s}_{k}" for s in ("HR10", "HR21") for k in ("offset", "slope", "curvature"))


def fisher_for_rows(fm, stars: dict, ivar, rows, d_vsini: float = 0.5, d_rv: float = 0.2) -> np.ndarray:
    """Fisher matrices of the five labels and the nuisances for spectra ``rows`` of a simulated set.

    Parameters, in order: the five labels, then :data:`NUISANCE_PARAMETERS` ([α/Fe],
    vmic, v sin i, the residual RV, and a continuum offset, slope and curvature per
    setup), at each star's true values. Label and [α/Fe]/vmic derivatives are the
    emulator's exact ones; v sin i and RV by finite differences (``d_vsini``,
    ``d_rv`` km/s); the continuum terms multiply the flux. The noise is the survey's
    own model (:meth:`helpers.noise.NoiseModel.fisher`) from each star's
    ``counts_e`` and ``sky_e``; ``ivar`` (of those rows) marks masked pixels.

    Returns
    -------
    ndarray, (len(rows), 5 + len(NUISANCE_PARAMETERS), same)
    """
    from .noise import NoiseModel

    rows = np.asarray(rows)
    for col in ("counts_e", "sky_e", "truth_alpha_fe"):
        if col not in stars:
            raise KeyError(f"the catalogue has no column {col!r}: the bound needs a survey made "
                           "by helpers.survey 0.3 or later (re-run chapter 01)")
    labels = np.column_stack([stars[f"truth_{k}"][rows] for k in LABELS]).astype(float)
    nuis = np.column_stack([stars["truth_vmic"][rows], stars["truth_vsini"][rows],
                            stars["truth_rv"][rows]]).astype(float)
    alpha = np.asarray(stars["truth_alpha_fe"], float)[rows]
    counts = np.asarray(stars["counts_e"], float)[rows]
    sky = np.asarray(stars["sky_e"], float)[rows]
    nm = NoiseModel(fm.grid)
    grid = fm.grid
    n_par = len(LABELS) + len(NUISANCE_PARAMETERS)
    out = np.empty((len(rows), n_par, n_par))
    for i in range(0, len(rows), 50):  # 50 stars: ~300 MB of Jacobian at a time
        sl = slice(i, i + 50)
        lab, nu, al = labels[sl], nuis[sl], alpha[sl]
        flux = fm.render(lab, nu, alpha_fe=al).astype(float)
        J = np.empty((len(lab), grid.n_pixels, n_par))
        J[:, :, :7] = fm.jacobian(lab, nu, alpha_fe=al, extra=True)
        lo = nu.copy()
        hi = nu.copy()
        lo[:, 1] = np.maximum(nu[:, 1] - d_vsini, 0.0)
        hi[:, 1] = lo[:, 1] + 2 * d_vsini
        J[:, :, 7] = (fm.render(lab, hi, alpha_fe=al) - fm.render(lab, lo, alpha_fe=al)) / (2 * d_vsini)
        lo, hi = nu.copy(), nu.copy()
        lo[:, 2] -= d_rv
        hi[:, 2] += d_rv
        J[:, :, 8] = (fm.render(lab, hi, alpha_fe=al) - fm.render(lab, lo, alpha_fe=al)) / (2 * d_rv)
        col = 9
        for s in ("HR10", "HR21"):
            basis = np.zeros((3, grid.n_pixels))
            try:
                px = grid.setup_slice(s)
            except KeyError:  # a grid without this setup: its continuum terms carry no information
                J[:, :, col:col + 3] = 0.0
                col += 3
                continue
            u = np.linspace(-1.0, 1.0, px.stop - px.start)
            basis[:, px] = np.vstack([np.ones_like(u), u, u ** 2 - 1.0 / 3.0])
            J[:, :, col:col + 3] = flux[:, :, None] * basis.T[None]
            col += 3
        out[sl] = nm.fisher(J, flux, counts[sl], sky[sl], mask=np.asarray(ivar[sl]) > 0)
    return out


def crb_for_rows(fm, stars: dict, ivar, rows, marginal: bool = True) -> np.ndarray:
    """Cramér–Rao bound (label units) for the spectra ``rows`` of a simulated data set.

    With ``marginal`` (the default) the nuisances of :func:`fisher_for_rows` are
    unknown and marginalised, which is the situation of an estimator that sees only
    the spectrum; otherwise they are taken as known. Returns ``(len(rows), 5)``.
    """
    from .precision import bounds_from_fisher, marginal_fisher

    F = fisher_for_rows(fm, stars, ivar, rows)
    k = len(LABELS)
    return bounds_from_fisher(marginal_fisher(F, k) if marginal else F[:, :k, :k])
