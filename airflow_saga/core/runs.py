"""MLflow runs that always end: FAILED on error, KILLED when interrupted, orphans closed by the retry.

Why: a training or monitoring task that dies leaves its MLflow run RUNNING forever, which misleads every
"latest run" view and query. Three things close that gap:

- :func:`ended_on_error` wraps the code that fills a run: an exception ends the run FAILED, an
  interruption (Ctrl-C, SIGTERM, Airflow's terminate) KILLED, best-effort and briefly when MLflow itself is
  the problem, and the original exception always propagates;
- :func:`end_active` ends every run still open in this process (Airflow calls it through the operator's
  ``on_kill``);
- :func:`create_run` first closes the **orphans** of the same Airflow task: RUNNING runs with the same DAG,
  DAG run, task and map index and an earlier try number, which a try leaves when MLflow was down while it
  failed, or when the process was killed outright (SIGKILL, a lost worker).

The Airflow facts come from the run's ``saga.airflow.*`` tags, so this module needs no Airflow import.
"""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import threading
from typing import TYPE_CHECKING, Any

from airflow_saga.core.redaction import redact

if TYPE_CHECKING:
    from collections.abc import Iterator

    from mlflow import MlflowClient

log = logging.getLogger(__name__)

AIRFLOW = "saga.airflow."
CLOSED_BY = "saga.run.closed_by"
#: Seconds allowed to end a run after MLflow itself failed (it is probably still down; the retry's orphan
#: clean-up closes the run later), so the task's own error is reported without another full wait.
CLEANUP_BUDGET = 5.0
_SAFE = re.compile(r"^[\w.\-]+$")


class RunInterrupted(BaseException):
    """SIGTERM arrived while a run was open in a process without a handler of its own."""


_lock = threading.Lock()
_active: dict[str, Any] = {}  # run_id -> client, while its code runs


def create_run(client: MlflowClient, experiment_id: str, *, run_name: str, tags: dict[str, str]) -> Any:
    """``client.create_run`` after closing the orphans of earlier tries of the same Airflow task."""
    close_orphans(client, experiment_id, tags)
    return client.create_run(experiment_id, run_name=run_name, tags=tags)


def _same_task(tags: dict[str, str], facts: dict[str, str]) -> bool:
    return all(tags.get(AIRFLOW + k, "-1" if k == "map_index" else None) == v for k, v in facts.items())


def close_orphans(client: MlflowClient, experiment_id: str, tags: dict[str, str]) -> list[str]:
    """End FAILED every RUNNING run of ``experiment_id`` left by an earlier try of the task that ``tags``
    describe (``saga.airflow.dag_id|run_id|task_id|try_number`` and optional ``map_index``); return their
    ids. A first try, or a run without Airflow tags (a notebook), has nothing to close."""
    facts = {k: tags.get(AIRFLOW + k) for k in ("dag_id", "run_id", "task_id")}
    try:
        try_number = int(tags.get(AIRFLOW + "try_number") or 0)
    except ValueError:
        return []
    if try_number <= 1 or not all(facts.values()):
        return []
    facts["map_index"] = tags.get(AIRFLOW + "map_index") or "-1"
    flt = "attributes.status = 'RUNNING'"
    if _SAFE.match(facts["task_id"] or ""):
        flt += f" and tags.`{AIRFLOW}task_id` = '{facts['task_id']}'"
    closed = []
    for run in client.search_runs([experiment_id], filter_string=flt, max_results=1000):
        run_tags = run.data.tags or {}
        try:
            earlier = int(run_tags.get(AIRFLOW + "try_number") or 0) < try_number
        except ValueError:
            earlier = False
        if not (earlier and _same_task(run_tags, facts)):
            continue
        run_id = run.info.run_id
        note = f"try {try_number} closed this run of try {run_tags.get(AIRFLOW + 'try_number')}, which ended"
        client.set_tag(run_id, CLOSED_BY, f"{note} without closing it")
        client.set_terminated(run_id, "FAILED")
        closed.append(run_id)
    if closed:
        log.warning("Closed %d orphaned MLflow run(s) of earlier tries: %s", len(closed), ", ".join(closed))
    return closed


def _interruption(exc: BaseException) -> bool:
    return isinstance(exc, KeyboardInterrupt | SystemExit | RunInterrupted) or type(exc).__name__ in (
        "AirflowTaskTerminated",
    )


def best_effort(client: MlflowClient, cause: BaseException | None, what: str, fn: Any, *args: Any) -> bool:
    """Clean-up after ``cause``: call ``fn(*args)``, never raise, and wait at most ``CLEANUP_BUDGET`` seconds
    when MLflow itself is the problem (or when called from a signal handler, ``cause`` None)."""
    from airflow_saga.core.errors import MlflowUnreachableError
    from airflow_saga.core.mlflow_client import bounded

    budget = CLEANUP_BUDGET if isinstance(cause, MlflowUnreachableError) or cause is None else None
    try:
        with bounded(client, budget=budget):
            fn(*args)
        return True
    except Exception as exc:
        log.warning("Could not %s (%s); a retry of the task will clean up", what, redact(exc))
        return False


def _end(client: MlflowClient, run_id: str, status: str, cause: BaseException | None) -> None:
    best_effort(client, cause, f"mark MLflow run {run_id} {status}", client.set_terminated, run_id, status)


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """In a plain process (no SIGTERM handler of its own), turn SIGTERM into ``RunInterrupted`` here."""
    install = threading.current_thread() is threading.main_thread() and (
        signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    )
    if not install:
        yield
        return

    def _raise(signum: int, frame: Any) -> None:
        raise RunInterrupted("SIGTERM")

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def ended_on_error(client: MlflowClient, run_id: str) -> Iterator[None]:
    """The block fills run ``run_id``: an exception ends it FAILED, an interruption KILLED, then re-raises.

    Ending the run on success stays the block's job (it knows when the run is complete).
    """
    with _lock:
        _active[run_id] = client
    try:
        with _sigterm_raises():
            yield
    except BaseException as exc:
        _end(client, run_id, "KILLED" if _interruption(exc) else "FAILED", exc)
        raise
    finally:
        with _lock:
            _active.pop(run_id, None)


def end_active(status: str = "KILLED", timeout: float = CLEANUP_BUDGET + 2) -> list[str]:
    """End every run open in this process with ``status``; return their ids.

    For signal handlers (an operator's ``on_kill``): the work runs in a helper thread, joined with
    ``timeout``, so the interrupted thread's own HTTP connection is never re-entered.
    """
    with _lock:
        open_runs = list(_active.items())
    if not open_runs:
        return []

    def work() -> None:
        for run_id, client in open_runs:
            _end(client, run_id, status, None)

    worker = threading.Thread(target=work, name="saga-end-runs", daemon=True)
    worker.start()
    worker.join(timeout)
    return [run_id for run_id, _ in open_runs]
