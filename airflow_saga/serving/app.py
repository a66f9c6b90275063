"""The gateway as a bare ASGI application.

No framework sits on the scoring path: a framework's routing, request objects and middleware stack cost
more than the model itself for a one-row request. ``/invocations`` on a numeric signature runs entirely on
the event loop (parse -> validate -> estimator predict -> encode), with no thread hop; other models predict
in a worker thread so a slow pyfunc cannot stall the loop. Shadow copies and capture entries are handed off
with a non-blocking append: to the shadow worker process (``shadow_proc``), which scores them and writes
their capture records; capture-only entries go to the capture flusher thread. With ``batching`` on,
concurrent fast-path requests for one variant are scored in one predict call (``batching``).
The startup heap is frozen (``models.freeze_heap``) so that entries waiting for a flush do
not trigger full garbage collections of MLflow's and sklearn's objects, which stall every request.

Requests with a body over ``large_body_bytes`` bytes, or more than ``large_rows`` rows, are decoded,
scored and encoded in the large-request lane (``large``: separate, lower-priority processes, bounded, 503
with Retry-After beyond the bound), so one 100k-row request does not stop the loop serving small ones.

With one worker the port opens before the models are loaded: while they load, liveness
(``/v2/health/live``) answers 200 and readiness (``/v2/health/ready``, ``/ping``, ``/health``) answers 503
with ``"state": "loading"``; scoring requests get 503 with Retry-After. (With several workers each one
accepts connections only once loaded.) If no production variant loads, the state becomes ``failed``
and the process stops with an error (``on_fatal``).

Routes: POST /invocations, POST /feedback, POST /webhooks/mlflow, GET /ping, /health, /version, /metrics,
and the Open Inference Protocol (``v2``): GET /v2, /v2/health/live, /v2/health/ready,
/v2/models/{name}[/versions/{version}][/ready], POST /v2/models/{name}[/versions/{version}]/infer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

from airflow_saga.core.capture import SHADOW_PENDING, CaptureEntry, CaptureWriter
from airflow_saga.core.errors import CaptureError, SagaError
from airflow_saga.serving import protocol, v2
from airflow_saga.serving.auth import bearer_ok, webhook_ok
from airflow_saga.serving.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from airflow_saga.serving.metrics import GatewayMetrics
from airflow_saga.serving.protocol import INFERENCE_ID_RE, BadRequest, encode_json

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from airflow_saga.core.mlflow_client import MlflowSettings
    from airflow_saga.serving.batching import MicroBatcher
    from airflow_saga.serving.config import GatewayConfig
    from airflow_saga.serving.large import LargeLane
    from airflow_saga.serving.models import LoadedModel, ModelManager, Slot
    from airflow_saga.serving.shadow_proc import ShadowProcess

log = logging.getLogger(__name__)

H_VARIANT = b"x-saga-variant"
H_VERSION = b"x-saga-model-version"
H_INFERENCE_ID = b"x-saga-inference-id"
H_TARGET = b"x-saga-target-variant"
H_V2_HEADER = b"inference-header-content-length"  # V2 binary tensor extension
JSON = (b"content-type", b"application/json")
# probes; webhooks use HMAC instead
OPEN_ROUTES = {"/ping", "/health", "/version", "/webhooks/mlflow", "/v2/health/live", "/v2/health/ready"}
LOADING, READY, FAILED = "loading", "ready", "failed"


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
        self.mirror: ShadowProcess | None = None
        self.batchers: dict[str, MicroBatcher] = {}
        self.lane: LargeLane | None = None
        self.phase = LOADING  # loading -> ready | failed
        self.failure: str | None = None
        # called (from the loader thread) when no production variant could be loaded: stops the server
        self.on_fatal: Callable[[str], None] | None = None
        self._remote_rows = 0  # capture rows/requests written by the shadow process
        self._remote_requests = 0
        self.metrics = GatewayMetrics(self.state)
        self.started_at = time.time()
        self._table: tuple[tuple[str, float], ...] = ()
        self._total = 0.0
        self._token = cfg.auth_token
        self._threaded = 0  # large requests scored in threads (no lane)
        self._loading: asyncio.Future | None = None
        self._routes: dict[tuple[str, str], Callable[[dict, Any, Any], Awaitable[None]]] = {
            ("POST", "/invocations"): self._invocations,
            ("POST", "/feedback"): self._feedback,
            ("POST", "/webhooks/mlflow"): self._webhook,
            ("GET", "/ping"): self._ping,
            ("GET", "/health"): self._health,
            ("GET", "/version"): self._version,
            ("GET", "/metrics"): self._metrics,
            ("GET", "/v2"): self._v2_server,
            ("GET", "/v2/health/live"): self._v2_live,
            ("GET", "/v2/health/ready"): self._v2_ready,
        }

    # --- lifecycle --------------------------------------------------------------------------------------
    def start(self) -> None:
        """Check MLflow and load the models (blocking), then serve: ``begin`` and ``load`` in one call."""
        self.begin()
        self.load()

    def begin(self) -> None:
        """What must succeed before the port opens: MLflow answers, the capture location is usable."""
        from airflow_saga.core.mlflow_client import ping

        # Before anything loads: a dead or hung MLflow fails the start within the health check's bounds
        # (seconds) with MlflowUnreachableError, instead of hanging in the registry client's retries.
        ping(self.settings)
        if self.cfg.capture_dir:
            self.writer = CaptureWriter(self.cfg.capture_settings(), self.cfg.model)

    def load(self) -> None:
        """Load the models (readiness stays "loading" until done), then start the flusher, shadow and
        poller threads. Raises ServingError, with ``phase`` "failed", if no production variant loads."""
        try:
            self._load()
        except Exception as exc:
            self.failure = str(exc)
            self.phase = FAILED
            raise
        self.phase = READY

    def _load(self) -> None:
        from airflow_saga.serving.models import Loader, ModelManager, freeze_heap

        cfg = self.cfg
        loader = Loader(self.settings, cfg.model, fast_path=self.fast_path)
        self.manager = ModelManager(loader, list(cfg.variants), cfg.shadow, cfg.poll_interval)
        self.manager.on_swap.append(self._on_swap)
        if cfg.shadow:
            import multiprocessing

            if multiprocessing.current_process().daemon:  # a daemonic process may not start children
                raise SagaError(
                    "a gateway with a shadow cannot run in a daemonic process (the shadow runs in a child "
                    "process); start it with `saga serve`"
                )
        if cfg.batching:
            from airflow_saga.serving.batching import MicroBatcher

            self.batchers = {
                a: MicroBatcher(cfg.batch_max_size, cfg.batch_max_wait_ms / 1000.0) for a in cfg.variants
            }
        if cfg.shadow:
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
        if cfg.large_workers > 0:
            from airflow_saga.serving.large import LargeLane

            self.lane = LargeLane(cfg.large_workers, cfg.large_max_pending, cfg.model)
        self.manager.start()
        if self.lane is not None:  # the lane's processes import MLflow and load the models meanwhile
            served = [m for a in cfg.variants if (m := self.manager.slots[a].current) is not None]
            lane = self.lane
            threading.Thread(
                target=lambda: [lane.warm(m) for m in served], name="saga-large-warm", daemon=True
            ).start()
        self._rebuild_table()
        for slot in self.manager.slots.values():
            if slot.error:
                self.metrics.load_failures.labels(slot.alias).inc()
        if self.writer is not None:
            self.writer.start()
        self.metrics.start()
        freeze_heap()

    def _on_swap(self, slot: Slot) -> None:
        self.metrics.swaps.labels(slot.alias).inc()
        if (
            self.lane is not None
            and slot.role == "variant"
            and slot.current is not None
            and self.phase == READY
        ):
            self.lane.warm(slot.current)  # in the poller thread, before the new version takes traffic
        self._rebuild_table()

    def stop(self) -> None:
        """Graceful shutdown: stop polling, finish shadow copies (bounded), flush every capture record."""
        self.metrics.stop()
        if self.manager is not None:
            self.manager.stop()
        if self.mirror is not None:
            self.mirror.close(grace=min(self.cfg.shadow_timeout, 5.0))
        if self.lane is not None:
            self.lane.close()
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
            if m is None
            else {"pid": m.pid, "up": m.up, "restarts": m.restarts, "crashes": m.crashes},
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
                # One process: the port opens before the models load (live, not ready, "loading"). With
                # several workers on one socket, a worker accepts only once loaded: a loading worker would
                # take connections from the kernel that it can only answer with 503.
                deferred = self.cfg.workers == 1
                try:
                    await asyncio.to_thread(self.begin if deferred else self.start)
                except Exception as exc:
                    log.error("gateway failed to start: %s", exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    if self.on_fatal is not None:
                        self.on_fatal(str(exc))
                    return
                await send({"type": "lifespan.startup.complete"})
                if deferred:
                    loop = asyncio.get_running_loop()
                    self._loading = loop.run_in_executor(None, self._load_in_background)
            elif msg["type"] == "lifespan.shutdown":
                try:
                    await asyncio.to_thread(self.stop)
                finally:
                    await send({"type": "lifespan.shutdown.complete"})
                return

    def _load_in_background(self) -> None:
        try:
            self.load()
        except Exception as exc:
            log.error("gateway failed to start: %s", exc)
            if self.on_fatal is not None:
                self.on_fatal(str(exc))

    def _route(self, method: str, path: str) -> Callable[[dict, Any, Any], Awaitable[None]] | None:
        handler = self._routes.get((method, path))
        if handler is not None or not path.startswith("/v2"):
            return handler
        parts = path.split("/")  # "", "v2", "models", name, ["versions", version], ["infer" | "ready"]
        if len(parts) < 4 or parts[2] != "models" or not parts[3]:
            return None
        name, rest = parts[3], parts[4:]
        version = None
        if len(rest) >= 2 and rest[0] == "versions" and rest[1]:
            version, rest = rest[1], rest[2:]
        if rest == ["infer"] and method == "POST":
            return lambda h, r, s: self._v2_infer(h, r, s, name, version)
        if rest == [] and method == "GET":
            return lambda h, r, s: self._v2_metadata(h, r, s, name, version, False)
        if rest == ["ready"] and method == "GET":
            return lambda h, r, s: self._v2_metadata(h, r, s, name, version, True)
        return None

    async def _http(self, scope: dict, receive: Any, send: Any) -> None:
        path = scope["path"]
        handler = self._route(scope["method"], path)
        if handler is None:
            known = {p for _, p in self._routes}
            status = 405 if path in known or path.endswith("/infer") else 404
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
            self.metrics.request(_route_label(path), "none", exc.status)
            extra = [(b"retry-after", str(exc.retry_after).encode())] if exc.retry_after else None
            await _respond(send, exc.status, exc.body(), extra)
        except _Disconnected:
            return
        except Exception as exc:  # a bug or a broken model: answer 500 with the reason, keep serving
            log.exception("unhandled error on %s", path)
            self.metrics.request(_route_label(path), "none", 500)
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
    def _pick(self, headers: dict[bytes, bytes], version: str | None = None) -> tuple[str, LoadedModel]:
        """The variant that answers: a requested version, the X-Saga-Target-Variant, or a weighted draw."""
        if self.manager is None or self.phase != READY:
            raise self._not_ready()
        if version is not None:
            for alias in self.cfg.variants:
                model = self.manager.slots[alias].current
                if model is not None and model.version == version:
                    return alias, model
            raise BadRequest(
                f"model {self.cfg.model!r} version {version!r} is not being served; "
                f"served versions: {self._served_versions()}",
                404,
                "NOT_FOUND",
            )
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
        if not table:
            raise self._not_ready()
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

    def _not_ready(self) -> BadRequest:
        if self.phase == FAILED:
            return BadRequest(f"the gateway failed to start: {self.failure}", 503, "UNAVAILABLE")
        if self.phase == LOADING:
            return BadRequest(
                f"model {self.cfg.model!r} is loading; retry shortly", 503, "UNAVAILABLE", retry_after=1
            )
        return BadRequest(
            f"no variant of model {self.cfg.model!r} is loaded", 503, "UNAVAILABLE", retry_after=1
        )

    def _served_versions(self) -> list[str]:
        assert self.manager is not None
        models = [self.manager.slots[a].current for a in self.cfg.variants]
        return sorted({m.version for m in models if m is not None}, key=lambda v: (len(v), v))

    def _inference_id(self, headers: dict[bytes, bytes]) -> str:
        given = headers.get(H_INFERENCE_ID)
        if given is None:
            return uuid.uuid4().hex
        inference_id = given.decode("latin-1")
        if not INFERENCE_ID_RE.fullmatch(inference_id):
            raise BadRequest("X-Saga-Inference-Id must be 1-128 characters of [A-Za-z0-9._:-]")
        return inference_id

    def _table_of(self, payload: dict[str, Any], model: LoadedModel) -> protocol.Batch:
        try:
            return protocol.parse(payload, model.spec)
        except BadRequest as exc:
            exc.message = f"model {self.cfg.model!r} version {model.version}: {exc.message}"
            raise

    def _predict(self, model: LoadedModel, batch: protocol.Batch) -> list[Any]:
        try:
            return model.predict_batch(batch)
        except Exception as exc:  # like mlflow models serve: the model could not score this input
            raise self._unscorable(model, exc) from None

    def _unscorable(self, model: LoadedModel, exc: Exception) -> BadRequest:
        log.warning("model %s v%s failed to predict: %s", self.cfg.model, model.version, exc)
        return BadRequest(
            f"model {self.cfg.model!r} version {model.version} could not score the input: "
            f"{type(exc).__name__}: {str(exc)[:500]}"
        )

    def _sample(self) -> tuple[bool, bool]:
        """Whether this request is captured and whether it is mirrored to the shadow."""
        cfg = self.cfg
        capture = self.writer is not None and (
            cfg.capture_sample >= 100 or random.random() * 100 < cfg.capture_sample
        )
        shadow = self.mirror is not None and (
            cfg.shadow_sample >= 100 or random.random() * 100 < cfg.shadow_sample
        )
        return capture, shadow

    def _is_large(self, size: int, rows: int = 0) -> bool:
        return size > self.cfg.large_body_bytes or rows > self.cfg.large_rows

    async def _score(
        self,
        alias: str,
        model: LoadedModel,
        batch: protocol.Batch,
    ) -> list[Any]:
        """Predict one small, parsed request on the loop (fast path, batched if on), else in a thread."""
        if model.fast is not None and batch.array is not None:
            batcher = self.batchers.get(alias)
            try:
                if batcher is not None and len(batch.array) < batcher.max_size:
                    return await batcher.predict(model, batch.array)
                return model.fast(batch.array).tolist()
            except Exception as exc:
                raise self._unscorable(model, exc) from None
        return await asyncio.to_thread(self._predict, model, batch)

    async def _large(
        self,
        kind: str,
        body: bytes,
        meta: dict[str, Any],
        model: LoadedModel,
        want_rows: bool,
        prepare: Callable[[LoadedModel], tuple[protocol.Batch, Any]],
        encode: Callable[[LoadedModel, protocol.Batch, list[Any], Any], bytes],
    ) -> tuple[protocol.Batch, list[Any], bytes, str | None]:
        """Decode, score and encode a large request off the event loop: in the large-request lane (other
        processes), or in a thread with ``large_workers = 0`` or a model without a local copy."""
        lane = self.lane
        if lane is None or model.path is None:
            limit = self.cfg.large_max_pending
            if self._threaded >= limit:
                raise BadRequest(
                    f"{self._threaded} large requests are already being scored (the limit of this gateway "
                    "process); retry later, or send smaller batches",
                    503,
                    "UNAVAILABLE",
                    retry_after=1,
                )

            def whole() -> tuple[protocol.Batch, list[Any], bytes, str | None]:
                batch, extra = prepare(model)
                predictions = self._predict(model, batch)
                return (
                    batch,
                    predictions,
                    encode(model, batch, predictions, extra),
                    getattr(extra, "id", None),
                )

            self._threaded += 1
            try:
                return await asyncio.to_thread(whole)
            finally:
                self._threaded -= 1
        result = await lane.run(kind, body, meta, model, want_rows)
        if result[0] == "bad":
            _, status, code, message = result
            if status == 400 and "could not score the input" in message:
                log.warning("model %s v%s failed to predict a large request", self.cfg.model, model.version)
            raise BadRequest(message, status, code)
        _, out, columns, rows, predictions, request_id = result
        return protocol.Batch(columns, rows or []), predictions, out, request_id

    async def _answer(
        self,
        send: Any,
        route: str,
        t0: float,
        ts: float,
        inference_id: str,
        alias: str,
        model: LoadedModel,
        batch: protocol.Batch,
        predictions: list[Any],
        out: bytes,
        sampled: tuple[bool, bool],
    ) -> None:
        elapsed = time.perf_counter() - t0
        self._after(inference_id, ts, alias, model, batch, predictions, elapsed, sampled)
        self.metrics.request(route, alias, 200, elapsed)
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

    async def _invocations(self, headers: dict[bytes, bytes], receive: Any, send: Any) -> None:
        t0 = time.perf_counter()
        ts = time.time()
        inference_id = self._inference_id(headers)
        body = await self._body(headers, receive)
        ctype = headers.get(b"content-type", b"application/json").decode("latin-1")
        alias, model = self._pick(headers)
        sampled = self._sample()

        def prepare(model: LoadedModel) -> tuple[protocol.Batch, None]:
            return self._table_of(protocol.decode_body(body, ctype), model), None

        def encode(model: LoadedModel, batch: protocol.Batch, predictions: list[Any], extra: None) -> bytes:
            return encode_json({"predictions": predictions})

        payload = None
        if not self._is_large(len(body)):
            payload = protocol.decode_body(body, ctype)  # cheap for a small body; the row count decides
            if self._is_large(0, protocol.row_count(payload)):
                payload = None  # decoded again in the lane: a small cost next to the rows' validation
            if payload is not None:
                batch = self._table_of(payload, model)
                predictions = await self._score(alias, model, batch)
                out = encode(model, batch, predictions, None)
        if payload is None:
            meta = {"content_type": ctype}
            batch, predictions, out, _ = await self._large(
                "mlflow", body, meta, model, any(sampled), prepare, encode
            )
        await self._answer(
            send, "/invocations", t0, ts, inference_id, alias, model, batch, predictions, out, sampled
        )

    # --- Open Inference Protocol (V2) ----------------------------------------------------------------------
    def _v2_model(self, name: str) -> None:
        if name != self.cfg.model:
            raise BadRequest(
                f"unknown model {name!r}; this gateway serves {self.cfg.model!r}", 404, "NOT_FOUND"
            )

    async def _v2_infer(
        self, headers: dict[bytes, bytes], receive: Any, send: Any, name: str, version: str | None
    ) -> None:
        t0 = time.perf_counter()
        ts = time.time()
        self._v2_model(name)
        header_id = self._inference_id(headers) if H_INFERENCE_ID in headers else None
        body = await self._body(headers, receive)
        alias, model = self._pick(headers, version)
        binary = headers.get(H_V2_HEADER)
        sampled = self._sample()
        generated = uuid.uuid4().hex

        def table(doc: dict[str, Any], tail: bytes, model: LoadedModel) -> protocol.Batch:
            try:
                payload = v2.to_table(doc, tail, model)
            except BadRequest as exc:
                exc.message = f"model {self.cfg.model!r} version {model.version}: {exc.message}"
                raise
            return self._table_of(payload, model)

        def prepare(model: LoadedModel) -> tuple[protocol.Batch, v2.Request]:
            doc, tail, request = v2.parse_request(body, binary)
            return table(doc, tail, model), request

        def encode(
            model: LoadedModel, batch: protocol.Batch, predictions: list[Any], request: v2.Request
        ) -> bytes:
            iid = request.id or header_id or generated
            names = v2.output_names(model)
            return encode_json(v2.response(self.cfg.model, model.version, request, iid, predictions, names))

        request_id: str | None
        large = self._is_large(len(body))
        if not large:
            doc, tail, request = v2.parse_request(body, binary)
            large = self._is_large(0, v2.row_count(doc))
            if not large:
                batch = table(doc, tail, model)
                predictions = await self._score(alias, model, batch)
                out = encode(model, batch, predictions, request)
                request_id = request.id
        if large:
            meta = {"binary": binary, "header_id": header_id, "generated": generated}
            batch, predictions, out, request_id = await self._large(
                "v2", body, meta, model, any(sampled), prepare, encode
            )
        # the V2 request id is the inference id (capture, feedback, X-Saga-Inference-Id) when given
        inference_id = request_id or header_id or generated
        await self._answer(
            send, "/v2/infer", t0, ts, inference_id, alias, model, batch, predictions, out, sampled
        )

    def _after(
        self,
        inference_id: str,
        ts: float,
        alias: str,
        model: LoadedModel,
        batch: protocol.Batch,
        predictions: list[Any],
        elapsed: float,
        sampled: tuple[bool, bool],
    ) -> None:
        """Capture and shadow, as sampled (``_sample``); both only append to in-memory queues."""
        capture, shadow = sampled
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
        """Called when the gateway finishes a copy itself: dropped, shadow process crashed, or shutdown."""
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

    async def _v2_metadata(
        self,
        headers: dict[bytes, bytes],
        receive: Any,
        send: Any,
        name: str,
        version: str | None,
        ready: bool,
    ) -> None:
        self._v2_model(name)
        if ready:
            if self.phase != READY:
                body = {"name": name, "ready": False, "state": self.phase}
                await _respond(send, 503, encode_json(body))
                return
            ok = bool(self._table) if version is None else version in self._served_versions()
            if version is not None and not ok:
                self._pick(headers, version)  # the 404 naming the served versions
            await _respond(send, 200 if ok else 503, encode_json({"name": name, "ready": ok}))
            return
        _, model = self._pick(headers, version)
        assert self.manager is not None
        served = [m for a in self.cfg.variants if (m := self.manager.slots[a].current) is not None]
        meta = v2.metadata(name, served, model)
        meta["versions"] = self._served_versions() if version is None else [version]
        self.metrics.request("/v2/models", "none", 200)
        await _respond(send, 200, encode_json(meta))

    async def _v2_server(self, headers: dict[bytes, bytes], receive: Any, send: Any) -> None:
        from airflow_saga import __version__

        await _respond(
            send, 200, encode_json({"name": "airflow-saga", "version": __version__, "extensions": []})
        )

    async def _v2_live(self, headers: dict[bytes, bytes], receive: Any, send: Any) -> None:
        await _respond(send, 200, encode_json({"live": True}))

    async def _v2_ready(self, headers: dict[bytes, bytes], receive: Any, send: Any) -> None:
        ready = self.phase == READY and bool(self._table)
        body: dict[str, Any] = {"ready": ready}
        if not ready:
            body["state"] = self.phase
            if self.failure:
                body["error"] = self.failure
        await _respond(send, 200 if ready else 503, encode_json(body))

    # --- feedback and webhooks ----------------------------------------------------------------------------
    async def _feedback(self, headers: dict[bytes, bytes], receive: Any, send: Any) -> None:
        if self.writer is None:
            raise BadRequest(
                "feedback needs data capture: start the gateway with --capture-dir", 409, "CONFLICT"
            )
        body = await self._body(headers, receive)
        payload = protocol.decode_json_body(body)
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
        event = protocol.decode_json_body(body)
        data = event.get("data", {}) if isinstance(event, dict) else {}
        relevant = isinstance(data, dict) and data.get("name") in (None, self.cfg.model)
        if relevant and self.manager is not None:
            self.manager.wake()
        self.metrics.request("/webhooks/mlflow", "none", 200)
        await _respond(send, 200, encode_json({"refresh": bool(relevant)}))

    # --- probes and metrics -------------------------------------------------------------------------------
    async def _ping(self, headers: dict[bytes, bytes], receive: Any, send: Any) -> None:
        ready = self.phase == READY and bool(self._table)
        await _respond(send, 200 if ready else 503, b"\n" if ready else f"{self.phase}\n".encode())

    async def _health(self, headers: dict[bytes, bytes], receive: Any, send: Any) -> None:
        st = self.state()
        errors = [s for s in st["slots"] if s["error"]]
        ready = self.phase == READY and bool(self._table)
        if self.phase != READY:
            status = self.phase  # "loading" or "failed"
        else:
            status = "ok" if self._table and not errors else ("degraded" if self._table else "unavailable")
        body = {
            "status": status,
            "error": self.failure,
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
            "pid": os.getpid(),  # which worker answered, with --workers
            "batching": None
            if not self.batchers
            else {a: {"calls": b.calls, "requests": b.requests} for a, b in self.batchers.items()},
            "large_requests": self.lane.status() if self.lane is not None else {"workers": 0},
        }
        await _respond(send, 200 if ready else 503, encode_json(body))

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


def _route_label(path: str) -> str:
    """Metric label of a path: V2 paths carry model names and versions, which must not become labels."""
    if not path.startswith("/v2/models/"):
        return path
    return "/v2/infer" if path.endswith("/infer") else "/v2/models"


def create_app() -> Gateway:
    """uvicorn factory for multi-worker mode: the config is the private file ``SAGA_SERVE_CONFIG_FILE``
    names (it holds the secrets, which must not travel in the environment)."""
    import os

    from airflow_saga.serving.config import GatewayConfig

    path = os.environ.get("SAGA_SERVE_CONFIG_FILE")
    if not path:
        raise SagaError("SAGA_SERVE_CONFIG_FILE is not set; start the gateway with `saga serve`")
    with open(path, encoding="utf-8") as fh:
        gateway = Gateway(GatewayConfig.from_json(fh.read()))

    def fatal(message: str) -> None:
        """No model loaded in this worker: leave the reason for ``serve`` and stop the whole gateway."""
        import signal

        failed = os.path.join(os.path.dirname(path), "failed")
        with open(failed, "a", encoding="utf-8") as out:
            out.write(message + "\n")
        os.kill(os.getppid(), signal.SIGTERM)

    gateway.on_fatal = fatal
    return gateway
