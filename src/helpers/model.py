"""The CNN ensemble: build, train, select, save with a record, load safely, predict, input gradients.

The default architecture is the Gaia-ESO GIRAFFE network of the same group
(Nepal et al. 2023, the closest public description of the Ambrosch et al.
network): three Conv1D blocks with LeakyReLU, max-pooling, L2 regularisation
and dropout, and a dense head; mean squared error, Adam, batch 64, early
stopping with the best weights restored. Every choice is a field of
:class:`ModelConfig`.

The code is written against ``keras`` only (Keras 3), so it runs under the
TensorFlow (default), JAX and PyTorch backends; :func:`input_gradients` has a
small branch per backend because ``keras.ops`` has no gradient function.

Input contract: continuum-normalised flux on the data set's wavelength grid,
float32, masked pixels (``ivar = 0``) replaced by 1 (the continuum). Labels are
min-max scaled with limits from the training set.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # keep TensorFlow's C++ log out of the book
# oneDNN kernels for TensorFlow on x86 CPUs: about 4x faster training and inference on this
# network (bench/bench_cnn.py). Read once, when TensorFlow is first imported.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import contextlib  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402


@contextlib.contextmanager
def _native_stderr_silenced():
    """Send file descriptor 2 to /dev/null for a moment (TensorFlow's C++ start-up notice
    about oneDNN is written there before its log level applies). Python exceptions are
    unaffected: they are raised, not printed, inside the block."""
    fd = 2  # the C++ library writes to the process's descriptor 2, whatever sys.stderr is
    sys.stderr.flush()
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


if "tensorflow" not in sys.modules and os.environ["KERAS_BACKEND"] == "tensorflow":
    with _native_stderr_silenced():
        import tensorflow  # noqa: F401
import keras  # noqa: E402

from . import LABELS  # noqa: E402
from .fileio import write_json  # noqa: E402

__all__ = ["ModelConfig", "LabelScaler", "prepare_inputs", "build_model", "count_flops",
           "train_member", "train_ensemble", "select_members", "save_member", "load_member",
           "ModelMismatchError",
           "input_gradients", "backend"]

RECORD_VERSION = 1


def backend() -> str:
    """The Keras backend in use (``tensorflow``, ``jax`` or ``torch``)."""
    return keras.backend.backend()


@dataclass
class ModelConfig:
    """Architecture and training settings (defaults: the group's GIRAFFE network).

    Attributes
    ----------
    filters, kernels : tuple of int
        Conv1D filters and kernel sizes [pixels] of the three blocks.
    pools : tuple of int
        Max-pooling size after each block (0: none).
    l2 : float
        L2 factor of the convolution kernels.
    dropout : float
        Dropout after the last convolution and after the first two dense layers.
    dense : tuple of int
        Units of the dense head.
    negative_slope : float
        LeakyReLU slope for negative inputs.
    learning_rate : float
        Adam learning rate.
    batch_size : int
    epochs : int
        Upper limit; early stopping usually ends training before.
    patience : int
        Early-stopping patience [epochs] on the validation loss.
    """

    filters: tuple = (8, 6, 4)
    kernels: tuple = (10, 15, 10)
    pools: tuple = (2, 2, 0)
    l2: float = 0.005
    dropout: float = 0.2
    dense: tuple = (64, 128, 32)
    negative_slope: float = 0.3
    learning_rate: float = 1e-4
    batch_size: int = 64
    epochs: int = 500
    patience: int = 25

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass
class LabelScaler:
    """Min-max scaling of labels with limits from the training set.

    Attributes
    ----------
    lo, hi : ndarray, shape (n_labels,)
        Minimum and maximum of each training label (label units).
    names : tuple of str
    """

    lo: np.ndarray
    hi: np.ndarray
    names: tuple = LABELS

    @classmethod
    def fit(cls, y, names=LABELS) -> "LabelScaler":
        y = np.asarray(y, float)
        if not np.all(np.isfinite(y)):
            raise ValueError("training labels contain NaN; apply the training-set cuts first")
        return cls(y.min(axis=0), y.max(axis=0), tuple(names))

    def scale(self, y):
        return ((np.asarray(y, float) - self.lo) / (self.hi - self.lo)).astype(np.float32)

    def unscale(self, s):
        return np.asarray(s, float) * (self.hi - self.lo) + self.lo

    def unscale_sigma(self, s):
        return np.asarray(s, float) * (self.hi - self.lo)

    def to_json(self) -> dict:
        return {"names": list(self.names), "lo": self.lo.tolist(), "hi": self.hi.tolist()}

    @classmethod
    def from_json(cls, d) -> "LabelScaler":
        return cls(np.array(d["lo"], float), np.array(d["hi"], float), tuple(d["names"]))


def prepare_inputs(flux, ivar) -> np.ndarray:
    """Model input: flux as float32 with masked pixels set to the continuum (1), shape (n, n_pixels, 1)."""
    x = np.where(np.asarray(ivar) > 0, np.asarray(flux, np.float32), np.float32(1.0))
    if not np.all(np.isfinite(x)):
        raise ValueError("input flux contains NaN or infinity at unmasked pixels")
    return x[..., None].astype(np.float32)


def build_model(n_pixels: int, n_labels: int = len(LABELS), cfg: ModelConfig = ModelConfig(),
                seed: int | None = None) -> keras.Model:
    """The Conv1D network of :class:`ModelConfig` for ``n_pixels`` inputs and ``n_labels`` outputs.

    With ``seed``, every layer's initial weights and dropout draws come from seeds derived from it
    (never from Python's global ``random``, which other threads of a process, e.g. a Dask worker's,
    draw from at unpredictable moments); without, Keras's defaults apply.
    """
    from . import seeds

    streams = iter(seeds.sequence(seed, "member_layers").generate_state(64) % (2**31 - 1)) if seed is not None else None

    def init():
        return keras.initializers.GlorotUniform(seed=int(next(streams))) if streams is not None else "glorot_uniform"

    def drop():
        return keras.layers.Dropout(cfg.dropout, seed=int(next(streams)) if streams is not None else None)

    reg = keras.regularizers.L2(cfg.l2)
    inp = keras.Input(shape=(n_pixels, 1), name="flux")
    x = inp
    for i, (f, k, p) in enumerate(zip(cfg.filters, cfg.kernels, cfg.pools)):
        x = keras.layers.Conv1D(f, k, kernel_regularizer=reg, kernel_initializer=init(), name=f"conv{i + 1}")(x)
        x = keras.layers.LeakyReLU(negative_slope=cfg.negative_slope)(x)
        if p:
            x = keras.layers.MaxPooling1D(p)(x)
    x = drop()(x)
    x = keras.layers.Flatten()(x)
    for i, units in enumerate(cfg.dense):
        x = keras.layers.Dense(units, kernel_initializer=init(), name=f"dense{i + 1}")(x)
        x = keras.layers.LeakyReLU(negative_slope=cfg.negative_slope)(x)
        if i < len(cfg.dense) - 1:
            x = drop()(x)
    out = keras.layers.Dense(n_labels, kernel_initializer=init(), name="labels")(x)
    model = keras.Model(inp, out, name="giraffe_cnn")
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate), loss="mse")
    return model


def count_flops(n_pixels: int, n_labels: int = len(LABELS), cfg: ModelConfig = ModelConfig(),
                conv_only: bool = False) -> float:
    """Floating-point operations of one forward pass (2 per multiply-add; activations ignored).

    With ``conv_only``, those of the convolution layers alone.
    """
    flops = 0.0
    length, channels = n_pixels, 1
    for f, k, p in zip(cfg.filters, cfg.kernels, cfg.pools):
        length = length - k + 1
        flops += 2.0 * length * f * k * channels
        channels = f
        if p:
            length //= p
    if conv_only:
        return flops
    width = length * channels
    for units in (*cfg.dense, n_labels):
        flops += 2.0 * width * units
        width = units
    return flops


def train_member(x_train, y_train, x_val, y_val, cfg: ModelConfig, seed: int, log_every: int = 1,
                 checkpoint=None, checkpoint_key: str = ""):
    """Train one network from seed ``seed``; returns ``(model, history dict, seconds)``.

    Weights, dropout and the order of the training spectra in every epoch follow from ``seed``
    alone, so the same seed gives the same member in any process (TensorFlow's sums also depend
    on its thread count, in the last float32 bits). The epochs are run one ``fit`` call at a time
    on spectra put in that epoch's order here: Keras's own ``shuffle=True`` draws the order inside
    a TensorFlow graph whose operation seeds depend on what else the process built before. Early
    stopping watches the validation loss with ``cfg.patience`` and restores the best weights.

    Parameters
    ----------
    checkpoint : path-like, optional
        A folder where the state after every epoch is kept (model with optimizer, best weights,
        history), so a killed training resumes at the epoch it reached, with the same numbers as
        one that ran through (tested). Removed when the member is finished.
    checkpoint_key : str
        What the checkpoint must have been made for (e.g. the member's fit digest and seed); a
        checkpoint made for anything else is ignored and replaced.
    """
    from . import seeds

    keras.utils.set_random_seed(int(seed))
    if backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    x_train, y_train = np.asarray(x_train), np.asarray(y_train)
    key = f"{checkpoint_key}|{seed}|{json.dumps(cfg.as_dict(), sort_keys=True)}"
    state = _read_checkpoint(checkpoint, key) if checkpoint is not None else None
    if state is not None:
        model, history, best, wait, start = state["model"], state["history"], state["best"], state["wait"], state["epoch"]
        best_weights = state["best_weights"]
        spent = state["seconds"]
    else:
        model = build_model(x_train.shape[1], y_train.shape[1], cfg, seed=seed)
        history, best, best_weights, wait, start, spent = {}, np.inf, None, 0, 0, 0.0
    t0 = time.perf_counter()
    for epoch in range(start, cfg.epochs):
        if wait >= cfg.patience:
            break
        order = seeds.rng(seed, "member_epochs", epoch).permutation(len(x_train))
        h = model.fit(x_train[order], y_train[order], validation_data=(x_val, y_val), batch_size=cfg.batch_size,
                      epochs=epoch + 1, initial_epoch=epoch, verbose=2 if log_every else 0, shuffle=False)
        for k, vals in h.history.items():
            history.setdefault(k, []).extend(float(v) for v in vals)
        val = history["val_loss"][-1]
        if val < best:
            best, best_weights, wait = val, model.get_weights(), 0
        else:
            wait += 1
        if checkpoint is not None:
            _write_checkpoint(checkpoint, key, model, best_weights, history, best, wait, epoch + 1,
                              spent + time.perf_counter() - t0)
    if best_weights is not None:
        model.set_weights(best_weights)
    return model, history, spent + time.perf_counter() - t0


def _write_checkpoint(folder, key, model, best_weights, history, best, wait, epoch, seconds) -> None:
    """Keep the training state after ``epoch`` epochs: a new sub-folder, then the pointer
    ``state.json`` replaced atomically (a kill at any moment leaves the previous state valid)."""
    folder = Path(folder)
    sub = folder / f"epoch-{epoch:04d}"
    if sub.exists():
        shutil.rmtree(sub)
    sub.mkdir(parents=True)
    model.save(sub / "model.keras")  # with the optimizer's state
    if best_weights is not None:
        np.savez(sub / "best.npz", *best_weights)
    write_json(folder / "state.json", {"key": key, "epoch": epoch, "folder": sub.name, "history": history,
                                       "seed_states": [np.asarray(g.state.value).tolist() for g in _seed_generators(model)],
                                       "best": None if not np.isfinite(best) else float(best), "wait": wait,
                                       "seconds": seconds, "has_best": best_weights is not None})
    for old in folder.glob("epoch-*"):
        if old != sub:
            shutil.rmtree(old, ignore_errors=True)


def _seed_generators(model) -> list:
    """The random-number generators of a model's layers (dropout), in layer order."""
    return [layer.seed_generator for layer in model.layers if getattr(layer, "seed_generator", None) is not None]


def _read_checkpoint(folder, key):
    """The state :func:`_write_checkpoint` kept for ``key``, or None (none, another key, unreadable)."""
    folder = Path(folder)
    try:
        with open(folder / "state.json", encoding="utf-8") as fh:
            st = json.load(fh)
        if st.get("key") != key:
            return None
        sub = folder / st["folder"]
        model = keras.saving.load_model(sub / "model.keras", safe_mode=True)
        gens = _seed_generators(model)
        if len(gens) != len(st["seed_states"]):
            return None
        for g, v in zip(gens, st["seed_states"]):  # Keras saves the generators' seeds, not how far they ran
            g.state.assign(np.asarray(v, dtype=np.asarray(g.state.value).dtype))
        best_weights = None
        if st["has_best"]:
            with np.load(sub / "best.npz") as z:
                best_weights = [z[f"arr_{i}"] for i in range(len(z.files))]
    except (OSError, ValueError, KeyError):
        return None
    return {"model": model, "best_weights": best_weights, "history": st["history"], "wait": int(st["wait"]),
            "best": np.inf if st["best"] is None else float(st["best"]), "epoch": int(st["epoch"]),
            "seconds": float(st["seconds"])}


def member_seed(seed: int, i: int) -> int:
    """Sub-seed of ensemble member ``i`` (derived from the notebook's one seed)."""
    from . import seeds

    return int(seeds.sequence(seed, "member", i).generate_state(1)[0] % (2**31 - 1))


def save_member(model, path, *, scaler: LabelScaler, grid, cfg: ModelConfig, seed: int,
                history: dict, seconds: float, extra: dict | None = None) -> Path:
    """Save a model as ``<path>.keras`` plus ``<path>.json`` (its record), both atomically.

    The ``.keras`` file holds the architecture and weights, not the optimizer's state (a third of
    the size; a finished member is only evaluated)."""
    from .records import package_versions

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.keras")
    bare = keras.Model.from_config(model.get_config())  # the weights without the optimizer's state
    bare.set_weights(model.get_weights())
    bare.save(tmp)
    os.replace(tmp, path.with_suffix(".keras"))
    record = {
        "record_version": RECORD_VERSION, "labels": list(scaler.names), "scaler": scaler.to_json(),
        "grid": {"digest": grid.digest, "n_pixels": int(grid.n_pixels), "wmin": float(grid.wave[0]),
                 "wmax": float(grid.wave[-1]), "setups": [s.name for s in grid.setups]},
        "architecture": cfg.as_dict(), "seed": int(seed), "backend": backend(),
        "packages": package_versions(), "history": history, "train_seconds": round(seconds, 2),
        "best_val_loss": float(min(history["val_loss"])), **(extra or {}),
    }
    write_json(path.with_suffix(".json"), record)
    return path.with_suffix(".keras")


class ModelMismatchError(ValueError):
    """A saved model that does not fit the data it is asked to predict."""


def load_member(path, grid=None, labels=LABELS):
    """Load a model and its record (Keras safe mode), checking grid and labels.

    Raises
    ------
    FileNotFoundError
        If the ``.keras`` file or its ``.json`` record is missing.
    ModelMismatchError
        If the data's wavelength grid or the label names differ from the model's.
    """
    path = Path(path)
    kpath, jpath = path.with_suffix(".keras"), path.with_suffix(".json")
    for p in (kpath, jpath):
        if not p.exists():
            raise FileNotFoundError(f"{p} is missing; train the ensemble (notebook 03) first")
    with open(jpath, encoding="utf-8") as fh:
        record = json.load(fh)
    if grid is not None and record["grid"]["digest"] != grid.digest:
        g = record["grid"]
        raise ModelMismatchError(
            f"{kpath.name} was trained on a grid of {g['n_pixels']} pixels ({g['wmin']:.2f}-{g['wmax']:.2f} Å, "
            f"{'+'.join(g['setups'])}); the data have {grid.n_pixels} pixels ({grid.wave[0]:.2f}-"
            f"{grid.wave[-1]:.2f} Å). Resample the data to the model's grid or retrain.")
    if tuple(record["labels"]) != tuple(labels):
        raise ModelMismatchError(f"{kpath.name} predicts {record['labels']}, but {list(labels)} were asked for")
    model = keras.saving.load_model(kpath, safe_mode=True)
    return model, record


def select_members(val_losses, percentile: float = 80.0) -> np.ndarray:
    """Indices of the members kept: validation loss not above the ``percentile``-th percentile."""
    v = np.asarray(val_losses, float)
    return np.nonzero(v <= np.percentile(v, percentile))[0]


def input_gradients(model, x, label_index: int, batch_size: int = 256) -> np.ndarray:
    """d(scaled output ``label_index``)/d(input flux) for every spectrum, shape (n, n_pixels).

    One branch per backend, since ``keras.ops`` has no gradient function.
    """
    out = []
    b = backend()
    for i in range(0, len(x), batch_size):
        xb = np.asarray(x[i:i + batch_size], np.float32)
        if b == "tensorflow":
            import tensorflow as tf

            xt = tf.convert_to_tensor(xb)
            with tf.GradientTape() as tape:
                tape.watch(xt)
                y = model(xt, training=False)[:, label_index]
            g = tape.gradient(y, xt).numpy()
        elif b == "jax":
            import jax

            tv = [v.value for v in model.trainable_variables]
            ntv = [v.value for v in model.non_trainable_variables]

            def f(inp):
                y, _ = model.stateless_call(tv, ntv, inp, training=False)
                return y[:, label_index].sum()

            g = np.asarray(jax.grad(f)(xb))
        elif b == "torch":
            import torch

            xt = torch.tensor(xb, requires_grad=True)
            y = model(xt, training=False)[:, label_index].sum()
            y.backward()
            g = xt.grad.detach().cpu().numpy()
        else:
            raise NotImplementedError(f"input gradients are not implemented for the {b} backend")
        out.append(g[..., 0])
    return np.concatenate(out)


def _read_rows(path, rows, grid_digest: str, label_source: str = "survey"):
    """Inputs and raw labels of ``rows`` (any order) of a data set, in that order."""
    from .dataset import read_dataset

    rows = np.asarray(rows, np.int64)
    u, inv = np.unique(rows, return_inverse=True)
    data = read_dataset(path, rows=u)
    if data.grid.digest != grid_digest:
        raise ModelMismatchError(f"{path} is on another wavelength grid than the ensemble's scaler and models")
    return prepare_inputs(data.flux, data.ivar)[inv], data.labels(label_source)[inv]


def _pin_tf_threads() -> None:
    """In a Dask worker, hold TensorFlow to the worker's thread count (``TF_NUM_INTRAOP_THREADS``,
    set by :func:`helpers.parallel.open_scheduler`) before its first operation."""
    n = os.environ.get("TF_NUM_INTRAOP_THREADS")
    if not n or backend() != "tensorflow":
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(n))
        tf.config.threading.set_inter_op_parallelism_threads(int(os.environ.get("TF_NUM_INTEROP_THREADS", n)))
    except RuntimeError:  # already initialised in this process: keep what it has
        pass


def _train_member_task(task: dict) -> dict:
    """Train and save one ensemble member (a top-level function, so Dask workers can run it).

    The worker reads its training and validation spectra from the data set file itself (on a
    cluster: a shared path), trains from the member's seed and writes ``member_XX.keras`` +
    ``.json`` atomically; only the record comes back. Training runs in a thread of its own: Keras
    keeps its state per thread, and a worker may run its tasks in any of its threads, so a fresh
    thread makes a member the same whichever tasks ran in that worker before."""
    import threading

    box: dict = {}

    def work():
        try:
            box["out"] = _train_member_now(task)
        except BaseException as exc:  # re-raised in the task's thread
            box["err"] = exc

    t = threading.Thread(target=work, name=f"member-{task['index']}")
    t.start()
    t.join()
    if "err" in box:
        raise box["err"]
    return box["out"]


def _train_member_now(task: dict) -> dict:
    _pin_tf_threads()
    scaler = LabelScaler.from_json(task["scaler"])
    x_fit, y_fit = _read_rows(task["data"], task["fit_rows"], task["grid_digest"])
    x_val, y_val = _read_rows(task["data"], task["val_rows"], task["grid_digest"])
    cfg = ModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in task["architecture"].items()})
    ckpt = Path(task["path"]).with_name(Path(task["path"]).name + ".training")
    model, hist, seconds = train_member(x_fit, scaler.scale(y_fit), x_val, scaler.scale(y_val), cfg,
                                        task["seed"], log_every=0, checkpoint=ckpt,
                                        checkpoint_key=task["fit_digest"])
    from .dataset import read_grid

    path = save_member(model, task["path"], scaler=scaler, grid=read_grid(task["data"]), cfg=cfg,
                       seed=task["seed"], history=hist, seconds=seconds,
                       extra={"fit_digest": task["fit_digest"], "member": task["index"]})
    shutil.rmtree(ckpt, ignore_errors=True)
    keras.backend.clear_session()
    return {"path": str(path), "seed": task["seed"], "best_val_loss": float(min(hist["val_loss"])),
            "epochs": len(hist["val_loss"]), "seconds": seconds, "history": hist}


#: What the training code is: the functions and classes whose code decides a member's weights.
_TRAINING_CODE = ("ModelConfig", "LabelScaler", "prepare_inputs", "build_model", "train_member", "member_seed",
                  "_read_rows", "_train_member_now")


def _normalised_code(source: str, names=None) -> str:
    """The top-level definitions ``names`` (all: None) of ``source`` as dumped syntax trees, docstrings removed."""
    import ast

    tree = ast.parse(source)
    keep = [n for n in tree.body if names is None or getattr(n, "name", None) in names]
    for node in ast.walk(ast.Module(body=keep, type_ignores=[])):
        body = getattr(node, "body", None)
        if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                and isinstance(getattr(body[0], "value", None), ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return "\n".join(ast.dump(n) for n in keep)


def training_code_digest() -> str:
    """SHA-256 of the code that trains a member: :data:`_TRAINING_CODE` of this module and the whole
    of :mod:`helpers.seeds`, as syntax trees without docstrings (so an edited comment, docstring or
    an unrelated function of this module does not make shipped members stale; a changed line of
    the trainer does)."""
    import hashlib

    from . import seeds

    own = _normalised_code(Path(__file__).read_text(encoding="utf-8"), set(_TRAINING_CODE))
    return hashlib.sha256((own + _normalised_code(Path(seeds.__file__).read_text(encoding="utf-8"))).encode()).hexdigest()


def fit_digest(data_digest: str, fit_rows, val_rows) -> str:
    """Identity of what a member is fitted to and how: the data set's content digest, the fit and
    validation rows, and the training code (:func:`training_code_digest`). A member trained on
    anything else, or by other training code, does not match it."""
    import hashlib

    h = hashlib.sha256(data_digest.encode())
    h.update(training_code_digest().encode())
    for r in (fit_rows, val_rows):
        h.update(np.asarray(r, np.int64).tobytes())
        h.update(b"|")
    return h.hexdigest()


def _finished_member(path: Path, seed: int, cfg: ModelConfig, digest: str) -> dict | None:
    """The record of a member already trained with these settings, or None."""
    jpath, kpath = path.with_suffix(".json"), path.with_suffix(".keras")
    if not (jpath.exists() and kpath.exists()):
        return None
    try:
        with open(jpath, encoding="utf-8") as fh:
            rec = json.load(fh)
    except (OSError, ValueError):
        return None
    if rec.get("seed") != seed or rec.get("architecture") != cfg.as_dict() or rec.get("fit_digest") != digest:
        return None
    hist = rec["history"]
    return {"path": str(kpath), "seed": seed, "best_val_loss": float(min(hist["val_loss"])),
            "epochs": len(hist["val_loss"]), "seconds": float(rec["train_seconds"]), "history": hist,
            "reused": True}


def train_ensemble(data_path, fit_rows, val_rows, *, n_models: int, cfg: ModelConfig, seed: int,
                   out_dir, scaler: LabelScaler, log=print, scheduler="synchronous",
                   resume: bool = True, on_member=None, accept_digests=()) -> list[dict]:
    """Train ``n_models`` members from derived seeds, one task per member, and save each
    (``member_XX.keras`` + ``.json``).

    Parameters
    ----------
    data_path : path-like
        The (cleaned) training data set; workers read their rows from it.
    fit_rows, val_rows : array_like of int
        Rows trained on and rows for early stopping, in the order given.
    n_models, cfg, seed :
        Members, architecture and the run's seed (member ``i`` gets :func:`member_seed`).
    out_dir : path-like
    scaler : LabelScaler
        Scales the survey labels of the rows.
    log : callable, optional
        One line per member (and the scheduler's line).
    scheduler : str or helpers.parallel.Scheduler
        Where the members train (:mod:`helpers.parallel`). TensorFlow's sums depend on its thread
        count in the last float32 bits, so members trained in workers of one thread each are the
        same for any number of workers, while ``synchronous`` trains in this process with its own
        thread count.
    resume : bool
        Keep members already in ``out_dir`` that were trained with the same seed, architecture,
        data and rows (a killed run resumes from the last complete member, and a member killed
        mid-training from its last epoch).
    on_member : callable, optional
        ``on_member(index, record)`` as each newly trained member is written.
    accept_digests : iterable of str
        Further fit digests under which a member in ``out_dir`` counts as finished: the reference
        ensemble's, when :func:`helpers.reference.match` found its training set equal to this one
        within the sketch tolerance rather than bit for bit.

    Returns
    -------
    list of dict
        Per member: ``path``, ``seed``, ``best_val_loss``, ``epochs``, ``seconds``, ``history``
        (and ``reused`` for members kept from an earlier run).
    """

    from . import parallel
    from .dataset import content_digest, read_grid

    digest = fit_digest(content_digest(data_path), fit_rows, val_rows)
    grid = read_grid(data_path)
    members: list = [None] * n_models
    tasks, which = [], []
    for i in range(n_models):
        s = member_seed(seed, i)
        path = Path(out_dir) / f"member_{i:02d}"
        done = None
        for d in (digest, *accept_digests) if resume else ():
            done = done or _finished_member(path, s, cfg, d)
        if done:
            members[i] = done
            if log:
                log(f"member {i + 1}/{n_models} (seed {s}): kept from an earlier run with the same settings")
            continue
        tasks.append({"data": str(data_path), "fit_rows": np.asarray(fit_rows, np.int64),
                      "val_rows": np.asarray(val_rows, np.int64), "scaler": scaler.to_json(),
                      "architecture": cfg.as_dict(), "seed": s, "index": i, "path": str(path),
                      "grid_digest": grid.digest, "fit_digest": digest})
        which.append(i)

    def done(k, rec):
        i = which[k]
        members[i] = rec
        if log:
            log(f"member {i + 1}/{n_models} (seed {rec['seed']}): {rec['epochs']} epochs, best validation "
                f"loss {rec['best_val_loss']:.4g}, {rec['seconds']:.0f} s")
        if on_member is not None:
            on_member(i, rec)

    if tasks:
        with parallel.scheduler_of(scheduler, log=log) as sched:
            parallel.run_tasks(sched, _train_member_task, tasks, keys=[f"member-{i:02d}" for i in which],
                               on_result=done, retries=1, label="training members")
    return members
