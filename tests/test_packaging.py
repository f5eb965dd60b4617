"""The helpers package installs on its own (as from a git URL on Colab or Binder)."""
from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest


@pytest.mark.slow
def test_wheel_contains_package_and_data(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), "."], check=True)
    wheel = next(tmp_path.glob("*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for f in ("helpers/__init__.py", "helpers/pipeline.py", "helpers/data/lines_forest.csv",
              "helpers/data/lines_strong.csv", "helpers/data/benchmarks.csv",
              "helpers/data/simulator_calibration.json"):
        assert f in names, f
