"""Prometheus metrics of one gateway, on a private registry (so tests can run several gateways).

The response path touches only pre-bound children (one dict lookup + ``inc``/``observe``), keeping the
per-request cost in the low microseconds. Gauges that describe state (queue depth, capture backlog, loaded
versions) are computed when scraped, not maintained on the hot path.

With several uvicorn workers (``PROMETHEUS_MULTIPROC_DIR`` set, a private directory per gateway, by
``server.serve``), prometheus_client keeps counters and histograms in memory-mapped files that any worker's
``/metrics`` sums; the state gauges become multiprocess gauges that every worker refreshes each second and
at scrape time (live workers only; ``versions`` and errors report the maximum over workers).
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
disable_created_metrics()  # the *_created series double the scrape size and nobody graphs them

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _StateCollector:
    """Scrape-time gauges fed by a callable returning the gateway's current state."""

    def __init__(self, state: Callable[[], dict[str, Any]]) -> None:
        self.state = state

    def collect(self) -> Iterator[GaugeMetricFamily]:
        s = self.state()
        versions = GaugeMetricFamily(
            "saga_model_version_info",
            "Model version loaded per alias (value 1)",
            labels=["alias", "role", "version"],
        )
        errors = GaugeMetricFamily(
            "saga_model_load_error", "1 when the last load/refresh of an alias failed", labels=["alias"]
        )
        for slot in s["slots"]:
            if slot["version"] is not None:
                versions.add_metric([slot["alias"], slot["role"], str(slot["version"])], 1)
            errors.add_metric([slot["alias"]], 1 if slot["error"] else 0)
        yield versions
        yield errors
        yield GaugeMetricFamily("saga_shadow_queue_depth", "Shadow copies waiting", value=s["shadow_depth"])
        sp = s.get("shadow_process")
        yield GaugeMetricFamily(
            "saga_shadow_process_restarts",
            "Times the shadow worker process was restarted after dying or hanging",
            value=sp["restarts"] if sp else 0,
        )
        yield GaugeMetricFamily(
            "saga_capture_backlog", "Capture entries accepted but not yet written", value=s["capture_backlog"]
        )
        yield GaugeMetricFamily(
            "saga_capture_rows_written", "Capture rows written to files", value=s["capture_rows"]
        )
        yield GaugeMetricFamily(
            "saga_capture_write_errors", "Failed capture flushes (retried)", value=s["capture_errors"]
        )


class _SharedState:
    """The scrape-time gauges as multiprocess gauges, refreshed by each worker (multi-worker mode)."""

    def __init__(self, state: Callable[[], dict[str, Any]], registry: CollectorRegistry) -> None:
        self.state = state

        def g(name: str, doc: str, mode: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(name, doc, list(labels), registry=registry, multiprocess_mode=mode)  # type: ignore[arg-type]

        self.versions = g(
            "saga_model_version_info", "Model version loaded per alias (value 1)", "livemax",
            ("alias", "role", "version"),
        )  # fmt: skip
        self.errors = g(
            "saga_model_load_error", "1 when the last load of an alias failed", "livemax", ("alias",)
        )
        self.depth = g("saga_shadow_queue_depth", "Shadow copies waiting", "livesum")
        self.restarts = g("saga_shadow_process_restarts", "Shadow worker process restarts", "livesum")
        self.backlog = g("saga_capture_backlog", "Capture entries accepted but not yet written", "livesum")
        self.rows = g("saga_capture_rows_written", "Capture rows written to files", "livesum")
        self.write_errors = g("saga_capture_write_errors", "Failed capture flushes (retried)", "livesum")
        self._shown: dict[str, tuple[str, str]] = {}
        self._lock = threading.Lock()

    def refresh(self) -> None:
        s = self.state()
        with self._lock:
            for slot in s["slots"]:
                alias, version = slot["alias"], slot["version"]
                old = self._shown.get(alias)
                if old is not None and old[1] != version:
                    self.versions.labels(alias, old[0], old[1]).set(0)  # a swapped-out version reads 0
                if version is not None:
                    self.versions.labels(alias, slot["role"], str(version)).set(1)
                    self._shown[alias] = (slot["role"], str(version))
                self.errors.labels(alias).set(1 if slot["error"] else 0)
            sp = s.get("shadow_process")
            self.depth.set(s["shadow_depth"])
            self.restarts.set(sp["restarts"] if sp else 0)
            self.backlog.set(s["capture_backlog"])
            self.rows.set(s["capture_rows"])
            self.write_errors.set(s["capture_errors"])


class GatewayMetrics:
    def __init__(self, state: Callable[[], dict[str, Any]]) -> None:
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "saga_requests",
            "Requests by route, variant and HTTP status",
            ["route", "variant", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "saga_request_latency_seconds",
            "Server-side /invocations latency per variant",
            ["variant"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.shadow = Counter(
            "saga_shadow",
            "Shadow copies by outcome (ok, error, timeout, dropped, shutdown, crash)",
            ["outcome"],
            registry=self.registry,
        )
        self.shadow_agreement = Counter(
            "saga_shadow_rows",
            "Shadowed rows by whether shadow and served predictions agree",
            ["agree"],
            registry=self.registry,
        )
        self.swaps = Counter("saga_model_swaps", "Hot swaps per alias", ["alias"], registry=self.registry)
        self.load_failures = Counter(
            "saga_model_load_failures", "Failed loads per alias", ["alias"], registry=self.registry
        )
        self.shared: _SharedState | None = None
        if self.multiprocess_dir:
            self.shared = _SharedState(state, self.registry)
        else:
            self.registry.register(_StateCollector(state))  # type: ignore[arg-type]
        self._stop = threading.Event()
        self._req: dict[tuple[str, str, int], Any] = {}
        self._lat: dict[str, Any] = {}
        self._shadow: dict[str, Any] = {}

    def request(self, route: str, variant: str, status: int, seconds: float | None = None) -> None:
        key = (route, variant, status)
        child = self._req.get(key)
        if child is None:
            child = self._req[key] = self.requests.labels(route, variant, str(status))
        child.inc()
        if seconds is not None:
            lat = self._lat.get(variant)
            if lat is None:
                lat = self._lat[variant] = self.latency.labels(variant)
            lat.observe(seconds)

    def shadow_outcome(self, outcome: str) -> None:
        child = self._shadow.get(outcome)
        if child is None:
            child = self._shadow[outcome] = self.shadow.labels(outcome)
        child.inc()

    def start(self) -> None:
        """In multi-worker mode, refresh this worker's state gauges every second."""
        if self.shared is None:
            return
        shared = self.shared

        def loop() -> None:
            while not self._stop.wait(1.0):
                with contextlib.suppress(Exception):  # never let the refresher die
                    shared.refresh()

        threading.Thread(target=loop, name="saga-metrics-refresh", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        if self.multiprocess_dir:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid(), self.multiprocess_dir)

    def render(self) -> bytes:
        if self.shared is None:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        self.shared.refresh()
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path=self.multiprocess_dir)
        return generate_latest(merged)
