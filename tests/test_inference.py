"""The C kernel for CPU inference (helpers._convkernel, helpers.inference) against independent
references: a float64 numpy convolution written here, and the Keras models themselves."""
from __future__ import annotations

import os

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from helpers import inference as I  # noqa: E402
from helpers import model as M  # noqa: E402

if not I.available():
    if os.environ.get("REQUIRE_KERNEL", "") not in ("", "0"):
        raise RuntimeError("REQUIRE_KERNEL is set but helpers._convkernel is not built: "
                           "reinstall with a C compiler present (pip install -e .)")
    pytest.skip("the C kernel is not built here (no C compiler at install time)", allow_module_level=True)

from helpers import _convkernel as K  # noqa: E402


def reference_stack(x, layers):
    """Conv1D (valid) + bias + LeakyReLU + max-pool chain in float64; features channel-major."""
    out = []
    for row in np.asarray(x, np.float64):
        h = row[None, :]  # (channels, length)
        for w, b, pool, slope in layers:
            k = w.shape[0]
            win = np.lib.stride_tricks.sliding_window_view(h, k, axis=1)  # (cin, lout, k)
            z = np.einsum("clj,jco->ol", win, w.astype(np.float64)) + b[:, None]
            z = np.where(z > 0, z, slope * z)
            lp = z.shape[1] // pool
            h = z[:, :lp * pool].reshape(len(z), lp, pool).max(axis=2)
        out.append(h.ravel())
    return np.array(out)


def random_layers(rng, spec):
    return tuple((rng.normal(0, 0.4, (k, ci, co)).astype(np.float32), rng.normal(0, 0.2, co).astype(np.float32),
                  pool, slope) for k, ci, co, pool, slope in spec)


@pytest.mark.parametrize("spec,length", [
    # the default network's three blocks, on a length that leaves tails at every layer
    ([(10, 1, 8, 2, 0.3), (15, 8, 6, 2, 0.3), (10, 6, 4, 1, 0.3)], 1003),
    # every output-channel chunk size (1..8 -> chunks of at most 6), pools 1, 2, 3 and 5, slopes 0, 1 and 2
    ([(3, 1, 1, 3, 0.0), (4, 1, 7, 1, 1.0), (5, 7, 5, 2, 2.0), (2, 5, 3, 5, 0.3), (3, 3, 2, 1, 0.1)], 2411),
    # a single layer, shorter than one vector block
    ([(4, 1, 6, 2, 0.3)], 21),
])
@pytest.mark.parametrize("baseline", [False, True])
def test_kernel_matches_the_float64_reference(spec, length, baseline):
    rng = np.random.default_rng(len(spec) + length)
    layers = random_layers(rng, spec)
    x = rng.normal(1, 0.3, (5, length)).astype(np.float32)
    ref = reference_stack(x, layers)
    feat = np.full(ref.shape, np.nan, np.float32)
    K.conv_stack(x, feat, layers, baseline)
    assert np.all(np.isfinite(feat)), "every feature must be written"
    assert np.max(np.abs(feat - ref)) < 2e-5 * max(1.0, np.max(np.abs(ref)))


def test_kernel_refuses_arrays_that_do_not_fit():
    rng = np.random.default_rng(1)
    layers = random_layers(rng, [(5, 1, 3, 2, 0.3)])
    x = np.ones((2, 50), np.float32)
    with pytest.raises(ValueError, match="feat must have shape"):
        K.conv_stack(x, np.empty((2, 10), np.float32), layers)
    with pytest.raises(ValueError, match="float32"):
        K.conv_stack(x.astype(np.float64), np.empty((2, 69), np.float32), layers)
    with pytest.raises(ValueError, match="do not fit"):  # a kernel for 2 input channels on a 1-channel input
        K.conv_stack(x, np.empty((2, 69), np.float32), random_layers(rng, [(5, 2, 3, 2, 0.3)]))
    with pytest.raises(ValueError, match="slope"):
        K.conv_stack(x, np.empty((2, 69), np.float32), random_layers(rng, [(5, 1, 3, 2, -0.1)]))
    with pytest.raises(ValueError, match="writable|read-only"):
        out = np.empty((2, 69), np.float32)
        out.setflags(write=False)
        K.conv_stack(x, out, layers)


def _models(n, n_pixels, cfg, seed):
    keras.utils.set_random_seed(seed)
    models = [M.build_model(n_pixels, 5, cfg) for _ in range(n)]
    rng = np.random.default_rng(seed)
    for m in models:  # biases are zero at initialisation; make them count
        for v in m.weights:
            if "bias" in v.path:
                v.assign(rng.normal(0, 0.1, v.shape).astype(np.float32))
    return models


def test_ensemble_gives_the_keras_numbers_with_any_threads_and_blocks():
    cfg = M.ModelConfig(filters=(8, 6, 4), kernels=(10, 15, 10), dense=(16, 12, 8))
    models = _models(3, 517, cfg, seed=3)
    x = np.random.default_rng(4).normal(1, 0.1, (70, 517, 1)).astype(np.float32)
    ref = np.stack([m.predict(x, verbose=0) for m in models])
    one = I.KernelEnsemble(models, threads=1).predict(x, batch_size=32)  # 70 = 32 + 32 + 6
    two = I.KernelEnsemble(models, threads=2).predict(x[..., 0], batch_size=256)
    assert one.shape == ref.shape
    assert np.max(np.abs(one - ref)) < 1e-5 * max(1.0, np.max(np.abs(ref)))
    # the same settings give the same numbers, bit for bit; other thread counts differ only by
    # round-off (BLAS sums the dense layers in blocks that depend on the number of rows)
    assert np.array_equal(two, I.KernelEnsemble(models, threads=2).predict(x, batch_size=256))
    one_big = I.KernelEnsemble(models, threads=1).predict(x, batch_size=256)
    assert np.max(np.abs(one_big - two)) < 1e-6 * max(1.0, np.max(np.abs(ref)))
    # through ensemble_predict, which picks this engine where it is built
    eng = I.inference_engine(models)
    assert isinstance(eng, I.KernelEnsemble) and "C kernel" in I.engine_name(eng)
    mean, std, per = I.ensemble_predict(models, x, M.LabelScaler(np.zeros(5), np.ones(5)), engine=eng)
    assert np.allclose(per, ref, atol=1e-5) and np.allclose(mean, ref.mean(axis=0), atol=1e-5)


def test_bad_input_and_unsupported_models_are_refused():
    cfg = M.ModelConfig(filters=(4, 3, 2), kernels=(5, 7, 3), dense=(8, 8, 4))
    eng = I.KernelEnsemble(_models(2, 300, cfg, seed=5))
    x = np.ones((3, 300, 1), np.float32)
    with pytest.raises(M.ModelMismatchError, match="300 pixels"):
        eng.predict(x[:, :200])
    x[1, 7] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        eng.predict(x)
    inp = keras.Input(shape=(40, 1))
    h = keras.layers.BatchNormalization()(keras.layers.Conv1D(2, 3)(inp))
    bn = keras.Model(inp, keras.layers.Dense(5)(keras.layers.Flatten()(h)))
    with pytest.raises(NotImplementedError, match="BatchNormalization"):
        I.KernelEnsemble([bn])
    same = keras.Model(inp, keras.layers.Dense(5)(keras.layers.Flatten()(keras.layers.Conv1D(2, 3, padding="same")(inp))))
    with pytest.raises(NotImplementedError, match="valid"):
        I.KernelEnsemble([same])
    twice = keras.Model(inp, keras.layers.Dense(5)(keras.layers.Flatten()(
        keras.layers.LeakyReLU()(keras.layers.LeakyReLU()(keras.layers.Conv1D(2, 3)(inp))))))
    with pytest.raises(NotImplementedError, match="one LeakyReLU"):
        I.KernelEnsemble([twice])
    with pytest.raises(ValueError, match="input shapes"):
        I.KernelEnsemble([M.build_model(300, 5, cfg), M.build_model(301, 5, cfg)])


def test_a_convolution_without_activation_is_linear():
    inp = keras.Input(shape=(60, 1))
    h = keras.layers.MaxPooling1D(2)(keras.layers.Conv1D(3, 4)(inp))
    model = keras.Model(inp, keras.layers.Dense(5)(keras.layers.Flatten()(h)))
    x = np.random.default_rng(6).normal(0, 1, (9, 60, 1)).astype(np.float32)  # negative sums too
    out = I.KernelEnsemble([model]).predict(x)[0]
    assert np.allclose(out, model.predict(x, verbose=0), atol=1e-5)


def test_engines_are_timed_side_by_side_on_the_same_spectra():
    cfg = M.ModelConfig(filters=(4, 3, 2), kernels=(5, 7, 3), dense=(8, 8, 4))
    models = _models(2, 200, cfg, seed=9)
    x = np.random.default_rng(10).normal(1, 0.1, (40, 200, 1)).astype(np.float32)
    rows = I.compare_engines(models, x, batch_size=16, repeats=1, threads=2, target=400.0, reference_members=10)
    names = [r["engine"] for r in rows]
    assert names[0].startswith("Keras predict") and rows[0]["speedup"] == 1.0
    assert "C kernel + BLAS, 1 thread" in names and "C kernel + BLAS, 2 threads" in names
    if M.backend() == "tensorflow":
        assert "one TensorFlow graph for all members" in names
    for r in rows:
        assert r["rate"] > 0
        assert np.isclose(r["rate_ref"], r["rate"] * 2 / 10) and np.isclose(r["of_target"], r["rate_ref"] / 400.0)
        assert np.isclose(r["speedup"], r["rate"] / rows[0]["rate"])
