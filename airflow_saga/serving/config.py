"""Gateway configuration: one frozen dataclass, built from CLI flags and/or a JSON or TOML file.

CLI flags override file values, so a shared config file can be tweaked per run. Validation happens here,
once, with messages naming the offending key and value, so the server never starts half-configured.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_saga.core import tags
from airflow_saga.core.errors import ServingError as GatewayConfigError

if TYPE_CHECKING:
    from airflow_saga.core.capture import CaptureSettings


@dataclasses.dataclass(frozen=True)
class GatewayConfig:
    """Everything ``saga serve`` needs; field names match the config file keys (and CLI flags)."""

    model: str
    tracking_uri: str | None = None
    registry_uri: str | None = None
    host: str = "127.0.0.1"
    port: int = 5005
    variants: dict[str, float] = dataclasses.field(default_factory=lambda: {tags.CHAMPION: 100.0})
    shadow: str | None = None
    shadow_sample: float = 100.0
    shadow_queue: int = 1000
    shadow_batch: int = 64
    shadow_timeout: float = 2.0
    shadow_mode: str = "process"  # the only mode: a supervised worker process ("thread" was removed)
    capture_dir: str | None = None
    capture_format: str = "jsonl"
    capture_sample: float = 100.0
    capture_durability: str = "buffered"  # "durable": each record written before its response is sent
    capture_spool_dir: str | None = None  # durable capture to object stores / Parquet: the local spool
    capture_file_mode: str | int = "0640"
    capture_dir_mode: str | int = "0750"
    flush_interval: float = 1.0
    poll_interval: float = 5.0
    auth_token: str | None = dataclasses.field(default=None, repr=False)  # secrets: never in a repr/log
    webhook_secret: str | None = dataclasses.field(default=None, repr=False)
    max_body_bytes: int = 1_048_576
    workers: int = 1
    batching: bool = False
    batch_max_size: int = 64
    batch_max_wait_ms: float = 2.0
    # requests over large_body_bytes or large_rows rows are scored in the large-request lane (``large``):
    # large_workers processes (0: a thread of the gateway process instead), at most large_max_pending at once
    large_body_bytes: int = 262_144
    large_rows: int = 2_000
    large_workers: int = 1
    large_max_pending: int = 2
    log_level: str = "warning"

    def __post_init__(self) -> None:
        if not self.model:
            raise GatewayConfigError("model name is required")
        if not self.variants:
            raise GatewayConfigError("at least one variant is required (e.g. champion=100)")
        for alias, weight in self.variants.items():
            if not alias or not isinstance(weight, int | float) or weight < 0:
                raise GatewayConfigError(f"variant {alias!r} has invalid weight {weight!r}")
        if sum(self.variants.values()) <= 0:
            raise GatewayConfigError(f"variant weights must not all be zero: {self.variants}")
        if self.shadow is not None and self.shadow in self.variants:
            raise GatewayConfigError(
                f"shadow alias {self.shadow!r} is also a production variant; a shadow is never served"
            )
        for key in ("shadow_sample", "capture_sample"):
            value = getattr(self, key)
            if not 0 <= value <= 100:
                raise GatewayConfigError(f"{key} must be a percentage in [0, 100], got {value}")
        for key in ("flush_interval", "poll_interval", "shadow_timeout"):
            if getattr(self, key) <= 0:
                raise GatewayConfigError(f"{key} must be positive, got {getattr(self, key)}")
        for key in ("shadow_queue", "shadow_batch", "max_body_bytes", "workers"):
            if int(getattr(self, key)) < 1:
                raise GatewayConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.shadow_mode != "process":
            raise GatewayConfigError(
                f"shadow_mode must be 'process', got {self.shadow_mode!r}: the shadow always runs in a "
                "supervised worker process (the thread mode was removed; it cost the champion more CPU and "
                "latency)"
            )
        from airflow_saga.serving.batching import MAX_SIZE_RANGE, MAX_WAIT_MS_RANGE

        if not isinstance(self.batching, bool):
            raise GatewayConfigError(f"batching must be true or false, got {self.batching!r}")
        lo, hi = MAX_SIZE_RANGE
        if type(self.batch_max_size) is not int or not lo <= self.batch_max_size <= hi:
            raise GatewayConfigError(
                f"batch_max_size must be an integer in [{lo}, {hi}] (rows per predict call), "
                f"got {self.batch_max_size!r}"
            )
        lo_ms, hi_ms = MAX_WAIT_MS_RANGE
        wait = self.batch_max_wait_ms
        if not isinstance(wait, int | float) or isinstance(wait, bool) or not lo_ms <= wait <= hi_ms:
            raise GatewayConfigError(
                f"batch_max_wait_ms must be a number of milliseconds in [{lo_ms:g}, {hi_ms:g}], got {wait!r}"
            )
        for key, lo in (
            ("large_body_bytes", 1),
            ("large_rows", 1),
            ("large_workers", 0),
            ("large_max_pending", 1),
        ):
            value = getattr(self, key)
            if type(value) is not int or value < lo:
                raise GatewayConfigError(f"{key} must be an integer >= {lo}, got {value!r}")
        if self.large_workers > 64:
            raise GatewayConfigError(f"large_workers must be at most 64, got {self.large_workers}")
        if self.capture_format not in ("jsonl", "parquet"):
            raise GatewayConfigError(f"capture_format must be jsonl or parquet, got {self.capture_format!r}")
        if self.capture_durability not in ("buffered", "durable"):
            raise GatewayConfigError(
                f"capture_durability must be buffered or durable, got {self.capture_durability!r}"
            )
        if self.capture_dir:
            self.capture_settings()

    def capture_settings(self) -> CaptureSettings:
        """The capture writer's settings (validated: modes, durability, format)."""
        from airflow_saga.core.capture import CaptureSettings
        from airflow_saga.core.errors import CaptureError

        try:
            return CaptureSettings(
                str(self.capture_dir),
                self.capture_format,
                self.flush_interval,
                self.capture_durability,
                self.capture_spool_dir,
                self.capture_file_mode,
                self.capture_dir_mode,
            )
        except CaptureError as exc:
            raise GatewayConfigError(str(exc)) from None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> GatewayConfig:
        return cls(**json.loads(text))


def parse_variants(text: str) -> dict[str, float]:
    """``"champion=90,challenger=10"`` -> ``{"champion": 90.0, "challenger": 10.0}``."""
    out: dict[str, float] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        alias, sep, weight = part.partition("=")
        try:
            out[alias.strip()] = float(weight) if sep else 100.0
        except ValueError:
            raise GatewayConfigError(f"variant {alias!r}: weight {weight!r} is not a number") from None
    return out


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a ``.json`` or ``.toml`` config file (a ``[serve]`` table in TOML is accepted too)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise GatewayConfigError(f"cannot read config file {p}: {exc}") from exc
    try:
        if p.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
            data = data.get("serve", data)
        else:
            data = json.loads(text)
    except ValueError as exc:
        raise GatewayConfigError(f"config file {p} is not valid {p.suffix[1:] or 'json'}: {exc}") from exc
    if not isinstance(data, dict):
        raise GatewayConfigError(f"config file {p} must hold a table/object")
    known = {f.name for f in dataclasses.fields(GatewayConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise GatewayConfigError(f"config file {p}: unknown keys {unknown}; known keys: {sorted(known)}")
    if isinstance(data.get("variants"), str):
        data["variants"] = parse_variants(data["variants"])
    return data


def build(file: str | None = None, **overrides: Any) -> GatewayConfig:
    """File values, then every override that is not ``None``."""
    data: dict[str, Any] = load_file(file) if file else {}
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return GatewayConfig(**data)
    except TypeError as exc:
        raise GatewayConfigError(str(exc)) from exc
