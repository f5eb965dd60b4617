"""The reference ensemble: used only when it is what the run would train, refused when altered,
and (for the shipped one) still giving its recorded outputs under every installed backend."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from helpers import model as M  # noqa: E402
from helpers import paths, reference  # noqa: E402
from helpers.dataset import content_digest, content_sketch, read_dataset, write_sketch  # noqa: E402
from helpers.fileio import sha256_file  # noqa: E402

SMALL = M.ModelConfig(filters=(4, 3, 2), kernels=(5, 5, 3), dense=(8, 8, 4), epochs=2, patience=2,
                      batch_size=16, learning_rate=1e-3)


@pytest.fixture(scope="module")
def built(tiny_survey, tmp_path_factory):
    """A reference of two small members, recorded as scripts/train_reference.py records one."""
    from helpers import survey

    cfg, path, cat = tiny_survey
    rows = survey.select_training(cat, cfg)
    fit, val = rows[:64], rows[64:96]
    scaler = M.LabelScaler.fit(read_dataset(path, rows=np.sort(fit)).labels("survey"))
    key = reference.run_key(path, fit, val, SMALL, 5, 2)
    assert key["fit_digest"] == M.fit_digest(content_digest(path), fit, val)
    folder = tmp_path_factory.mktemp("reference")
    M.train_ensemble(path, fit, val, n_models=2, cfg=SMALL, seed=5, out_dir=folder, scaler=scaler, log=None)
    members, sums = reference.finished_members(folder, key)
    sketch = write_sketch(folder / reference.SKETCH_FILE, content_sketch(path))
    sums[sketch.name] = sha256_file(sketch)
    reference.write_record(folder, {"key": key, "members": members, "sha256": sums, "wall_hours": 0.01,
                                    "worker_hours": 0.01, "machine": {"cpu": "test CPU", "cpu_count": 2},
                                    "training_set": {"sketch": reference.SKETCH_FILE}})
    return {"path": path, "fit": fit, "val": val, "scaler": scaler, "key": key, "folder": folder}


def test_a_matching_reference_is_loaded_not_trained(built, tmp_path):
    used, why, rec = reference.use_if_it_applies(str(built["folder"] / "reference.json"), built["key"], tmp_path)
    assert used and "matches" in why and rec["members"]["member_01"]["epochs"] == 2
    lines = []
    members = M.train_ensemble(built["path"], built["fit"], built["val"], n_models=2, cfg=SMALL, seed=5,
                               out_dir=tmp_path, scaler=built["scaler"], log=lines.append)
    assert all(m.get("reused") for m in members) and all("kept from an earlier run" in s for s in lines)
    text = reference.chapter_text(used, why, rec, members, SMALL)
    assert "not trained in this run" in text and "test CPU" in text


def test_a_training_set_rounded_differently_is_served_at_the_tolerance(built, tmp_path):
    """Made on another processor, the same training set differs in the last bits: the reference
    still applies (same rows, content within the sketch tolerance), and says so; a real change
    of one spectrum does not."""
    import h5py

    from conftest import last_bit_copy

    near = last_bit_copy(built["path"], tmp_path / "near.h5")
    key = reference.run_key(near, built["fit"], built["val"], SMALL, 5, 2)
    assert key["fit_digest"] != built["key"]["fit_digest"] and key["rows_digest"] == built["key"]["rows_digest"]
    rec_path = str(built["folder"] / "reference.json")
    used, why, _ = reference.use_if_it_applies(rec_path, key, tmp_path / "none")
    assert not used and "content differs" in why  # without the run's data nothing can be compared
    used, why, rec = reference.use_if_it_applies(rec_path, key, tmp_path / "m", data_path=near)
    assert used and "within the stated tolerance" in why, why
    members = M.train_ensemble(near, built["fit"], built["val"], n_models=2, cfg=SMALL, seed=5,
                               out_dir=tmp_path / "m", scaler=built["scaler"], log=None,
                               accept_digests=[rec["key"]["fit_digest"]])
    assert all(m.get("reused") for m in members)
    assert "within the stated tolerance" in reference.chapter_text(used, why, rec, members, SMALL)
    with h5py.File(near, "r+") as f:
        f["flux"][int(built["fit"][0]), 100] += 0.01
    used, why, _ = reference.use_if_it_applies(rec_path, reference.run_key(near, built["fit"], built["val"], SMALL, 5, 2),
                                               tmp_path / "x", data_path=near)
    assert not used and "beyond the stated tolerance" in why, why
    assert not (tmp_path / "x").exists()


def test_any_difference_trains_and_says_what_differs(built, tmp_path):
    other = M.ModelConfig(**{**SMALL.__dict__, "learning_rate": 1e-4})
    cases = [
        (reference.reference_key(built["key"]["fit_digest"], other, 5, 2), "learning_rate: 0.001 there, 0.0001 here"),
        (reference.reference_key("another training set", SMALL, 5, 2), "training set"),
        (reference.reference_key(built["key"]["fit_digest"], SMALL, 6, 2), "another seed"),
        (reference.reference_key(built["key"]["fit_digest"], SMALL, 5, 3), "first 2 of the 3 members"),
    ]
    for key, says in cases:
        used, why, _ = reference.use_if_it_applies(str(built["folder"] / "reference.json"), key, tmp_path)
        assert not used and says in why, why
    assert not list(tmp_path.iterdir())  # nothing was copied
    used, why, _ = reference.use_if_it_applies("", built["key"], tmp_path)
    assert not used and "in_reference" in why


def test_an_incomplete_reference_is_not_used(built, tmp_path):
    folder = tmp_path / "ref"
    folder.mkdir()
    rec = json.loads((built["folder"] / "reference.json").read_text())
    rec["members"].pop("member_01")
    (folder / "reference.json").write_text(json.dumps(rec))
    ok, why = reference.match(built["key"], folder)
    assert not ok and "first 1 of the 2 members" in why
    one = reference.reference_key(built["key"]["fit_digest"], SMALL, 5, 1)  # the first member alone
    ok, why = reference.match(one, folder)
    assert ok and "first 1 of 1 finished members" in why


def test_a_tampered_member_is_refused_by_its_checksum(built, tmp_path):
    import shutil

    folder = tmp_path / "ref"
    shutil.copytree(built["folder"], folder)
    f = folder / "member_01.keras"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    out = tmp_path / "models"
    with pytest.raises(reference.ReferenceError, match="member_01.keras does not match its checksum"):
        reference.use_if_it_applies(str(folder / "reference.json"), built["key"], out)
    assert not out.exists() or not list(out.iterdir())  # nothing copied


def test_a_record_of_another_version_is_refused(tmp_path):
    (tmp_path / "reference.json").write_text(json.dumps({"reference_version": 99}))
    with pytest.raises(reference.ReferenceError, match="reference_version 99"):
        reference.read_record(tmp_path)


def test_the_check_file_keeps_each_members_outputs(built, tmp_path):
    import shutil

    folder = tmp_path / "ref"
    shutil.copytree(built["folder"], folder)
    x = M.prepare_inputs(*(lambda d: (d.flux, d.ivar))(read_dataset(built["path"], rows=slice(0, 3))))
    reference.write_check(folder, x, ["member_00", "member_01"])
    res = _check(folder, "tensorflow")
    assert res["members"] == 2 and res["max_abs_diff"] < 1e-5


def _check(folder: Path, backend: str) -> dict:
    script = Path(__file__).with_name("reference_check.py")
    env = dict(os.environ, KERAS_BACKEND=backend)
    res = subprocess.run([sys.executable, str(script), str(folder)], env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name,module", [("tensorflow", "tensorflow"), ("jax", "jax"), ("torch", "torch")])
def test_the_shipped_members_give_their_recorded_outputs_under_every_backend(name, module):
    import importlib.util

    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed")
    rec = reference.read_record()
    if rec is None or not (paths.REFERENCE / reference.CHECK_FILE).exists():
        pytest.skip("no reference ensemble is shipped yet")
    reference.verify_shipped()  # every shipped file matches data_manifest.yaml
    res = _check(paths.REFERENCE, name)
    assert res["backend"] == name and res["members"] == len(rec["members"])
    assert res["max_abs_diff"] < 1e-4, res  # float32 outputs of order 0.1-1, summed over ~1e6 weights


def test_members_accepted_across_processors_are_served_and_kept(built, tmp_path):
    """A reference whose first members were trained on another processor's bits of the same set
    (key: their fit digest, plus this set's as equivalent) serves this set and keeps its members."""
    import shutil

    folder = tmp_path / "ref"
    shutil.copytree(built["folder"], folder)
    rec = json.loads((folder / "reference.json").read_text())
    for name in ("member_00", "member_01"):  # as if trained elsewhere
        j = json.loads((folder / f"{name}.json").read_text())
        j["fit_digest"] = "elsewhere"
        (folder / f"{name}.json").write_text(json.dumps(j))
    rec["key"] = {**rec["key"], "fit_digest": "elsewhere", "equivalent_fit_digests": [built["key"]["fit_digest"]]}
    members, sums = reference.finished_members(folder, rec["key"])
    assert sorted(members) == ["member_00", "member_01"]
    rec["sha256"] = {**rec["sha256"], **sums}
    (folder / "reference.json").write_text(json.dumps(rec))
    used, why, got = reference.use_if_it_applies(str(folder / "reference.json"), built["key"], tmp_path / "m",
                                                 data_path=built["path"])
    assert used and "--accept-existing" in why, why
    kept = M.train_ensemble(built["path"], built["fit"], built["val"], n_models=2, cfg=SMALL, seed=5,
                            out_dir=tmp_path / "m", scaler=built["scaler"], log=None,
                            accept_digests=reference.fit_digests(got["key"]))
    assert all(m.get("reused") for m in kept)


def test_a_training_set_with_a_few_other_spectra_gets_the_reference_split_carried_over(tiny_survey, tmp_path):
    """Chapter 02's cleaning can decide differently for a few spectra on another processor: the
    reference then serves the run with its own split carried over onto the run's rows, the
    spectra only the run holds join the test part, and the members' label scaling comes along;
    more differing spectra, or another split, and it does not."""
    from helpers import ensemble, survey
    from helpers.dataset import subset_dataset

    cfg, path, cat = tiny_survey
    rows = np.sort(survey.select_training(cat, cfg))
    split = {"seed": 5, "test_fraction": 0.25, "val_fraction": 0.15, "n_train_max": 0}
    ref_rows = rows[1:]  # the reference's training set lacks the first star ...
    ref_set = subset_dataset(path, tmp_path / "ref_set.h5", ref_rows, {"subset": "reference"})
    tr, va, te = ensemble.split_rows(len(ref_rows), split["test_fraction"], split["val_fraction"], split["seed"])
    fi = ensemble.fit_rows(tr, 0, split["seed"])
    y = read_dataset(ref_set, rows=np.sort(fi)).labels("survey")
    scaler = M.LabelScaler.fit(y)
    key = reference.run_key(ref_set, fi, va, SMALL, split["seed"], 2)
    folder = tmp_path / "reference"
    M.train_ensemble(ref_set, fi, va, n_models=2, cfg=SMALL, seed=split["seed"], out_dir=folder, scaler=scaler, log=None)
    members, sums = reference.finished_members(folder, key)
    sketch = write_sketch(folder / reference.SKETCH_FILE, content_sketch(ref_set))
    sums[sketch.name] = sha256_file(sketch)
    reference.write_record(folder, {"key": key, "members": members, "sha256": sums, "parameters": split,
                                    "machine": {"cpu": "test CPU", "cpu_count": 2}, "worker_hours": 0.01,
                                    "training_set": {"sketch": reference.SKETCH_FILE, "n_spectra": len(ref_rows)}})
    rec_path = str(folder / "reference.json")
    drop = ref_rows[int(fi[3])]  # ... and this run's lacks a star the members were fitted on
    run_rows = np.setdiff1d(rows, [drop])
    run_set = subset_dataset(path, tmp_path / "run_set.h5", run_rows, {"subset": "run"})
    own_tr, own_va, _ = ensemble.split_rows(len(run_rows), split["test_fraction"], split["val_fraction"], split["seed"])
    used, _, _ = reference.use_if_it_applies(rec_path, reference.run_key(run_set, own_tr, own_va, SMALL, 5, 2),
                                             tmp_path / "none", data_path=run_set)
    assert not used  # the exact match refuses: other spectra, so another split

    plan, why = reference.near_reference(rec_path, run_set, split, SMALL, 2, out_dir=tmp_path / "m", max_fraction=0.05)
    assert plan is not None and why == "", why
    assert plan["n_only_run"] == 1 and plan["n_only_reference"] == 1 and "1 spectra that the reference's" in plan["reason"]
    star = lambda set_rows, r: set(np.asarray(set_rows)[np.asarray(r)].tolist())  # survey rows of set rows
    got = plan["rows"]
    assert star(run_rows, got["fit"]) == star(ref_rows, fi) - {drop}
    assert star(run_rows, got["val"]) == star(ref_rows, va)
    assert star(run_rows, got["test"]) == star(ref_rows, te) | {rows[0]}  # the run's own star is tested, never fitted
    assert not set(got["test"].tolist()) & (set(got["fit"].tolist()) | set(got["val"].tolist()))
    assert plan["scaler"].to_json() == scaler.to_json()
    kept = M.train_ensemble(run_set, got["fit"], got["val"], n_models=2, cfg=SMALL, seed=5, out_dir=tmp_path / "m",
                            scaler=plan["scaler"], log=None, accept_digests=reference.fit_digests(plan["record"]["key"]))
    assert all(m.get("reused") for m in kept)
    text = reference.chapter_text(True, plan["reason"], plan["record"], kept, SMALL, near=True)
    assert "almost the same spectra" in text and "exactly them" not in text

    plan, why = reference.near_reference(rec_path, run_set, split, SMALL, 2, max_fraction=0.001)
    assert plan is None and "more than 0.1 %" in why
    plan, why = reference.near_reference(rec_path, run_set, {**split, "val_fraction": 0.2}, SMALL, 2, max_fraction=0.05)
    assert plan is None and "another split (val_fraction: 0.15 there, 0.2 here)" in why
    plan, why = reference.near_reference(rec_path, run_set, split, SMALL, 3, max_fraction=0.05)
    assert plan is None and "fewer than the 3 members" in why
