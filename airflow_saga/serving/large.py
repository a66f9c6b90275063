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

Requests and answers travel as msgpack over a pipe per lane process, never as pickles: the gateway process
unpickles nothing (a hostile body cannot reach ``pickle`` through the lane, and the fuzz test's audit hook
would see it). Each exchange runs in a thread of the gateway process, which waits on the pipe without the GIL.

Each lane process loads a model version from the gateway's local copy (``LoadedModel.path``) the first
time it scores it, and keeps the few most recent versions. It uses the estimator's fast path only when the
gateway proved it equivalent at load time, so both answer exactly like the event loop path.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
from typing import TYPE_CHECKING, Any

from airflow_saga.serving.protocol import BadRequest

if TYPE_CHECKING:
    from airflow_saga.serving.models import LoadedModel

log = logging.getLogger(__name__)

NICE = 10  # lane processes' niceness: CFS weight 110 against the event loop's 1024 on a shared core
_KEEP = 3  # model versions cached per lane process
_models: dict[str, LoadedModel] = {}  # in a lane process: path -> model


# --- in the lane process --------------------------------------------------------------------------------


def _enc_hook(obj: Any) -> Any:
    """Values msgpack has no type for (numpy scalars, timestamps in a generic model's rows)."""
    item = getattr(obj, "item", None)
    return item() if callable(item) else str(obj)


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


def score(
    kind: str,
    body: bytes,
    meta: dict[str, Any],
    model_ref: list[Any],
    model_name: str,
    want_rows: bool,
) -> list[Any]:
    """One request, start to end: ["ok", answer, columns, rows|None, predictions, request_id] or
    ["bad", status, error_code, message]."""
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
            reason = f"{type(exc).__name__}: {str(exc)[:500]}"
            raise BadRequest(f"{where} could not score the input: {reason}") from None
        if kind == "v2":
            iid = request.id or meta.get("header_id") or meta["generated"]
            names = v2.output_names(model)
            doc_out = v2.response(model_name, model.version, request, iid, predictions, names)
            out = protocol.encode_json(doc_out)
        else:
            out = protocol.encode_json({"predictions": predictions})
    except BadRequest as exc:
        return ["bad", exc.status, exc.error_code, exc.message]
    return ["ok", out, batch.columns, batch.rows if want_rows else None, predictions, request_id]


def _serve(conn: Any) -> None:
    """A lane process: answer messages from the gateway until its end of the pipe closes."""
    import contextlib
    import signal

    import msgspec

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the gateway stops the lane, not a terminal's ^C
    with contextlib.suppress(OSError):
        os.nice(NICE)
    decode = msgspec.msgpack.Decoder().decode
    encode = msgspec.msgpack.Encoder(enc_hook=_enc_hook).encode
    parent = os.getppid()
    while True:
        try:
            # a gateway killed with SIGKILL closes the pipe; if a forked sibling still holds its end, the
            # changed parent pid says so
            while not conn.poll(2.0):
                if os.getppid() != parent:
                    return
            msg = decode(conn.recv_bytes())
        except (EOFError, OSError):
            return
        op = msg[0]
        try:
            if op == "warm":
                _model(*msg[1])
                out: list[Any] = ["ok", os.getpid()]
            else:
                out = score(*msg[1:])
        except Exception as exc:  # a bug or a model that cannot load: the gateway answers 500 and logs it
            out = ["error", f"{type(exc).__name__}: {str(exc)[:1000]}"]
        try:
            data = encode(out)
        except Exception as exc:  # e.g. an integer beyond 64 bits among the rows sent back for capture
            reason = f"{type(exc).__name__}: {str(exc)[:300]}"
            data = encode(
                ["bad", 400, "BAD_REQUEST", f"the request holds a value that cannot be recorded: {reason}"]
            )
        conn.send_bytes(data)


# --- in the gateway process -----------------------------------------------------------------------------


class _Worker:
    def __init__(self, ctx: Any) -> None:
        parent, child = ctx.Pipe(duplex=True)
        self.conn = parent
        self.process = ctx.Process(target=_serve, args=(child,), name="saga-large", daemon=True)
        self.process.start()
        child.close()

    def close(self) -> None:
        import contextlib

        with contextlib.suppress(OSError):
            self.conn.close()
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)


class LaneDied(Exception):
    pass


class LargeLane:
    """A bounded set of lane processes for one gateway process."""

    def __init__(self, workers: int, max_pending: int, model_name: str) -> None:
        import multiprocessing

        import msgspec

        self.workers = workers
        self.max_pending = max_pending
        self.model_name = model_name
        self.pending = 0  # touched on the event loop only
        self.completed = 0
        self.refused = 0
        self.crashes = 0
        # spawn, not fork: the gateway has threads (poller, flusher, shadow pipes) that a fork copies
        self._ctx = multiprocessing.get_context("spawn")
        self._encode = msgspec.msgpack.Encoder().encode
        self._decode = msgspec.msgpack.Decoder().decode
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._all: list[_Worker] = []
        self._lock = threading.Lock()
        self._closed = False
        for _ in range(workers):
            self._add()

    def _add(self) -> None:
        w = _Worker(self._ctx)
        with self._lock:
            self._all.append(w)
        self._idle.put(w)

    def _exchange(self, msg: list[Any], timeout: float | None = None) -> list[Any]:
        """Send one message to an idle lane process and wait for its answer (in a thread, GIL released)."""
        w = self._idle.get(timeout=timeout)
        try:
            w.conn.send_bytes(self._encode(msg))
            out = self._decode(w.conn.recv_bytes())
        except (EOFError, OSError) as exc:
            with self._lock:
                self.crashes += 1
                self._all.remove(w)
            code = w.process.exitcode
            w.close()
            if not self._closed:
                log.error("large-request lane process died (exit %s); starting a new one", code)
                # warmed before it takes requests, so the next large request does not wait for its start
                ref = msg[4] if msg[0] == "score" else msg[1]
                threading.Thread(target=self._replace, args=(ref,), daemon=True).start()
            raise LaneDied(f"exit status {w.process.exitcode}") from exc
        self._idle.put(w)
        return out

    def _replace(self, ref: list[Any]) -> None:
        w = _Worker(self._ctx)
        try:
            w.conn.send_bytes(self._encode(["warm", ref]))
            self._decode(w.conn.recv_bytes())
        except (EOFError, OSError) as exc:
            log.error("large-request lane process could not start: %s", exc)
        with self._lock:
            self._all.append(w)
        self._idle.put(w)

    def warm(self, model: LoadedModel, timeout: float = 300.0) -> None:
        """Load ``model`` in every lane process ahead of its first large request (blocking)."""
        if model.path is None:
            return
        ref = [model.path, model.alias, model.version, model.fast is not None]
        for _ in range(self.workers):  # each idle process in turn (an exchange returns it to the queue)
            try:
                out = self._exchange(["warm", ref], timeout=timeout)
            except Exception as exc:  # the first large request loads it (or fails) instead
                log.warning("large-request lane could not preload version %s: %s", model.version, exc)
                return
            if out[0] != "ok":
                log.warning("large-request lane could not preload version %s: %s", model.version, out[1])
                return

    def status(self) -> dict[str, Any]:
        return {
            "workers": self.workers,
            "max_pending": self.max_pending,
            "pending": self.pending,
            "completed": self.completed,
            "refused": self.refused,
            "crashes": self.crashes,
            "pids": [w.process.pid for w in list(self._all)],
        }

    async def run(
        self, kind: str, body: bytes, meta: dict[str, Any], model: LoadedModel, want_rows: bool
    ) -> list[Any]:
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
        ref = [model.path, model.alias, model.version, model.fast is not None]
        msg = ["score", kind, body, meta, ref, self.model_name, want_rows]
        try:
            out = await asyncio.to_thread(self._exchange, msg)
        except LaneDied as exc:
            raise BadRequest(
                f"the large-request worker process died while scoring ({exc}); retry later",
                503,
                "UNAVAILABLE",
                retry_after=1,
            ) from None
        finally:
            self.pending -= 1
            self.completed += 1
        if out[0] == "error":
            raise RuntimeError(f"large-request lane: {out[1]}")
        return out

    def close(self) -> None:
        self._closed = True
        with self._lock:
            workers, self._all = list(self._all), []
        for w in workers:
            w.close()
