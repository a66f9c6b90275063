"""A per-model lease lock built on the MLflow registry's own unique constraint.

Why: MLflow has no compare-and-set on tags or aliases, yet promotions, rollbacks and approvals on one model
may run at the same time from several Airflow workers. Every one of them is a read-modify-write (check the
status, then move the alias; read the history, then append entry ``seq + 1``), so two unsynchronised
writers can put champion on a version that was just rejected, or write the same history sequence number
and lose an entry.

The one atomic primitive every MLflow backend offers is "create a registered model with a name nobody has":
the SQL store inserts a row under the primary key ``name`` and answers RESOURCE_ALREADY_EXISTS to every
other writer. So ``create_registered_model("_saga_lock.<model>")`` succeeds for exactly one writer. The
lock carries an owner token and an expiry (a lease): a holder that crashed leaves a lock that others may
break once it has expired. Waiters retry with jittered exponential backoff up to a timeout. Releasing
deletes the lock model (a hard delete in the SQL store), after checking we still own it.

Limits (documented in the README): the lock model is briefly visible in the MLflow UI; the lease relies on
the clocks of workers being within ``ttl`` of each other; a holder that exceeds its lease may have its
lock broken, so holders call ``check()`` before each write and abort instead of writing without the lock.
Writes made by hand in the MLflow UI do not take the lock; the promotion code re-verifies status after
moving an alias for exactly that reason.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from typing import TYPE_CHECKING

from airflow_saga.core.errors import PromotionError

if TYPE_CHECKING:
    from types import TracebackType

    from mlflow import MlflowClient

log = logging.getLogger(__name__)

LOCK_PREFIX = "_saga_lock."
OWNER_TAG = "saga.lock.owner"
EXPIRES_TAG = "saga.lock.expires_at"  # epoch seconds (float, as a string)
PURPOSE_TAG = "saga.lock.purpose"


def lock_name(model_name: str) -> str:
    return f"{LOCK_PREFIX}{model_name}"


class ModelLock:
    """Context manager holding the registry lease lock of one registered model.

    :param ttl: lease length in seconds; a lock older than this may be broken by a waiter.
    :param timeout: how long to wait for the lock before raising ``PromotionError``.
    """

    def __init__(
        self,
        client: MlflowClient,
        model_name: str,
        *,
        purpose: str = "",
        ttl: float = 60.0,
        timeout: float = 120.0,
        base_delay: float = 0.05,
        max_delay: float = 1.0,
    ) -> None:
        self.client = client
        self.model_name = model_name
        self.name = lock_name(model_name)
        self.purpose = purpose
        self.ttl = ttl
        self.timeout = timeout
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.token = uuid.uuid4().hex
        self.expires_at = 0.0
        self.held = False

    # -- acquire / release ----------------------------------------------------------------------------
    def acquire(self) -> ModelLock:
        from mlflow.exceptions import MlflowException

        deadline = time.monotonic() + self.timeout
        attempt = 0
        while True:
            expires = time.time() + self.ttl
            try:
                self.client.create_registered_model(
                    self.name,
                    tags={OWNER_TAG: self.token, EXPIRES_TAG: repr(expires), PURPOSE_TAG: self.purpose[:200]},
                    description=f"airflow-saga lock for {self.model_name!r}; deleted on release",
                )
            except MlflowException as exc:
                # RESOURCE_DOES_NOT_EXIST happens when the holder released between our insert failing and
                # the store reading the existing row to build its error message: plain contention.
                if getattr(exc, "error_code", None) not in (
                    "RESOURCE_ALREADY_EXISTS",
                    "RESOURCE_DOES_NOT_EXIST",
                ):
                    raise
            else:
                self.expires_at = expires
                self.held = True
                return self
            self._break_if_stale()
            if time.monotonic() >= deadline:
                raise PromotionError(
                    f"Could not lock registered model {self.model_name!r} within {self.timeout:.0f}s: "
                    f"another "
                    f"promotion, rollback or approval holds {self.name!r}; nothing was changed"
                )
            attempt += 1
            delay = min(self.max_delay, self.base_delay * 2 ** min(attempt, 10))
            time.sleep(random.uniform(0, delay))  # full jitter spreads contending workers apart

    def _break_if_stale(self) -> None:
        from mlflow.exceptions import MlflowException

        try:
            holder = self.client.get_registered_model(self.name)
        except MlflowException:
            return  # released meanwhile: just retry
        tags = holder.tags or {}
        try:
            expires = float(tags.get(EXPIRES_TAG, "0"))
        except ValueError:
            expires = 0.0
        if not tags.get(EXPIRES_TAG):
            # Created but tags not visible yet cannot happen on SQL stores (one transaction); fall back to
            # the creation time so a malformed lock can still be broken eventually.
            expires = (holder.creation_timestamp or 0) / 1000.0 + self.ttl
        if time.time() <= expires:
            return
        owner = tags.get(OWNER_TAG)
        # Re-read immediately before deleting so that we only break the stale lock we looked at.
        try:
            again = self.client.get_registered_model(self.name)
            if (again.tags or {}).get(OWNER_TAG) != owner:
                return
            log.warning(
                "Breaking stale saga lock %s (owner %s, expired %.1fs ago)",
                self.name,
                owner,
                time.time() - expires,
            )
            self.client.delete_registered_model(self.name)
        except MlflowException:
            return

    def check(self) -> None:
        """Raise before a write if our lease has (nearly) run out: better abort than write unlocked."""
        if not self.held or time.time() > self.expires_at - min(5.0, self.ttl / 4):
            raise PromotionError(
                f"Lease on {self.name!r} expired before the change to {self.model_name!r} was written; "
                f"retry the operation"
            )

    def release(self) -> None:
        from mlflow.exceptions import MlflowException

        if not self.held:
            return
        self.held = False
        try:
            current = self.client.get_registered_model(self.name)
            if (current.tags or {}).get(OWNER_TAG) == self.token:
                self.client.delete_registered_model(self.name)
        except MlflowException as exc:
            log.warning("Could not release saga lock %s: %s", self.name, exc)

    def __enter__(self) -> ModelLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
