"""Inference and training speed of the CNN ensemble on this machine (issue #6 targets).

Everything is measured side by side in one run (each TensorFlow setting in its own
child process, since oneDNN is chosen when TensorFlow is imported):

* the machine's float32 peak (a large numpy matrix product);
* one model's Keras ``predict``, with oneDNN off and on, with and without XLA;
* the whole ensemble through :class:`helpers.inference.FusedEnsemble`, with and without
  padding convolution outputs to 8 channels;
* the whole ensemble through :class:`helpers.inference.KernelEnsemble` (the C kernel for
  the convolutions, BLAS for the dense head) with one and two threads and two block sizes;
* the members exported by Keras to ONNX and OpenVINO IR and run by ONNX Runtime and OpenVINO, one
  model at a time, where those packages are installed (they are not pinned: the C kernel is
  faster on this machine, see the rows);
* training throughput (``fit``) with oneDNN off and on.

Each rate is the median of ``--repeats`` timings. Printed: spectra per second for a
``--members``-model ensemble, the ratio to the 400 spectra/s target, and the
fraction of the theoretical floor reached (floor = network FLOPs / measured peak).

Usage::

    python bench/bench_cnn.py [--n 1024] [--pixels 15940] [--members 10] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

TARGET = 400.0  # spectra per second for the ensemble (issue #6)


def peak_gflops(n=2048, repeats=5) -> float:
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    b = np.random.default_rng(1).random((n, n), dtype=np.float32)
    a @ b
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n ** 3 * repeats / (time.perf_counter() - t0) / 1e9


def _median_rate(fn, n, repeats):
    fn()  # warm-up: graph tracing, oneDNN kernel selection
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        rates.append(n / (time.perf_counter() - t0))
    return float(np.median(rates))


def worker(args) -> dict:
    """Measurements under the TensorFlow settings of this process."""
    from helpers import model as M
    from helpers import inference as I

    rng = np.random.default_rng(2)
    x = rng.normal(1, 0.02, (args.n, args.pixels, 1)).astype(np.float32)
    out = {}
    if args.what == "predict":
        for jit in (False, True):
            m = M.build_model(args.pixels)
            m.compile(optimizer="adam", loss="mse", jit_compile=jit)
            rate = _median_rate(lambda: m.predict(x, batch_size=args.batch, verbose=0), args.n, args.repeats)
            out[f"keras predict, one model, XLA {'on' if jit else 'off'}"] = rate / args.members
    elif args.what == "fused":
        models = [M.build_model(args.pixels) for _ in range(args.members)]
        for mult in (1, 8):
            eng = I.FusedEnsemble(models, channel_multiple=mult)
            rate = _median_rate(lambda: eng.predict(x, batch_size=args.batch), args.n, args.repeats)
            out[f"fused ensemble, channels padded to {mult}"] = rate
        for bs in (64, 512):  # the batch size, with padding
            rate = _median_rate(lambda: eng.predict(x, batch_size=bs), args.n, args.repeats)
            out[f"fused ensemble, channels padded to 8, batch {bs}"] = rate
    elif args.what == "kernel":
        from helpers import inference

        models = [M.build_model(args.pixels) for _ in range(args.members)]
        for threads in (1, 2):
            eng = inference.KernelEnsemble(models, threads=threads)
            for bs in ((64, args.batch) if threads == 2 else (args.batch,)):
                rate = _median_rate(lambda: eng.predict(x, batch_size=bs), args.n, args.repeats)
                out[f"C kernel ({inference.simd()}), {threads} thread{'s' if threads > 1 else ''}, "
                    f"batch {bs}"] = rate
    elif args.what == "exchange":  # the exchange formats' own runtimes, where installed
        import tempfile

        models = [M.build_model(args.pixels) for _ in range(args.members)]
        for mdl in models:
            mdl.predict(x[:2], verbose=0)  # built, so it can be exported
        with tempfile.TemporaryDirectory() as tmp:
            try:
                import onnxruntime as ort

                sessions = []
                for i, mdl in enumerate(models):
                    path = os.path.join(tmp, f"m{i}.onnx")
                    mdl.export(path, format="onnx", verbose=False)
                    opts = ort.SessionOptions()
                    opts.intra_op_num_threads = os.cpu_count()
                    sessions.append(ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"]))
                name = sessions[0].get_inputs()[0].name

                def run_ort():
                    for sess in sessions:
                        for i in range(0, len(x), args.batch):
                            sess.run(None, {name: x[i:i + args.batch]})

                out[f"ONNX Runtime {ort.__version__}, one model at a time"] = _median_rate(run_ort, args.n, args.repeats)
            except ImportError:
                out["ONNX Runtime: not installed"] = float("nan")
            try:
                import openvino as ov

                core = ov.Core()
                compiled = []
                for i, mdl in enumerate(models):
                    path = os.path.join(tmp, f"m{i}.xml")
                    mdl.export(path, format="openvino", verbose=False)
                    compiled.append(core.compile_model(path, "CPU"))

                def run_ov():
                    for cm in compiled:
                        for i in range(0, len(x), args.batch):
                            cm(x[i:i + args.batch])

                out[f"OpenVINO {ov.__version__.split('-')[0]}, one model at a time"] = _median_rate(run_ov, args.n,
                                                                                                  args.repeats)
            except ImportError:
                out["OpenVINO: not installed"] = float("nan")
    elif args.what == "train":
        y = rng.random((args.n, 5)).astype(np.float32)
        m = M.build_model(args.pixels)
        m.fit(x[:128], y[:128], batch_size=64, epochs=1, verbose=0)
        t0 = time.perf_counter()
        m.fit(x, y, batch_size=64, epochs=1, verbose=0)
        out["train ms per spectrum-epoch"] = 1000 * (time.perf_counter() - t0) / args.n
    return out


def run_child(what, onednn, args) -> dict:
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=onednn, TF_CPP_MIN_LOG_LEVEL="3")
    cmd = [sys.executable, __file__, "--worker", what, "--n", str(args.n), "--pixels", str(args.pixels),
           "--members", str(args.members), "--repeats", str(args.repeats), "--batch", str(args.batch)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1024, help="spectra per timing")
    ap.add_argument("--pixels", type=int, default=15940)
    ap.add_argument("--members", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--worker", choices=("predict", "fused", "kernel", "exchange", "train"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        args.what = args.worker
        print(json.dumps(worker(args)))
        return 0

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
    from helpers.model import count_flops

    flops = count_flops(args.pixels)
    peak = peak_gflops()
    floor_rate = peak * 1e9 / (flops * args.members)  # ensemble spectra/s at the machine's peak
    rows = {}
    for onednn in ("0", "1"):
        for k, v in run_child("predict", onednn, args).items():
            rows[f"{k}, oneDNN {'on' if onednn == '1' else 'off'}"] = v
    rows.update(run_child("fused", "1", args))
    rows.update(run_child("kernel", "1", args))
    rows.update(run_child("exchange", "1", args))
    train = {f"oneDNN {'on' if o == '1' else 'off'}": run_child("train", o, args)["train ms per spectrum-epoch"]
             for o in ("0", "1")}
    print(f"CPU cores: {os.cpu_count()}; network: {flops / 1e6:.1f} MFLOP per spectrum and model; "
          f"peak (numpy float32 matmul): {peak:.1f} GFLOP/s")
    print(f"theoretical floor for {args.members} models: {floor_rate:.0f} spectra/s; target {TARGET:.0f}")
    print(f"{'ensemble inference (batch ' + str(args.batch) + ' unless said)':66s} {'spectra/s':>10s} {'/target':>8s} {'/floor':>7s}")
    for k, v in rows.items():
        print(f"{k:66s} {v:10.1f} {v / TARGET:8.2f} {v / floor_rate:7.3f}")
    base = rows["keras predict, one model, XLA off, oneDNN off"]
    best = max(rows, key=rows.get)
    print(f"best: {best}: {rows[best] / base:.1f}x the plain Keras predict")
    for k, v in train.items():
        print(f"training, {k}: {v:.2f} ms per spectrum-epoch ({1000 / v:.0f} spectra/s; "
              f"{3 * flops * 1000 / v / 1e9 / peak:.3f} of peak, counting 3x forward FLOPs)")
    print(f"training speed-up from oneDNN: {train['oneDNN off'] / train['oneDNN on']:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
