"""Shadow scoring in a separate, supervised worker process: the gateway's only shadow mode.

(An earlier thread mode scored the shadow inside the gateway process; it was removed because it cost the
champion more CPU and latency, and kept a second copy of the scoring loop. See below.)

Why a process: with the shadow in a thread of the gateway process, its predict calls and the encoding of
its capture records compete with the event loop for the GIL. Every time the loop wakes while a background
thread holds the GIL it can wait a whole switch interval (5 ms), which is what a saturated gateway's p99 is
made of. Here the gateway process only appends a reference to a deque on the response path; a sender
thread ships the copies to the shadow process every ``send_interval`` in one pickled message, and the
shadow process scores them in batches, builds the capture records (both predictions) and writes them to
its own capture files (same root and partitions, its own writer id).

Guarantees, as in thread mode:

* Bounded: copies accepted but not yet acknowledged by the shadow process count against ``capacity``;
  beyond it a copy is dropped (captured with ``shadow_error`` = dropped) and counted, never waited for.
* A shadow call that raises or runs past ``timeout`` is captured with the error by the shadow process.
* The shadow process dying (a crash, a segfault in the model, an OOM kill) or hanging (no heartbeat for
  ``hang_after`` seconds, then it is killed) never touches the champion: every copy it had not
  acknowledged is captured by the gateway with ``shadow_error`` = "shadow process died ..." and counted as
  ``crash``; the process is restarted with backoff and reloads the shadow alias's current version.
* The shadow process acknowledges a copy only after its capture record is on disk, so nothing is lost when
  it dies; a death between a flush and its acknowledgement can duplicate those records (readers can
  de-duplicate on ``inference_id``).
* SIGTERM: the gateway asks the shadow process to finish (bounded by ``grace``), flush and exit; whatever
  is still unacknowledged after that is captured by the gateway as not run. If the gateway itself is
  killed hard, the shadow process sees its pipe close, flushes what it has and exits.
* Hot swap: the gateway's alias poller loads the shadow alias's new version *in the shadow process* and
  swaps it there atomically; a version that fails to load keeps the old one and reports the error.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import os
import pickle
import queue
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_saga.core.capture import CaptureEntry, CaptureSettings
    from airflow_saga.core.mlflow_client import MlflowSettings
    from airflow_saga.serving.models import LoadedModel, Slot
    from airflow_saga.serving.protocol import Batch

log = logging.getLogger(__name__)

DROPPED = "dropped: shadow queue full"
RESTARTING = "dropped: shadow process restarting"
SHUTDOWN = "not run: gateway shut down before the shadow call finished"
# (seq, inference_id, ts, variant, model_version, columns, rows, predictions, latency_ms, capture)
Wire = tuple[int, str, float, str, str, list, list, list, float, bool]


class ShadowProcess:
    """The gateway's side: a bounded hand-off to a supervised shadow worker process."""

    def __init__(
        self,
        slot: Slot,
        sink: Callable[[CaptureEntry, bool, str], None],
        counts: Callable[[dict[str, int]], None],
        settings: MlflowSettings,
        model_name: str,
        capture: CaptureSettings | None,
        capacity: int = 1000,
        batch_max: int = 64,
        timeout: float = 2.0,
        linger: float = 0.05,
        send_interval: float = 0.01,
        hang_after: float = 30.0,
        fast_path: bool = True,
        shadow_only: bool = False,
    ) -> None:
        self.slot = slot
        self.sink = sink  # (entry, capture?, outcome) for copies finished here: dropped|crash|shutdown
        self.counts = counts  # outcome counts reported by the shadow process
        self.settings = settings
        self.model_name = model_name
        self.capture = capture  # the writer settings for the records of mirrored requests, or None
        self.shadow_only = shadow_only  # durable capture: write only the shadow half (``_shadow``)
        self.capacity = capacity
        self.batch_max = batch_max
        self.timeout = timeout
        self.linger = linger
        self.send_interval = send_interval
        self.hang_after = hang_after
        self.fast_path = fast_path
        self.restarts = 0
        self.crashes = 0
        self.last_crash: str | None = None
        self._buf: collections.deque[tuple[CaptureEntry, bool]] = collections.deque()
        self._pending: dict[int, tuple[CaptureEntry, bool]] = {}
        self._seq = itertools.count()
        self._lock = threading.Lock()  # guards _pending and _up
        self._send_lock = threading.Lock()
        self._up = False
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._ready = threading.Event()
        self._proc: Any = None
        self._tx: Any = None  # gateway -> shadow process
        self._rx: Any = None  # shadow process -> gateway
        self._last_heard = time.monotonic()
        self._version: str | None = None  # what the shadow process should (re)load
        self._loads: dict[str, tuple[str | None, threading.Event]] = {}
        self._threads: list[threading.Thread] = []

    @property
    def depth(self) -> int:
        return len(self._buf) + len(self._pending)

    @property
    def up(self) -> bool:
        """The shadow process is running and accepting copies."""
        return self._up

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # --- response path ----------------------------------------------------------------------------------
    def submit(self, entry: CaptureEntry, batch: Batch, capture: bool) -> bool:
        """Queue a copy (a deque append); drop and finish it here when full or restarting. Never blocks."""
        entry.shadow_variant = self.slot.alias
        model = self.slot.current
        entry.shadow_model_version = model.version if model else None
        if not self._up or len(self._buf) + len(self._pending) >= self.capacity:
            entry.shadow_error = DROPPED if self._up else RESTARTING
            self.sink(entry, capture, "dropped")
            return False
        self._buf.append((entry, capture))
        return True

    # --- lifecycle --------------------------------------------------------------------------------------
    def start(self, ready_timeout: float = 300.0) -> ShadowProcess:
        self._spawn()
        for target, name in ((self._supervise, "saga-shadow-rx"), (self._send_loop, "saga-shadow-tx")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        if not self._ready.wait(ready_timeout):
            log.warning("shadow process did not report ready within %gs", ready_timeout)
        return self

    def load(self, alias: str, version: str) -> LoadedModel:
        """ModelManager hook: load ``version`` in the shadow process; raise ServingError if it cannot."""
        from airflow_saga.core.errors import ServingError
        from airflow_saga.serving.models import LoadedModel
        from airflow_saga.serving.protocol import InputSpec

        t0 = time.perf_counter()
        if not self._ready.wait(300):
            raise ServingError(f"shadow process is not running; cannot load version {version} ({alias})")
        done = threading.Event()
        self._loads[version] = (None, done)
        self._send(("load", version))
        if not done.wait(600):
            raise ServingError(f"shadow process did not load version {version} ({alias}) within 600s")
        error, _ = self._loads.pop(version)
        if error:
            raise ServingError(error)
        self._version = version
        return LoadedModel(
            alias, version, None, InputSpec(None, None, None), None, load_seconds=time.perf_counter() - t0
        )

    def close(self, grace: float = 5.0) -> None:
        """Ask the shadow process to finish (bounded), flush and exit; finish the rest here as not run."""
        self._stopping.set()

        def ask() -> None:  # in a thread: a hung shadow process with a full pipe must not block shutdown
            self._flush_buf()
            self._send(("stop", grace))

        threading.Thread(target=ask, name="saga-shadow-stop", daemon=True).start()
        limit = grace + (self.capture.flush_interval if self.capture else 0) + 15.0
        self._stopped.wait(limit)
        proc = self._proc
        if proc is not None:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
        with self._lock:
            self._up = False
            left = list(self._pending.values())
            self._pending.clear()
        left.extend(_drain(self._buf))
        for entry, capture in left:
            entry.shadow_error = SHUTDOWN
            self.sink(entry, capture, "shutdown")

    # --- sender -----------------------------------------------------------------------------------------
    def _send_loop(self) -> None:
        while not self._stopping.is_set():
            time.sleep(self.send_interval)
            self._flush_buf()

    def _flush_buf(self) -> None:
        if not self._buf:
            return
        items = _drain(self._buf)
        wire: list[Wire] = []
        failed: list[tuple[CaptureEntry, bool]] = []
        with self._lock:
            if not self._up:
                failed = items
            else:
                for entry, capture in items:
                    seq = next(self._seq)
                    self._pending[seq] = (entry, capture)
                    wire.append(
                        (
                            seq,
                            entry.inference_id,
                            entry.ts,
                            entry.variant,
                            entry.model_version,
                            entry.columns,
                            entry.rows,
                            entry.predictions,
                            entry.latency_ms,
                            capture,
                        )
                    )
        if wire:
            self._send(("items", wire))
        for entry, capture in failed:
            entry.shadow_error = RESTARTING
            self.sink(entry, capture, "dropped")

    def _send(self, msg: tuple) -> None:
        data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
        # May block while the pipe is full; never held by the response path. If the process is gone, the
        # supervisor finishes its pending copies and restarts it.
        with self._send_lock, contextlib.suppress(OSError, ValueError, AttributeError):
            self._tx.send_bytes(data)

    # --- supervisor -------------------------------------------------------------------------------------
    def _spawn(self) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # never fork a process that runs an event loop and threads
        rx_parent, tx_child = ctx.Pipe(duplex=False)
        rx_child, tx_parent = ctx.Pipe(duplex=False)
        cfg = {
            "settings": self.settings,
            "model": self.model_name,
            "alias": self.slot.alias,
            "version": self._version,
            "capture": self.capture,
            "shadow_only": self.shadow_only,
            "batch_max": self.batch_max,
            "timeout": self.timeout,
            "linger": self.linger,
            "fast_path": self.fast_path,
            "heartbeat": min(1.0, self.hang_after / 10),
        }
        proc = ctx.Process(target=child_main, args=(rx_child, tx_child, cfg), name="saga-shadow", daemon=True)
        proc.start()
        rx_child.close()  # so our reads see EOF when the child dies
        tx_child.close()
        self._proc, self._tx, self._rx = proc, tx_parent, rx_parent
        self._last_heard = time.monotonic()

    def _supervise(self) -> None:
        backoff = 1.0
        while True:
            started = time.monotonic()
            self._receive()
            code = self._proc.exitcode if self._proc is not None else None
            if self._proc is not None:
                self._proc.join(timeout=5)
                code = self._proc.exitcode
            if self._stopping.is_set():
                self._stopped.set()
                return
            self._ready.clear()
            with self._lock:
                self._up = False
                lost = list(self._pending.values())
                self._pending.clear()
            lost.extend(_drain(self._buf))
            self.crashes += 1
            reason = self.last_crash or f"exit code {code}"
            self.last_crash = None
            for version, (_, done) in list(self._loads.items()):  # a load it was doing will not answer
                self._loads[version] = (
                    f"shadow process died ({reason}) while loading version {version}",
                    done,
                )
                done.set()
            log.error("shadow process died (%s); %d copies lost, restarting", reason, len(lost))
            for entry, capture in lost:
                entry.shadow_error = f"shadow process died ({reason}); restarted"
                self.sink(entry, capture, "crash")
            with contextlib.suppress(Exception):
                self._tx.close()
                self._rx.close()
            backoff = 1.0 if time.monotonic() - started > 60 else min(backoff * 2, 30.0)
            if self._stopping.wait(backoff):
                self._stopped.set()
                return
            self.restarts += 1
            self._spawn()

    def _receive(self) -> None:
        """Handle messages from the shadow process until its pipe closes (it exited or died)."""
        while True:
            try:
                if not self._rx.poll(1.0):
                    if self._up and time.monotonic() - self._last_heard > self.hang_after:
                        log.error("shadow process %s silent for %.0fs: killing it", self.pid, self.hang_after)
                        self.last_crash = f"hung: no heartbeat for {self.hang_after:g}s"
                        with contextlib.suppress(Exception):
                            self._proc.kill()
                    continue
                msg = pickle.loads(self._rx.recv_bytes())
            except (EOFError, OSError):
                return
            self._last_heard = time.monotonic()
            kind = msg[0]
            if kind == "ack":
                _, seqs, counts = msg
                if seqs:
                    with self._lock:
                        for s in seqs:
                            self._pending.pop(s, None)
                if counts:
                    self.counts(counts)
            elif kind == "ready":
                with self._lock:
                    self._up = True
                self._ready.set()
            elif kind == "loaded":
                _, version, error = msg
                waiter = self._loads.get(version)
                if waiter is not None:
                    self._loads[version] = (error, waiter[1])
                    waiter[1].set()
            elif kind == "bye":
                return


def _drain(dq: collections.deque) -> list:
    out = []
    for _ in range(len(dq)):
        out.append(dq.popleft())
    return out


# --- the shadow process ---------------------------------------------------------------------------------


class _Worker:
    """Runs in the shadow process: score queued copies in batches, write capture, acknowledge."""

    def __init__(self, tx: Any, cfg: dict[str, Any]) -> None:
        from airflow_saga.core.capture import CaptureWriter
        from airflow_saga.serving.models import Loader

        self.tx = tx
        self.cfg = cfg
        self.alias = cfg["alias"]
        self.batch_max = cfg["batch_max"]
        self.timeout = cfg["timeout"]
        self.linger = cfg["linger"]
        self.loader = Loader(cfg["settings"], cfg["model"], fast_path=cfg["fast_path"])
        self.model: LoadedModel | None = None
        cap = cfg["capture"]
        self.writer = CaptureWriter(cap, cfg["model"]) if cap else None
        self.flush_interval = cap.flush_interval if cap else 1.0
        self.shadow_only = cfg.get("shadow_only", False)
        self.q: queue.Queue[Wire] = queue.Queue()
        self.loads: queue.Queue[str | None] = queue.Queue()
        self.lock = threading.Lock()  # guards the ack lists, counts and inflight
        self.send_lock = threading.Lock()
        self.acks_now: list[int] = []  # finished, nothing to write
        self.acks_written: list[int] = []  # appended to the writer; acknowledged after the next flush
        self.counts: collections.Counter[str] = collections.Counter()
        self.inflight: list[Wire] | None = None
        self.inflight_since = 0.0
        self.stopping = threading.Event()
        self.done = threading.Event()

    def send(self, msg: tuple) -> None:
        # If the gateway is gone, we flush and exit on our own.
        with self.send_lock, contextlib.suppress(OSError, ValueError):
            self.tx.send_bytes(pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL))

    # finishing a copy
    def finish(
        self, item: Wire, preds: list | None, latency_ms: float | None, error: str | None, outcome: str
    ) -> None:
        from airflow_saga.core.capture import CaptureEntry

        seq, iid, ts, variant, mversion, cols, rows, served, lat, capture = item
        with self.lock:
            self.counts[outcome] += 1
            if preds is not None:
                agree = sum(1 for a, b in zip(served, preds, strict=False) if a == b)
                self.counts["agree_true"] += agree
                self.counts["agree_false"] += len(served) - agree
            if capture and self.writer is not None:
                model = self.model
                entry = CaptureEntry(iid, ts, variant, mversion, cols, rows, served, lat)
                entry.shadow_variant = self.alias
                entry.shadow_model_version = model.version if model else None
                entry.shadow_predictions = preds
                entry.shadow_latency_ms = latency_ms
                entry.shadow_error = error[:500] if error else None
                if self.shadow_only:
                    self.writer.append_shadow(entry)
                else:
                    self.writer.append(entry)
                self.acks_written.append(seq)
            else:
                self.acks_now.append(seq)

    # threads
    def score_loop(self) -> None:
        while True:
            try:
                first = self.q.get(timeout=0.2)
            except queue.Empty:
                if self.stopping.is_set():
                    return
                continue
            if self.linger and self.q.qsize() < self.batch_max - 1 and not self.stopping.is_set():
                time.sleep(self.linger)
            items = [first]
            while len(items) < self.batch_max:
                try:
                    items.append(self.q.get_nowait())
                except queue.Empty:
                    break
            with self.lock:
                self.inflight, self.inflight_since = items, time.monotonic()
            results = self.score(items)
            with self.lock:
                if self.inflight is not items:  # the watchdog or shutdown already finished these
                    continue
                self.inflight = None
            for item, (preds, ms, err) in zip(items, results, strict=True):
                self.finish(item, preds, ms, err, "error" if err else "ok")

    def score(self, items: list[Wire]) -> list[tuple[list | None, float | None, str | None]]:
        import numpy as np

        from airflow_saga.serving.protocol import Batch

        model = self.model
        if model is None:
            return [(None, None, f"shadow alias {self.alias!r} has no loaded model")] * len(items)
        batches = []
        for it in items:
            cols, rows = it[5], it[6]
            try:
                arr = np.array(rows, dtype=np.float64)
            except (TypeError, ValueError):
                arr = None
            batches.append(Batch(cols, rows, arr))
        t0 = time.perf_counter()
        try:
            per = _predict_many(model, batches)
            err = None
        except Exception as exc:
            per, err = [None] * len(items), f"{type(exc).__name__}: {exc}"
        ms = (time.perf_counter() - t0) * 1000.0
        return [(p, ms, err) for p in per]

    def watch_loop(self) -> None:
        tick = min(0.25, self.timeout / 4)
        while not self.done.is_set():
            time.sleep(tick)
            with self.lock:
                items = self.inflight
                if items is None or time.monotonic() - self.inflight_since < self.timeout:
                    continue
                self.inflight = None
            err = f"timeout: shadow call exceeded {self.timeout:g}s"
            for item in items:
                self.finish(item, None, self.timeout * 1000.0, err, "timeout")

    def flush_loop(self, heartbeat: float) -> None:
        last_flush = time.monotonic()
        while not self.done.wait(heartbeat):
            now = time.monotonic()
            self.tick(flush=now - last_flush >= self.flush_interval)
            if now - last_flush >= self.flush_interval:
                last_flush = now

    def tick(self, flush: bool) -> None:
        """Acknowledge finished copies (after writing their records when ``flush``); report counts."""
        with self.lock:
            seqs, self.acks_now = self.acks_now, []
            counts, self.counts = dict(self.counts), collections.Counter()
            if flush:
                written, self.acks_written = self.acks_written, []
                if self.writer is not None:
                    before_rows, before_req = self.writer.stats.rows, self.writer.stats.requests
                    try:
                        self.writer.flush()
                        if self.writer.retained_rows:  # a write failed and waits for the next flush
                            self.acks_written = written + self.acks_written
                        else:
                            seqs += written
                    except Exception as exc:
                        # No acknowledgement: the gateway still holds these copies and captures them itself
                        # (as not run) at shutdown, or as lost if this process dies.
                        log.exception("shadow capture flush failed")
                        self.writer.stats.errors += 1
                        self.writer.stats.last_error = f"{type(exc).__name__}: {exc}"
                    counts["rows"] = self.writer.stats.rows - before_rows
                    counts["requests"] = self.writer.stats.requests - before_req
                else:
                    seqs += written
        self.send(("ack", seqs, counts))

    def load_loop(self) -> None:
        from airflow_saga.serving.models import freeze_heap

        frozen = self.model is not None
        while True:
            version = self.loads.get()
            if version is None:
                return
            error = None
            if self.model is None or self.model.version != version:
                try:
                    self.model = self.loader.load(self.alias, version)  # the atomic swap
                except Exception as exc:
                    error = str(exc)
            if not frozen:  # once, after the first load (see freeze_heap)
                freeze_heap()
                frozen = True
            self.send(("loaded", version, error))

    def shutdown(self, grace: float, scorer: threading.Thread) -> None:
        self.stopping.set()
        scorer.join(timeout=grace)
        with self.lock:
            left, self.inflight = list(self.inflight or []), None
        while True:
            try:
                left.append(self.q.get_nowait())
            except queue.Empty:
                break
        for item in left:
            self.finish(item, None, None, SHUTDOWN, "shutdown")
        self.tick(flush=True)
        self.done.set()


def child_main(rx: Any, tx: Any, cfg: dict[str, Any]) -> None:
    """Entry point of the shadow process."""
    # The gateway's process group gets SIGTERM/SIGINT on shutdown; the gateway tells us when to stop, so
    # that copies it handed over are finished and flushed rather than killed mid-write.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s shadow: %(message)s")
    w = _Worker(tx, cfg)
    if cfg["version"]:  # a restart: reload what the crashed process served
        with contextlib.suppress(Exception):
            w.model = w.loader.load(w.alias, cfg["version"])
        from airflow_saga.serving.models import freeze_heap

        freeze_heap()
    scorer = threading.Thread(target=w.score_loop, name="shadow-score", daemon=True)
    threads = [
        scorer,
        threading.Thread(target=w.watch_loop, name="shadow-watch", daemon=True),
        threading.Thread(target=w.flush_loop, args=(cfg["heartbeat"],), name="shadow-flush", daemon=True),
        threading.Thread(target=w.load_loop, name="shadow-load", daemon=True),
    ]
    for t in threads:
        t.start()
    w.send(("ready",))
    grace = cfg["timeout"]
    while True:
        try:
            msg = pickle.loads(rx.recv_bytes())
        except (EOFError, OSError):  # the gateway died: finish what we have
            break
        kind = msg[0]
        if kind == "items":
            for item in msg[1]:
                w.q.put(item)
        elif kind == "load":
            w.loads.put(msg[1])
        elif kind == "stop":
            grace = msg[1]
            break
        elif kind == "crash":  # for tests: die like a segfaulting model would
            os._exit(msg[1])
    w.loads.put(None)
    w.shutdown(grace, scorer)
    w.send(("bye",))
    with contextlib.suppress(Exception):
        w.loader.close()
    sys.stdout.flush()


def _predict_many(model: LoadedModel, batches: list[Batch]) -> list[list[Any]]:
    """Score several requests with one model call and split the predictions back per request.

    A one-row sklearn predict costs nearly the same as a 64-row one, so batching keeps the shadow's CPU small.
    """
    import numpy as np

    from airflow_saga.serving.protocol import Batch, jsonable

    sizes = [len(b.rows) for b in batches]
    if len(batches) == 1:
        return [model.predict_batch(batches[0])]
    same_cols = all(b.columns == batches[0].columns for b in batches)
    if not same_cols:
        return [model.predict_batch(b) for b in batches]
    fast_ok = model.fast is not None and model.spec.columns == tuple(batches[0].columns)
    if fast_ok and all(b.array is not None for b in batches):
        merged = Batch(batches[0].columns, [], np.vstack([b.array for b in batches]))  # type: ignore[misc]
        preds = model.fast(merged.array).tolist()  # type: ignore[arg-type]
    else:
        import pandas as pd

        frame = pd.DataFrame([r for b in batches for r in b.rows], columns=batches[0].columns)
        preds = jsonable(model.pyfunc.predict(frame))
    if len(preds) != sum(sizes):
        raise ValueError(f"shadow returned {len(preds)} predictions for {sum(sizes)} rows")
    out, i = [], 0
    for n in sizes:
        out.append(preds[i : i + n])
        i += n
    return out
