"""Prometheus metrics of one gateway process, on a private registry (so tests can run several gateways).

The response path touches only pre-bound children (one dict lookup + ``inc``/``observe``), keeping the
per-request cost in the low microseconds. Gauges that describe state (queue depth, capture backlog, loaded
versions) are computed when scraped, not maintained on the hot path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
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


class GatewayMetrics:
    def __init__(self, state: Callable[[], dict[str, Any]]) -> None:
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
        self.registry.register(_StateCollector(state))  # type: ignore[arg-type]
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

    def render(self) -> bytes:
        return generate_latest(self.registry)
