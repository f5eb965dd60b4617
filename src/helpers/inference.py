"""Fast CPU inference for the CNN ensemble: a C kernel for the convolutions, BLAS for the head.

Why: most of the network's floating-point operations (see
:func:`helpers.model.count_flops`) lie in the three convolution layers, whose few channels
(1 → 8 → 6 → 4) keep the general convolution routines of the deep-learning frameworks far
from the CPU's peak. The
extension :mod:`helpers._convkernel` computes the Conv1D + bias + LeakyReLU + max-pooling
chain of one spectrum at a time while its activations stay in the CPU's caches, with the
accumulators of all output channels in vector registers (AVX2 + FMA where the CPU has
them, chosen at run time; plain C vectors elsewhere). The flattened features then go
through the dense head as matrix products (numpy's BLAS). Threads share the spectra of a
block, each taking its share through every member with BLAS held to one thread.
``bench/bench_cnn.py`` measures it side by side with the Keras and TensorFlow paths.

It reads the weights of the Keras models (any backend) and gives their outputs to float32
round-off (the sums are taken in another order); the tests check this against Keras.
Supported layers: Conv1D (valid padding, stride 1, linear activation, bias), LeakyReLU
with slope >= 0, MaxPooling1D (valid, stride = pool size), Dropout (inactive at inference),
Flatten, Dense (linear, bias), in the order Conv1D [LeakyReLU] [MaxPooling1D] ... Flatten
Dense [LeakyReLU] ..., as :func:`helpers.model.build_model` makes them.

The extension is built when the package is installed (``pip install -e .`` compiles it
with the machine's C compiler); where it could not be built, :func:`available` is False
and :func:`ensemble_predict` falls back to TensorFlow or Keras.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import threadpool_limits

from .model import LabelScaler, ModelMismatchError, backend, keras

try:
    from . import _convkernel
except ImportError:  # no C compiler when the package was installed
    _convkernel = None

__all__ = ["available", "simd", "KernelEnsemble", "FusedEnsemble", "inference_engine", "engine_name",
           "ensemble_predict", "default_threads", "compare_engines"]


def available() -> bool:
    """Whether the compiled kernel could be imported."""
    return _convkernel is not None


def simd() -> str:
    """Instruction set the kernel uses on this CPU: ``'avx2+fma'``, ``'baseline'`` or ``'unavailable'``."""
    return _convkernel.simd() if available() else "unavailable"


def default_threads() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _layers_of(model):
    """(conv layers, dense layers) of a Keras model, as arrays for the kernel and numpy.

    conv: list of (kernel (K, Cin, Cout), bias (Cout,), pool, slope);
    dense: list of (weights (n_in, n_out), bias (n_out,), slope or None).
    """
    import keras

    conv, dense = [], []  # dicts while parsing
    flattened = False
    for ly in model.layers:
        cfg = ly.get_config()
        name = f"layer {ly.name} ({type(ly).__name__})"
        if isinstance(ly, (keras.layers.InputLayer, keras.layers.Dropout)):
            continue
        if isinstance(ly, keras.layers.Conv1D) and not isinstance(ly, keras.layers.Conv1DTranspose):
            if flattened:
                raise NotImplementedError(f"{name}: a convolution after Flatten is not supported")
            if (cfg["padding"] != "valid" or tuple(cfg["strides"]) != (1,) or tuple(cfg["dilation_rate"]) != (1,)
                    or cfg["activation"] != "linear" or cfg.get("groups", 1) != 1 or not cfg["use_bias"]
                    or cfg.get("data_format", "channels_last") != "channels_last"):
                raise NotImplementedError(f"{name}: only valid, stride-1, linear, channels-last Conv1D with bias")
            k, b = (np.ascontiguousarray(w, np.float32) for w in ly.get_weights())
            conv.append({"w": k, "b": b, "pool": 1, "slope": None})
        elif isinstance(ly, keras.layers.LeakyReLU):
            slope = float(cfg["negative_slope"])
            target = dense if flattened else conv
            if slope < 0 or not target or target[-1]["slope"] is not None:
                raise NotImplementedError(f"{name}: one LeakyReLU with slope >= 0 per Conv1D or Dense layer")
            target[-1]["slope"] = slope
        elif isinstance(ly, keras.layers.MaxPooling1D):
            # for slope >= 0 LeakyReLU is monotonic, so pooling before or after it is the same
            p = int(tuple(cfg["pool_size"])[0])
            if (cfg["padding"] != "valid" or int(tuple(cfg["strides"])[0]) != p or flattened or not conv
                    or conv[-1]["pool"] != 1):
                raise NotImplementedError(f"{name}: one valid max-pooling (stride = size) per convolution")
            conv[-1]["pool"] = p
        elif isinstance(ly, keras.layers.Flatten):
            if flattened or not conv:
                raise NotImplementedError(f"{name}: one Flatten, after the convolutions")
            flattened = True
        elif isinstance(ly, keras.layers.Dense):
            if not flattened or cfg["activation"] != "linear" or not cfg["use_bias"]:
                raise NotImplementedError(f"{name}: only linear Dense layers with bias, after Flatten")
            w, b = (np.ascontiguousarray(v, np.float32) for v in ly.get_weights())
            dense.append({"w": w, "b": b, "slope": None})
        else:
            raise NotImplementedError(f"{name} is not supported by the CPU kernel")
    if not conv or not dense:
        raise NotImplementedError("the model needs convolutions, a Flatten layer and a dense head")
    conv = [(c["w"], c["b"], c["pool"], 1.0 if c["slope"] is None else c["slope"]) for c in conv]  # slope 1: linear
    dense = [(d["w"], d["b"], d["slope"]) for d in dense]
    return conv, dense


class KernelEnsemble:
    """All members of an ensemble evaluated with the C kernel and BLAS, for fast CPU inference.

    Parameters
    ----------
    models : list of keras.Model
        Networks of the layers listed in the module's docstring, with equal input length.
    threads : int, optional
        Threads that share the spectra (default: the CPU cores this process may use).

    Raises
    ------
    NotImplementedError
        If the kernel is not built here, or a model has a layer it does not cover.
    ValueError
        If the members differ in input length.
    """

    def __init__(self, models, threads: int | None = None):
        if not available():
            raise NotImplementedError("the C kernel helpers._convkernel is not built; reinstall the package "
                                      "with a C compiler present (pip install -e .)")
        shapes = {tuple(m.input_shape[1:]) for m in models}
        if len(shapes) != 1:
            raise ValueError(f"the members have different input shapes: {sorted(shapes)}")
        (shape,) = shapes
        if len(shape) != 2 or shape[1] != 1:
            raise NotImplementedError(f"input shape {shape}: one channel of flux is expected")
        self.n_pixels = int(shape[0])
        self.threads = int(threads or default_threads())
        self.members = []
        for m in models:
            conv, dense = _layers_of(m)
            length, channels = self.n_pixels, 1
            for k, _, pool, _ in conv:
                length = (length - k.shape[0] + 1) // pool
                channels = k.shape[2]
            w1 = dense[0][0]
            if w1.shape[0] != length * channels:
                raise ValueError(f"model {m.name}: the first dense layer expects {w1.shape[0]} inputs, "
                                 f"the convolutions give {length * channels}")
            # Keras flattens position-major (t * C + c); the kernel writes channel-major (c * L + t)
            w1 = np.ascontiguousarray(w1.reshape(length, channels, -1).transpose(1, 0, 2).reshape(w1.shape))
            dense = [(w1, *dense[0][1:])] + dense[1:]
            self.members.append((tuple(conv), dense, length * channels))

    def _rows(self, x, buf, out, lo, hi):
        """Every member on spectra lo:hi of the block x (one thread's share; buf: its scratch)."""
        for (conv, dense, nf), o in zip(self.members, out):
            f = buf[:(hi - lo) * nf].reshape(hi - lo, nf)
            _convkernel.conv_stack(x[lo:hi], f, conv)
            h = f
            for w, b, slope in dense:
                h = h @ w
                h += b
                if slope is not None:  # LeakyReLU: max(h, slope h) for slope <= 1, else min
                    np.maximum(h, slope * h, out=h) if slope <= 1 else np.minimum(h, slope * h, out=h)
            o[lo:hi] = h

    def predict(self, x, batch_size: int = 256) -> np.ndarray:
        """Outputs (scaled labels) of every member, shape ``(n_models, n, n_labels)``.

        Parameters
        ----------
        x : ndarray, shape (n, n_pixels) or (n, n_pixels, 1)
            Model input from :func:`helpers.model.prepare_inputs` (float32 flux).
        batch_size : int
            Spectra per block: the threads share a block's spectra; each takes its share
            through every member (convolutions, then the dense head as matrix products).
            Memory: one member's features for one block (for the default network
            ``batch_size`` x 15 864 floats, 16 MB for 256).
        """
        x = np.asarray(x, np.float32)
        if x.ndim == 3 and x.shape[2] == 1:
            x = x[..., 0]
        if x.ndim != 2 or x.shape[1] != self.n_pixels:
            raise ModelMismatchError(f"the ensemble expects spectra of {self.n_pixels} pixels, "
                                     f"got an array of shape {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError("input flux contains NaN or infinity; mask bad pixels with prepare_inputs first")
        n = len(x)
        n_out = self.members[0][1][-1][0].shape[1]
        out = np.empty((len(self.members), n, n_out), np.float32)
        # each thread takes its share of a block's spectra through all members, convolutions and
        # dense head, with BLAS held to one thread: BLAS's own threads would spin and compete
        # with the kernel's for the same cores (measured: a third slower)
        shares = min(self.threads, batch_size, n)
        rows = -(-min(batch_size, n) // shares)  # most spectra in one share
        bufs = [np.empty(rows * max(nf for _, _, nf in self.members), np.float32) for _ in range(shares)]
        with ThreadPoolExecutor(self.threads) as pool, threadpool_limits(1, user_api="blas"):
            for start in range(0, n, batch_size):
                xb = np.ascontiguousarray(x[start:start + batch_size])
                nb = len(xb)
                cuts = np.linspace(0, nb, min(shares, nb) + 1).astype(int)
                dst = out[:, start:start + nb]
                jobs = [pool.submit(self._rows, xb, buf, dst, lo, hi)
                        for buf, lo, hi in zip(bufs, cuts[:-1], cuts[1:])]
                for j in jobs:
                    j.result()
        return out


def compare_engines(models, x, batch_size: int = 256, repeats: int = 2, threads: int | None = None,
                    target: float = 400.0, reference_members: int = 10) -> list[dict]:
    """Time the inference engines side by side on the same spectra.

    Engines: each model's Keras ``predict`` in turn; all members in one TensorFlow graph
    (:class:`FusedEnsemble`, TensorFlow backend only); the C kernel with one
    thread and with ``threads``. Each rate is the best of ``repeats`` timings after a
    warm-up call, so that one-off costs (graph tracing) are left out.

    Parameters
    ----------
    models : list of keras.Model
    x : ndarray, (n, n_pixels, 1) float32
    batch_size : int
    repeats : int
    threads : int, optional
        Threads of the multi-threaded kernel row (default: the cores this process may use).
    target : float
        Spectra per second wanted for ``reference_members`` networks.
    reference_members : int

    Returns
    -------
    list of dict
        ``engine``, ``rate`` (spectra/s for these members), ``rate_ref`` (scaled to
        ``reference_members`` networks), ``of_target`` (rate_ref / target) and
        ``speedup`` (over the first row).
    """
    import logging

    # Keras predict on many models in a row makes TensorFlow warn about retracing: expected here
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    threads = int(threads or default_threads())
    engines = [("Keras predict, one model at a time", lambda: [m.predict(x, batch_size=batch_size, verbose=0)
                                                               for m in models])]
    try:
        fused = FusedEnsemble(models)
        engines.append(("one TensorFlow graph for all members", lambda: fused.predict(x, batch_size=batch_size)))
    except NotImplementedError:
        pass
    if available():
        for t in sorted({1, threads}):
            eng = KernelEnsemble(models, threads=t)
            engines.append((f"C kernel + BLAS, {t} thread{'s' if t > 1 else ''}",
                            lambda eng=eng: eng.predict(x, batch_size=batch_size)))
    rows = []
    for name, run in engines:
        run()  # warm-up
        best = min(_timed(run) for _ in range(max(1, repeats)))
        rate = len(x) / best
        rate_ref = rate * len(models) / reference_members
        rows.append({"engine": name, "rate": rate, "rate_ref": rate_ref, "of_target": rate_ref / target})
    for r in rows:
        r["speedup"] = r["rate"] / rows[0]["rate"]
    return rows


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def inference_engine(models, threads: int | None = None):
    """The fastest engine for evaluating ``models`` together on this machine, or None.

    In order of preference: :class:`KernelEnsemble` (the compiled C
    kernel; any backend), :class:`FusedEnsemble` (TensorFlow backend), None (each
    model's ``predict``). An engine that does not support the models' layers is skipped.
    Build one per set of models and reuse it: building traces or repacks the weights.

    Parameters
    ----------
    models : list of keras.Model
    threads : int, optional
        Threads for the C kernel (default: the cores this process may use).
    """
    try:
        return KernelEnsemble(models, threads=threads)
    except NotImplementedError:
        pass
    try:
        return FusedEnsemble(models)
    except NotImplementedError:
        return None


def engine_name(engine) -> str:
    """A short description of an engine from :func:`inference_engine`, for the book."""
    if isinstance(engine, KernelEnsemble):
        return f"C kernel ({simd()}, {engine.threads} thread{'s' if engine.threads > 1 else ''}) + BLAS"
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
        From :func:`helpers.model.prepare_inputs`.
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
        Dense (linear) layers, as :func:`helpers.model.build_model` makes them.
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
