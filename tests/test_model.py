"""The CNN helpers: build, train, save/load with records, mismatch errors, gradients, determinism."""
from __future__ import annotations

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from helpers import inference as I  # noqa: E402
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
    from helpers.spectra import giraffe_grid

    n = giraffe_grid().n_pixels  # HR10 + HR21 on 0.05 Å
    m = M.build_model(n)
    assert m.output_shape == (None, 5)
    assert [l.filters for l in m.layers if l.name.startswith("conv")] == [8, 6, 4]
    # conv1 alone: (n - 10 + 1) outputs * 8 filters * 10 taps * 2
    assert M.count_flops(n) > 2 * (n - 9) * 8 * 10
    assert m.count_params() > 1_000_000


def _training_rows(tiny_survey):
    from helpers import survey

    cfg, path, cat = tiny_survey
    rows = survey.select_training(cat, cfg)
    return path, rows[:64], rows[64:96]


def test_train_predict_save_load_round_trip(tiny_survey, tmp_path):
    from helpers.dataset import read_dataset

    path, fit, val = _training_rows(tiny_survey)
    data = read_dataset(path)
    scaler = M.LabelScaler.fit(data.labels("survey")[fit])
    grid = data.grid
    lines = []
    members = M.train_ensemble(path, fit, val, n_models=2, cfg=SMALL, seed=5, out_dir=tmp_path,
                               scaler=scaler, log=lines.append)
    assert len(members) == 2 and members[0]["seed"] != members[1]["seed"]
    assert len(lines) == 2 and lines[0].startswith("member 1/2")
    rec = json.loads((tmp_path / "member_00.json").read_text())
    for key in ("labels", "scaler", "grid", "architecture", "seed", "packages", "history", "fit_digest"):
        assert key in rec
    models = [M.load_member(m["path"], grid=grid)[0] for m in members]
    x = M.prepare_inputs(data.flux[:20], data.ivar[:20])
    mean, std, per = I.ensemble_predict(models, x, scaler)
    assert mean.shape == (20, 5) and np.all(std >= 0) and per.shape == (2, 20, 5)
    # a model does not load for data on another grid, or for other labels
    with pytest.raises(M.ModelMismatchError, match="Resample the data"):
        M.load_member(members[0]["path"], grid=giraffe_grid(("HR21",)))
    with pytest.raises(M.ModelMismatchError, match="predicts"):
        M.load_member(members[0]["path"], labels=("teff", "logg"))
    with pytest.raises(FileNotFoundError, match="notebook 03"):
        M.load_member(tmp_path / "member_09")
    # a killed run (member 1 never written) resumes: member 0 is kept, member 1 trained again
    w0 = (tmp_path / "member_00.keras").stat().st_mtime_ns
    for suffix in (".keras", ".json"):
        (tmp_path / f"member_01{suffix}").unlink()
    again = M.train_ensemble(path, fit, val, n_models=2, cfg=SMALL, seed=5, out_dir=tmp_path,
                             scaler=scaler, log=None)
    assert again[0].get("reused") and not again[1].get("reused")
    assert (tmp_path / "member_00.keras").stat().st_mtime_ns == w0
    assert again[1]["history"] == members[1]["history"]  # same seed, same process: same member
    # other rows are other data: nothing is reused
    other = M.train_ensemble(path, fit[:-1], val, n_models=1, cfg=SMALL, seed=5, out_dir=tmp_path,
                             scaler=scaler, log=None)
    assert not other[0].get("reused")


def test_members_are_the_same_on_one_or_two_worker_processes(tiny_survey, tmp_path):
    """Workers of one thread each: the number of workers does not change a member's weights (with
    one worker, the second member trains in a process that trained the first)."""
    from distributed import Client, LocalCluster

    from helpers import parallel
    from helpers.dataset import read_dataset

    path, fit, val = _training_rows(tiny_survey)
    scaler = M.LabelScaler.fit(read_dataset(path, rows=np.sort(fit)).labels("survey"))
    weights = []
    for n in (1, 2):
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                          env={"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
                               "OMP_NUM_THREADS": "1"}) as cluster, Client(cluster) as client:
            sched = parallel.Scheduler("local", f"{n} workers", n, 1, client)
            out = tmp_path / f"w{n}"
            members = M.train_ensemble(path, fit, val, n_models=2, cfg=SMALL, seed=5, out_dir=out,
                                       scaler=scaler, log=None, scheduler=sched)
        weights.append([np.concatenate([w.ravel() for w in M.load_member(m["path"])[0].get_weights()])
                        for m in members])
    for a, b in zip(*weights):
        assert np.array_equal(a, b), [float(np.abs(x - y).max()) for x, y in zip(*weights)]


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


def _with_random_biases(models, seed=1):
    rng = np.random.default_rng(seed)
    for m in models:
        for v in m.weights:
            if "bias" in v.path:
                v.assign(rng.normal(0, 0.1, v.shape).astype(np.float32))
    return models


@pytest.mark.skipif(M.backend() != "tensorflow", reason="the fused ensemble is TensorFlow-only")
def test_fused_ensemble_gives_the_keras_numbers():
    cfg = M.ModelConfig(filters=(4, 3, 2), kernels=(5, 7, 3), dense=(8, 8, 4))
    models = _with_random_biases([M.build_model(300, 5, cfg) for _ in range(3)])
    x = np.random.default_rng(4).normal(1, 0.1, (70, 300, 1)).astype(np.float32)
    ref = np.stack([m.predict(x, verbose=0) for m in models])
    for mult in (1, 8):  # 8: the 4- and 3-channel convolutions are padded with zero channels
        eng = I.FusedEnsemble(models, channel_multiple=mult)
        out = eng.predict(x, batch_size=32)  # 70 = two full batches and a partial one
        assert out.shape == ref.shape
        assert np.max(np.abs(out - ref)) < 1e-5 * max(1.0, np.max(np.abs(ref)))
    padded = [op[1].shape[-1] for op in I.FusedEnsemble(models).programs[0] if op[0] == "conv"]
    assert padded == [8, 8, 2]  # the last convolution feeds Flatten, so it keeps its 2 channels
    with pytest.raises(M.ModelMismatchError, match="300 pixels"):
        eng.predict(x[:, :200])


@pytest.mark.skipif(M.backend() != "tensorflow", reason="the fused ensemble is TensorFlow-only")
def test_other_layers_fall_back_to_keras_predict():
    inp = keras.Input(shape=(40, 1))
    h = keras.layers.BatchNormalization()(keras.layers.Conv1D(2, 3)(inp))
    model = keras.Model(inp, keras.layers.Dense(5)(keras.layers.Flatten()(h)))
    with pytest.raises(NotImplementedError, match="BatchNormalization"):
        I.FusedEnsemble([model])
    x = np.ones((4, 40, 1), np.float32)
    scaler = M.LabelScaler(np.zeros(5), np.ones(5))
    mean, std, _ = I.ensemble_predict([model, model], x, scaler)
    assert np.allclose(mean, model.predict(x, verbose=0)) and np.allclose(std, 0.0)


@pytest.mark.skipif(M.backend() != "tensorflow", reason="the fallback engine is TensorFlow-only")
def test_without_the_c_kernel_the_tensorflow_graph_is_used(monkeypatch):
    from helpers import inference

    monkeypatch.setattr(inference, "_convkernel", None)  # as on a machine without a C compiler
    cfg = M.ModelConfig(filters=(4, 3, 2), kernels=(5, 7, 3), dense=(8, 8, 4))
    models = _with_random_biases([M.build_model(120, 5, cfg) for _ in range(2)])
    with pytest.raises(NotImplementedError, match="not built"):
        inference.KernelEnsemble(models)
    eng = I.inference_engine(models)
    assert isinstance(eng, I.FusedEnsemble) and "TensorFlow" in I.engine_name(eng)
    x = np.random.default_rng(8).normal(1, 0.1, (5, 120, 1)).astype(np.float32)
    ref = np.stack([m.predict(x, verbose=0) for m in models])
    _, _, per = I.ensemble_predict(models, x, M.LabelScaler(np.zeros(5), np.ones(5)))
    assert np.allclose(per, ref, atol=1e-5)
    assert "one model at a time" in I.engine_name(None)


@pytest.mark.parametrize("name,module", [("tensorflow", "tensorflow"), ("jax", "jax"), ("torch", "torch")])
def test_every_installed_backend_builds_fits_predicts_and_differentiates(name, module):
    import importlib.util
    import os
    import subprocess
    import sys
    from pathlib import Path

    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed")
    env = dict(os.environ, KERAS_BACKEND=name)
    script = Path(__file__).with_name("backend_check.py")
    res = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["backend"] == name
    assert out["epochs"] == 1 and out["loss_finite"]
    assert out["pred_shape"] == [32, 5] and out["pred_finite"]
    assert out["spread_zero_for_identical_members"] < 1e-6
    assert out["grad_shape"] == [4, 120] and out["grad_nonzero"]
    assert out["linear_grad_ok"]
    from helpers import inference

    if inference.available():  # the C kernel gives this backend's numbers from its weights
        assert out["kernel_matches_keras"] is True


def test_training_code_digest_follows_the_trainer_not_its_docstrings():
    a = 'def train_member(x):\n    "doc"\n    return x + 1\n\n\ndef plot():\n    pass\n'
    b = 'def train_member(x):\n    """Other words."""\n    # a comment\n    return x + 1\n\n\ndef plot():\n    return 2\n'
    c = 'def train_member(x):\n    return x + 2\n'
    names = {"train_member"}
    assert M._normalised_code(a, names) == M._normalised_code(b, names)  # docs, comments, other functions
    assert M._normalised_code(a, names) != M._normalised_code(c, names)  # a changed line of the trainer
    d = M.training_code_digest()
    assert len(d) == 64 and d == M.training_code_digest()
    assert M.fit_digest("x", [1, 2], [3]) != M.fit_digest("x", [1, 2], [4])


def test_a_killed_member_resumes_from_its_last_epoch_with_the_same_numbers(toy, tmp_path, monkeypatch):
    x, y = toy
    ys = M.LabelScaler.fit(y).scale(y)
    cfg = M.ModelConfig(**{**SMALL.as_dict(), "epochs": 4, "patience": 10,
                           **{k: tuple(v) for k, v in SMALL.as_dict().items() if isinstance(v, list)}})
    args = (x[:64], ys[:64], x[64:], ys[64:], cfg)
    straight, h_straight, _ = M.train_member(*args, seed=11, log_every=0)
    ckpt = tmp_path / "member_00.training"
    real_write = M._write_checkpoint

    def killed_after_two(folder, key, model, best_weights, history, best, wait, epoch, seconds):
        real_write(folder, key, model, best_weights, history, best, wait, epoch, seconds)
        if epoch == 2:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(M, "_write_checkpoint", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        M.train_member(*args, seed=11, log_every=0, checkpoint=ckpt, checkpoint_key="k")
    monkeypatch.setattr(M, "_write_checkpoint", real_write)
    assert json.loads((ckpt / "state.json").read_text())["epoch"] == 2
    resumed, h_resumed, _ = M.train_member(*args, seed=11, log_every=0, checkpoint=ckpt, checkpoint_key="k")
    assert len(h_resumed["val_loss"]) == 4 and np.allclose(h_resumed["val_loss"], h_straight["val_loss"], rtol=1e-5)
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        assert np.allclose(a, b, atol=1e-6)
    # a checkpoint made for other data is not taken up
    assert M._read_checkpoint(ckpt, "another key") is None
