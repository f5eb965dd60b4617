"""Run by tests/test_model.py in a child process with KERAS_BACKEND set: build, fit one step,
predict and take input gradients under that backend; print one JSON line with the results."""
from __future__ import annotations

import json
import sys

import numpy as np


def main() -> int:
    from helpers import model as M
    from helpers import inference as I

    rng = np.random.default_rng(0)
    n, p = 32, 120
    y = rng.random((n, 5)).astype(np.float32)
    x = M.prepare_inputs(1 - 0.2 * y[:, :1] * np.exp(-0.5 * ((np.arange(p) - 60) / 3.0) ** 2), np.ones((n, p)))
    cfg = M.ModelConfig(filters=(4, 3, 2), kernels=(5, 5, 3), dense=(8, 8, 4), epochs=1, patience=1,
                        batch_size=16, learning_rate=1e-3)
    model, hist, _ = M.train_member(x[:24], y[:24], x[24:], y[24:], cfg, seed=3, log_every=0)
    mean, std, per = I.ensemble_predict([model, model], x, M.LabelScaler.fit(y))
    g = M.input_gradients(model, x[:4], 0, batch_size=3)
    # the C kernel reads this backend's weights and gives its numbers (where it is built)
    from helpers import inference

    kernel_ok = None
    if inference.available():
        kp = inference.KernelEnsemble([model]).predict(x)[0]
        kernel_ok = bool(np.allclose(kp, np.asarray(model.predict(x, verbose=0)), atol=1e-5))
    # a linear model whose gradient is known exactly: 2 at pixel 17, 0 elsewhere
    import keras

    inp = keras.Input(shape=(50, 1))
    dense = keras.layers.Dense(1, use_bias=False)
    lin = keras.Model(inp, dense(keras.layers.Flatten()(inp)))
    w = np.zeros((50, 1), np.float32)
    w[17, 0] = 2.0
    dense.set_weights([w])
    gl = M.input_gradients(lin, np.ones((3, 50, 1), np.float32), 0)
    print(json.dumps({
        "backend": M.backend(), "epochs": len(hist["loss"]), "loss_finite": bool(np.isfinite(hist["loss"][0])),
        "pred_shape": list(mean.shape), "pred_finite": bool(np.all(np.isfinite(mean))),
        "spread_zero_for_identical_members": float(np.max(std)),
        "grad_shape": list(g.shape), "grad_nonzero": bool(np.any(g != 0)) and bool(np.all(np.isfinite(g))),
        "kernel_matches_keras": kernel_ok,
        "linear_grad_ok": bool(np.allclose(gl[:, 17], 2.0) and np.allclose(np.delete(gl, 17, axis=1), 0.0)),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
