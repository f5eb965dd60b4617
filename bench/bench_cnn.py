"""Inference and training speed of the CNN ensemble on this machine (issue #6 targets).

Measured side by side in one run: the machine's float32 peak (a large numpy matrix product), one
model's forward pass with Keras ``predict`` at several batch sizes, with and without XLA
compilation (``jit_compile``), and a few training steps. Prints spectra per second for a
10-model ensemble, the ratio to the 400 spectra/s target, and the ratio of the achieved
floating-point rate to the measured peak (the theoretical floor is FLOPs / peak).

Usage::

    python bench/bench_cnn.py [--n 4096] [--pixels 15940]
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def peak_gflops(n=2048, repeats=5) -> float:
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    b = np.random.default_rng(1).random((n, n), dtype=np.float32)
    a @ b
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n ** 3 * repeats / (time.perf_counter() - t0) / 1e9


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--pixels", type=int, default=15940)
    ap.add_argument("--members", type=int, default=10)
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from helpers import model as M

    flops = M.count_flops(args.pixels)
    peak = peak_gflops()
    x = np.random.default_rng(2).normal(1, 0.02, (args.n, args.pixels, 1)).astype(np.float32)
    out = {"backend": M.backend(), "cpu_count": os.cpu_count(), "mflop_per_spectrum": round(flops / 1e6, 1),
           "peak_gflops_numpy_matmul": round(peak, 1), "predict": {}}
    for jit in (False, True):
        m = M.build_model(args.pixels)
        m.compile(optimizer="adam", loss="mse", jit_compile=jit)
        for bs in (256, 1024):
            m.predict(x[:bs], batch_size=bs, verbose=0)  # warm-up / compilation
            t0 = time.perf_counter()
            m.predict(x, batch_size=bs, verbose=0)
            rate = args.n / (time.perf_counter() - t0)
            out["predict"][f"jit={jit},batch={bs}"] = {
                "spectra_per_s_one_model": round(rate, 1),
                "spectra_per_s_ensemble": round(rate / args.members, 1),
                "ensemble_over_target_400": round(rate / args.members / 400, 3),
                "achieved_over_peak": round(rate * flops / 1e9 / peak, 4)}
    m = M.build_model(args.pixels)
    y = np.random.default_rng(3).random((512, 5)).astype(np.float32)
    m.fit(x[:512], y, batch_size=64, epochs=1, verbose=0)
    t0 = time.perf_counter()
    m.fit(x[:1024], np.concatenate([y, y]), batch_size=64, epochs=1, verbose=0)
    dt = time.perf_counter() - t0
    out["train_ms_per_spectrum_epoch"] = round(1000 * dt / 1024, 2)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
