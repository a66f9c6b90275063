"""Governance policies: the hook every approval and alias change passes before anything is written.

Why a hook and not rules here: who may approve, four-eyes (the trainer may not approve their own version)
and protected aliases (conditions to take ``champion``) differ per team and per model. The governance unit
of work (``core.governance``) asks the policy about every change it is about to make, inside the model's
lock and after its own built-in rules (transitions, "only Approved versions become champion"), and before
its first write, on every path: Airflow HITL, the MLflow tag + sensor, the CLI and the Python API. A policy
refuses by raising ``PolicyError(message, rule=...)``; the unit of work then adds the model, version and
status to the message and changes nothing.

A decision made by hand in the MLflow UI has already happened when saga sees it (``Change.observed``). If
the policy refuses it, the unit of work records it in the version's approval log as a violation and puts
the status back, so it does not count as approval.

The default policy allows everything (what saga did before policies existed). Choose another one:

- per call: ``approval.set_status(..., policy=p)``, ``promotion.promote(..., policy=p)``;
- per process, for every model: ``set_policy_resolver(lambda model_name: p)``;
- for every process (workers, triggerer, CLI) without code: ``SAGA_GOVERNANCE_POLICY=package.module:name``,
  where ``name`` is a ``Policy`` or a callable ``(model_name) -> Policy``.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import threading
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from airflow_saga.core.errors import PolicyError

if TYPE_CHECKING:
    from collections.abc import Callable

    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

POLICY_ENV = "SAGA_GOVERNANCE_POLICY"

#: ``Change.action`` values.
APPROVE, REJECT, PROMOTE, ROLLBACK, DEMOTE = "approve", "reject", "promote", "rollback", "demote"


@dataclasses.dataclass(frozen=True)
class Change:
    """One change the unit of work is about to make, as a policy sees it.

    :param action: ``approve`` | ``reject`` (approval status) or ``promote`` | ``rollback`` | ``demote``
        (an alias moves to ``version``, or is removed from ``previous``).
    :param version: the version approved/rejected, or the one the alias moves to (None for demote).
    :param alias: the alias that moves (None for approval changes).
    :param previous: the alias's current holder (alias changes), or the current status (approval changes).
    :param by: who acts (an Airflow user, ``airflow:<dag>/<run>``, a CLI user, ``mlflow-ui``).
    :param via: the path: ``airflow`` | ``mlflow`` | ``api``.
    :param observed: True when the decision was already made by hand in MLflow and saga is recording it.
    :param cause: for a change that follows from another (rejecting the challenger demotes it), that
        other change's action; None for the change the caller asked for.
    """

    action: str
    model: str
    version: str | None
    alias: str | None
    previous: str | None
    by: str
    via: str
    reason: str
    observed: bool = False
    cause: str | None = None


@runtime_checkable
class GovernanceView(Protocol):
    """What a policy may read while it decides: the registry as the unit of work sees it, inside the lock."""

    client: MlflowClient
    model: str

    def aliases(self) -> dict[str, str]:
        """``{alias: version}`` as of now (inside the lock)."""
        ...

    def version(self, version: str) -> ModelVersion:
        """The version and its tags (approval status, lineage, shadow decision, ...), read in the lock."""
        ...

    def status(self, version: str) -> str:
        """The version's validated approval status."""
        ...

    def history(self, *, alias: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The newest committed history entries (of ``alias``), newest first."""
        ...


@runtime_checkable
class Policy(Protocol):
    """Implement ``check``; raise ``PolicyError(message, rule="...")`` to refuse. Never write."""

    name: str

    def check(self, change: Change, view: GovernanceView) -> None: ...


class AllowAll:
    """The default: every change the built-in rules allow is allowed."""

    name = "allow-all"

    def check(self, change: Change, view: GovernanceView) -> None:
        return None


DEFAULT_POLICY: Policy = AllowAll()

_lock = threading.Lock()
_resolver: Callable[[str], Policy] | None = None


def set_policy_resolver(resolver: Callable[[str], Policy] | None) -> None:
    """Use ``resolver(model_name)`` for every change in this process (None: back to the default)."""
    global _resolver
    with _lock:
        _resolver = resolver


def _from_env(model_name: str) -> Policy | None:
    spec = os.environ.get(POLICY_ENV, "").strip()
    if not spec:
        return None
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise PolicyError(f"{POLICY_ENV}={spec!r} must look like 'package.module:name'", rule="configuration")
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise PolicyError(f"{POLICY_ENV}={spec!r} cannot be loaded: {exc}", rule="configuration") from exc
    return target if isinstance(target, Policy) else target(model_name)


def policy_for(model_name: str) -> Policy:
    """The policy of ``model_name``: the process resolver, else $SAGA_GOVERNANCE_POLICY, else allow all."""
    with _lock:
        resolver = _resolver
    policy = resolver(model_name) if resolver is not None else _from_env(model_name)
    policy = policy or DEFAULT_POLICY
    if not isinstance(policy, Policy):
        raise PolicyError(
            f"The governance policy for model {model_name!r} is {policy!r}, which has no check(change, view)",
            rule="configuration",
        )
    return policy
