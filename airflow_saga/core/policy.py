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
- for every process (workers, triggerer, CLI, gateway) without code: ``SAGA_GOVERNANCE_POLICY`` set to
  ``package.module:name`` (a ``Policy`` or a callable ``(model_name) -> Policy``), to a declarative policy
  as JSON text (``{"default": {...}}``) or to ``@/path/to/policy.json``.

The declarative policy (``RulesPolicy``, built by ``ConfigResolver`` from JSON) covers approvers (Airflow
users and roles), four-eyes and protected aliases; the Airflow layer (``airflow_saga.policies``) reads it from
a DAG argument or the ``saga_governance_policy`` Variable and resolves roles through Airflow's auth manager.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import threading
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from airflow_saga.core import tags as T
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


_env_cache: dict[str, ConfigResolver] = {}


def _from_env(model_name: str) -> Policy | None:
    spec = os.environ.get(POLICY_ENV, "").strip()
    if not spec:
        return None
    if spec.startswith("{") or spec.startswith("@"):
        resolver = _env_cache.get(spec)
        if resolver is None:
            resolver = _env_cache[spec] = ConfigResolver(_read_spec(spec), source=POLICY_ENV)
        return resolver(model_name)
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise PolicyError(f"{POLICY_ENV}={spec!r} must look like 'package.module:name'", rule="configuration")
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise PolicyError(f"{POLICY_ENV}={spec!r} cannot be loaded: {exc}", rule="configuration") from exc
    return target if isinstance(target, Policy) else target(model_name)


def _read_spec(spec: str) -> Any:
    if not spec.startswith("@"):
        return spec
    path = spec[1:]
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError as exc:
        raise _config_error(f"{POLICY_ENV}={spec!r}", f"cannot be read: {exc}") from None


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


# ------------------------------------------------------------------------------ declarative policies
# The rules most teams need, written as JSON (a DAG argument, an Airflow Variable, a file) instead of code:
#
#   {"default": {RULES}, "models": {"churn": {RULES}}}
#
#   RULES = {
#     "approvers": {"users": ["alice"], "roles": ["op"]},   # who may approve or reject
#     "four_eyes": true,                                    # the trainer may not approve their version
#     "protected_aliases": {"champion": {
#         "shadow_passed": true,                            # its latest shadow comparison passed
#         "min_challenger_hours": 24,                       # held @challenger at least this long
#         "promoters": {"users": [...], "roles": [...]},    # who may move this alias
#         "on_rollback": false}},                           # apply these to rollbacks too
#     "refuse_unrecorded_serving": true                     # the gateway refuses hand-moved aliases
#   }
#
# A model's entry replaces the default's keys it names (a shallow merge); a model with neither entry nor
# default gets the allow-all policy. Users are Airflow user names. An entry ``airflow:<dag_id>`` stands for
# the runs of that DAG (a DAG that promotes automatically acts as ``airflow:<dag_id>/<run_id>``).

#: The version tag that names the Airflow user who triggered the training run (``core.lineage``).
TRIGGERED_BY_TAG = T.AIRFLOW_TRIGGERED_BY
RULE_KEYS = frozenset({"approvers", "four_eyes", "protected_aliases", "refuse_unrecorded_serving"})
ALIAS_RULE_KEYS = frozenset({"shadow_passed", "min_challenger_hours", "promoters", "on_rollback"})
PRINCIPAL_KEYS = frozenset({"users", "roles"})
GOVERNED_ALIASES = ("champion", "challenger")


def _config_error(where: str, message: str) -> PolicyError:
    return PolicyError(f"Governance policy {where}: {message}", rule="configuration")


def identity(by: str) -> str:
    """The person (or DAG run) behind ``by``: ``"alice (airflow:dag/run)"`` -> ``"alice"``."""
    by = str(by or "").strip()
    if by.endswith(")") and " (airflow:" in by:
        return by[: by.index(" (airflow:")].strip()
    return by


@dataclasses.dataclass(frozen=True)
class Directory:
    """Who exists and which roles they hold, as Airflow's auth manager knows it (built by the Airflow layer).

    ``users`` maps a user name to ``(id, roles)``; ``roles`` lists every role that exists (some may have
    no users); ``source`` names where it came from, for messages.
    """

    source: str
    users: dict[str, tuple[str, frozenset[str]]]
    roles: frozenset[str]

    def roles_of(self, user: str) -> frozenset[str]:
        found = self.users.get(user)
        return found[1] if found else frozenset()

    def members(self, role: str) -> list[str]:
        return sorted(u for u, (_, roles) in self.users.items() if role in roles)


@dataclasses.dataclass(frozen=True)
class Principals:
    """A set of Airflow users and roles (``airflow:<dag_id>`` entries stand for that DAG's runs)."""

    users: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()

    def admits(self, by: str, directory: Directory | None) -> bool:
        who = identity(by)
        if who in self.users:
            return True
        for user in self.users:
            if user.startswith("airflow:") and (who == user or who.startswith(user + "/")):
                return True
        return bool(directory is not None and self.roles & {r.lower() for r in directory.roles_of(who)})

    def describe(self) -> str:
        parts = [f"users {', '.join(sorted(self.users))}"] if self.users else []
        parts += [f"roles {', '.join(sorted(self.roles))}"] if self.roles else []
        return " and ".join(parts) or "nobody"

    def expand(self, directory: Directory | None) -> list[str]:
        """The user names admitted (role members through ``directory``); ``airflow:`` entries left out."""
        names = {u for u in self.users if not u.startswith("airflow:")}
        if directory is not None:
            for role in self.roles:
                names.update(directory.members(role))
        return sorted(names)


@dataclasses.dataclass(frozen=True)
class AliasRule:
    """Conditions a version must meet to take a protected alias (on top of "champion needs Approved")."""

    shadow_passed: bool = False
    min_challenger_hours: float | None = None
    promoters: Principals | None = None
    on_rollback: bool = False


@dataclasses.dataclass(frozen=True)
class Rules:
    """One model's rules, parsed and validated (see the comment above for the JSON form)."""

    approvers: Principals | None = None
    four_eyes: bool = False
    protected_aliases: dict[str, AliasRule] = dataclasses.field(default_factory=dict)
    refuse_unrecorded_serving: bool = False


def _strings(where: str, value: Any) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise _config_error(where, f"must be a list of non-empty strings, got {value!r}")
    return frozenset(v.strip() for v in value)


def _bool(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _config_error(where, f"must be true or false, got {value!r}")
    return value


def _known(where: str, keys: Any, allowed: frozenset[str]) -> None:
    unknown = sorted(set(keys) - allowed)
    if unknown:
        raise _config_error(where, f"unknown key {unknown[0]!r}; use {', '.join(sorted(allowed))}")


def _principals(where: str, value: Any, directory: Directory | None) -> Principals:
    if not isinstance(value, dict):
        shape = '{"users": [...], "roles": [...]}'
        raise _config_error(where, f"must be an object like {shape}, got {value!r}")
    _known(where, value, PRINCIPAL_KEYS)
    users = _strings(f"{where}.users", value.get("users", []))
    roles = frozenset(r.lower() for r in _strings(f"{where}.roles", value.get("roles", [])))
    if not users and not roles:
        raise _config_error(where, "names no users and no roles (nobody could act); list at least one")
    if directory is not None:
        for user in sorted(users):
            if not user.startswith("airflow:") and user not in directory.users:
                raise _config_error(
                    f"{where}.users", f"unknown user {user!r}: {directory.source} has no such user"
                )
        for role in sorted(roles):
            if role not in directory.roles:
                raise _config_error(
                    f"{where}.roles",
                    f"unknown role {role!r}: {directory.source} has roles "
                    f"{', '.join(sorted(directory.roles))}",
                )
    elif roles:
        raise _config_error(
            f"{where}.roles",
            f"roles {', '.join(sorted(roles))} cannot be resolved here: no Airflow user directory (roles "
            "need Airflow's SimpleAuthManager; with another auth manager, list users)",
        )
    return Principals(users, roles)


def parse_rules(value: Any, *, where: str = "rules", directory: Directory | None = None) -> Rules:
    """Validate one rules object; ``PolicyError(rule="configuration")`` names the field and the value."""
    if not isinstance(value, dict):
        raise _config_error(where, f"must be a JSON object, got {value!r}")
    _known(where, value, RULE_KEYS)
    approvers = None
    if value.get("approvers") is not None:
        approvers = _principals(f"{where}.approvers", value["approvers"], directory)
    four_eyes = _bool(f"{where}.four_eyes", value.get("four_eyes", False))
    refuse = _bool(f"{where}.refuse_unrecorded_serving", value.get("refuse_unrecorded_serving", False))
    protected: dict[str, AliasRule] = {}
    aliases = value.get("protected_aliases") or {}
    if not isinstance(aliases, dict):
        raise _config_error(f"{where}.protected_aliases", f"must be an object, got {aliases!r}")
    for alias, rule in aliases.items():
        at = f"{where}.protected_aliases.{alias}"
        if alias not in GOVERNED_ALIASES:
            raise _config_error(at, f"unknown alias {alias!r}; use {', '.join(GOVERNED_ALIASES)}")
        if not isinstance(rule, dict):
            raise _config_error(at, f"must be an object, got {rule!r}")
        _known(at, rule, ALIAS_RULE_KEYS)
        hours = rule.get("min_challenger_hours")
        if hours is not None:
            if isinstance(hours, bool) or not isinstance(hours, int | float) or not 0 <= hours < 1e6:
                raise _config_error(f"{at}.min_challenger_hours", f"must be a number >= 0, got {hours!r}")
            if alias != "champion":
                raise _config_error(f"{at}.min_challenger_hours", "applies to champion only")
        promoters = rule.get("promoters")
        protected[alias] = AliasRule(
            shadow_passed=_bool(f"{at}.shadow_passed", rule.get("shadow_passed", False)),
            min_challenger_hours=None if hours is None else float(hours),
            promoters=None if promoters is None else _principals(f"{at}.promoters", promoters, directory),
            on_rollback=_bool(f"{at}.on_rollback", rule.get("on_rollback", False)),
        )
    return Rules(approvers, four_eyes, protected, refuse)


class RulesPolicy:
    """The declarative policy: approvers, four-eyes, protected aliases (see ``Rules``)."""

    def __init__(self, rules: Rules, *, name: str = "rules", directory: Directory | None = None) -> None:
        self.rules = rules
        self.name = name
        self.directory = directory

    def __repr__(self) -> str:
        return f"RulesPolicy({self.name!r}, {self.rules!r})"

    @property
    def refuse_unrecorded_serving(self) -> bool:
        return self.rules.refuse_unrecorded_serving

    def approvers(self) -> list[str] | None:
        """User names who may approve (role members expanded), or None when anyone may."""
        r = self.rules.approvers
        return None if r is None else r.expand(self.directory)

    def check(self, change: Change, view: GovernanceView) -> None:
        if change.cause is not None:
            return  # follows from a change already checked (rejecting the challenger demotes it)
        if change.action in (APPROVE, REJECT):
            self._check_decision(change, view)
        elif change.alias in self.rules.protected_aliases:
            self._check_alias(change, view, self.rules.protected_aliases[change.alias])

    def check_auto_approve(self, by: str) -> None:
        """Registration with ``auto_approve``: allowed only when ``by`` could approve by hand."""
        r = self.rules.approvers
        if r is not None and not r.admits(by, self.directory):
            raise PolicyError(
                f"auto_approve approves as {by!r}, who is not an approver (approvers: {r.describe()}); "
                "register as PendingManualApproval and let an approver decide",
                rule="approvers",
            )

    def _check_decision(self, change: Change, view: GovernanceView) -> None:
        r = self.rules.approvers
        if r is not None and not r.admits(change.by, self.directory):
            roles = self.directory.roles_of(identity(change.by)) if self.directory else None
            held = f" (roles: {', '.join(sorted(roles)) or 'none'})" if roles is not None else ""
            raise PolicyError(
                f"{identity(change.by)!r}{held} may not {change.action}; approvers are {r.describe()}",
                rule="approvers",
            )
        if self.rules.four_eyes and change.action == APPROVE and change.version is not None:
            trainer = (view.version(change.version).tags or {}).get(TRIGGERED_BY_TAG)
            if trainer and identity(trainer) == identity(change.by):
                raise PolicyError(
                    f"{identity(change.by)!r} triggered the training run of this version and may not "
                    "approve it (four-eyes); another approver must",
                    rule="four-eyes",
                )

    def _check_alias(self, change: Change, view: GovernanceView, rule: AliasRule) -> None:
        taking = change.action == PROMOTE or (change.action == ROLLBACK and rule.on_rollback)
        moves = change.action in (PROMOTE, ROLLBACK, DEMOTE)
        if rule.promoters is not None and moves and not rule.promoters.admits(change.by, self.directory):
            raise PolicyError(
                f"{identity(change.by)!r} may not move @{change.alias}; it is protected and only "
                f"{rule.promoters.describe()} may move it",
                rule="protected-alias:promoters",
            )
        if not taking or change.version is None:
            return
        tags = view.version(change.version).tags or {}
        if rule.shadow_passed:
            passed = tags.get(T.SHADOW_PASSED)
            ok = passed == "true" if passed is not None else tags.get(T.SHADOW_DECISION) == "promote"
            if not ok:
                decision = tags.get(T.SHADOW_DECISION)
                seen = (
                    f"a failed one (shadow decision {decision or '?'})"
                    if passed == "false"
                    else f"shadow decision {decision}"
                    if decision
                    else "no shadow comparison"
                )
                raise PolicyError(
                    f"@{change.alias} needs a passed shadow comparison; version {change.version} has {seen}",
                    rule="protected-alias:shadow-passed",
                )
        if rule.min_challenger_hours:
            held = _challenger_hours(view, str(change.version))
            if held is None or held < rule.min_challenger_hours:
                so_far = "never held @challenger" if held is None else f"held @challenger {held:.2f} h"
                raise PolicyError(
                    f"@{change.alias} needs at least {rule.min_challenger_hours:g} h as challenger; version "
                    f"{change.version} {so_far}",
                    rule="protected-alias:min-challenger-time",
                )


def _challenger_hours(view: GovernanceView, version: str) -> float | None:
    """How long ``version`` held @challenger in its latest stint (until now if it still holds it)."""
    import time

    from airflow_saga.core.alias_history import parse_time_ms

    end_ms: int | None = None
    for entry in view.history(alias="challenger", limit=1000):  # newest first
        if str(entry.get("to")) == version and entry.get("action") != "demote":
            start = parse_time_ms(entry.get("at"))
            if start is None:
                return None
            end = end_ms if end_ms is not None else round(time.time() * 1000)
            return max(0.0, (end - start) / 3_600_000)
        if str(entry.get("from")) == version:
            end_ms = parse_time_ms(entry.get("at"))
    return None


class ConfigResolver:
    """``{"default": RULES, "models": {name: RULES}}`` -> a policy per model (a ``set_policy_resolver`` arg).

    Validated once, when built: a bad key, an unknown user or role raises ``PolicyError`` here, naming
    the field and the value, before any change is attempted.
    """

    def __init__(self, config: Any, *, source: str = "policy", directory: Directory | None = None) -> None:
        if isinstance(config, str):
            try:
                config = json.loads(config)
            except ValueError as exc:
                raise _config_error(source, f"is not valid JSON: {exc}") from None
        if not isinstance(config, dict):
            raise _config_error(source, f'must be an object like {{"default": {{...}}}}, got {config!r}')
        _known(source, config, frozenset({"default", "models"}))
        self.source = source
        self.directory = directory
        self.config = config
        default = config.get("default")
        models = config.get("models") or {}
        if not isinstance(models, dict):
            raise _config_error(f"{source}.models", f"must be an object {{model: rules}}, got {models!r}")
        self._default = (
            None if default is None else parse_rules(default, where=f"{source}.default", directory=directory)
        )
        self._models: dict[str, Rules] = {}
        for model, rules in models.items():
            if not isinstance(rules, dict):
                raise _config_error(f"{source}.models.{model}", f"must be an object, got {rules!r}")
            merged = {**(default or {}), **rules}
            self._models[model] = parse_rules(merged, where=f"{source}.models.{model}", directory=directory)

    def rules_for(self, model_name: str) -> Rules | None:
        return self._models.get(model_name, self._default)

    def __call__(self, model_name: str) -> Policy:
        rules = self.rules_for(model_name)
        if rules is None:
            return DEFAULT_POLICY
        where = "models" if model_name in self._models else "default"
        return RulesPolicy(rules, name=f"{self.source}:{where}", directory=self.directory)


def approvers_of(policy: Any) -> list[str] | None:
    """User names ``policy`` lets approve (role members expanded), or None when it lets anyone."""
    get = getattr(policy, "approvers", None)
    return get() if callable(get) else None


def load_config(config: Any, *, source: str = "policy", directory: Directory | None = None) -> ConfigResolver:
    """Validate a declarative policy (dict, JSON text) now; see ``ConfigResolver``."""
    return ConfigResolver(config, source=source, directory=directory)
