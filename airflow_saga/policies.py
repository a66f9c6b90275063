"""Governance policies from Airflow: a DAG argument or the ``saga_governance_policy`` Variable.

Why here and not in ``core.policy``: core must not import Airflow, but where a team keeps its policy (an
Airflow Variable, a DAG's ``default_args``) and who its users and roles are (Airflow's auth manager) are
Airflow facts. This module reads them and hands core a validated ``RulesPolicy``.

Order, for a model: the DAG's ``governance_policy`` argument (an operator argument, or ``default_args``
for the whole DAG); else the Variable ``saga_governance_policy``; else core's own default (a process
resolver, ``$SAGA_GOVERNANCE_POLICY``, or allow-all). Both forms use the JSON of ``core.policy``:
``{"default": {...rules...}, "models": {"<model>": {...rules...}}}``.

Users and roles are checked against Airflow's auth manager when the policy is loaded: with the
SimpleAuthManager they are ``[core] simple_auth_manager_users`` (``user:role``) and its roles viewer,
user, op, admin (an exact match: ``op`` does not include admins). Other auth managers (FAB) keep their
users in the metadata database, which tasks cannot read in Airflow 3, so there policies name users only
(not checked for existence) and a policy naming roles is refused with a clear error.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

log = logging.getLogger(__name__)

VARIABLE = "saga_governance_policy"
SIMPLE_ROLES = frozenset({"viewer", "user", "op", "admin"})

_lock = threading.Lock()
_cache: dict[tuple[str, str], Any] = {}


def airflow_directory() -> Any:
    """The users and roles Airflow's auth manager knows, or None when they cannot be read from here."""
    from airflow.sdk import conf

    from airflow_saga.core.policy import Directory

    manager = conf.get("core", "auth_manager", fallback="") or ""
    if not manager.endswith("SimpleAuthManager"):
        return None
    users: dict[str, tuple[str, frozenset[str]]] = {}
    for item in conf.getlist("core", "simple_auth_manager_users", fallback=None) or []:
        name, _, rest = str(item).strip().partition(":")
        role = rest.split(":", 1)[0].strip().lower()
        if name:
            users[name] = (name, frozenset({role}) if role else frozenset())  # id == name in this manager
    return Directory("Airflow's SimpleAuthManager ([core] simple_auth_manager_users)", users, SIMPLE_ROLES)


def resolver(config: Any, source: str) -> Any:
    """A validated ``ConfigResolver`` (cached per text, so a Variable is parsed once per process)."""
    from airflow_saga.core.policy import ConfigResolver

    text = config if isinstance(config, str) else json.dumps(config, sort_keys=True, default=str)
    key = (source, text)
    with _lock:
        found = _cache.get(key)
    if found is None:
        found = ConfigResolver(config, source=source, directory=airflow_directory())
        with _lock:
            _cache[key] = found
    return found


def read_variable(*, metastore: bool = False) -> str | None:
    """The Variable's text, or None when it is not set (secrets backends and AIRFLOW_VAR_* included).

    In a task the SDK reads it through the supervisor. Outside one (the ``saga`` CLI) the SDK sees only
    environment variables and secrets backends, so ``metastore=True`` reads Airflow's metadata database
    too, as ``airflow variables get`` does.
    """
    if metastore:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from airflow.models import Variable as MetastoreVariable

            quiet = logging.getLogger("airflow.models.variable")
            level, quiet.level = quiet.level, logging.CRITICAL  # it logs a traceback when no DB is set up
            try:
                value = MetastoreVariable.get(VARIABLE, default_var=None)
            except Exception as exc:  # no metadata DB here (Airflow installed, not set up): say so
                log.warning(
                    "Airflow Variable %s not read (%s: %s); no policy from Airflow",
                    VARIABLE,
                    type(exc).__name__,
                    str(exc).splitlines()[0][:200],
                )
                return None
            finally:
                quiet.level = level
    else:
        from airflow.sdk import Variable

        value = Variable.get(VARIABLE, default=None)
    return None if value is None or not str(value).strip() else str(value)


def policy_for(model_name: str, governance_policy: Any = None, *, metastore: bool = False) -> Any:
    """The policy of ``model_name`` under Airflow, or None to leave it to core's default.

    ``governance_policy`` is the DAG's argument: a policy object (``check(change, view)``), or the JSON
    form as a dict or text. A bad policy raises ``PolicyError`` naming the field and value.
    """
    from airflow_saga.core.policy import Policy

    if isinstance(governance_policy, Policy):
        return governance_policy
    if governance_policy is not None and governance_policy != "":
        return resolver(governance_policy, "governance_policy")(model_name)
    text = read_variable(metastore=metastore)
    if text is None:
        return None
    return resolver(text, f"Variable {VARIABLE}")(model_name)
