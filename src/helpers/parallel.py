"""Where the parallel work runs: one ``scheduler`` parameter turned into a Dask client.

Every embarrassingly parallel step of the pipeline (rendering the survey in chunks, labelling a
data set in blocks, synthesising grid stars, training ensemble members) hands its tasks to
:func:`run_tasks` inside :func:`open_scheduler`. The ``scheduler`` parameter says where they run:

``"local"`` (the default)
    A :class:`distributed.LocalCluster` of worker *processes* on this machine, one per core by
    default, each with one thread and its BLAS, OpenMP and TensorFlow thread pools held to
    ``threads_per_worker`` so workers and libraries do not fight for the cores.
``"synchronous"``
    No parallelism and no Dask: the tasks run one after another in this process (for debugging:
    breakpoints and tracebacks work as usual).
``"tcp://host:8786"``
    An existing Dask scheduler (started by ``dask scheduler`` / ``dask worker`` or by a cluster
    manager). Its workers must import :mod:`helpers` and read the same files: on a cluster, put
    the repository and the run folder on a shared file system.
``"cluster.yaml"``
    A dask-jobqueue cluster described in a YAML file (see ``params/clusters/slurm.example.yaml``)::

        jobqueue: slurm          # slurm, pbs, sge, lsf, htcondor, moab, oar
        cluster:                 # keyword arguments of e.g. dask_jobqueue.SLURMCluster
          cores: 16
          processes: 8
          memory: 64GB
          walltime: "02:00:00"
          account: my_account
        scale:
          jobs: 10               # or: maximum_jobs for adaptive scaling

Results do not depend on the scheduler: every task derives its random numbers from the run's seed
and its own task index, never from the worker that runs it, and results are gathered by task
index. ``tests/test_parallel.py`` checks this with a two-process cluster against
``synchronous``.

A task that raises is retried ``retries`` times (a worker that dies is replaced and its tasks
re-run by Dask); a task that still fails stops the run with :class:`TaskError`, which names it.
Results already handed to ``on_result`` stay handled (callers write them atomically), so nothing
finished is lost and nothing half-written is left.

Progress (:class:`Progress`) and the dashboard address go to the terminal
(:func:`progress_stream`), never into an executed notebook and so never into the book.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

__all__ = ["SCHEDULER_HELP", "TaskError", "Scheduler", "open_scheduler", "scheduler_of", "run_tasks", "Progress",
           "progress_stream", "say", "under_runner", "PROGRESS_ENV",
           "cores", "describe"]

#: What the ``scheduler`` parameter accepts (for parameter cells and error messages).
SCHEDULER_HELP = ('"local" (a LocalCluster of processes on this machine), "synchronous" (no parallelism), '
                  '"tcp://host:port" (an existing Dask scheduler) or the path of a dask-jobqueue YAML file')

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")

_JOBQUEUE = {"slurm": "SLURMCluster", "pbs": "PBSCluster", "sge": "SGECluster", "lsf": "LSFCluster",
             "htcondor": "HTCondorCluster", "moab": "MoabCluster", "oar": "OARCluster"}


class TaskError(RuntimeError):
    """A task failed after its retries; the message names the task and the cause."""


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass
class Scheduler:
    """An open scheduler: ``kind`` (local, synchronous, address, jobqueue), a description, the
    number of workers and threads per worker, and the :class:`distributed.Client` (``None`` for
    ``synchronous``)."""

    kind: str
    description: str
    n_workers: int
    threads_per_worker: int
    client: Any = None

    def __str__(self) -> str:
        return self.description


def describe(spec: str) -> str:
    """The kind of scheduler a ``scheduler`` value names (``local``, ``synchronous``, ``address`` or
    ``jobqueue``); raises :class:`ValueError` for anything else."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"scheduler must be {SCHEDULER_HELP}; got {spec!r}")
    if spec in ("local", "synchronous"):
        return spec
    if "://" in spec:
        return "address"
    if spec.endswith((".yaml", ".yml")):
        return "jobqueue"
    raise ValueError(f"unknown scheduler {spec!r}: use {SCHEDULER_HELP}")


def _read_jobqueue(path: Path) -> dict:
    import yaml

    if not path.is_file():
        raise FileNotFoundError(f"scheduler file {path} does not exist: write one like "
                                "params/clusters/slurm.example.yaml or use scheduler='local'")
    with open(path, encoding="utf-8") as fh:
        spec = yaml.safe_load(fh) or {}
    if not isinstance(spec, dict) or spec.get("jobqueue") not in _JOBQUEUE:
        raise ValueError(f"{path}: 'jobqueue' must be one of {sorted(_JOBQUEUE)}")
    unknown = set(spec) - {"jobqueue", "cluster", "scale"}
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)} (allowed: jobqueue, cluster, scale)")
    return spec


def jobqueue_cluster(path):
    """Build (without starting jobs) the dask-jobqueue cluster a YAML file describes.

    Returns
    -------
    (cluster, scale) : the cluster object and the keyword arguments for its ``scale`` (or, with
    ``maximum_jobs``, ``adapt``) call.
    """
    spec = _read_jobqueue(Path(path))
    try:
        import dask_jobqueue
    except ImportError as exc:  # pragma: no cover - installed with the project
        raise ImportError("scheduler files need dask-jobqueue: pip install dask-jobqueue") from exc
    cls = getattr(dask_jobqueue, _JOBQUEUE[spec["jobqueue"]])
    return cls(**(spec.get("cluster") or {})), dict(spec.get("scale") or {"jobs": 1})


@contextmanager
def open_scheduler(spec: str = "local", n_workers: int | None = None, threads_per_worker: int = 1,
                   log: Callable[[str], None] | None = print, single_in_process: bool = True):
    """Open the scheduler a ``scheduler`` parameter names, and close it afterwards.

    Parameters
    ----------
    spec : str
        See the module docstring (:data:`SCHEDULER_HELP`).
    n_workers : int, optional
        Worker processes of a ``local`` cluster (default: cores // threads_per_worker); with 1 the
        tasks run in this process, as with ``synchronous`` (unless ``single_in_process`` is False,
        as for a benchmark of one worker against two).
    threads_per_worker : int
        Threads of each local worker, and the size of its BLAS, OpenMP and TensorFlow pools.
    log : callable, optional
        Gets one line saying what was opened and the dashboard address, if it has one (under the
        pipeline runner the address goes to the runner's terminal instead, not into the book).

    Yields
    ------
    Scheduler
    """
    kind = describe(spec)
    if kind == "local" and n_workers == 1 and single_in_process:
        yield Scheduler("synchronous", "local, one worker: in this process (no Dask)", 1, threads_per_worker)
        return
    if kind == "synchronous":
        yield Scheduler("synchronous", "synchronous (one process, no Dask)", 1, threads_per_worker)
        return
    from distributed import Client, LocalCluster

    cluster, dashboard = None, ":0"
    if kind == "local":
        n = n_workers or max(1, cores() // max(1, threads_per_worker))
        env = {v: str(threads_per_worker) for v in _THREAD_VARS}
        env["TF_CPP_MIN_LOG_LEVEL"] = "3"  # TensorFlow's native log lines would land in the notebooks
        try:
            import bokeh  # noqa: F401  (the dashboard needs it)
            dashboard = ":0"
        except ImportError:
            dashboard = None
        cluster = LocalCluster(n_workers=n, threads_per_worker=threads_per_worker, processes=True,
                               dashboard_address=dashboard, silence_logs=logging.ERROR, env=env)
        client = Client(cluster)
        desc = f"local Dask cluster, {n} worker process{'es' if n > 1 else ''} × {threads_per_worker} thread"
    elif kind == "address":
        client = Client(spec, timeout="30s")
        info = client.scheduler_info()
        n = len(info.get("workers", {}))
        desc = f"Dask scheduler at {spec}, {n} workers"
    else:
        cluster, scale = jobqueue_cluster(spec)
        if "maximum_jobs" in scale:
            cluster.adapt(**scale)
        else:
            cluster.scale(**scale)
        client = Client(cluster)
        n = sum(scale.values())
        desc = f"dask-jobqueue {type(cluster).__name__} from {spec} ({scale})"
    try:
        link = None if (kind == "local" and dashboard is None) else client.dashboard_link
        if link and under_runner():
            # under the pipeline runner the address goes to its terminal, not into the book
            say(f"Dask dashboard: {link}")
            link = None
        if log:
            log(f"scheduler: {desc}" + (f"; dashboard {link}" if link else ""))
        yield Scheduler(kind, desc, n, threads_per_worker, client)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def scheduler_of(scheduler, **kw):
    """A context that yields ``scheduler`` itself when it is an open :class:`Scheduler` (the caller
    keeps it open), or opens the one a ``scheduler`` value names (:func:`open_scheduler`, with
    ``kw``) and closes it afterwards: the one way helpers accept either."""
    from contextlib import nullcontext

    return nullcontext(scheduler) if isinstance(scheduler, Scheduler) else open_scheduler(scheduler, **kw)


#: Environment variable through which the pipeline runner names a file for progress lines; it
#: relays what arrives there to its terminal as it comes (:func:`helpers.pipeline.run_pipeline`).
#: A Jupyter kernel sends everything written to its standard output and error, even at the file
#: descriptor level, into the notebook, so a file is the one channel that stays out of the book.
PROGRESS_ENV = "HELPERS_PROGRESS_FILE"


class _ProgressFile:
    """Whole lines appended to the runner's progress file (opened for each line: workers and the
    kernel may write to it in turn)."""

    def __init__(self, path: str):
        self.path, self.buf = path, ""

    def write(self, text: str) -> None:
        self.buf += text
        if "\n" in self.buf:
            done, self.buf = self.buf.rsplit("\n", 1)
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(done + "\n")

    def flush(self) -> None:
        pass


def under_runner() -> bool:
    """Whether the pipeline runner collects progress (:data:`PROGRESS_ENV` is set)."""
    return bool(os.environ.get(PROGRESS_ENV))


def progress_stream():
    """Where progress goes: under the pipeline runner its progress file (shown on its terminal,
    never in the executed notebook or the book); elsewhere ``sys.stderr`` (a script's terminal, or
    a notebook opened by hand, where it is one line that ends)."""
    if under_runner():
        return _ProgressFile(os.environ[PROGRESS_ENV])
    return sys.stderr


def _write(stream, text: str) -> None:
    try:
        stream.write(text)
        stream.flush()
    except (OSError, ValueError):  # a closed or broken terminal must not stop the work
        pass


def say(line: str) -> None:
    """One line of what a long step is doing (a member finished, the scheduler opened), for the
    terminal and not for the book (:func:`progress_stream`)."""
    _write(progress_stream(), f"{line}\n")


class Progress:
    """A progress line that ends: ``label: 10% 20% … 100% (n of n tasks, t s)``.

    Written a decile at a time to ``stream`` (default :func:`progress_stream`), so a terminal shows
    one line that grows and ends, not thousands of redraws. Under the pipeline runner each step
    that reaches a new tenth is a whole line in its progress file, which it relays as it comes.
    """

    def __init__(self, n: int, label: str, stream=None):
        self.n, self.label, self.done, self.shown = n, label, 0, 0
        self.stream = stream if stream is not None else progress_stream()
        self.lines = under_runner() and stream is None
        self.t0 = time.perf_counter()
        if label and not self.lines:
            self._write(f"{label}:")

    def _write(self, text: str) -> None:
        _write(self.stream, text)

    def _tail(self) -> str:
        return f"({self.done} of {self.n} tasks, {time.perf_counter() - self.t0:.0f} s)"

    def step(self, k: int = 1) -> None:
        self.done += k
        if not self.label or self.n == 0:
            return
        decile = (10 * self.done) // self.n
        if self.lines and decile > self.shown:  # one line per step at most, at the decile reached
            self.shown = decile
            self._write(f"{self.label}: {10 * self.shown}% {self._tail()}\n")
        while self.shown < decile:
            self.shown += 1
            self._write(f" {10 * self.shown}%")

    def close(self) -> None:
        if self.label and not self.lines:
            self._write(f" {self._tail()}\n")


def run_tasks(sched: Scheduler, fn: Callable, items: Iterable, *, keys: list[str] | None = None,
              on_result: Callable[[int, Any], None] | None = None, retries: int = 1,
              label: str = "", max_pending: int | None = None, stream=None,
              stop: Callable[[], bool] | None = None) -> list:
    """Run ``fn(item)`` for every item on the scheduler; results in item order.

    Parameters
    ----------
    sched : Scheduler
        From :func:`open_scheduler`.
    fn : callable
        A module-level function (workers import it by name).
    items : iterable
        One argument per task.
    keys : list of str, optional
        Names of the tasks (default ``"<fn>-<index>"``), used in error messages.
    on_result : callable, optional
        ``on_result(index, result)`` as each task finishes (in completion order); when given, the
        results are not kept and the returned list holds ``None``.
    retries : int
        How often a failed task is tried again.
    label : str
        Progress line label; empty for none.
    max_pending : int, optional
        Most tasks submitted and not yet handled (bounds the memory of results waiting to be
        handled; default 2 × workers + 2).
    stream : file, optional
        Where the progress line goes (default :func:`progress_stream`: the terminal, not the
        notebook).
    stop : callable, optional
        Checked before each new task is started; once it returns True no further task starts
        (those running finish and are handled; the rest keep ``None``).

    Raises
    ------
    TaskError
        A task failed ``retries + 1`` times (or its worker died too often); unfinished tasks are
        cancelled, finished ones have been handed to ``on_result``.
    """
    items = list(items)
    keys = keys or [f"{getattr(fn, '__name__', 'task')}-{i}" for i in range(len(items))]
    if len(keys) != len(items):
        raise ValueError(f"{len(keys)} keys for {len(items)} tasks")
    out = [None] * len(items)
    prog = Progress(len(items), label, stream)

    def handle(i, res):
        if on_result is not None:
            on_result(i, res)
        else:
            out[i] = res
        prog.step()

    try:
        if sched.client is None:
            for i, item in enumerate(items):
                if stop is not None and stop():
                    break
                for attempt in range(retries + 1):
                    try:
                        res = fn(item)
                        break
                    except Exception as exc:
                        if attempt == retries:
                            raise TaskError(f"task {keys[i]} failed after {retries + 1} tries: "
                                            f"{type(exc).__name__}: {exc}") from exc
                handle(i, res)
            return out
        from distributed import as_completed

        client = sched.client
        limit = max_pending or 2 * max(1, sched.n_workers) + 2
        index, queue = {}, iter(range(len(items)))

        def submit(i):
            f = client.submit(fn, items[i], key=f"{keys[i]}-{os.getpid()}-{time.monotonic_ns()}",
                              retries=retries, pure=False)
            index[f.key] = i
            return f

        def next_task():
            return None if (stop is not None and stop()) else next(queue, None)

        first = []
        while len(first) < limit and (i := next_task()) is not None:
            first.append(submit(i))
        pending = as_completed(first, with_results=False)
        for fut in pending:
            i = index.pop(fut.key)
            try:
                res = fut.result()
            except Exception as exc:
                for f in list(pending.futures):
                    f.cancel()
                raise TaskError(f"task {keys[i]} failed after {retries + 1} tries: "
                                f"{type(exc).__name__}: {exc}") from exc
            fut.release()
            handle(i, res)
            nxt = next_task()
            if nxt is not None:
                pending.add(submit(nxt))
        return out
    finally:
        prog.close()
