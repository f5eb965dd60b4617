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
           "ModelMismatchError", "ensemble_predict", "inference_engine", "engine_name", "FusedEnsemble",
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


def build_model(n_pixels: int, n_labels: int = len(LABELS), cfg: ModelConfig = ModelConfig()) -> keras.Model:
    """The Conv1D network of :class:`ModelConfig` for ``n_pixels`` inputs and ``n_labels`` outputs."""
    reg = keras.regularizers.L2(cfg.l2)
    inp = keras.Input(shape=(n_pixels, 1), name="flux")
    x = inp
    for i, (f, k, p) in enumerate(zip(cfg.filters, cfg.kernels, cfg.pools)):
        x = keras.layers.Conv1D(f, k, kernel_regularizer=reg, name=f"conv{i + 1}")(x)
        x = keras.layers.LeakyReLU(negative_slope=cfg.negative_slope)(x)
        if p:
            x = keras.layers.MaxPooling1D(p)(x)
    x = keras.layers.Dropout(cfg.dropout)(x)
    x = keras.layers.Flatten()(x)
    for i, units in enumerate(cfg.dense):
        x = keras.layers.Dense(units, name=f"dense{i + 1}")(x)
        x = keras.layers.LeakyReLU(negative_slope=cfg.negative_slope)(x)
        if i < len(cfg.dense) - 1:
            x = keras.layers.Dropout(cfg.dropout)(x)
    out = keras.layers.Dense(n_labels, name="labels")(x)
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


def train_member(x_train, y_train, x_val, y_val, cfg: ModelConfig, seed: int, log_every: int = 1):
    """Train one network from seed ``seed``; returns ``(model, history dict, seconds)``."""
    keras.utils.set_random_seed(int(seed))
    if backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    model = build_model(x_train.shape[1], y_train.shape[1], cfg)
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.patience,
                                         restore_best_weights=True)
    t0 = time.perf_counter()
    hist = model.fit(x_train, y_train, validation_data=(x_val, y_val), batch_size=cfg.batch_size,
                     epochs=cfg.epochs, callbacks=[stop], verbose=2 if log_every else 0, shuffle=True)
    seconds = time.perf_counter() - t0
    h = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    return model, h, seconds


def member_seed(seed: int, i: int) -> int:
    """Sub-seed of ensemble member ``i`` (derived from the notebook's one seed)."""
    return int(np.random.SeedSequence([seed, i]).generate_state(1)[0] % (2**31 - 1))


def save_member(model, path, *, scaler: LabelScaler, grid, cfg: ModelConfig, seed: int,
                history: dict, seconds: float, extra: dict | None = None) -> Path:
    """Save a model as ``<path>.keras`` plus ``<path>.json`` (its record), both atomically."""
    from .pipeline import package_versions

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.keras")
    model.save(tmp)
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


def inference_engine(models, threads: int | None = None):
    """The fastest engine for evaluating ``models`` together on this machine, or None.

    In order of preference: :class:`helpers.inference.KernelEnsemble` (the compiled C
    kernel; any backend), :class:`FusedEnsemble` (TensorFlow backend), None (each
    model's ``predict``). An engine that does not support the models' layers is skipped.
    Build one per set of models and reuse it: building traces or repacks the weights.

    Parameters
    ----------
    models : list of keras.Model
    threads : int, optional
        Threads for the C kernel (default: the cores this process may use).
    """
    from . import inference

    try:
        return inference.KernelEnsemble(models, threads=threads)
    except NotImplementedError:
        pass
    try:
        return FusedEnsemble(models)
    except NotImplementedError:
        return None


def engine_name(engine) -> str:
    """A short description of an engine from :func:`inference_engine`, for the book."""
    from . import inference

    if isinstance(engine, inference.KernelEnsemble):
        return f"C kernel ({inference.simd()}, {engine.threads} thread{'s' if engine.threads > 1 else ''}) + BLAS"
    if isinstance(engine, FusedEnsemble):
        return "one TensorFlow graph for all members (oneDNN)"
    return f"Keras predict, one model at a time ({backend()} backend)"


def ensemble_predict(models, x, scaler: LabelScaler, batch_size: int = 256, fused: bool = True,
                     engine=None):
    """Mean and standard deviation over the members, in label units.

    Parameters
    ----------
    models : list of keras.Model
    x : ndarray, (n, n_pixels, 1) float32
        From :func:`prepare_inputs`.
    scaler : LabelScaler
    batch_size : int
        Spectra per forward pass.
    fused : bool
        Evaluate all members together with the engine of :func:`inference_engine`
        where one applies; otherwise each model's ``predict``. Both give the same
        numbers to float32 round-off.
    engine : KernelEnsemble or FusedEnsemble, optional
        One built earlier for these models (reuse it when predicting block by block).

    Returns
    -------
    mean, std : ndarray, shape (n, n_labels)
    per_model : ndarray, shape (n_models, n, n_labels)
    """
    if engine is None and fused:
        engine = inference_engine(models)
    if engine is not None:
        preds = engine.predict(x, batch_size=batch_size)
    else:
        preds = np.stack([np.asarray(m.predict(x, batch_size=batch_size, verbose=0)) for m in models])
    per_model = scaler.unscale(preds)
    return per_model.mean(axis=0), per_model.std(axis=0), per_model


class FusedEnsemble:
    """All members of an ensemble in one compiled TensorFlow graph, for fast CPU inference.

    The Keras layers are rewritten as the TensorFlow operations that oneDNN fuses
    (2-D convolution + bias + LeakyReLU on a height-1 image), all members run in one
    ``tf.function`` call, and convolution outputs that feed another convolution are
    padded with zero channels to a multiple of ``channel_multiple`` (oneDNN computes
    in blocks of 8 channels on AVX2; a 6-channel layer is slower than an 8-channel
    one). The extra channels hold exact zeros and meet zero weights, so the outputs
    are those of the Keras models to float32 round-off.

    Parameters
    ----------
    models : list of keras.Model
        Networks made of Conv1D (valid padding, stride 1, linear activation),
        LeakyReLU, MaxPooling1D (valid, stride = pool size), Dropout, Flatten and
        Dense (linear) layers, as :func:`build_model` makes them.
    channel_multiple : int
        Pad convolution outputs to a multiple of this (1: no padding).

    Raises
    ------
    NotImplementedError
        Under a backend other than TensorFlow, or for layers outside that list.
    """

    def __init__(self, models, channel_multiple: int = 8):
        if backend() != "tensorflow":
            raise NotImplementedError("the fused ensemble is written for the TensorFlow backend")
        import tensorflow as tf

        self.n_pixels = int(models[0].input_shape[1])
        if any(int(m.input_shape[1]) != self.n_pixels for m in models):
            raise ValueError("the members have different input lengths")
        self.programs = [self._program(m, channel_multiple, tf) for m in models]
        programs = self.programs

        def forward(x):
            h0 = tf.reshape(x, [-1, 1, self.n_pixels, 1])
            outs = []
            for prog in programs:
                h = h0
                for op, *args in prog:
                    if op == "conv":
                        h = tf.nn.bias_add(tf.nn.conv2d(h, args[0], 1, "VALID"), args[1])
                    elif op == "leaky":
                        h = tf.nn.leaky_relu(h, args[0])
                    elif op == "pool":
                        h = tf.nn.max_pool2d(h, (1, args[0]), (1, args[0]), "VALID")
                    elif op == "flatten":
                        h = tf.reshape(h, [tf.shape(h)[0], -1])
                    elif op == "dense":
                        h = tf.nn.bias_add(tf.matmul(h, args[0]), args[1])
                outs.append(h)
            return tf.stack(outs)

        self._forward = tf.function(forward, reduce_retracing=True)

    @staticmethod
    def _program(model, multiple, tf):
        layers = [ly for ly in model.layers if not isinstance(ly, (keras.layers.InputLayer, keras.layers.Dropout))]
        prog = []
        pad_in = 0  # zero input channels added by the previous convolution
        for i, ly in enumerate(layers):
            cfg = ly.get_config()
            if isinstance(ly, keras.layers.Conv1D) and not isinstance(ly, keras.layers.Conv1DTranspose):
                if (cfg["padding"] != "valid" or tuple(cfg["strides"]) != (1,) or tuple(cfg["dilation_rate"]) != (1,)
                        or cfg["activation"] != "linear" or cfg.get("groups", 1) != 1 or not cfg["use_bias"]):
                    raise NotImplementedError(f"layer {ly.name}: only valid, stride-1, linear Conv1D with bias")
                k, b = (np.asarray(w, np.float32) for w in ly.get_weights())
                if pad_in:
                    k = np.concatenate([k, np.zeros((k.shape[0], pad_in, k.shape[2]), np.float32)], axis=1)
                nxt = next((n for n in layers[i + 1:] if isinstance(n, (keras.layers.Conv1D, keras.layers.Flatten,
                                                                       keras.layers.Dense))), None)
                feeds_conv = isinstance(nxt, keras.layers.Conv1D)
                extra = (-k.shape[2]) % multiple if (multiple > 1 and feeds_conv) else 0
                if extra:
                    k = np.concatenate([k, np.zeros(k.shape[:2] + (extra,), np.float32)], axis=2)
                    b = np.concatenate([b, np.zeros(extra, np.float32)])
                pad_in = extra
                prog.append(("conv", tf.constant(k[None]), tf.constant(b)))
            elif isinstance(ly, keras.layers.LeakyReLU):
                prog.append(("leaky", float(cfg["negative_slope"])))
            elif isinstance(ly, keras.layers.MaxPooling1D):
                p = tuple(cfg["pool_size"])[0]
                if cfg["padding"] != "valid" or tuple(cfg["strides"])[0] != p:
                    raise NotImplementedError(f"layer {ly.name}: only valid max-pooling with stride = size")
                prog.append(("pool", int(p)))
            elif isinstance(ly, keras.layers.Flatten):
                if pad_in:
                    raise NotImplementedError("padded channels cannot reach a Flatten layer")
                prog.append(("flatten",))
            elif isinstance(ly, keras.layers.Dense):
                if cfg["activation"] != "linear" or not cfg["use_bias"]:
                    raise NotImplementedError(f"layer {ly.name}: only linear Dense with bias")
                w, b = (np.asarray(v, np.float32) for v in ly.get_weights())
                prog.append(("dense", tf.constant(w), tf.constant(b)))
            else:
                raise NotImplementedError(f"layer {ly.name} ({type(ly).__name__}) is not supported")
        return prog

    def predict(self, x, batch_size: int = 256) -> np.ndarray:
        """Scaled outputs of every member, shape ``(n_models, n, n_labels)``."""
        x = np.asarray(x, np.float32)
        if x.ndim == 2:
            x = x[..., None]
        if x.shape[1] != self.n_pixels:
            raise ModelMismatchError(f"the ensemble expects {self.n_pixels} pixels per spectrum, got {x.shape[1]}")
        parts = [self._forward(x[i:i + batch_size]).numpy() for i in range(0, len(x), batch_size)]
        return np.concatenate(parts, axis=1)


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


def train_ensemble(x_train, y_train, x_val, y_val, *, n_models: int, cfg: ModelConfig, seed: int,
                   out_dir, scaler: LabelScaler, grid, log=print) -> list[dict]:
    """Train ``n_models`` members from derived seeds and save each (``member_XX.keras`` + ``.json``).

    Returns one dict per member: ``path``, ``seed``, ``best_val_loss``, ``epochs``, ``seconds``, ``history``.
    """
    members = []
    for i in range(n_models):
        s = member_seed(seed, i)
        model, hist, seconds = train_member(x_train, y_train, x_val, y_val, cfg, s, log_every=0)
        log(f"member {i + 1}/{n_models} (seed {s}): {len(hist['val_loss'])} epochs, best validation "
            f"loss {min(hist['val_loss']):.4g}, {seconds:.0f} s")
        path = save_member(model, Path(out_dir) / f"member_{i:02d}", scaler=scaler, grid=grid, cfg=cfg,
                           seed=s, history=hist, seconds=seconds)
        members.append({"path": str(path), "seed": s, "best_val_loss": float(min(hist["val_loss"])),
                        "epochs": len(hist["val_loss"]), "seconds": seconds, "history": hist})
        keras.backend.clear_session()
    return members
