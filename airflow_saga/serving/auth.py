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


# --- where the secrets come from -----------------------------------------------------------------------
def read_secret_file(path: str, what: str) -> str:
    """The secret in ``path`` (surrounding whitespace, e.g. the final newline, stripped).

    A file readable by group or others still works, with a warning: the secret is as private as the file.
    """
    import os
    import stat
    import sys

    from airflow_saga.core.errors import ServingError

    try:
        mode = os.stat(path).st_mode
        with open(path, encoding="utf-8") as fh:
            value = fh.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ServingError(f"cannot read the {what} file {path!r}: {exc}") from exc
    if not value:
        raise ServingError(f"the {what} file {path!r} is empty")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        print(
            f"saga serve: warning: the {what} file {path!r} is readable by other users "
            f"(mode {stat.S_IMODE(mode):o}); chmod 600 it",
            file=sys.stderr,
        )
    return value


def resolve_secret(
    *, flag: str | None, flag_name: str, file: str | None, env_name: str, what: str
) -> str | None:
    """One secret from, in order: the command-line value (warned about: ``ps`` shows it to every user),
    the ``--...-file`` flag, ``$<env_name>``, then the file named by ``$<env_name>_FILE``."""
    import os
    import sys

    from airflow_saga.core.redaction import register_secret

    value: str | None = None
    if flag:
        print(
            f"saga serve: warning: {flag_name} on the command line is visible to every user of this machine "
            f"(ps, /proc); use {flag_name}-file or ${env_name} instead",
            file=sys.stderr,
        )
        value = flag
    elif file:
        value = read_secret_file(file, what)
    elif os.environ.get(env_name):
        value = os.environ[env_name]
    elif os.environ.get(f"{env_name}_FILE"):
        value = read_secret_file(os.environ[f"{env_name}_FILE"], what)
    register_secret(value)
    return value
