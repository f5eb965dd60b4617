"""Regenerate the simulated survey of a profile and record its checksums in data_manifest.yaml.

Usage::

    python scripts/update_manifest.py --profile quick
    python scripts/update_manifest.py --profile default

It runs notebook 01 through the pipeline runner (so the parameters are exactly
the profile's), writes the content SHA-256 of the files it made and their sketches
(``data/sketches/<profile>/``: the comparison at a tolerance on processors that round
differently, helpers.dataset.content_sketch), and runs notebook 01
once more so that its manifest check is against the new entry (later notebooks
do not re-run: the data are the same).
"""
from __future__ import annotations

import argparse
import json
import sys

from helpers import paths, pipeline
from helpers.manifest import record_simulated
from helpers.survey import GENERATOR
from helpers.dataset import read_catalogue


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", required=True)
    args = ap.parse_args(argv)
    plans = pipeline.run_pipeline(args.profile, only="01_prepare_data")
    values = plans[0].parameters
    run_dir = paths.run_dir(args.profile)
    files = {"observed.h5": run_dir / values["out_observed"],
             "training.h5": run_dir / values["out_training"]}
    _, prov = read_catalogue(files["observed.h5"])
    record_simulated(values["manifest_name"], prov["parameters"], prov["seed"], GENERATOR,
                     prov["generator_version"], files,
                     description=f"simulated GIRAFFE HR10+HR21 survey of the '{args.profile}' profile",
                     sketches=paths.SKETCHES)
    # the executed chapter compared its files with the entry as it was before this script wrote the
    # new one: run it once more, so the run folder (and the book) shows the check against it
    pipeline.run_pipeline(args.profile, only="01_prepare_data", force=True)
    print(json.dumps({k: str(v) for k, v in files.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
