"""Champion/challenger promotion, rollback and the promotion history of a registered model.

Why: MLflow aliases move silently and keep no history, so "what served production last Tuesday, and who
changed it" has no answer, and rollback depends on someone's memory. Here every alias change is appended
to a history kept on the registered model itself, one tag per entry::

    saga.history.000001 = {"seq": 1, "at": "...Z", "by": "alice", "action": "promote",
                           "alias": "champion", "from": null, "to": "1", "reason": "first model"}

``action`` is ``promote`` | ``rollback`` | ``demote`` (alias removed; ``to`` is null). Sequence numbers are
zero-padded so MLflow's tag list sorts in order, and strictly increase by one.

Rules:
- champion: only Approved versions (anything else is refused with the version and its status).
- challenger: any version that is not Rejected (a Pending version may be shadow-tested before approval, as
  SageMaker allows shadow variants of unapproved packages), and not the current champion.
- Promoting a version to the alias it already holds is a no-op (retried tasks), with no history entry.
- Promoting the challenger to champion also clears the challenger alias (recorded as ``demote``).
- rollback: champion goes back to the previous champion (the most recent earlier holder that is still
  Approved and was not itself rolled back) or to a given Approved version; the version rolled back from is
  tagged ``saga.rollback.reason|at|by``.

Concurrency: every change runs under ``ModelLock`` (see ``core.locking``): status is re-read inside the
lock, the alias is set, the status is re-verified (a hand edit in the MLflow UI does not take the lock; if
it rejected the version meanwhile we put the alias back and refuse), then history is appended at the next
sequence number. Approval changes take the same lock, so a saga rejection and a promotion serialise.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow_saga.core import approval
from airflow_saga.core import tags as T
from airflow_saga.core.errors import PromotionError, RegistryError
from airflow_saga.core.locking import ModelLock
from airflow_saga.core.registry import get_registered_model, get_version

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

ALIASES = (T.CHAMPION, T.CHALLENGER)
AUTO = "auto"
SEQ_WIDTH = 6
MAX_REASON = 1000


@dataclasses.dataclass
class PromotionResult:
    """What a promotion/rollback/demotion did; ``entries`` are the history entries it appended."""

    model: str
    alias: str
    version: str | None
    previous: str | None
    changed: bool
    entries: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def history_key(seq: int) -> str:
    return f"{T.HISTORY_PREFIX}{seq:0{SEQ_WIDTH}d}"


def _history_from_tags(tags: dict[str, str]) -> list[dict[str, Any]]:
    out = []
    for key, raw in tags.items():
        if not key.startswith(T.HISTORY_PREFIX):
            continue
        try:
            entry = json.loads(raw)
            entry["seq"] = int(key[len(T.HISTORY_PREFIX) :])
        except (ValueError, TypeError):
            log.warning("Ignoring unreadable history tag %s=%r", key, raw)
            continue
        out.append(entry)
    return sorted(out, key=lambda e: e["seq"])


def history(client: MlflowClient, name: str) -> list[dict[str, Any]]:
    """The complete promotion history of ``name``, oldest first (RegistryError for an unknown model)."""
    return _history_from_tags(dict(get_registered_model(client, name).tags or {}))


def aliases(client: MlflowClient, name: str) -> dict[str, str]:
    return {k: str(v) for k, v in (get_registered_model(client, name).aliases or {}).items()}


def aliases_of(client: MlflowClient, name: str, version: str) -> set[str]:
    return {alias for alias, v in aliases(client, name).items() if v == str(version)}


def _append(
    client: MlflowClient, name: str, lock: ModelLock, entries: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Append entries at the next sequence numbers; caller holds ``lock``, so no other writer races us."""
    current = history(client, name)
    seq = current[-1]["seq"] if current else 0
    written = []
    for entry in entries:
        seq += 1
        full = {"seq": seq, "at": _now(), **entry}
        full["reason"] = (full.get("reason") or "")[:MAX_REASON]
        lock.check()
        client.set_registered_model_tag(name, history_key(seq), json.dumps(full, sort_keys=False))
        written.append(full)
    return written


def _set_alias(client: MlflowClient, name: str, alias: str, version: str | None) -> None:
    if version is None:
        client.delete_registered_model_alias(name, alias)
    else:
        client.set_registered_model_alias(name, alias, str(version))


def _check_eligible(client: MlflowClient, name: str, version: str, alias: str, lock: ModelLock) -> str:
    """Re-read (recording any hand-made decision) and refuse versions the alias may not point to."""
    mv = approval.observe(client, name, version, lock=lock)
    status = approval.get_status(mv)
    if alias == T.CHAMPION and status != T.APPROVED:
        raise PromotionError(
            f"Refusing to make model {name!r} version {version} champion: its approval status is {status}; "
            f"only {T.APPROVED} versions can become champion"
        )
    if alias == T.CHALLENGER and status == T.REJECTED:
        raise PromotionError(
            f"Refusing to make model {name!r} version {version} challenger: its approval status is {status}"
        )
    return status


def _move_verified(
    client: MlflowClient, name: str, alias: str, version: str, previous: str | None, lock: ModelLock
) -> None:
    """Set the alias, then re-verify status; a concurrent hand-made rejection makes us put it back."""
    lock.check()
    _set_alias(client, name, alias, version)
    try:
        _check_eligible(client, name, version, alias, lock)
    except RegistryError:
        log.warning("Status of %s v%s changed while moving %s; restoring %s", name, version, alias, previous)
        _set_alias(client, name, alias, previous)
        raise


def _clear_rollback_tags(client: MlflowClient, name: str, version: str) -> None:
    mv = client.get_model_version(name, version)
    for key in (T.ROLLED_BACK_REASON, T.ROLLED_BACK_AT, T.ROLLED_BACK_BY):
        if key in (mv.tags or {}):
            client.delete_model_version_tag(name, version, key)


def promote(
    client: MlflowClient,
    name: str,
    version: str | int,
    alias: str = T.CHAMPION,
    *,
    by: str,
    reason: str,
    lock_timeout: float = 120.0,
) -> PromotionResult:
    """Point ``alias`` (champion | challenger | auto) at ``version`` and record it in the history.

    ``auto`` means challenger, or champion when the model has no champion yet; it is resolved inside the
    lock so two pipelines finishing together cannot both become the first champion.
    """
    version = str(version)
    if alias not in (*ALIASES, AUTO):
        raise PromotionError(f"Unknown alias {alias!r} for model {name!r}; use champion, challenger or auto")
    get_version(client, name, version)  # unknown model or version: RegistryError before locking
    with ModelLock(client, name, purpose=f"promote v{version} to {alias}", timeout=lock_timeout) as lock:
        current = aliases(client, name)
        if alias == AUTO:
            alias = T.CHALLENGER if current.get(T.CHAMPION) else T.CHAMPION
        previous = current.get(alias)
        _check_eligible(client, name, version, alias, lock)
        if previous == version:
            log.info("Model %r version %s already holds %s; nothing to do", name, version, alias)
            return PromotionResult(name, alias, version, previous, changed=False)
        if alias == T.CHALLENGER and current.get(T.CHAMPION) == version:
            raise PromotionError(
                f"Refusing to make model {name!r} version {version} challenger: it is the current champion"
            )
        _move_verified(client, name, alias, version, previous, lock)
        entries = [
            {"by": by, "action": "promote", "alias": alias, "from": previous, "to": version, "reason": reason}
        ]
        if alias == T.CHAMPION:
            _clear_rollback_tags(client, name, version)
            if current.get(T.CHALLENGER) == version:
                _set_alias(client, name, T.CHALLENGER, None)
                entries.append(
                    {
                        "by": by,
                        "action": "demote",
                        "alias": T.CHALLENGER,
                        "from": version,
                        "to": None,
                        "reason": f"promoted to champion: {reason}",
                    }
                )
        written = _append(client, name, lock, entries)
    log.info("Model %r: %s %s -> %s by %s (%s)", name, alias, previous, version, by, reason)
    return PromotionResult(name, alias, version, previous, changed=True, entries=written)


def _previous_champion(client: MlflowClient, name: str, current: str | None) -> str | None:
    """Most recent earlier champion that still exists, is Approved and was not itself rolled back."""
    timeline: list[str] = []
    for entry in history(client, name):
        if entry.get("alias") != T.CHAMPION:
            continue
        for v in (entry.get("from"), entry.get("to")):
            if v is not None and (not timeline or timeline[-1] != str(v)):
                timeline.append(str(v))
    seen: set[str] = set()
    for v in reversed(timeline):
        if v == current or v in seen:
            continue
        seen.add(v)
        try:
            mv = get_version(client, name, v)
            status = approval.get_status(mv)
        except RegistryError as exc:
            log.info("Skipping earlier champion %s of %r: %s", v, name, exc)
            continue
        if T.ROLLED_BACK_REASON in (mv.tags or {}):
            log.info("Skipping earlier champion %s of %r: it was rolled back", v, name)
            continue
        if status != T.APPROVED:
            log.info("Skipping earlier champion %s of %r: status is %s", v, name, status)
            continue
        return v
    return None


def rollback(
    client: MlflowClient,
    name: str,
    target_version: str | int | None = None,
    *,
    by: str,
    reason: str,
    lock_timeout: float = 120.0,
) -> PromotionResult:
    """Put champion back on the previous champion, or on ``target_version`` (which must be Approved).

    With no previous champion (or an ineligible target) raises ``PromotionError`` and changes nothing.
    """
    if not reason:
        raise PromotionError(f"Rollback of {name!r} needs a reason")
    get_registered_model(client, name)
    if target_version is not None:
        get_version(client, name, target_version)
    with ModelLock(client, name, purpose="rollback", timeout=lock_timeout) as lock:
        current = aliases(client, name)
        champion = current.get(T.CHAMPION)
        if target_version is None:
            target = _previous_champion(client, name, champion)
            if target is None:
                raise PromotionError(
                    f"Cannot roll back model {name!r}: no previous Approved champion in its promotion "
                    f"history "
                    f"(current champion: {champion or 'none'}); nothing was changed"
                )
        else:
            target = str(target_version)
            if target == champion:
                raise PromotionError(
                    f"Cannot roll back model {name!r} to version {target}: it is already champion"
                )
            status = approval.get_status(approval.observe(client, name, target, lock=lock))
            if status != T.APPROVED:
                raise PromotionError(
                    f"Cannot roll back model {name!r} to version {target}: its approval status is {status}; "
                    f"only {T.APPROVED} versions can become champion"
                )
        _move_verified(client, name, T.CHAMPION, target, champion, lock)
        _clear_rollback_tags(client, name, target)
        if champion is not None:
            for key, value in (
                (T.ROLLED_BACK_REASON, reason),
                (T.ROLLED_BACK_AT, _now()),
                (T.ROLLED_BACK_BY, by),
            ):
                client.set_model_version_tag(name, champion, key, value[:MAX_REASON])
        entries = [
            {
                "by": by,
                "action": "rollback",
                "alias": T.CHAMPION,
                "from": champion,
                "to": target,
                "reason": reason,
            }
        ]
        if current.get(T.CHALLENGER) == target:
            _set_alias(client, name, T.CHALLENGER, None)
            entries.append(
                {
                    "by": by,
                    "action": "demote",
                    "alias": T.CHALLENGER,
                    "from": target,
                    "to": None,
                    "reason": f"rolled back to champion: {reason}",
                }
            )
        written = _append(client, name, lock, entries)
    log.info("Model %r: rolled champion back %s -> %s by %s (%s)", name, champion, target, by, reason)
    return PromotionResult(name, T.CHAMPION, target, champion, changed=True, entries=written)


def remove_alias(
    client: MlflowClient, name: str, alias: str, *, by: str, reason: str, lock_timeout: float = 120.0
) -> PromotionResult:
    """Drop ``alias`` (e.g. the challenger after a failed shadow test) and record a ``demote`` entry."""
    if alias not in ALIASES:
        raise PromotionError(f"Unknown alias {alias!r} for model {name!r}; use champion or challenger")
    get_registered_model(client, name)
    with ModelLock(client, name, purpose=f"remove {alias}", timeout=lock_timeout) as lock:
        return remove_alias_locked(client, name, alias, by=by, reason=reason, lock=lock)


def remove_alias_locked(
    client: MlflowClient, name: str, alias: str, *, by: str, reason: str, lock: ModelLock
) -> PromotionResult:
    holder = aliases(client, name).get(alias)
    if holder is None:
        return PromotionResult(name, alias, None, None, changed=False)
    lock.check()
    _set_alias(client, name, alias, None)
    written = _append(
        client,
        name,
        lock,
        [{"by": by, "action": "demote", "alias": alias, "from": holder, "to": None, "reason": reason}],
    )
    return PromotionResult(name, alias, None, holder, changed=True, entries=written)
