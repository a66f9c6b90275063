"""The gateway as a bare ASGI application.

No framework sits on the scoring path: a framework's routing, request objects and middleware stack cost
more than the model itself for a one-row request. ``/invocations`` on a numeric signature runs entirely on
the event loop (parse -> validate -> estimator predict -> encode), with no thread hop; other models predict
in a worker thread so a slow pyfunc cannot stall the loop. Shadow copies and capture entries are handed off
with a non-blocking append: to the shadow worker process (``shadow_proc``, the default), which scores them
and writes their capture records, or to a shadow thread (``shadow``); capture-only entries go to the capture
flusher thread. The startup heap is frozen (``models.freeze_heap``) so that entries waiting for a flush do
not trigger full garbage collections of MLflow's and sklearn's objects, which stall every request.

Routes: POST /invocations, POST /feedback, POST /webhooks/mlflow, GET /ping, /health, /version, /metrics.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
import uuid
from typing import TYPE_CHECKING, Any

from airflow_saga.core.capture import SHADOW_PENDING, CaptureEntry, CaptureWriter
from airflow_saga.core.errors import CaptureError, SagaError
from airflow_saga.serving import protocol
from airflow_saga.serving.auth import bearer_ok, webhook_ok
from airflow_saga.serving.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from airflow_saga.serving.metrics import GatewayMetrics
from airflow_saga.serving.protocol import BadRequest, encode_json

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from airflow_saga.core.mlflow_client import MlflowSettings
    from airflow_saga.serving.config import GatewayConfig
    from airflow_saga.serving.models import LoadedModel, ModelManager, Slot
    from airflow_saga.serving.shadow import ShadowMirror
    from airflow_saga.serving.shadow_proc import ShadowProcess

log = logging.getLogger(__name__)

H_VARIANT = b"x-saga-variant"
H_VERSION = b"x-saga-model-version"
H_INFERENCE_ID = b"x-saga-inference-id"
H_TARGET = b"x-saga-target-variant"
JSON = (b"content-type", b"application/json")
INFERENCE_ID_RE = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
OPEN_ROUTES = {"/ping", "/health", "/version", "/webhooks/mlflow"}  # probes; webhooks use HMAC instead


class _Disconnected(Exception):
    pass


class Gateway:
    """One model's inference gateway; an ASGI callable with lifespan startup/shutdown."""

    def __init__(
        self, cfg: GatewayConfig, settings: MlflowSettings | None = None, fast_path: bool = True
    ) -> None:
        from airflow_saga.core.mlflow_client import settings_from_env

        self.cfg = cfg
        if settings is None:
            settings = settings_from_env(cfg.tracking_uri)
            if cfg.registry_uri:
                import dataclasses

                settings = dataclasses.replace(settings, registry_uri=cfg.registry_uri)
        self.settings = settings
        self.fast_path = fast_path
        self.manager: ModelManager | None = None
        self.writer: CaptureWriter | None = None
        self.mirror: ShadowMirror | ShadowProcess | None = None
        self._remote_rows = 0  # capture rows/requests written by the shadow process
        self._remote_requests = 0
        self.metrics = GatewayMetrics(self.state)
        self.started_at = time.time()
        self._table: tuple[tuple[str, float], ...] = ()
        self._total = 0.0
        self._token = cfg.auth_token
        self._routes: dict[tuple[str, str], Callable[[dict, Any, Any], Awaitable[None]]] = {
            ("POST", "/invocations"): self._invocations,
            ("POST", "/feedback"): self._feedback,
            ("POST", "/webhooks/mlflow"): self._webhook,
            ("GET", "/ping"): self._ping,
            ("GET", "/health"): self._health,
            ("GET", "/version"): self._version,
            ("GET", "/metrics"): self._metrics,
        }

    # --- lifecycle --------------------------------------------------------------------------------------
    def start(self) -> None:
        """Load models (blocking), then start the capture flusher, shadow worker and alias poller."""
        from airflow_saga.serving.models import Loader, ModelManager, freeze_heap
        from airflow_saga.serving.shadow import ShadowMirror

        cfg = self.cfg
        if cfg.capture_dir:
            self.writer = CaptureWriter(cfg.capture_settings(), cfg.model)
        loader = Loader(self.settings, cfg.model, fast_path=self.fast_path)
        self.manager = ModelManager(loader, list(cfg.variants), cfg.shadow, cfg.poll_interval)
        self.manager.on_swap.append(self._on_swap)
        mode = cfg.shadow_mode
        if mode == "process":
            import multiprocessing

            if multiprocessing.current_process().daemon:  # a daemonic process may not start children
                log.warning("shadow_mode=process is not possible in a daemonic process; using a thread")
                mode = "thread"
        if cfg.shadow and mode == "process":
            # Started first: the shadow process boots while this process loads the production variants,
            # and the manager loads the shadow alias through it.
            from airflow_saga.serving.shadow_proc import ShadowProcess

            # The shadow process writes the records of mirrored requests (buffered: it acknowledges a copy
            # once its record is on disk). With durable capture the gateway has written the champion's
            # record before answering, so the shadow process writes only the shadow results (``_shadow``).
            capture = self.writer.settings.replace(durability="buffered") if self.writer else None
            proc = ShadowProcess(
                self.manager.slots[cfg.shadow],
                self._shadow_done,
                self._shadow_counts,
                self.settings,
                cfg.model,
                capture,
                cfg.shadow_queue,
                cfg.shadow_batch,
                cfg.shadow_timeout,
                fast_path=self.fast_path,
                shadow_only=cfg.capture_durability == "durable",
            )
            self.manager.loaders[cfg.shadow] = proc.load
            self.mirror = proc.start()
        self.manager.start()
        self._rebuild_table()
        for slot in self.manager.slots.values():
            if slot.error:
                self.metrics.load_failures.labels(slot.alias).inc()
        if self.writer is not None:
            self.writer.start()
        if cfg.shadow and mode == "thread":
            self.mirror = ShadowMirror(
                self.manager.slots[cfg.shadow],
                self._shadow_done,
                cfg.shadow_queue,
                cfg.shadow_batch,
                cfg.shadow_timeout,
            ).start()
        freeze_heap()

    def _on_swap(self, slot: Slot) -> None:
        self.metrics.swaps.labels(slot.alias).inc()
        self._rebuild_table()

    def stop(self) -> None:
        """Graceful shutdown: stop polling, finish shadow copies (bounded), flush every capture record."""
        if self.manager is not None:
            self.manager.stop()
        if self.mirror is not None:
            self.mirror.close(grace=min(self.cfg.shadow_timeout, 5.0))
        if self.writer is not None:
            self.writer.close()
            log.warning(
                "capture flushed: %d rows in %d requests",
                self.writer.stats.rows + self._remote_rows,
                self.writer.stats.requests + self._remote_requests,
            )

    def _rebuild_table(self) -> None:
        """Cumulative weights over variants that have a loaded model (an unloaded variant gets no traffic)."""
        assert self.manager is not None
        acc, table = 0.0, []
        for alias, weight in self.cfg.variants.items():
            if weight > 0 and self.manager.slots[alias].current is not None:
                acc += weight
                table.append((alias, acc))
        self._table, self._total = tuple(table), acc

    def state(self) -> dict[str, Any]:
        slots = [s.status() for s in self.manager.slots.values()] if self.manager else []
        w = self.writer
        m = self.mirror
        return {
            "slots": slots,
            "shadow_depth": m.depth if m else 0,
            "shadow_process": None
            if m is None or not hasattr(m, "restarts")
            else {"pid": m.pid, "up": m.up, "restarts": m.restarts, "crashes": m.crashes},  # type: ignore[union-attr]
            "capture_backlog": w.backlog if w else 0,
            "capture_rows": (w.stats.rows + self._remote_rows) if w else 0,
            "capture_errors": w.stats.errors if w else 0,
        }

    # --- ASGI ---------------------------------------------------------------------------------------------
    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                try:
                    await asyncio.to_thread(self.start)
                except Exception as exc:
                    log.error("gateway failed to start: %s", exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                try:
                    await asyncio.to_thread(self.stop)
                finally:
                    await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: dict, receive: Any, send: Any) -> None:
        path = scope["path"]
        handler = self._routes.get((scope["method"], path))
        if handler is None:
            known = {p for _, p in self._routes}
            status = 405 if path in known else 404
            await _respond(send, status, BadRequest(f"{scope['method']} {path} not found", status).body())
            return
        headers = dict(scope["headers"])
        if (
            self._token
            and path not in OPEN_ROUTES
            and not bearer_ok(headers.get(b"authorization"), self._token)
        ):
            self.metrics.request(path, "none", 401)
            await _respond(
                send,
                401,
                BadRequest("missing or invalid bearer token", 401, "UNAUTHENTICATED").body(),
                [(b"www-authenticate", b"Bearer")],
            )
            return
        try:
            await handler(headers, receive, send)
        except BadRequest as exc:
            self.metrics.request(path, "none", exc.status)
            await _respond(send, exc.status, exc.body())
        except _Disconnected:
            return
        except Exception as exc:  # a bug or a broken model: answer 500 with the reason, keep serving
            log.exception("unhandled error on %s", path)
            self.metrics.request(path, "none", 500)
            await _respond(
                send,
                500,
                BadRequest(f"internal error: {type(exc).__name__}: {exc}", 500, "INTERNAL_ERROR").body(),
            )

    async def _body(self, headers: dict[bytes, bytes], receive: Any) -> bytes:
        limit = self.cfg.max_body_bytes
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                n = int(declared)
            except ValueError:
                raise BadRequest(f"bad Content-Length {declared!r}") from None
            if n > limit:
                raise BadRequest(
                    f"request body of {n} bytes exceeds the {limit}-byte limit", 413, "REQUEST_TOO_LARGE"
                )
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise _Disconnected
        body = msg.get("body", b"")
        if not msg.get("more_body"):
            if len(body) > limit:
                raise BadRequest(f"request body exceeds the {limit}-byte limit", 413, "REQUEST_TOO_LARGE")
            return body
        chunks, size = [body], len(body)
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                raise _Disconnected
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BadRequest(f"request body exceeds the {limit}-byte limit", 413, "REQUEST_TOO_LARGE")
            chunks.append(chunk)
            if not msg.get("more_body"):
                return b"".join(chunks)

    # --- scoring ------------------------------------------------------------------------------------------
    def _pick(self, headers: dict[bytes, bytes]) -> tuple[str, LoadedModel]:
        assert self.manager is not None
        target = headers.get(H_TARGET)
        if target is not None:
            alias = target.decode("latin-1")
            if alias not in self.cfg.variants:
                raise BadRequest(
                    f"unknown variant {alias!r} in X-Saga-Target-Variant; variants: {list(self.cfg.variants)}"
                )
            model = self.manager.slots[alias].current
            if model is None:
                raise BadRequest(f"variant {alias!r} has no loaded model", 503, "UNAVAILABLE")
            return alias, model
        table = self._table
        if len(table) == 1:
            alias = table[0][0]
        else:
            r = random.random() * self._total
            alias = table[-1][0]
            for a, cum in table:
                if r < cum:
                    alias = a
                    break
        model = self.manager.slots[alias].current
        assert model is not None
        return alias, model

    async def _invocations(self, headers: dict[bytes, bytes], receive: Any, send: Any) -> None:
        t0 = time.perf_counter()
        ts = time.time()
        given = headers.get(H_INFERENCE_ID)
        if given is not None:
            inference_id = given.decode("latin-1")
            if not INFERENCE_ID_RE.fullmatch(inference_id):
                raise BadRequest("X-Saga-Inference-Id must be 1-128 characters of [A-Za-z0-9._:-]")
        else:
            inference_id = uuid.uuid4().hex
        body = await self._body(headers, receive)
        payload = protocol.decode_body(
            body, headers.get(b"content-type", b"application/json").decode("latin-1")
        )
        alias, model = self._pick(headers)
        try:
            batch = protocol.parse(payload, model.spec)
        except BadRequest as exc:
            exc.message = f"model {self.cfg.model!r} version {model.version}: {exc.message}"
            raise
        try:
            if model.fast is not None and batch.array is not None:
                predictions = model.fast(batch.array).tolist()
            else:
                predictions = await asyncio.to_thread(model.predict_batch, batch)
        except Exception as exc:  # like mlflow models serve: the model could not score this input
            log.warning("model %s v%s failed to predict: %s", self.cfg.model, model.version, exc)
            raise BadRequest(
                f"model {self.cfg.model!r} version {model.version} could not score the input: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        out = encode_json({"predictions": predictions})
        elapsed = time.perf_counter() - t0
        self._after(inference_id, ts, alias, model, batch, predictions, elapsed)
        self.metrics.request("/invocations", alias, 200, elapsed)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    JSON,
                    (b"content-length", str(len(out)).encode()),
                    (H_VARIANT, alias.encode()),
                    (H_VERSION, model.version.encode()),
                    (H_INFERENCE_ID, inference_id.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": out})

    def _after(
        self,
        inference_id: str,
        ts: float,
        alias: str,
        model: LoadedModel,
        batch: protocol.Batch,
        predictions: list[Any],
        elapsed: float,
    ) -> None:
        """Sample for capture and shadow; both only append to in-memory queues."""
        cfg = self.cfg
        capture = self.writer is not None and (
            cfg.capture_sample >= 100 or random.random() * 100 < cfg.capture_sample
        )
        shadow = self.mirror is not None and (
            cfg.shadow_sample >= 100 or random.random() * 100 < cfg.shadow_sample
        )
        if not (capture or shadow):
            return
        entry = CaptureEntry(
            inference_id, ts, alias, model.version, batch.columns, batch.rows, predictions, elapsed * 1000.0
        )
        if capture and self.writer.durable:  # type: ignore[union-attr]
            self._record_now(entry, shadow)
        if shadow:
            self.mirror.submit(entry, batch, capture)  # type: ignore[union-attr]
        elif capture and not self.writer.durable:  # type: ignore[union-attr]
            self.writer.append(entry)  # type: ignore[union-attr]

    def _record_now(self, entry: CaptureEntry, shadow: bool) -> None:
        """Durable capture: the champion's record is written before the response, or there is no response.

        A mirrored request is recorded as pending its shadow result, which is written later (``_shadow``)
        and merged in by the reader; if it never comes, the record reads as a copy that was not run.
        """
        if shadow:
            slot = self.manager.slots[self.cfg.shadow]  # type: ignore[union-attr,index]
            current = slot.current
            entry.shadow_variant = slot.alias
            entry.shadow_model_version = current.version if current is not None else None
            entry.shadow_error = SHADOW_PENDING
        try:
            self.writer.append(entry)  # type: ignore[union-attr]
        except CaptureError as exc:
            raise BadRequest(
                f"durable capture could not record this request, so it is not answered: {exc}",
                503,
                "UNAVAILABLE",
            ) from None
        finally:
            entry.shadow_error = None

    def _shadow_counts(self, counts: dict[str, int]) -> None:
        """Outcome counts reported by the shadow process (its copies' records are written there)."""
        for key, n in counts.items():
            if not n:
                continue
            if key in ("agree_true", "agree_false"):
                self.metrics.shadow_agreement.labels(key[6:]).inc(n)
            elif key == "rows":
                self._remote_rows += n
            elif key == "requests":
                self._remote_requests += n
            else:
                self.metrics.shadow.labels(key).inc(n)

    def _shadow_done(self, entry: CaptureEntry, capture: bool, outcome: str) -> None:
        """Called from shadow threads (or the response path on a drop) when a copy is finished."""
        self.metrics.shadow_outcome(outcome)
        if outcome == "ok" and entry.shadow_predictions is not None:
            agree = sum(
                1 for a, b in zip(entry.predictions, entry.shadow_predictions, strict=False) if a == b
            )
            if agree:
                self.metrics.shadow_agreement.labels("true").inc(agree)
            if len(entry.predictions) - agree:
                self.metrics.shadow_agreement.labels("false").inc(len(entry.predictions) - agree)
        if capture and self.writer is not None:
            try:
                if self.writer.durable:  # the champion's record is written; this is its shadow half
                    self.writer.append_shadow(entry)
                else:
                    self.writer.append(entry)
            except CaptureError as exc:  # not on a response path: counted in the writer's stats
                log.error("shadow capture record of %s lost: %s", entry.inference_id, exc)

    # --- feedback and webhooks ----------------------------------------------------------------------------
    async def _feedback(self, headers: dict[bytes, bytes], receive: Any, send: Any) -> None:
        if self.writer is None:
            raise BadRequest(
                "feedback needs data capture: start the gateway with --capture-dir", 409, "CONFLICT"
            )
        body = await self._body(headers, receive)
        try:
            payload = protocol.decode_json(body)
        except Exception as exc:
            raise BadRequest(f"malformed JSON: {exc}") from None
        items = payload if isinstance(payload, list) else [payload]
        checked = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise BadRequest(f"feedback item {i} must be an object with inference_id and ground_truth")
            iid, row = item.get("inference_id"), item.get("row")
            if not isinstance(iid, str) or not INFERENCE_ID_RE.fullmatch(iid):
                raise BadRequest(
                    f"feedback item {i}: inference_id must be 1-128 characters of [A-Za-z0-9._:-]"
                )
            if "ground_truth" not in item:
                raise BadRequest(f"feedback item {i} ({iid}): missing ground_truth")
            if row is not None and (type(row) is not int or row < 0):
                raise BadRequest(f"feedback item {i} ({iid}): row must be a non-negative integer")
            extra = set(item) - {"inference_id", "ground_truth", "row"}
            if extra:
                raise BadRequest(f"feedback item {i} ({iid}): unknown field(s) {sorted(extra)}")
            checked.append((iid, item["ground_truth"], row))
        now = time.time()
        try:
            for iid, truth, row in checked:
                self.writer.append_feedback(iid, truth, row, now)
        except CaptureError as exc:  # durable capture: not accepted unless recorded (a retry is harmless)
            raise BadRequest(f"feedback could not be recorded: {exc}", 503, "UNAVAILABLE") from None
        self.metrics.request("/feedback", "none", 202)
        await _respond(send, 202, encode_json({"accepted": len(checked)}))

    async def _webhook(self, headers: dict[bytes, bytes], receive: Any, send: Any) -> None:
        secret = self.cfg.webhook_secret
        if not secret:
            raise BadRequest(
                "webhooks are disabled: start the gateway with a webhook_secret", 404, "NOT_FOUND"
            )
        body = await self._body(headers, receive)

        def h(name: bytes) -> str | None:
            v = headers.get(name)
            return v.decode("latin-1") if v is not None else None

        ok, reason = webhook_ok(
            secret, h(b"x-mlflow-delivery-id"), h(b"x-mlflow-timestamp"), h(b"x-mlflow-signature"), body
        )
        if not ok:
            raise BadRequest(f"webhook rejected: {reason}", 401, "UNAUTHENTICATED")
        try:
            event = protocol.decode_json(body)
        except Exception as exc:
            raise BadRequest(f"malformed JSON: {exc}") from None
        data = event.get("data", {}) if isinstance(event, dict) else {}
        relevant = isinstance(data, dict) and data.get("name") in (None, self.cfg.model)
        if relevant and self.manager is not None:
            self.manager.wake()
        self.metrics.request("/webhooks/mlflow", "none", 200)
        await _respond(send, 200, encode_json({"refresh": bool(relevant)}))

    # --- probes and metrics -------------------------------------------------------------------------------
    async def _ping(self, headers: dict[bytes, bytes], receive: Any, send: Any) -> None:
        await _respond(send, 200 if self._table else 503, b"\n")

    async def _health(self, headers: dict[bytes, bytes], receive: Any, send: Any) -> None:
        st = self.state()
        errors = [s for s in st["slots"] if s["error"]]
        body = {
            "status": "ok" if self._table and not errors else ("degraded" if self._table else "unavailable"),
            "model": self.cfg.model,
            "variants": self.cfg.variants,
            "shadow": self.cfg.shadow,
            "slots": st["slots"],
            "shadow_queue_depth": st["shadow_depth"],
            "shadow_process": st["shadow_process"],
            "capture": None
            if self.writer is None
            else {
                "dir": self.writer.location,
                "format": self.writer.fmt,
                "durability": self.writer.settings.durability,
                "dropped": self.writer.stats.dropped,
                "backlog": st["capture_backlog"],
                "rows_written": st["capture_rows"],
                "write_errors": st["capture_errors"],
                "last_error": self.writer.stats.last_error,
            },
            "uptime_s": round(time.time() - self.started_at, 3),
        }
        await _respond(send, 200 if self._table else 503, encode_json(body))

    async def _version(self, headers: dict[bytes, bytes], receive: Any, send: Any) -> None:
        import mlflow.version

        from airflow_saga import __version__

        await _respond(
            send, 200, mlflow.version.VERSION.encode(), [(b"x-saga-version", __version__.encode())]
        )

    async def _metrics(self, headers: dict[bytes, bytes], receive: Any, send: Any) -> None:
        body = await asyncio.to_thread(self.metrics.render)
        await _respond(send, 200, body, content_type=METRICS_CONTENT_TYPE.encode())


async def _respond(
    send: Any,
    status: int,
    body: bytes,
    extra: list[tuple[bytes, bytes]] | None = None,
    content_type: bytes = b"application/json",
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app() -> Gateway:
    """uvicorn factory for multi-worker mode: the config is the private file ``SAGA_SERVE_CONFIG_FILE``
    names (it holds the secrets, which must not travel in the environment)."""
    import os

    from airflow_saga.serving.config import GatewayConfig

    path = os.environ.get("SAGA_SERVE_CONFIG_FILE")
    if not path:
        raise SagaError("SAGA_SERVE_CONFIG_FILE is not set; start the gateway with `saga serve`")
    with open(path, encoding="utf-8") as fh:
        return Gateway(GatewayConfig.from_json(fh.read()))
