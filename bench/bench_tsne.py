"""PCA plus t-SNE of 30 000 spectra: openTSNE (FFT) against scikit-learn (Barnes-Hut), side by side.

Target (chapter 02): PCA plus the embedding of 30 000 spectra in at most 60 s on 2 cores. The
spectra are the `default` profile's training set (run the pipeline first), repeated with fresh
noise up to the requested number. Prints the seconds of each step, the ratio of each method's
total to the 60 s budget, the speed ratio sklearn/openTSNE, and a quality number for each map:
the fraction of every spectrum's 10 nearest neighbours in PCA space that are also among its 10
nearest neighbours on the map (on 3 000 random spectra).

Usage::

    python bench/bench_tsne.py [--n 30000] [--skip-sklearn]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np

from helpers import cleaning, paths
from helpers.dataset import read_dataset


def knn_preservation(high, low, n_eval=3000, k=10, seed=0):
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(seed)
    idx = rng.choice(len(high), size=min(n_eval, len(high)), replace=False)
    a = NearestNeighbors(n_neighbors=k + 1).fit(high).kneighbors(high[idx], return_distance=False)[:, 1:]
    b = NearestNeighbors(n_neighbors=k + 1).fit(low).kneighbors(low[idx], return_distance=False)[:, 1:]
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(a, b)]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=30000)
    ap.add_argument("--budget-s", type=float, default=60.0)
    ap.add_argument("--skip-sklearn", action="store_true")
    ap.add_argument("--training", default=str(paths.run_dir("default") / "artefacts/01_prepare_data/training.h5"))
    args = ap.parse_args(argv)

    d = read_dataset(args.training)
    rng = np.random.default_rng(1)
    reps = int(np.ceil(args.n / len(d)))
    noise = [d.flux] + [d.flux + rng.normal(0, 0.01, d.flux.shape).astype(np.float32) for _ in range(reps - 1)]
    flux = np.concatenate(noise)[: args.n]
    ivar = np.concatenate([d.ivar] * reps)[: args.n]
    del noise
    cfg = cleaning.CleaningConfig()
    out = {"n_spectra": len(flux), "n_pixels": flux.shape[1]}
    t0 = time.perf_counter()
    Z, _, _ = cleaning.pca_features(flux, ivar, cfg)
    out["pca_s"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    emb = cleaning.embed(Z, cfg)
    out["opentsne_s"] = round(time.perf_counter() - t0, 1)
    out["opentsne_total_over_budget"] = round((out["pca_s"] + out["opentsne_s"]) / args.budget_s, 2)
    out["opentsne_knn_preservation"] = round(knn_preservation(Z, emb), 3)
    t0 = time.perf_counter()
    emb2 = cleaning.embed(Z, dataclasses.replace(cfg, n_interpolation_points=2))
    out["opentsne_2pt_s"] = round(time.perf_counter() - t0, 1)
    out["opentsne_2pt_knn_preservation"] = round(knn_preservation(Z, emb2), 3)
    if not args.skip_sklearn:
        from sklearn.manifold import TSNE

        t0 = time.perf_counter()
        emb3 = TSNE(perplexity=cfg.perplexity, random_state=cfg.seed, n_jobs=2, init="pca").fit_transform(Z)
        out["sklearn_s"] = round(time.perf_counter() - t0, 1)
        out["sklearn_total_over_budget"] = round((out["pca_s"] + out["sklearn_s"]) / args.budget_s, 2)
        out["sklearn_knn_preservation"] = round(knn_preservation(Z, emb3), 3)
        out["speed_ratio_sklearn_over_opentsne"] = round(out["sklearn_s"] / out["opentsne_s"], 2)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
