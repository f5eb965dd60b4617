"""Run by tests/test_reference.py in a child process with KERAS_BACKEND set: load the members of a
reference folder in Keras safe mode and compare their outputs for the kept spectra with the recorded
ones; print one JSON line."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def main(folder: str) -> int:
    from helpers import model as M
    from helpers import reference

    with np.load(Path(folder) / reference.CHECK_FILE) as z:
        x, outputs, names = z["x"][..., None], z["outputs"], [str(n) for n in z["members"]]
    worst = 0.0
    for name, want in zip(names, outputs):
        model, _ = M.load_member(Path(folder) / f"{name}.keras")
        got = np.asarray(model.predict(x, verbose=0))
        worst = max(worst, float(np.max(np.abs(got - want))))
    print(json.dumps({"backend": M.backend(), "members": len(names), "max_abs_diff": worst}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
