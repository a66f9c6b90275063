"""The large-request lane: big bodies are decoded, validated, scored and encoded in a separate process.

Why a process and not a thread: the expensive steps of a 100k-row request are single C calls that hold
the GIL for their whole length (msgspec's decode of a 24 MB body, numpy's conversion of 3M values, the
JSON encode of the answer), so a worker thread still stalls the event loop for hundreds of milliseconds
(measured: small-request p99 0.70 s with a thread, against 15-17 ms idle). In a process the gateway's loop
only hands over the raw bytes and gets the encoded answer back.

The lane's processes run at a lower CPU priority (``NICE``), so on a core shared with the event loop the
scheduler keeps serving small requests first; a large request gets the CPU the small ones leave. The lane is
bounded: at most ``max_pending`` large requests are in flight (running or queued) per gateway process;
beyond that a large request is answered 503 with ``Retry-After``, never queued without bound. A lane
process that dies (e.g. killed for memory) fails only its in-flight requests (503) and is replaced.

Each lane process loads a model version from the gateway's local copy (``LoadedModel.path``) the first
time it scores it, and keeps the few most recent versions. It uses the estimator's fast path only when the
gateway proved it equivalent at load time, so both answer exactly like the event loop path.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any

from airflow_saga.serving.protocol import BadRequest

if TYPE_CHECKING:
    from airflow_saga.serving.models import LoadedModel

log = logging.getLogger(__name__)

NICE = 10  # lane processes' niceness: CFS weight 110 against the event loop's 1024 on a shared core
_KEEP = 3  # model versions cached per lane process
_models: dict[str, LoadedModel] = {}  # in a lane process: path -> model


# --- in the lane process --------------------------------------------------------------------------------


def _init() -> None:
    import contextlib
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the gateway shuts the lane down, not a terminal's ^C
    with contextlib.suppress(OSError):
        os.nice(NICE)


def _model(path: str, alias: str, version: str, fast: bool) -> LoadedModel:
    model = _models.get(path)
    if model is not None:
        return model
    import mlflow.pyfunc

    from airflow_saga.serving.models import LoadedModel, fast_method
    from airflow_saga.serving.protocol import InputSpec

    pyfunc = mlflow.pyfunc.load_model(path)
    spec = InputSpec.from_pyfunc(pyfunc)
    model = LoadedModel(alias, version, pyfunc, spec, fast_method(pyfunc) if fast else None, path=path)
    while len(_models) >= _KEEP:
        _models.pop(next(iter(_models)))
    _models[path] = model
    return model


def warm(path: str, alias: str, version: str, fast: bool) -> int:
    """Load a model version ahead of its first large request (and start the process)."""
    _model(path, alias, version, fast)
    return os.getpid()


def score(
    kind: str,
    body: bytes,
    meta: dict[str, Any],
    model_ref: tuple[str, str, str, bool],
    model_name: str,
    want_rows: bool,
) -> tuple:
    """One request, start to end: ("ok", answer, columns, rows|None, predictions, request_id) or
    ("bad", status, error_code, message). Exceptions other than client errors propagate (a bug: 500)."""
    from airflow_saga.serving import protocol, v2

    model = _model(*model_ref)
    where = f"model {model_name!r} version {model.version}"
    request_id = None
    try:
        try:
            if kind == "v2":
                doc, tail, request = v2.parse_request(body, meta.get("binary"))
                request_id = request.id
                payload = v2.to_table(doc, tail, model)
            else:
                payload = protocol.decode_body(body, meta["content_type"])
            batch = protocol.parse(payload, model.spec)
        except BadRequest as exc:
            exc.message = f"{where}: {exc.message}"
            raise
        try:
            predictions = model.predict_batch(batch)
        except Exception as exc:  # the model could not score this input: a client error, as on the loop
            raise BadRequest(
                f"{where} could not score the input: {type(exc).__name__}: {str(exc)[:500]}"
            ) from None
        if kind == "v2":
            iid = request.id or meta.get("header_id") or meta["generated"]
            names = v2.output_names(model)
            doc_out = v2.response(model_name, model.version, request, iid, predictions, names)
            out = protocol.encode_json(doc_out)
        else:
            out = protocol.encode_json({"predictions": predictions})
    except BadRequest as exc:
        return ("bad", exc.status, exc.error_code, exc.message)
    return ("ok", out, batch.columns, batch.rows if want_rows else None, predictions, request_id)


# --- in the gateway process -----------------------------------------------------------------------------


class LargeLane:
    """A bounded pool of lane processes for one gateway process."""

    def __init__(self, workers: int, max_pending: int, model_name: str) -> None:
        self.workers = workers
        self.max_pending = max_pending
        self.model_name = model_name
        self.pending = 0  # touched on the event loop only
        self.completed = 0
        self.refused = 0
        self.crashes = 0
        self._lock = threading.Lock()
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        import multiprocessing

        # spawn, not fork: the gateway process has threads (poller, flusher, shadow pipes) a fork would copy
        # mid-flight
        ctx = multiprocessing.get_context("spawn")
        return ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init)

    def warm(self, model: LoadedModel, timeout: float = 300.0) -> None:
        """Start the lane's processes and load ``model`` in them (blocking; at start and on a swap)."""
        if model.path is None:
            return
        ref = (model.path, model.alias, model.version, model.fast is not None)
        try:
            futures = [self._pool.submit(warm, *ref) for _ in range(self.workers)]
            for f in futures:
                f.result(timeout=timeout)
        except Exception as exc:  # the first large request will load it (or fail with 503) instead
            log.warning("large-request lane could not preload version %s: %s", model.version, exc)

    def status(self) -> dict[str, int]:
        return {
            "workers": self.workers,
            "max_pending": self.max_pending,
            "pending": self.pending,
            "completed": self.completed,
            "refused": self.refused,
            "crashes": self.crashes,
        }

    async def run(
        self, kind: str, body: bytes, meta: dict[str, Any], model: LoadedModel, want_rows: bool
    ) -> tuple:
        """Score one large request in the lane; 503 with Retry-After when the lane is full or died."""
        assert model.path is not None
        if self.pending >= self.max_pending:
            self.refused += 1
            raise BadRequest(
                f"{self.pending} large requests are already being scored (the limit of this gateway "
                "process); retry later, or send smaller batches",
                503,
                "UNAVAILABLE",
                retry_after=1,
            )
        self.pending += 1
        pool = self._pool
        try:
            ref = (model.path, model.alias, model.version, model.fast is not None)
            fut = pool.submit(score, kind, body, meta, ref, self.model_name, want_rows)
            return await asyncio.wrap_future(fut)
        except BrokenProcessPool as exc:
            self._replace(pool)
            raise BadRequest(
                f"the large-request worker process died while scoring ({exc}); retry later",
                503,
                "UNAVAILABLE",
                retry_after=1,
            ) from None
        finally:
            self.pending -= 1
            self.completed += 1

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is broken:
                self.crashes += 1
                log.error("large-request lane process died; starting a new one")
                broken.shutdown(wait=False, cancel_futures=True)
                self._pool = self._new_pool()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
