"""The scheduler module: same numbers on any scheduler, failures named, killed workers survived."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from helpers import parallel


def seeded_task(task):
    """A task whose random numbers come from the run's seed and its own index only."""
    seed, index = task
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    return rng.normal(size=5).sum()


def failing_task(x):
    if x == 3:
        raise ValueError("bad star")
    return x


def dies_once(task):
    """Kills its worker process the first time it runs (a marker file remembers), then succeeds."""
    marker, x = task
    if x == 2 and not Path(marker).exists():
        Path(marker).write_text("died")
        os._exit(1)
    return x * 10


@pytest.fixture(scope="module")
def local():
    with parallel.open_scheduler("local", n_workers=2, log=None) as s:
        yield s


def test_same_numbers_on_two_processes_as_synchronous(local):
    tasks = [(42, i) for i in range(12)]
    with parallel.open_scheduler("synchronous", log=None) as sync:
        a = parallel.run_tasks(sync, seeded_task, tasks)
    b = parallel.run_tasks(local, seeded_task, tasks, max_pending=3)
    assert a == b and len(set(a)) == 12
    assert local.n_workers == 2 and local.kind == "local"


def test_a_failing_task_is_named_and_results_before_it_are_kept(local):
    got = {}
    for sched in (local, ):
        with pytest.raises(parallel.TaskError, match="task star-3 failed after 2 tries: ValueError: bad star"):
            parallel.run_tasks(sched, failing_task, range(6), keys=[f"star-{i}" for i in range(6)],
                               on_result=got.__setitem__, max_pending=1)
    assert got == {0: 0, 1: 1, 2: 2}  # max_pending=1: tasks run in order, the first three finished
    with parallel.open_scheduler("synchronous", log=None) as sync:
        with pytest.raises(parallel.TaskError, match="task failing_task-3"):
            parallel.run_tasks(sync, failing_task, range(6))


def test_a_worker_killed_mid_task_loses_nothing(local, tmp_path):
    marker = tmp_path / "marker"
    got = {}
    parallel.run_tasks(local, dies_once, [(str(marker), x) for x in range(5)], on_result=got.__setitem__)
    assert marker.read_text() == "died"  # the worker did die
    assert got == {x: 10 * x for x in range(5)}


def test_progress_is_one_line_that_ends():
    import io

    buf = io.StringIO()
    with parallel.open_scheduler("synchronous", log=None) as sync:
        parallel.run_tasks(sync, failing_task, range(3), label="grid stars", stream=buf)
    text = buf.getvalue()
    assert text.startswith("grid stars: ") and text.count("\n") == 1 and text.endswith("s)\n")
    assert "100%" in text and "3 of 3 tasks" in text


def test_unknown_schedulers_are_refused_with_the_choices(tmp_path):
    for bad in ("", "threads", 3):
        with pytest.raises(ValueError, match="synchronous"):
            parallel.describe(bad)
    with pytest.raises(FileNotFoundError, match="clusters/slurm.example.yaml"):
        parallel.jobqueue_cluster(tmp_path / "none.yaml")
    f = tmp_path / "c.yaml"
    f.write_text("jobqueue: kubernetes\n")
    with pytest.raises(ValueError, match="slurm"):
        parallel.jobqueue_cluster(f)


def test_the_shipped_slurm_example_builds_a_job_script():
    example = Path(__file__).resolve().parents[1] / "params" / "clusters" / "slurm.example.yaml"
    cluster, scale = parallel.jobqueue_cluster(example)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#SBATCH" in script and "--cpus-per-task=16" in script and scale == {"jobs": 10}


def test_stop_ends_submission_and_keeps_what_finished(local):
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 3

    for sched in (local, ):
        calls["n"] = 0
        out = parallel.run_tasks(sched, failing_task, [0, 1, 2, 4, 5, 6, 7], max_pending=1, stop=stop)
        assert out[:3] == [0, 1, 2] and out[3:] == [None] * 4
    with parallel.open_scheduler("synchronous", log=None) as sync:
        calls["n"] = 0
        out = parallel.run_tasks(sync, failing_task, [0, 1, 2, 4, 5, 6, 7], stop=stop)
    assert out[:3] == [0, 1, 2] and out[3:] == [None] * 4


def test_an_existing_scheduler_is_reached_by_its_address(local):
    lines = []
    local.client.wait_for_workers(2, timeout=60)  # a worker killed by an earlier test is being replaced
    address = local.client.scheduler.address
    with parallel.open_scheduler(address, log=lines.append) as sched:
        assert sched.kind == "address" and sched.n_workers == 2
        assert parallel.run_tasks(sched, seeded_task, [(42, i) for i in range(4)]) == \
            [seeded_task((42, i)) for i in range(4)]
    assert lines and lines[0].startswith(f"scheduler: Dask scheduler at {address}, 2 workers")


def test_a_local_cluster_says_where_its_dashboard_is(monkeypatch, tmp_path):
    lines = []
    with parallel.open_scheduler("local", n_workers=1, single_in_process=False, log=lines.append):
        pass
    assert len(lines) == 1 and "local Dask cluster, 1 worker process" in lines[0]
    assert "; dashboard http://" in lines[0]  # bokeh is pinned, so the dashboard runs
    progress = tmp_path / "progress.txt"
    monkeypatch.setenv(parallel.PROGRESS_ENV, str(progress))  # as under the pipeline runner
    lines.clear()
    with parallel.open_scheduler("local", n_workers=1, single_in_process=False, log=lines.append):
        pass
    assert "dashboard" not in lines[0]  # not into the executed notebook ...
    assert progress.read_text().startswith("Dask dashboard: http://")  # ... to the runner's terminal
