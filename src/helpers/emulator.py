"""The spectral emulator: labels → continuum-normalised flux, trained on the synthesis grid.

The design follows The Payne (Ting et al. 2019, ApJ 879, 69): a fully
connected network with two hidden layers (leaky ReLU) maps the seven grid
labels of :data:`helpers.grid.GRID_LABELS`, scaled to [−0.5, 0.5] over
:data:`helpers.grid.DOMAIN`, to the flux of every pixel of the HR10 + HR21
0.05 Å grid at the grid's base resolution (R = 40 000). Everything the
instrument and the star's motions add (line-spread function, rotation,
macroturbulence, radial velocity) is applied afterwards by
:mod:`helpers.simulate`, so it is not an input here.

Training uses Keras (any backend); applying the network uses the stored
weights with numpy (a few matrix products), and the Jacobian ∂flux/∂label is
the exact derivative of the network (chain rule through the layers, the same
number automatic differentiation gives; tested against Keras autodiff).

The weights ship in ``data/emulator/emulator.npz`` with a JSON record beside
them and a SHA-256 in ``data_manifest.yaml``; :func:`load_emulator` verifies
both.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import paths
from .fileio import atomic_path, sha256_file
from .grid import DOMAIN, GRID_LABELS, BASE_RESOLUTION
from .grid import in_domain as grid_in_domain

__all__ = ["Emulator", "DomainError", "load_emulator", "build_network", "train", "pca_basis",
           "scale_labels", "EMULATOR_FILE"]

#: The shipped weights.
EMULATOR_FILE = "emulator.npz"
_LO = np.array([DOMAIN[k][0] for k in GRID_LABELS])
_HI = np.array([DOMAIN[k][1] for k in GRID_LABELS])


class DomainError(ValueError):
    """Labels outside the region the emulator was trained on."""


def scale_labels(x) -> np.ndarray:
    """Grid labels (n, 7) → network inputs in [−0.5, 0.5] over :data:`helpers.grid.DOMAIN`."""
    return (np.asarray(x, float) - _LO) / (_HI - _LO) - 0.5


@dataclass
class Emulator:
    """A trained emulator: weights, activation slope, the wavelength grid digest and a record.

    Attributes
    ----------
    weights : list of (W, b)
        Dense layers, W of shape (n_in, n_out) float32.
    basis : (n_components, n_pixels) array or None
        When given, the last layer gives principal-component coefficients and the flux is
        ``coefficients @ basis + offset`` (a fixed linear layer, kept apart because it is half the
        size and half the work of the folded product).
    offset : (n_pixels,) array or None
        The mean spectrum that goes with ``basis``.
    slope : float
        Negative slope of the leaky ReLU after each hidden layer.
    wave_digest : str
        Digest of the wavelength grid of the output (:attr:`helpers.spectra.Grid.digest`).
    record : dict
        How it was trained and how well it does on held-out syntheses.
    """

    weights: list
    slope: float
    wave_digest: str
    record: dict = field(default_factory=dict)
    basis: np.ndarray | None = None
    offset: np.ndarray | None = None

    @property
    def n_pixels(self) -> int:
        return (self.basis if self.basis is not None else self.weights[-1][0]).shape[1]

    def _last(self):
        """The whole last linear map (n_hidden, n_pixels) and its bias."""
        W, b = self.weights[-1]
        if self.basis is None:
            return W, b
        return W @ self.basis, b @ self.basis + self.offset

    def in_domain(self, x) -> np.ndarray:
        """True for label rows (n, 7) inside the box and the stellar region of the training grid."""
        return grid_in_domain(x)

    def check_domain(self, x, what: str = "labels") -> None:
        """Raise :class:`DomainError` naming the first rows outside the domain."""
        x = np.atleast_2d(np.asarray(x, float))
        if not np.all(np.isfinite(x)):
            raise DomainError(f"{what} contain NaN or infinity")
        bad = np.nonzero(~self.in_domain(x))[0]
        if bad.size:
            row = dict(zip(GRID_LABELS, np.round(x[bad[0]], 3)))
            raise DomainError(
                f"{bad.size} of {len(x)} {what} lie outside the emulator's domain (first: row "
                f"{bad[0]}, {row}); the grid covers {DOMAIN} where stars live "
                "(helpers.grid.in_star_region), vmic within helpers.grid.VMIC_BAND of its relation. "
                "Drop or flag those stars, or extend the grid "
                "with scripts/synthesize_grid.py and retrain.")

    def _forward(self, z, keep=False):
        acts = []
        h = z.astype(self.weights[0][0].dtype)
        for i, (W, b) in enumerate(self.weights):
            a = h @ W + b
            if i < len(self.weights) - 1:
                if keep:
                    acts.append(a)
                h = np.where(a > 0, a, self.slope * a)
            else:
                h = a
        if self.basis is not None:
            h = h @ self.basis.astype(h.dtype) + self.offset.astype(h.dtype)
        return h, acts

    def predict(self, x, chunk: int = 2048, check: bool = True) -> np.ndarray:
        """Flux (n, n_pixels) at base resolution for grid labels ``x`` (n, 7).

        float32 for the shipped (float32) weights; float64 for float64 weights.

        Parameters
        ----------
        x : array_like, (n, 7)
            Teff [K], log g, [Fe/H], [Mg/Fe], [Al/Fe], [α/Fe] [dex], vmic [km/s].
        chunk : int
            Rows per matrix product (memory ~ chunk × n_pixels × 4 bytes × 2). The result
            depends on it at the 1e-7 level (summation order): keep it fixed for
            reproducible files.
        check : bool
            Refuse labels outside the domain (:class:`DomainError`) instead of extrapolating.
        """
        x = np.atleast_2d(np.asarray(x, float))
        if x.shape[1] != len(GRID_LABELS):
            raise ValueError(f"emulator labels need {len(GRID_LABELS)} columns {GRID_LABELS}, "
                             f"got shape {x.shape}")
        if check:
            self.check_domain(x)
        from threadpoolctl import threadpool_limits

        z = scale_labels(x)
        out = np.empty((len(x), self.n_pixels), np.result_type(np.float32, self.weights[-1][0]))
        # one BLAS thread: the sums are then done in the same order on any machine of this
        # kind and for any number of worker processes, so the same seed gives the same survey
        with threadpool_limits(1, user_api="blas"):
            for i in range(0, len(x), chunk):
                out[i:i + chunk] = self._forward(z[i:i + chunk])[0]
        return out

    def jacobian(self, x, check: bool = True) -> np.ndarray:
        """Exact ∂flux/∂label of the network, (n, n_pixels, 7), per unit of each label.

        Units: 1/K for Teff, 1/dex for log g and abundances, s/km for vmic.
        """
        x = np.atleast_2d(np.asarray(x, float))
        if check:
            self.check_domain(x)
        z = scale_labels(x).astype(np.float32)
        out = np.empty((len(x), self.n_pixels, len(GRID_LABELS)), np.float64)
        inv_range = (1.0 / (_HI - _LO)).astype(np.float32)
        for n in range(len(x)):
            _, acts = self._forward(z[n:n + 1], keep=True)
            # d h_{k}/d z as a (n_in, width) matrix, layer by layer
            D = np.diag(inv_range)
            for (W, _), a in zip(self.weights[:-1], acts):
                D = (D @ W) * np.where(a[0] > 0, 1.0, self.slope)[None, :]
            W = self.weights[-1][0]
            out[n] = ((D @ W) @ self.basis).T if self.basis is not None else (D @ W).T
        return out

    def save(self, folder: Path | None = None, manifest_path: Path | None = None,
             declare: bool = True) -> Path:
        """Write weights and record atomically; declare the weights' SHA-256 in the manifest."""
        folder = Path(folder) if folder else paths.EMULATOR
        path = folder / EMULATOR_FILE
        arrays = {}
        for i, (W, b) in enumerate(self.weights):
            arrays[f"W{i}"] = W.astype(np.float32)
            arrays[f"b{i}"] = b.astype(np.float32)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, n_layers=np.array(len(self.weights)),
                                    slope=np.array(self.slope), wave_digest=np.array(self.wave_digest),
                                    labels=np.array(GRID_LABELS), lo=_LO, hi=_HI,
                                    base_resolution=np.array(BASE_RESOLUTION),
                                    has_basis=np.array(self.basis is not None), **arrays,
                                    **({"basis": self.basis.astype(np.float32),
                                        "offset": self.offset.astype(np.float32)}
                                       if self.basis is not None else {}))
        rec = dict(self.record)
        rec["sha256"] = sha256_file(path)
        with atomic_path(folder / "emulator.json") as tmp:
            tmp.write_text(json.dumps(rec, indent=1, sort_keys=True, default=float) + "\n",
                           encoding="utf-8")
        if declare:
            from .manifest import record_grid_part, record_section_info
            record_section_info("emulator", {
                "description": "Payne-style emulator of the synthesis grid (labels -> flux)",
                "generator": "scripts/train_emulator.py", "record": "data/emulator/emulator.json",
                "parameters": {k: rec.get(k) for k in ("hidden", "n_components", "epochs_run",
                                                        "batch_size", "learning_rate", "seed",
                                                        "grid_stars", "n_train")}},
                path=manifest_path)
            record_grid_part(EMULATOR_FILE, rec["sha256"], path=manifest_path, section="emulator",
                             replace=True)
        return path


def load_emulator(folder: Path | None = None, verify: bool = True,
                  manifest: dict | None = None) -> Emulator:
    """Read the shipped emulator, checking its SHA-256 against ``data_manifest.yaml``.

    Raises
    ------
    FileNotFoundError
        No weights: they ship with the repository or come from ``scripts/train_emulator.py``.
    helpers.manifest.ChecksumError
        Weights that do not match their declared checksum.
    ValueError
        A file of another label set or domain.
    """
    folder = Path(folder) if folder else paths.EMULATOR
    path = folder / EMULATOR_FILE
    if not path.exists():
        raise FileNotFoundError(f"emulator weights {path} are missing; they ship with the "
                                "repository (git checkout data/emulator) or are made by "
                                "scripts/train_emulator.py from the grid")
    if verify:
        from .manifest import ChecksumError, load_manifest
        manifest = manifest if manifest is not None else load_manifest()
        want = ((manifest.get("emulator") or {}).get("parts") or {}).get(EMULATOR_FILE)
        got = sha256_file(path)
        if want is None:
            raise ChecksumError(f"{path} is not declared in data_manifest.yaml (emulator.parts); "
                                "retrain with scripts/train_emulator.py, which declares it")
        if got != want:
            raise ChecksumError(f"{path} fails its checksum ({got[:12]}… ≠ {want[:12]}…): restore "
                                "it with git checkout or retrain with scripts/train_emulator.py")
    with np.load(path, allow_pickle=False) as z:
        if tuple(z["labels"]) != GRID_LABELS or not (np.allclose(z["lo"], _LO)
                                                     and np.allclose(z["hi"], _HI)):
            raise ValueError(f"{path} was trained on labels {tuple(z['labels'])} over another "
                             "domain than helpers.grid.DOMAIN; retrain it")
        weights = [(z[f"W{i}"], z[f"b{i}"]) for i in range(int(z["n_layers"]))]
        basis = z["basis"] if "has_basis" in z.files and bool(z["has_basis"]) else None
        emu = Emulator(weights, float(z["slope"]), str(z["wave_digest"]), basis=basis,
                       offset=z["offset"] if basis is not None else None)
    rec_path = folder / "emulator.json"
    if rec_path.exists():
        emu.record = json.loads(rec_path.read_text(encoding="utf-8"))
    return emu


# ----------------------------------------------------------------------------- training
def build_network(n_out: int, hidden=(300, 300), slope: float = 0.01, seed: int = 0):
    """The Keras network (inputs already scaled by :func:`scale_labels`)."""
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input((len(GRID_LABELS),), name="labels")
    h = inp
    for i, width in enumerate(hidden):
        h = keras.layers.Dense(width, name=f"hidden{i}")(h)
        h = keras.layers.LeakyReLU(negative_slope=slope)(h)
    out = keras.layers.Dense(n_out, name="flux")(h)
    return keras.Model(inp, out)


def pca_basis(flux, n_components: int):
    """Mean spectrum and the first ``n_components`` principal directions (orthonormal rows)."""
    flux = np.asarray(flux, np.float64)
    mean = flux.mean(axis=0)
    _, _, vt = np.linalg.svd(flux - mean, full_matrices=False)
    return mean, vt[:n_components]


def train(train_x, train_y, val_x, val_y, *, hidden=(300, 300), slope: float = 0.01,
          n_components: int = 0, epochs: int = 3000, batch_size: int = 64,
          learning_rate: float = 1e-3, patience: int = 200, seed: int = 0,
          wave_digest: str = "", log=None) -> Emulator:
    """Fit the network to grid spectra; keep the weights of the best validation loss.

    Parameters
    ----------
    train_x, val_x : (n, 7) grid labels
    train_y, val_y : (n, n_pixels) flux
    hidden : widths of the hidden layers
    n_components : int
        0: the last layer predicts every pixel (The Payne). Otherwise the network
        predicts the coefficients of the first ``n_components`` principal components
        of the training spectra, and the basis becomes a fixed last linear layer
        (:attr:`Emulator.basis`), so the emulator is the same kind of function (with an
        exact Jacobian) either way. With an orthonormal basis the loss on the coefficients
        is the flux loss within the basis's span, at a fraction of the cost.
    epochs, batch_size, learning_rate, patience : the Adam fit; the learning rate is
        halved after ``patience // 4`` epochs without improvement, the fit stops after
        ``patience``.
    seed : int
    wave_digest : str
        Digest of the flux's wavelength grid, stored with the weights.

    Returns
    -------
    Emulator
        With ``record["history"]`` (loss per epoch).
    """
    import keras

    train_y = np.asarray(train_y, np.float64)
    val_y = np.asarray(val_y, np.float64)
    if n_components:
        mean, basis = pca_basis(train_y, n_components)
        ty, vy = (train_y - mean) @ basis.T, (val_y - mean) @ basis.T
    else:
        ty, vy = train_y, val_y
    net = build_network(ty.shape[1], hidden, slope, seed)
    net.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse")
    cbs = [keras.callbacks.EarlyStopping(patience=patience, restore_best_weights=True),
           keras.callbacks.ReduceLROnPlateau(factor=0.5, patience=max(patience // 4, 1),
                                             min_lr=1e-6)]
    hist = net.fit(scale_labels(train_x).astype("float32"), ty.astype("float32"),
                   validation_data=(scale_labels(val_x).astype("float32"), vy.astype("float32")),
                   epochs=epochs, batch_size=batch_size, verbose=0, callbacks=cbs, shuffle=True)
    weights = [(np.asarray(layer.kernel, np.float64), np.asarray(layer.bias, np.float64))
               for layer in net.layers if isinstance(layer, keras.layers.Dense)]
    weights = [(W.astype(np.float32), b.astype(np.float32)) for W, b in weights]
    rec = {"hidden": list(hidden), "slope": slope, "n_components": n_components,
           "epochs_run": len(hist.history["loss"]),
           "batch_size": batch_size, "learning_rate": learning_rate, "patience": patience,
           "seed": seed, "backend": keras.backend.backend(),
           "history": {k: [float(v) for v in vals] for k, vals in hist.history.items()
                       if k in ("loss", "val_loss")}}
    if n_components:
        return Emulator(weights, slope, wave_digest, rec, basis=basis.astype(np.float32),
                        offset=mean.astype(np.float32))
    return Emulator(weights, slope, wave_digest, rec)
