"""The emulator: exact forward pass and Jacobian, safe loading, and the shipped weights."""
from __future__ import annotations


import numpy as np
import pytest
import yaml

from helpers import emulator as E
from helpers import grid as G
from helpers import manifest as M
from helpers.emulator_check import accuracy_summary, response_check, region_of
from helpers.spectra import giraffe_grid


def _random_emulator(n_out=40, hidden=(16, 12), seed=0):
    rng = np.random.default_rng(seed)
    sizes = (len(G.GRID_LABELS),) + hidden + (n_out,)
    w = [(rng.normal(0, 0.5, (a, b)).astype(np.float32), rng.normal(0, 0.1, b).astype(np.float32))
         for a, b in zip(sizes[:-1], sizes[1:])]
    return E.Emulator(w, 0.01, "digest")


def _inside(n, seed=1):
    return G.focus_design(n, seed=seed)  # inside the domain, vmic band included


def test_forward_pass_and_jacobian_equal_keras_autodiff():
    keras = pytest.importorskip("keras")
    emu = _random_emulator()
    net = E.build_network(40, hidden=(16, 12), slope=0.01)
    dense = [l for l in net.layers if isinstance(l, keras.layers.Dense)]
    for layer, (W, b) in zip(dense, emu.weights):
        layer.set_weights([W, b])
    x = _inside(3)
    z = E.scale_labels(x).astype("float32")
    assert np.allclose(emu.predict(x), np.asarray(net(z)), atol=1e-5)
    # autodiff through the backend (TensorFlow by default), chain rule for the label scaling
    import tensorflow as tf
    zt = tf.constant(z)
    with tf.GradientTape() as tape:
        tape.watch(zt)
        y = net(zt)
    jz = tape.batch_jacobian(y, zt).numpy()  # (n, n_out, 7) per scaled input
    lo = np.array([G.DOMAIN[k][0] for k in G.GRID_LABELS])
    hi = np.array([G.DOMAIN[k][1] for k in G.GRID_LABELS])
    assert np.allclose(emu.jacobian(x), jz / (hi - lo), rtol=1e-4, atol=1e-7)


def test_jacobian_matches_finite_differences_in_label_units():
    emu32 = _random_emulator(seed=3)
    emu = E.Emulator([(W.astype(float), b.astype(float)) for W, b in emu32.weights], 0.01, "d")
    x = _inside(1, seed=5)[0]
    J = emu.jacobian(x[None], check=False)[0]
    for k, h in enumerate([0.05, 1e-4, 1e-4, 1e-4, 1e-4, 1e-4, 1e-4]):  # steps inside one linear piece
        up, dn = x.copy(), x.copy()
        up[k] += h
        dn[k] -= h
        fd = (emu.predict(up[None], check=False)[0].astype(float)
              - emu.predict(dn[None], check=False)[0]) / (2 * h)
        assert np.allclose(J[:, k], fd, rtol=1e-3, atol=1e-4 * np.abs(J[:, k]).max() + 1e-12)


def test_domain_is_refused_not_extrapolated():
    emu = _random_emulator()
    x = _inside(2)
    x[1, 0] = 8000.0
    with pytest.raises(E.DomainError, match="1 of 2 labels lie outside.*row 1"):
        emu.predict(x)
    assert list(emu.in_domain(x)) == [True, False]
    x[1, 0] = np.nan
    with pytest.raises(E.DomainError, match="NaN"):
        emu.predict(x)
    with pytest.raises(ValueError, match="7 columns"):
        emu.predict(x[:, :5])


def test_principal_component_fit_ends_in_a_fixed_linear_layer(tmp_path):
    pytest.importorskip("keras")
    rng = np.random.default_rng(0)
    x = _inside(200, seed=2)
    z = E.scale_labels(x)
    basis = rng.normal(0, 1, (3, 60))
    flux = 1 - 0.1 * np.tanh(z[:, :3]) @ basis / 10  # rank-3 spectra
    emu = E.train(x[:160], flux[:160], x[160:], flux[160:], hidden=(32, 32), n_components=3,
                  epochs=300, batch_size=32, patience=100, learning_rate=3e-3)
    assert emu.weights[-1][0].shape == (32, 3) and emu.basis.shape == (3, 60)
    err = np.abs(emu.predict(x[160:]) - flux[160:])
    assert np.median(err) < 2e-3
    # the fixed layer is the same function as the folded product, and so is its Jacobian
    W, b = emu._last()
    folded = E.Emulator(emu.weights[:-1] + [(W, b)], emu.slope, emu.wave_digest)
    assert np.allclose(folded.predict(x[:5]), emu.predict(x[:5]), atol=1e-5)
    assert np.allclose(folded.jacobian(x[:2]), emu.jacobian(x[:2]), rtol=1e-4, atol=1e-8)
    man = tmp_path / "manifest.yaml"
    man.write_text(yaml.safe_dump({"simulated": {}}))
    emu.save(tmp_path, manifest_path=man)
    back = E.load_emulator(tmp_path, manifest=M.load_manifest(man))
    assert back.basis is not None and np.array_equal(back.predict(x[:5]), emu.predict(x[:5]))
    assert emu.record["n_components"] == 3 and emu.record["epochs_run"] >= 1


def test_save_and_load_check_the_declared_checksum(tmp_path):
    emu = _random_emulator(n_out=giraffe_grid().n_pixels)
    emu.wave_digest = giraffe_grid().digest
    man = tmp_path / "manifest.yaml"
    man.write_text(yaml.safe_dump({"simulated": {}}))
    emu.save(tmp_path, manifest_path=man)
    back = E.load_emulator(tmp_path, manifest=M.load_manifest(man))
    x = _inside(2)
    assert np.array_equal(back.predict(x), emu.predict(x))
    with pytest.raises(M.ChecksumError, match="not declared"):
        E.load_emulator(tmp_path, manifest={"simulated": {}})
    raw = bytearray((tmp_path / E.EMULATOR_FILE).read_bytes())
    raw[200] ^= 0xFF
    (tmp_path / E.EMULATOR_FILE).write_bytes(bytes(raw))
    with pytest.raises(M.ChecksumError, match="fails its checksum"):
        E.load_emulator(tmp_path, manifest=M.load_manifest(man))
    with pytest.raises(FileNotFoundError, match="train_emulator"):
        E.load_emulator(tmp_path / "nowhere")


@pytest.fixture(scope="module")
def shipped():
    return E.load_emulator(), G.load_grid(wave_digest=giraffe_grid().digest)


def test_shipped_emulator_reproduces_its_recorded_held_out_accuracy(shipped):
    emu, data = shipped
    names = emu.record["test_names"]
    assert len(names) == emu.record["n_test"] > 0
    assert {G.split_of(n) for n in names} == {"test"}  # never trained on, never chosen on
    test = data.named(names)
    assert G.in_domain(test.labels).all()
    got = accuracy_summary(emu, test)["all"]
    want = emu.record["test"]["all"]
    for key in ("median_abs", "p99_abs", "rms"):
        assert got[key] == pytest.approx(want[key], rel=1e-4)
    assert got["median_abs"] < 0.01  # far better than a flat continuum


def test_shipped_emulator_answers_mg_and_al_like_the_synthesis(shipped):
    emu, data = shipped
    resp = data.split("response")
    if not len(resp.names):
        pytest.skip("no response set in the shipped grid yet")
    rows = [r for r in response_check(emu, resp) if r["label"] in ("mg_fe", "al_fe")]
    assert rows
    for r in rows:
        assert r["max_syn_lines"] > 0  # the synthesis responds in the element's own lines
        assert 0.3 < r["gain_emu_lines"] < 1.7, r


def test_regions_cover_the_grid(shipped):
    _, data = shipped
    reg = region_of(data.labels)
    assert (reg == "other").sum() == 0


class _Exact:
    """A stand-in emulator that returns the stored syntheses themselves (for the checks)."""

    def __init__(self, data, scale=1.0):
        self.data, self.scale = data, scale

    def _rows(self, x):
        return [int(np.nonzero(np.all(np.isclose(self.data.labels, r), axis=1))[0][0]) for r in x]

    def predict(self, x, check=False):
        base = self.data.flux[self._rows(np.atleast_2d(x))].astype(float)
        return (1 - self.scale * (1 - base)).astype(np.float32)

    def jacobian(self, x, check=False):
        return np.zeros((len(np.atleast_2d(x)), self.data.flux.shape[1], len(G.GRID_LABELS)))


def test_checks_give_known_answers_for_a_perfect_and_a_scaled_emulator(shipped):
    _, data = shipped
    resp = data.split("response")
    if not len(resp.names):
        pytest.skip("no response set in the shipped grid yet")
    exact = accuracy_summary(_Exact(resp), resp)["all"]
    assert exact["median_abs"] == 0 and exact["max_abs"] == 0
    rows = response_check(_Exact(resp), resp)
    assert all(r["gain_emu"] == pytest.approx(1.0) and r["rms_diff_emu"] == 0 for r in rows)
    # a zero Jacobian misses the whole response: its error equals the response's own size
    assert all(r["rms_diff_jac"] == pytest.approx(r["rms_syn"]) for r in rows)
    # line depths 10 % too deep everywhere: every response is 1.1 times the synthesis's
    rows = response_check(_Exact(resp, scale=1.1), resp)
    assert all(r["gain_emu"] == pytest.approx(1.1, rel=1e-3) for r in rows)
    from helpers.emulator_check import reference_line_summary, reference_line_table
    from helpers.lines import load_reference_lines
    lines = reference_line_table(_Exact(resp.select(np.arange(3))), resp.select(np.arange(3)),
                                 load_reference_lines())
    assert lines and all(r["depth_emu"] == pytest.approx(r["depth_syn"], abs=1e-6) for r in lines)
    assert all(s["rms_depth"] < 1e-6 for s in reference_line_summary(lines))


def test_verdicts_follow_their_criteria(tmp_path):
    from helpers.emulator_check import accuracy_verdict, curve_verdict, write_line_table

    assert accuracy_verdict({"median_abs": 0.001, "p99_abs": 0.005}) == "both aims are met"
    assert "99th-percentile aim is not" in accuracy_verdict({"median_abs": 0.001, "p99_abs": 0.02})
    assert accuracy_verdict({"median_abs": 0.01, "p99_abs": 0.02}) == "neither aim is met"
    c = [{"n_train": 100, "p99_abs": 0.04}, {"n_train": 200, "p99_abs": 0.02}]
    assert "falls by 50%" in curve_verdict(c) and "would still help" in curve_verdict(c)
    c[1]["p99_abs"] = 0.039
    assert "levelled off" in curve_verdict(c)
    assert "no learning curve" in curve_verdict(c[:1])
    rows = [{"star": "d00010", "wave": 8806.75, "depth_syn": 0.5}]
    write_line_table(tmp_path / "t.csv", rows)
    assert (tmp_path / "t.csv").read_text().splitlines() == ["star,wave,depth_syn",
                                                            "d00010,8806.75,0.5"]
