"""Mirror sampled requests to the shadow model in a thread of the gateway (``shadow_mode = "thread"``).

The default mode runs the shadow in a worker process instead (``shadow_proc``); this module also provides
the batch scoring (``_predict_many``) both modes use.

The response path only does ``queue.put_nowait`` (microseconds); when the queue is full the copy is dropped
and counted, never waited for. One worker thread drains the queue in batches (lingering ``linger`` seconds
to let a batch form) and scores a whole batch with one model call: a one-row sklearn predict costs nearly
the same as a 64-row one, so batching keeps the shadow's CPU share (and its time holding the GIL, which
the event loop needs) small under load.

A shadow call that raises is recorded as ``shadow_error``. One that runs longer than ``timeout`` is
abandoned by a watchdog: its requests are captured with a timeout error and later copies are dropped while
the stuck call occupies the worker. Nothing here can change or delay the champion's response.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from airflow_saga.serving.protocol import Batch, jsonable

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_saga.core.capture import CaptureEntry
    from airflow_saga.serving.models import LoadedModel, Slot

log = logging.getLogger(__name__)

Item = tuple["CaptureEntry", Batch, bool]  # entry, validated input, whether to capture it
DROPPED = "dropped: shadow queue full"
SHUTDOWN = "not run: gateway shut down before the shadow call finished"


class ShadowMirror:
    def __init__(
        self,
        slot: Slot,
        sink: Callable[[CaptureEntry, bool, str], None],
        capacity: int = 1000,
        batch_max: int = 64,
        timeout: float = 2.0,
        linger: float = 0.05,
    ) -> None:
        self.slot = slot
        self.sink = sink  # (entry, capture?, outcome) where outcome is ok|error|timeout|dropped|shutdown
        self.batch_max = batch_max
        self.timeout = timeout
        self.linger = linger
        self._q: queue.Queue[Item] = queue.Queue(maxsize=capacity)
        self._lock = threading.Lock()
        self._inflight: list[Item] | None = None
        self._inflight_since = 0.0
        self._stopping = threading.Event()
        self._worker: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None

    @property
    def depth(self) -> int:
        return self._q.qsize()

    # --- response path ----------------------------------------------------------------------------------
    def submit(self, entry: CaptureEntry, batch: Batch, capture: bool) -> bool:
        """Queue a copy; if the queue is full, finish the entry as dropped. Never blocks."""
        model = self.slot.current
        entry.shadow_variant = self.slot.alias
        entry.shadow_model_version = model.version if model else None
        try:
            self._q.put_nowait((entry, batch, capture))
            return True
        except queue.Full:
            entry.shadow_error = DROPPED
            self.sink(entry, capture, "dropped")
            return False

    # --- lifecycle --------------------------------------------------------------------------------------
    def start(self) -> ShadowMirror:
        self._worker = threading.Thread(target=self._work, name="saga-shadow", daemon=True)
        self._watchdog = threading.Thread(target=self._watch, name="saga-shadow-watchdog", daemon=True)
        self._worker.start()
        self._watchdog.start()
        return self

    def close(self, grace: float = 5.0) -> None:
        """Let the worker drain for up to ``grace`` seconds, then finish everything left as not run."""
        self._stopping.set()
        if self._worker is not None:
            self._worker.join(timeout=grace)
        with self._lock:
            left = self._inflight or []
            self._inflight = None
        while True:
            try:
                left.append(self._q.get_nowait())
            except queue.Empty:
                break
        for entry, _batch, capture in left:
            entry.shadow_error = SHUTDOWN
            self.sink(entry, capture, "shutdown")

    # --- worker -----------------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            try:
                first = self._q.get(timeout=0.2)
            except queue.Empty:
                if self._stopping.is_set():
                    return
                continue
            if self.linger and self._q.qsize() < self.batch_max - 1:
                # Wait a moment for more copies: one call on 50 rows costs about what one call on 1 row does,
                # so lingering cuts the shadow's CPU (and GIL) share per request under load.
                time.sleep(self.linger)
            items = [first]
            while len(items) < self.batch_max:
                try:
                    items.append(self._q.get_nowait())
                except queue.Empty:
                    break
            with self._lock:
                self._inflight = items
                self._inflight_since = time.monotonic()
            results = self._score(items)
            with self._lock:
                if self._inflight is not items:  # the watchdog or close() already finished these
                    continue
                self._inflight = None
            for (entry, _batch, capture), outcome in zip(items, results, strict=True):
                self.sink(entry, capture, outcome)

    def _score(self, items: list[Item]) -> list[str]:
        """Fill shadow fields of every entry; return each one's outcome."""
        model = self.slot.current
        if model is None:
            for entry, _, _ in items:
                entry.shadow_error = f"shadow alias {self.slot.alias!r} has no loaded model"
            return ["error"] * len(items)
        t0 = time.perf_counter()
        try:
            per_entry = _predict_many(model, [b for _, b, _ in items])
            errors: list[str | None] = [None] * len(items)
        except Exception as exc:
            # The whole batch gets the error. Retrying request by request would isolate one bad input, but a
            # shadow that always fails would then cost one failing call per request, on the champion's CPU.
            err = f"{type(exc).__name__}: {exc}"
            per_entry, errors = [None] * len(items), [err] * len(items)
        elapsed = (time.perf_counter() - t0) * 1000.0
        outcomes = []
        for (entry, _, _), preds, err in zip(items, per_entry, errors, strict=True):
            entry.shadow_model_version = model.version
            entry.shadow_latency_ms = elapsed
            entry.shadow_predictions = preds
            entry.shadow_error = err[:500] if err else None
            outcomes.append("error" if err else "ok")
        return outcomes

    def _watch(self) -> None:
        tick = min(0.25, self.timeout / 4)
        while not (self._stopping.is_set() and (self._worker is None or not self._worker.is_alive())):
            time.sleep(tick)
            with self._lock:
                items = self._inflight
                if items is None or time.monotonic() - self._inflight_since < self.timeout:
                    continue
                self._inflight = None
            for entry, _b, capture in items:
                entry.shadow_error = f"timeout: shadow call exceeded {self.timeout:g}s"
                entry.shadow_latency_ms = self.timeout * 1000.0
                self.sink(entry, capture, "timeout")


def _predict_many(model: LoadedModel, batches: list[Batch]) -> list[list[Any]]:
    """Score several requests with one model call and split the predictions back per request."""
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
