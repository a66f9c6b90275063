"""One place that removes credentials from text before anyone shows it: errors, logs, health pages.

Why one function: a password in a tracking URI (``http://alice:s3cret@mlflow:5000``), a bearer token or a
connection secret can reach a message through many routes (our errors, MLflow's errors quoting a URL, a
log line naming a URI). Each route calls :func:`redact`; tests grep the real outputs of the hook, the CLI,
the gateway and the operators for the secrets they configured.

Standard library only: the hook imports this at DAG parse time.
"""

from __future__ import annotations

import logging
import re
import threading
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
#: Secrets shorter than this are not masked as bare strings (they would mask ordinary words); they are
#: still masked wherever they appear in a URI, a header or a ``key=value`` pair.
MIN_SECRET_LENGTH = 6

_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/?#@\s'\"<>]+)@")
_AUTH_HEADER = re.compile(r"(?P<scheme>\b(?:Bearer|Basic|Token)\s+)(?P<value>[A-Za-z0-9._~+/=\-]{4,})", re.I)
_KEY_VALUE = re.compile(
    r"(?P<key>\b(?:password|passwd|pwd|token|secret|api[_-]?key|access[_-]?key|auth[_-]?token|"
    r"webhook[_-]?secret)\b[\"']?\s*[=:]\s*[\"']?)(?P<value>[^\s,;&\"'}]+)",
    re.I,
)

_lock = threading.Lock()
_known: set[str] = set()


def register_secret(value: str | None) -> None:
    """Mask ``value`` wherever it appears from now on (passwords, tokens, webhook secrets)."""
    if value and len(value) >= MIN_SECRET_LENGTH:
        with _lock:
            _known.add(value)


def redact(text: object) -> str:
    """``text`` (anything, as ``str``) with every credential we can recognise replaced by ``***``."""
    out = str(text)
    if not out:
        return out
    out = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", out)
    out = _AUTH_HEADER.sub(lambda m: f"{m['scheme']}{MASK}", out)
    out = _KEY_VALUE.sub(lambda m: f"{m['key']}{MASK}", out)
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for secret in known:
        if secret in out:
            out = out.replace(secret, MASK)
    return out


def split_userinfo(uri: str) -> tuple[str, str | None, str | None]:
    """``http://u:p@host:5000/x`` -> (``http://host:5000/x``, ``u``, ``p``); other URIs are returned as is.

    Credentials belong in the connection's login/password, not in a URI that ends up in messages, MLflow's
    run pages and process listings; a URI that carries them is accepted and split.
    """
    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri, None, None
    if parts.scheme not in ("http", "https") or "@" not in parts.netloc:
        return uri, None, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, sep, password = userinfo.partition(":")
    from urllib.parse import unquote

    clean = urlunsplit((parts.scheme, hostport, parts.path, parts.query, parts.fragment))
    return clean, unquote(user) or None, (unquote(password) if sep else None) or None


class RedactingFilter(logging.Filter):
    """A logging filter that redacts every record's final message (and its exception text) in place.

    Installed on the handlers of long-running saga processes (the gateway), so a credential that reaches a
    log line through a library's message is masked too.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Add :class:`RedactingFilter` to every handler of ``logger`` (the root logger by default)."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
