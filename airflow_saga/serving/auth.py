"""Request authentication: a static bearer token for clients, HMAC signatures for MLflow webhooks.

Both comparisons are constant-time. Webhook deliveries older than ``max_age`` seconds are refused so a
captured delivery cannot be replayed later.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time


def bearer_ok(header: bytes | None, token: str) -> bool:
    """True when ``Authorization: Bearer <token>`` matches."""
    if not header:
        return False
    scheme, _, value = header.decode("latin-1").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


def webhook_signature(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """MLflow's ``X-MLflow-Signature``: ``v1,`` + base64(HMAC-SHA256(secret, "id.ts.body"))."""
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(secret.encode(), signed, hashlib.sha256).digest()).decode()


def webhook_ok(
    secret: str,
    delivery_id: str | None,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    max_age: float = 300.0,
    now: float | None = None,
) -> tuple[bool, str]:
    """Check an MLflow webhook delivery; returns (ok, reason)."""
    if not (delivery_id and timestamp and signature):
        return False, "missing X-MLflow-Delivery-Id, X-MLflow-Timestamp or X-MLflow-Signature"
    try:
        ts = int(timestamp)
    except ValueError:
        return False, f"bad X-MLflow-Timestamp {timestamp!r}"
    if abs((now if now is not None else time.time()) - ts) > max_age:
        return False, "stale webhook delivery"
    expected = webhook_signature(secret, delivery_id, timestamp, body)
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        return False, "bad signature"
    return True, "ok"
