"""A per-model lease lock built on the MLflow registry's own unique constraint, renewed while held.

Why: MLflow has no compare-and-set on tags or aliases, yet promotions, rollbacks and approvals on one model
may run at the same time from many Airflow workers, and each is a read-modify-write (check the status, then
move the alias; read the history head, then append entry ``head + 1``). The one atomic primitive every
MLflow backend offers is "create a registered model with a name nobody has": the SQL store inserts a row
under the primary key ``name`` and answers RESOURCE_ALREADY_EXISTS to every other writer. So
``create_registered_model("_saga_lock.<model>")`` succeeds for exactly one writer.

How it behaves under contention and crashes:

- **Few calls, jittered backoff.** A waiter reads the lock (one cheap GET) and only tries to create it when
  it is absent; between attempts it sleeps a full-jitter exponential backoff (50 ms doubling up to
  ``max_delay``, 4 s, within a few seconds of waiting). A hundred waiters therefore cost the server about
  fifty reads a second, not a stampede of failing inserts that exhausts its connection pool, and with
  that many one is always about to look, so the lock still changes hands within tens of milliseconds of
  a release; a lone waiter notices a release within two seconds on average.
- **Short lease, renewed.** The lock carries an owner token and an expiry ``ttl`` seconds ahead (6 s).
  A heartbeat thread renews it every ``ttl / 4`` while held, so a long operation (a history migration)
  keeps it, and a holder that was killed stops renewing: its lock expires within ``ttl`` and the next
  waiter breaks it. Recovery after a crash is therefore at most ``ttl`` plus one backoff step.
- **Fencing.** ``check()`` re-reads the lock from the registry before every write and refuses unless we
  are still the owner with at least ``margin`` seconds of lease left (renewing on the spot when the lease
  runs low). A holder that stalled past its lease finds someone else's token there and aborts instead of
  writing without the lock.
- **Breaking a stale lock** is itself serialised: the breaker first creates ``_saga_lockbreak.<model>``
  (the same unique-name trick), re-reads the lock, and deletes it only if it is still the stale lock it
  saw. Without this, two waiters that saw the same expired lock could both delete, the second deleting the
  first one's fresh lock.

Limits (in the README): expiry compares the holder's clock with the waiter's, so worker clocks must agree
to well within the lease (NTP does); a holder that stalls more than ``margin`` seconds between ``check()``
and its write could still write after losing the lock (MLflow offers no conditional write to close that
gap); the lock model is briefly visible in the MLflow UI.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

from airflow_saga.core import compat
from airflow_saga.core.errors import GovernanceBusyError

if TYPE_CHECKING:
    from types import TracebackType

    from mlflow import MlflowClient

log = logging.getLogger(__name__)

LOCK_PREFIX = "_saga_lock."
BREAKER_PREFIX = "_saga_lockbreak."
OWNER_TAG = "saga.lock.owner"
EXPIRES_TAG = "saga.lock.expires_at"  # epoch seconds (float, as a string), on the holder's clock
PURPOSE_TAG = "saga.lock.purpose"

DEFAULT_TTL = 6.0
DEFAULT_TIMEOUT = 45.0
BREAKER_STALE_AFTER = 10.0  # a breaker that crashed mid-break is ignored after this many seconds


def lock_name(model_name: str) -> str:
    return f"{LOCK_PREFIX}{model_name}"


def breaker_name(model_name: str) -> str:
    return f"{BREAKER_PREFIX}{model_name}"


class LockLost(GovernanceBusyError):
    """Our lease ended (expired or was broken) before a write: nothing more is written; retry."""


def _error_code(exc: Exception) -> str | None:
    return getattr(exc, "error_code", None)


class _Seen:
    """One read of the lock model: who owns it and until when."""

    def __init__(self, model: Any) -> None:
        tags = dict(model.tags or {})
        self.owner = tags.get(OWNER_TAG)
        self.purpose = tags.get(PURPOSE_TAG, "")
        try:
            self.expires = float(tags[EXPIRES_TAG])
        except (KeyError, ValueError):
            # A lock without a readable expiry (created by hand?) counts from its creation time.
            self.expires = (model.creation_timestamp or 0) / 1000.0 + DEFAULT_TTL

    def expired(self, now: float) -> bool:
        return now > self.expires


class ModelLock:
    """Context manager holding the registry lease lock of one registered model.

    :param ttl: lease length in seconds; renewed every ``ttl / 4`` while held.
    :param timeout: how long to wait for the lock before raising ``GovernanceBusyError`` (nothing changed).
    :param max_delay: cap of the jittered backoff between attempts.
    :param margin: ``check()`` refuses when less lease than this is left (default ``ttl / 4``).
    """

    def __init__(
        self,
        client: MlflowClient,
        model_name: str,
        *,
        purpose: str = "",
        ttl: float = DEFAULT_TTL,
        timeout: float = DEFAULT_TIMEOUT,
        base_delay: float = 0.05,
        max_delay: float = 4.0,
        margin: float | None = None,
    ) -> None:
        if ttl < 1.0:
            raise ValueError(f"lock ttl must be at least 1 s, got {ttl}")
        self.client = client
        self.model_name = model_name
        self.name = lock_name(model_name)
        self.purpose = purpose[:200]
        self.ttl = ttl
        self.timeout = timeout
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.margin = ttl / 4 if margin is None else margin
        self.token = uuid.uuid4().hex
        self.expires_at = 0.0
        self.held = False
        self.lost_reason: str | None = None
        self.attempts = 0
        self.broke_stale = (
            False  # we got the lock by breaking a crashed holder's: its leftovers need settling
        )
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self._renew_lock = threading.Lock()

    # -- reading ----------------------------------------------------------------------------------------
    def _read(self, name: str | None = None) -> _Seen | None:
        from mlflow.exceptions import MlflowException

        try:
            return _Seen(self.client.get_registered_model(name or self.name))
        except MlflowException as exc:
            if _error_code(exc) == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise

    # -- acquire ----------------------------------------------------------------------------------------
    def acquire(self) -> ModelLock:
        deadline = time.monotonic() + self.timeout
        seen: _Seen | None = None
        while True:
            self.attempts += 1
            seen = self._read()
            if seen is None:
                if self._try_create():
                    self._start_heartbeat()
                    return self
            elif seen.expired(time.time()):
                self._break(seen)
                if self._try_create():
                    self.broke_stale = True
                    self._start_heartbeat()
                    return self
            if time.monotonic() >= deadline:
                holder = f" (held for: {seen.purpose})" if seen is not None and seen.purpose else ""
                raise GovernanceBusyError(
                    f"Could not lock registered model {self.model_name!r} within {self.timeout:.0f}s: "
                    f"another promotion, rollback or approval holds {self.name!r}{holder}; nothing was "
                    "changed, retry"
                )
            step = min(self.max_delay, self.base_delay * 2 ** min(self.attempts, 12))
            time.sleep(min(random.uniform(0, step), max(0.0, deadline - time.monotonic())))

    def _try_create(self) -> bool:
        from mlflow.exceptions import MlflowException

        expires = time.time() + self.ttl
        try:
            self.client.create_registered_model(
                self.name,
                tags={OWNER_TAG: self.token, EXPIRES_TAG: repr(expires), PURPOSE_TAG: self.purpose},
                description=f"airflow-saga lock for {self.model_name!r}; deleted on release",
            )
        except MlflowException as exc:
            # RESOURCE_DOES_NOT_EXIST: the holder released between our insert failing and the store
            # reading the existing row for its error message. Both are plain contention.
            if _error_code(exc) in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
                return False
            raise
        self.expires_at = expires
        self.held = True
        self.lost_reason = None
        return True

    def _break(self, stale: _Seen) -> None:
        """Delete the expired lock ``stale`` unless someone else is breaking it or it changed meanwhile."""
        from mlflow.exceptions import MlflowException

        breaker = breaker_name(self.model_name)
        try:
            self.client.create_registered_model(
                breaker, tags={OWNER_TAG: self.token, EXPIRES_TAG: repr(time.time() + BREAKER_STALE_AFTER)}
            )
        except MlflowException as exc:
            if _error_code(exc) not in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
                raise
            other = self._read(breaker)
            if other is not None and other.expired(time.time()):
                # A breaker that died mid-break: clear it so the next attempt can break the lock.
                log.warning("Clearing stale lock breaker %s (owner %s)", breaker, other.owner)
                self._delete_if_owner(breaker, other.owner)
            return
        try:
            again = self._read()
            if again is not None and again.owner == stale.owner and again.expired(time.time()):
                log.warning(
                    "Breaking stale saga lock %s (owner %s, purpose %r, expired %.1fs ago)",
                    self.name,
                    again.owner,
                    again.purpose,
                    time.time() - again.expires,
                )
                compat.registry_writer(self.client).delete_registered_model(self.name)
        except MlflowException as exc:
            if _error_code(exc) != "RESOURCE_DOES_NOT_EXIST":
                raise
        finally:
            self._delete_if_owner(breaker, self.token)

    def _delete_if_owner(self, name: str, owner: str | None) -> None:
        from mlflow.exceptions import MlflowException

        try:
            current = self._read(name)
            if current is not None and current.owner == owner:
                compat.registry_writer(self.client).delete_registered_model(name)
        except MlflowException as exc:
            if _error_code(exc) != "RESOURCE_DOES_NOT_EXIST":
                log.warning("Could not delete %s: %s", name, exc)

    # -- renewal and fencing ----------------------------------------------------------------------------
    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._beat = threading.Thread(
            target=self._heartbeat, name=f"saga-lock-{self.model_name}", daemon=True
        )
        self._beat.start()

    def _heartbeat(self) -> None:
        interval = self.ttl / 4
        while not self._stop.wait(interval):
            try:
                self._renew()
            except LockLost as exc:
                log.error("%s", exc)
                return
            except Exception as exc:  # MLflow hiccup: try again next beat; check() still fences writes
                log.warning("Could not renew saga lock %s: %s", self.name, exc)

    def _renew(self, seen: _Seen | None = None) -> None:
        """Extend our lease, after confirming (from the registry) that the lock is still ours."""
        with self._renew_lock:
            if not self.held:
                return
            seen = seen or self._read()
            if seen is None or seen.owner != self.token:
                self._lose(f"it is now {'gone' if seen is None else 'held by another writer'}")
            expires = time.time() + self.ttl
            compat.registry_writer(self.client).set_registered_model_tag(
                self.name, EXPIRES_TAG, repr(expires)
            )
            self.expires_at = expires

    def _lose(self, why: str) -> None:
        self.held = False
        self.lost_reason = why
        raise LockLost(
            f"Lost the lock on registered model {self.model_name!r} ({why}) before the change was "
            f"complete; nothing more was written, retry the operation"
        )

    def check(self) -> None:
        """Fence a write: re-read the lock's owner from the registry; refuse unless it is us with lease left.

        Renews on the spot when less than half the lease is left, so a holder whose heartbeat is late
        (an overloaded server) keeps its lock instead of failing.
        """
        if not self.held:
            raise LockLost(
                f"Lost the lock on registered model {self.model_name!r} "
                f"({self.lost_reason or 'not held'}); nothing more was written, retry the operation"
            )
        seen = self._read()
        now = time.time()
        if seen is None or seen.owner != self.token:
            self._lose(f"it is now {'gone' if seen is None else 'held by another writer'}")
        if seen.expires - now < self.margin:
            if seen.expired(now):
                self._lose(f"the lease expired {now - seen.expires:.1f}s ago")
            self._renew(seen)
        elif seen.expires - now < self.ttl / 2:
            self._renew(seen)

    # -- release ----------------------------------------------------------------------------------------
    def release(self) -> None:
        from mlflow.exceptions import MlflowException

        self._stop.set()
        if self._beat is not None and self._beat is not threading.current_thread():
            self._beat.join(timeout=self.ttl)
        self._beat = None
        if not self.held:
            return
        self.held = False
        try:
            current = self._read()
            # Only delete our own, live lock: an expired one may be being broken right now by a waiter.
            if current is not None and current.owner == self.token and not current.expired(time.time()):
                compat.registry_writer(self.client).delete_registered_model(self.name)
        except MlflowException as exc:
            log.warning("Could not release saga lock %s (it expires by itself): %s", self.name, exc)

    def __enter__(self) -> ModelLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
