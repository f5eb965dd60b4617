"""The runner on tiny throw-away notebooks: order, skip logic, failures, atomicity, timeouts."""
from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest
import yaml

from helpers import pipeline
from helpers.fileio import atomic_path


def _notebook(path: Path, params: str, body: str) -> None:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# tiny"), cell, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


WRITE = """
from pathlib import Path
import time
time.sleep(sleep)
if fail:
    raise ValueError("planned failure")
text = Path(in_text).read_text() if in_text else ""
from helpers.fileio import write_text
write_text(out_text, text + f"{tag}:{value};")
"""


@pytest.fixture()
def project(tmp_path):
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    _notebook(nbdir / "01_first.ipynb",
              'in_text = ""\nout_text = "artefacts/a.txt"\nvalue = 1\nsleep = 0.0\nfail = False\ntag = "a"',
              WRITE)
    _notebook(nbdir / "02_second.ipynb",
              'in_text = "artefacts/a.txt"\nout_text = "artefacts/b.txt"\nvalue = 2.5\nsleep = 0.0\n'
              'fail = False\ntag = "b"', WRITE)
    pdir = tmp_path / "params"
    pdir.mkdir()
    (pdir / "tiny.yaml").write_text(yaml.safe_dump(
        {"description": "test", "timeout_s": 120, "notebooks": {"01_first": {"value": 7}}}))
    return {"notebooks_dir": nbdir, "params_dir": pdir, "run_root": tmp_path / "runs"}


def run(project, **kw):
    logs = []
    plans = pipeline.run_pipeline("tiny", log=logs.append, **project, **kw)
    return plans, logs


def test_runs_in_order_and_records(project):
    plans, _ = run(project)
    assert [p.notebook.stem for p in plans] == ["01_first", "02_second"]
    assert all(p.action == "run" for p in plans)
    rd = project["run_root"] / "tiny"
    assert (rd / "artefacts" / "b.txt").read_text() == "a:7;b:2.5;"
    rec = json.loads((rd / "records" / "02_second.json").read_text())
    assert rec["status"] == "ok"
    assert rec["parameters"]["value"] == 2.5
    for key in ("git_commit", "packages", "wall_time_s", "machine", "seed", "peak_memory_gib"):
        assert key in rec
    assert 0.01 < rec["peak_memory_gib"] < 8  # a kernel running a tiny notebook
    assert "numpy" in rec["packages"] and rec["machine"]["cpu_count"] >= 1
    # the book shows this run's parameters, and collapses the notebook's defaults
    nb = nbformat.read(rd / "notebooks" / "01_first.ipynb", as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "hide-cell" not in injected[0].metadata["tags"]
    assert injected[0].source.startswith(pipeline.RUN_PARAMETERS_HEADER)
    defaults = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert defaults and "hide-cell" in defaults[0].metadata["tags"]


def test_skip_when_unchanged_and_rerun_downstream(project):
    run(project)
    plans, _ = run(project)
    assert [p.action for p in plans] == ["skip", "skip"]
    # a parameter change of the first notebook re-runs it and everything after it
    plans, _ = run(project, overrides=["01_first.value=8"])
    assert [p.action for p in plans] == ["run", "run"]
    assert (project["run_root"] / "tiny" / "artefacts" / "b.txt").read_text() == "a:8;b:2.5;"
    # a change of the second notebook's content re-runs only the second
    nb_path = project["notebooks_dir"] / "02_second.ipynb"
    nb = nbformat.read(nb_path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("x = 1"))
    nbformat.write(nb, nb_path)
    plans, _ = run(project, overrides=["01_first.value=8"])
    assert [p.action for p in plans] == ["skip", "run"]
    # a changed input artefact re-runs the notebook that reads it
    (project["run_root"] / "tiny" / "artefacts" / "a.txt").write_text("edited;")
    plans, _ = run(project, overrides=["01_first.value=8"])
    assert [p.action for p in plans] == ["skip", "run"]
    # --force runs everything
    plans, _ = run(project, overrides=["01_first.value=8"], force=True)
    assert [p.action for p in plans] == ["run", "run"]


def test_only_and_from(project):
    run(project)
    plans, _ = run(project, only="02", force=True)
    assert [p.notebook.stem for p in plans] == ["02_second"]
    plans, _ = run(project, start="01_first", force=True)
    assert [p.notebook.stem for p in plans] == ["01_first", "02_second"]


def test_only_refuses_missing_inputs(project):
    with pytest.raises(pipeline.PipelineError, match="input artefacts are missing"):
        run(project, only="02_second")


def test_failure_names_notebook_cell_error_and_keeps_partial(project):
    run(project)
    before = (project["run_root"] / "tiny" / "artefacts" / "b.txt").read_text()
    with pytest.raises(pipeline.NotebookFailed) as info:
        run(project, overrides=["02_second.fail=true"])
    msg = str(info.value)
    assert "02_second" in msg and "code cell 2" in msg and "planned failure" in msg
    assert info.value.kept.name == "02_second.failed.ipynb" and info.value.kept.exists()
    rd = project["run_root"] / "tiny"
    # the earlier artefact is untouched, and the failed run is recorded as failed
    assert (rd / "artefacts" / "b.txt").read_text() == before
    assert json.loads((rd / "records" / "02_second.json").read_text())["status"] == "failed"
    # a later run does not skip a notebook whose last run failed
    plans, _ = run(project)
    assert [p.action for p in plans] == ["skip", "run"]


def test_failure_stops_before_later_notebooks(project):
    with pytest.raises(pipeline.NotebookFailed, match="01_first"):
        run(project, overrides=["01_first.fail=true"])
    assert not (project["run_root"] / "tiny" / "artefacts" / "b.txt").exists()
    assert not (project["run_root"] / "tiny" / "records" / "02_second.json").exists()


def test_timeout_names_notebook(project):
    with pytest.raises(pipeline.NotebookFailed, match="01_first ran past its wall-clock limit"):
        run(project, overrides=["01_first.sleep=30"], timeout_s=8)
    assert not (project["run_root"] / "tiny" / "artefacts" / "a.txt").exists()


@pytest.mark.parametrize("override, match", [
    (["01_first.nonsense=3"], "unknown parameter 'nonsense' for 01_first"),
    (["01_first.value=abc"], "parameter 'value' of 01_first must be int"),
    (["02_second.fail=3"], "parameter 'fail' of 02_second must be bool"),
    (["09.value=1"], "'09' names no single notebook"),
    (["=1"], "NOTEBOOK.NAME=VALUE"),
    (["nonsense=1"], "no notebook has a parameter 'nonsense'"),
    (["tag=3"], "parameter 'tag' of 01_first must be str"),
])
def test_bad_parameters_refused_before_running(project, override, match):
    with pytest.raises(pipeline.ParameterError, match=match):
        run(project, overrides=override)
    assert not (project["run_root"] / "tiny" / "records").exists()


def test_bad_profile_refused(project):
    (project["params_dir"] / "bad.yaml").write_text("notebooks:\n  01_first:\n    valu: 3\n")
    with pytest.raises(pipeline.ParameterError, match="unknown parameter 'valu'"):
        pipeline.run_pipeline("bad", log=lambda *_: None, **project)
    with pytest.raises(pipeline.PipelineError, match="no profile 'missing'"):
        pipeline.run_pipeline("missing", log=lambda *_: None, **project)


def test_int_accepted_for_float(project):
    plans, _ = run(project, overrides=["02_second.value=3"])
    assert plans[1].parameters["value"] == 3.0 and isinstance(plans[1].parameters["value"], float)


def test_cli_reports_errors(project, capsys):
    code = pipeline.main(["--profile", "tiny", "--notebooks-dir", str(project["notebooks_dir"]),
                          "--params-dir", str(project["params_dir"]), "--run-root",
                          str(project["run_root"]), "-p", "01_first.bogus=1"])
    assert code == 1
    assert "unknown parameter 'bogus'" in capsys.readouterr().err


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "x.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]
    with pytest.raises(FileExistsError):
        with atomic_path(target, overwrite=False):
            pass


def test_about_run_page_is_written_from_the_records(tmp_path):
    import json

    from helpers import book

    rec_dir = tmp_path / "records"
    rec_dir.mkdir()
    for i, (nb, wall) in enumerate((("01_a.ipynb", 90.0), ("02_b.ipynb", 30.0))):
        (rec_dir / f"{nb[:-6]}.json").write_text(json.dumps({
            "notebook": nb, "status": "ok", "wall_time_s": wall, "started": f"2026-01-0{i + 1}T10:00:00+00:00",
            "git_commit": "abcdef1234567", "seed": 7, "machine": {"cpu_count": 2},
            "packages": {"numpy": "9.9", "keras": "3.0"}, "parameters": {"n": i, "seed": 7}}))
    page = book.about_run_page(tmp_path)
    assert "| 01_a.ipynb | ok | 1.5 |" in page and "| 02_b.ipynb | ok | 0.5 |" in page
    assert "Total: 2.0 minutes." in page and "| numpy | 9.9 |" in page and "cpu_count: 2" in page
    assert "n: 1" in page and "abcdef1234" in page
    assert "No run records" in book.about_run_page(tmp_path / "empty")


def test_shared_parameters_reach_every_notebook_that_has_them(project):
    nbs = pipeline.discover_notebooks(project["notebooks_dir"])
    prof = {"shared": {"tag": "s"}, "notebooks": {"02_second": {"tag": "own"}}}
    got = pipeline.resolve_parameters(nbs, prof, {})
    assert got["01_first"]["tag"] == "s" and got["02_second"]["tag"] == "own"  # per notebook wins
    got = pipeline.resolve_parameters(nbs, prof, pipeline.parse_overrides(["tag=cli"]))
    assert got["01_first"]["tag"] == got["02_second"]["tag"] == "cli"  # the command line wins over the profile
    got = pipeline.resolve_parameters(nbs, prof, pipeline.parse_overrides(["tag=cli", "02_second.tag=x"]))
    assert got["02_second"]["tag"] == "x"
    assert pipeline.parse_overrides(["scheduler=tcp://10.0.0.1:8786"]) == {pipeline.SHARED: {"scheduler": "tcp://10.0.0.1:8786"}}


def test_code_digests_follow_the_imports_a_notebook_reaches(tmp_path):
    pkg = tmp_path / "helpers"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n\ndef f():\n    from .d import g\n")
    (pkg / "b.py").write_text("import numpy\n")
    (pkg / "c.py").write_text("x = 1\n")
    (pkg / "d.py").write_text("def g():\n    pass\n")
    (pkg / "data" / "t.csv").write_text("1\n")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("%matplotlib inline\nfrom helpers import a")])
    path = tmp_path / "01_x.ipynb"
    nbformat.write(nb, path)
    got = pipeline.code_digests(path, package=pkg)
    assert sorted(got) == ["__init__.py", "a.py", "b.py", "d.py", "data/t.csv"]  # c.py is not reached
    before = got["a.py"]
    (pkg / "c.py").write_text("x = 2\n")
    assert pipeline.code_digests(path, package=pkg) == got
    (pkg / "d.py").write_text("def g():\n    return 1\n")
    assert pipeline.code_digests(path, package=pkg)["d.py"] != got["d.py"] and before == got["a.py"]


def test_a_change_that_leaves_an_output_as_it_was_runs_nothing_after_it(project):
    run(project)
    # a new cell in the first notebook that does not change what it writes: it re-runs, the second does not
    nb_path = project["notebooks_dir"] / "01_first.ipynb"
    nb = nbformat.read(nb_path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("y = 2"))
    nbformat.write(nb, nb_path)
    lines = []
    plans = pipeline.run_pipeline("tiny", log=lines.append, **project)
    assert [p.action for p in plans] == ["run", "skip"]
    assert any("01_first: the notebook's cells changed" in l for l in lines)
    lines.clear()
    pipeline.run_pipeline("tiny", overrides=["01_first.value=9"], dry_run=True, log=lines.append, **project)
    assert any("parameters changed: value" in l for l in lines)
    assert any("02_second: runs if what it reads from 01_first changes" in l for l in lines)


def test_list_parameters_shows_help_and_survives_a_closed_pipe(project):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "helpers.pipeline", "--profile", "tiny", "--list-parameters",
           "--notebooks-dir", str(project["notebooks_dir"]), "--params-dir", str(project["params_dir"])]
    full = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert "01_first" in full and "value = 7" in full
    # `... | head -1`: the reader goes away after one line; no traceback, exit status 0. The real
    # notebooks' list (about 15 kB) overflows a pipe shrunk to 4 kB, so the writer does hit the closed end.
    import fcntl

    cmd = [sys.executable, "-m", "helpers.pipeline", "--profile", "quick", "--list-parameters"]
    r, w = os.pipe()
    fcntl.fcntl(w, 1031, 4096)  # F_SETPIPE_SZ
    p = subprocess.Popen(cmd, stdout=w, stderr=subprocess.PIPE)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        fh.read(100)
    assert len(subprocess.run(cmd, capture_output=True, check=True).stdout) > 3 * 4096
    err = p.stderr.read().decode()
    assert p.wait() == 0 and "Traceback" not in err


def test_to_stops_after_the_named_notebook(project):
    plans, _ = run(project, stop="01")
    assert [p.notebook.stem for p in plans] == ["01_first"]
    with pytest.raises(pipeline.PipelineError, match="either --only or --from/--to"):
        run(project, only="01", stop="01")


def test_a_profile_of_ones_own_extends_another(project):
    pd = project["params_dir"]
    (pd / "mine.yaml").write_text("extends: tiny\nnotebooks:\n  02_second:\n    value: 9.5\n")
    prof = pipeline.load_profile("mine", pd)
    assert prof["notebooks"]["01_first"]["value"] == 7 and prof["notebooks"]["02_second"]["value"] == 9.5
    assert prof["timeout_s"] == 120
    plans = pipeline.run_pipeline("mine", log=lambda *_: None, **project)
    assert [p.action for p in plans] == ["run", "run"]
    assert (project["run_root"] / "mine" / "artefacts" / "b.txt").read_text() == "a:7;b:9.5;"
    (pd / "loop.yaml").write_text("extends: loop\n")
    with pytest.raises(pipeline.PipelineError, match="in a circle"):
        pipeline.load_profile("loop", pd)
    with pytest.raises(pipeline.PipelineError, match="no profile 'nothing'"):
        (pd / "bad.yaml").write_text("extends: nothing\n")
        pipeline.load_profile("bad", pd)


def test_a_run_killed_mid_notebook_is_run_again_and_leaves_nothing_half_written(project):
    import signal
    import subprocess
    import sys
    import time

    run(project)
    rd = project["run_root"] / "tiny"
    before = (rd / "artefacts" / "b.txt").read_text()
    executed = rd / "notebooks" / "02_second.ipynb"
    stamp = executed.stat().st_mtime_ns
    code = ("import sys; from pathlib import Path; from helpers import pipeline; "
            f"pipeline.run_pipeline('tiny', overrides=['02_second.sleep=60', '02_second.value=4.5'], "
            f"notebooks_dir=Path({str(project['notebooks_dir'])!r}), params_dir=Path({str(project['params_dir'])!r}), "
            f"run_root=Path({str(project['run_root'])!r}))")
    p = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    record = rd / "records" / "02_second.json"
    for _ in range(600):  # until the second notebook is running
        if record.exists() and json.loads(record.read_text()).get("status") == "running":
            break
        time.sleep(0.1)
    time.sleep(3)
    os.killpg(p.pid, signal.SIGKILL)  # the runner, papermill and the kernel, mid-notebook
    p.wait()
    assert json.loads(record.read_text())["status"] == "running"
    assert (rd / "artefacts" / "b.txt").read_text() == before  # the old output, whole
    assert executed.stat().st_mtime_ns == stamp  # the killed run's notebook never replaced the finished one
    # the next run, even with the old parameters, runs the killed notebook again
    plans, logs = run(project)
    assert [p.action for p in plans] == ["skip", "run"] and "no successful run recorded" in plans[1].reason
    assert (rd / "artefacts" / "b.txt").read_text() == before


PROGRESS = """
from helpers import parallel
from helpers.fileio import write_text
with parallel.open_scheduler("synchronous", log=None) as sched:
    got = parallel.run_tasks(sched, abs, [-1, -2, -3, -4], label="counting")
parallel.say("member 1/1: done")
print("result", got)
write_text(out_text, str(sum(got)))
"""


def test_progress_goes_to_the_terminal_not_to_the_notebook(project):
    _notebook(project["notebooks_dir"] / "01_first.ipynb", 'out_text = "artefacts/a.txt"', PROGRESS)
    (project["notebooks_dir"] / "02_second.ipynb").unlink()
    (project["params_dir"] / "tiny.yaml").write_text(yaml.safe_dump({"timeout_s": 120, "notebooks": {}}))
    _, logs = run(project)
    relayed = [line for line in logs if "counting:" in line]
    # a line per finished task at most, at the tenth it reached (4 tasks: 20, 50, 70, 100 %)
    assert len(relayed) == 4 and relayed[0].strip().startswith("01_first counting: 20%")
    assert "100% (4 of 4 tasks" in relayed[-1]
    assert any(line.strip() == "01_first member 1/1: done" for line in logs)
    executed = nbformat.read(project["run_root"] / "tiny" / "notebooks" / "01_first.ipynb", as_version=4)
    text = json.dumps([c.get("outputs", []) for c in executed.cells])
    assert "result [1, 2, 3, 4]" in text and "counting" not in text and "%" not in text
    assert "member 1/1" not in text
