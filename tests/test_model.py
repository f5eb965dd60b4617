"""The CNN helpers: build, train, save/load with records, mismatch errors, gradients, determinism."""
from __future__ import annotations

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from helpers import model as M  # noqa: E402
from helpers.spectra import giraffe_grid  # noqa: E402

SMALL = M.ModelConfig(filters=(4, 3, 2), kernels=(5, 5, 3), dense=(8, 8, 4), epochs=2, patience=2,
                      batch_size=16, learning_rate=1e-3)


@pytest.fixture(scope="module")
def toy():
    rng = np.random.default_rng(0)
    n, p = 96, 200
    y = rng.random((n, 5))
    x = (1 - 0.3 * y[:, :1] * np.exp(-0.5 * ((np.arange(p) - 100) / 3.0) ** 2)
         + rng.normal(0, 0.01, (n, p)))
    return M.prepare_inputs(x, np.ones_like(x)), y.astype(np.float32)


def test_flops_and_architecture():
    m = M.build_model(15940)
    assert m.output_shape == (None, 5)
    assert [l.filters for l in m.layers if l.name.startswith("conv")] == [8, 6, 4]
    # conv1 alone: (15940 - 10 + 1) * 8 filters * 10 taps * 2
    assert M.count_flops(15940) > 2 * 15931 * 8 * 10
    assert m.count_params() > 1_000_000


def test_train_predict_save_load_round_trip(toy, tmp_path):
    x, y = toy
    scaler = M.LabelScaler.fit(y)
    ys = scaler.scale(y)
    grid = giraffe_grid()
    members = M.train_ensemble(x[:64], ys[:64], x[64:], ys[64:], n_models=2, cfg=SMALL, seed=5,
                               out_dir=tmp_path, scaler=scaler, grid=grid, log=lambda *_: None)
    assert len(members) == 2 and members[0]["seed"] != members[1]["seed"]
    rec = json.loads((tmp_path / "member_00.json").read_text())
    for key in ("labels", "scaler", "grid", "architecture", "seed", "packages", "history"):
        assert key in rec
    models = [M.load_member(m["path"], grid=grid)[0] for m in members]
    mean, std, per = M.ensemble_predict(models, x, scaler)
    assert mean.shape == (len(x), 5) and np.all(std >= 0) and per.shape == (2, len(x), 5)
    # a model does not load for data on another grid, or for other labels
    with pytest.raises(M.ModelMismatchError, match="Resample the data"):
        M.load_member(members[0]["path"], grid=giraffe_grid(("HR21",)))
    with pytest.raises(M.ModelMismatchError, match="predicts"):
        M.load_member(members[0]["path"], labels=("teff", "logg"))
    with pytest.raises(FileNotFoundError, match="notebook 03"):
        M.load_member(tmp_path / "member_09")


def test_same_seed_same_predictions(toy):
    x, y = toy
    ys = M.LabelScaler.fit(y).scale(y)
    a, _, _ = M.train_member(x[:64], ys[:64], x[64:], ys[64:], SMALL, seed=11, log_every=0)
    pa = a.predict(x, verbose=0)
    b, _, _ = M.train_member(x[:64], ys[:64], x[64:], ys[64:], SMALL, seed=11, log_every=0)
    assert np.allclose(pa, b.predict(x, verbose=0), atol=1e-6)


def test_gradient_of_a_one_pixel_model_is_all_there():
    inp = keras.Input(shape=(50, 1))
    flat = keras.layers.Flatten()(inp)
    dense = keras.layers.Dense(1, use_bias=False)
    model = keras.Model(inp, dense(flat))
    w = np.zeros((50, 1), np.float32)
    w[17, 0] = 2.0
    dense.set_weights([w])
    g = M.input_gradients(model, np.ones((3, 50, 1), np.float32), 0)
    assert g.shape == (3, 50)
    assert np.allclose(g[:, 17], 2.0) and np.allclose(np.delete(g, 17, axis=1), 0.0)


def test_selection_and_scaler():
    keep = M.select_members([1.0, 1.1, 0.9, 5.0, 1.05])
    assert 3 not in keep and len(keep) == 4
    s = M.LabelScaler.fit(np.array([[0.0, 10], [2.0, 30]]), names=("a", "b"))
    assert np.allclose(s.unscale(s.scale([[1.0, 20]])), [[1.0, 20]])
    with pytest.raises(ValueError, match="NaN"):
        M.LabelScaler.fit(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="NaN"):
        M.prepare_inputs(np.array([[np.nan, 1.0]]), np.array([[1.0, 1.0]]))
