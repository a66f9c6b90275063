"""The governance unit of work: every approval, promotion, rollback and alias removal goes through here.

Why one unit: each of these is a check-then-act on registry state that MLflow cannot update atomically
("is version 3 Approved? then point champion at it"; "is the challenger still version 5? then drop it"),
and the rules that tie approval to aliases only hold if one piece of code applies all of them in one
place, under one lock:

- only Approved versions become champion;
- the challenger is never Rejected and never the champion;
- the champion cannot be rejected (roll back or promote another version first);
- rejecting the challenger demotes it;
- an optional ``expect_holder`` makes any alias change conditional on who holds the alias now;
- then the policy (``core.policy``) is asked about every change, before the first write.

``Transaction`` holds the model's lease lock (``core.locking``) for its whole life, re-reads what it
decides on inside the lock, fences every write with ``lock.check()``, and records alias changes through
the history writer (``core.alias_history``) so the aliases and their history never disagree, even across
crashes. The module-level functions are the entry points the rest of the package and users call (the
public ``approval.set_status`` and ``promotion.promote`` delegate here); they validate input and refuse
what is already refusable from a plain read before queueing for the lock, so a storm of doomed
requests does not hold up the valid ones.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import TYPE_CHECKING, Any

from airflow_saga.core import alias_history as H
from airflow_saga.core import approval_state as S
from airflow_saga.core import compat
from airflow_saga.core import descriptions as D
from airflow_saga.core import policy as P
from airflow_saga.core import tags as T
from airflow_saga.core.errors import (
    AliasMovedError,
    ApprovalError,
    GovernanceBusyError,
    MlflowUnreachableError,
    PolicyError,
    PromotionError,
    RegistryError,
)
from airflow_saga.core.locking import DEFAULT_TIMEOUT, DEFAULT_TTL, ModelLock
from airflow_saga.core.registry import get_version, utcnow_iso

if TYPE_CHECKING:
    from types import TracebackType

    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

ALIASES = H.ALIASES
AUTO = "auto"
MAX_REASON = H.MAX_REASON
ROLLBACK_TAGS = (T.ROLLED_BACK_REASON, T.ROLLED_BACK_AT, T.ROLLED_BACK_BY)


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


#: ``expect_holder`` default: change the alias whoever holds it.
UNSET: Any = _Unset()


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


def _champion_refusal(name: str, version: str, status: str, verb: str = "make") -> str:
    return (
        f"Refusing to {verb} model {name!r} version {version} champion: its approval status is {status}; "
        f"only {T.APPROVED} versions can become champion (nothing was changed)"
    )


class Transaction:
    """Hold the lock of one registered model and change it by the rules (see the module docstring).

    Use as a context manager; any number of changes may be made inside one transaction::

        with Transaction(client, "churn", purpose="approve and promote v7") as tx:
            tx.set_status("7", "Approved", by="alice", comment="ok", via="api")
            tx.promote("7", "champion", by="alice", reason="reviewed")

    On entry it settles what an interrupted writer left (``alias_history.HistoryWriter.recover``) and
    migrates a pre-0.2 history. It implements ``policy.GovernanceView`` for the policy it consults.
    """

    def __init__(
        self,
        client: MlflowClient,
        model: str,
        *,
        purpose: str = "",
        policy: P.Policy | None = None,
        lock_timeout: float = DEFAULT_TIMEOUT,
        lock_ttl: float = DEFAULT_TTL,
    ) -> None:
        self.client = client
        self.model = model
        self.policy = policy if policy is not None else P.policy_for(model)
        self.lock = ModelLock(client, model, purpose=purpose, timeout=lock_timeout, ttl=lock_ttl)
        self.state: H.ModelState | None = None
        self.writer: H.HistoryWriter | None = None
        self._versions: dict[str, ModelVersion] = {}
        self.touched: list[str] = []  # versions whose story changed: descriptions rewritten on exit

    # -- lifecycle ------------------------------------------------------------------------------------
    def __enter__(self) -> Transaction:
        self.lock.acquire()
        try:
            self.state = H.read_state(self.client, self.model)
            self.writer = H.HistoryWriter(self.client, self.state, self.lock.check)
            self.writer.migrate_legacy()
            for entry in self.writer.recover(self._raw_alias, force=self.lock.broke_stale):
                self._side_effects(entry)
                self.touched += [str(v) for v in (entry.get("from"), entry.get("to")) if v is not None]
        except BaseException:
            self.lock.release()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.lock.release()
        if self.writer is not None:
            self.writer.finish()
        if self.touched and not isinstance(exc, GovernanceBusyError | MlflowUnreachableError):
            # After the lock: derived text, never holds up the next writer; failures are only logged.
            D.refresh_all(self.client, self.model, self.touched, state=self.state)

    @property
    def _state(self) -> H.ModelState:
        if self.state is None or self.writer is None:
            raise RuntimeError("use Transaction as a context manager (with Transaction(...) as tx:)")
        return self.state

    # -- the view policies read -----------------------------------------------------------------------
    def aliases(self) -> dict[str, str]:
        return dict(self._state.aliases)

    def version(self, version: str) -> ModelVersion:
        """The version as read inside the lock (cached until this transaction writes to it)."""
        version = str(version)
        if version not in self._versions:
            self._versions[version] = self._read_version(version)
        return self._versions[version]

    def status(self, version: str) -> str:
        return S.get_status(self.version(version))

    def history(self, *, alias: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        out = []
        for entry in H.iter_newest(self.client, self._state, alias=alias, page=min(limit, 1000)):
            out.append(entry)
            if len(out) >= limit:
                break
        return out

    def _read_version(self, version: str) -> ModelVersion:
        return _read_version(self.client, self.model, version)

    # -- writes (each fenced) ---------------------------------------------------------------------------
    def _fence(self) -> None:
        self.lock.check()

    def _raw_alias(self, alias: str, version: str | None) -> None:
        self._fence()
        H.set_alias(self.client, self.model, alias, version)

    def _set_version_tags(self, version: str, tags: dict[str, str | None]) -> None:
        """Set (or delete, value None) version tags, skipping those already as wanted; fenced."""
        current = dict(self.version(version).tags or {})
        for key, value in tags.items():
            if value is None:
                if key in current:
                    self._fence()
                    compat.registry_writer(self.client).delete_model_version_tag(self.model, version, key)
            elif current.get(key) != value:
                self._fence()
                compat.registry_writer(self.client).set_model_version_tag(self.model, version, key, value)
        self._versions.pop(version, None)

    def _check_policy(self, changes: list[P.Change], status: str | None = None) -> None:
        for change in changes:
            try:
                self.policy.check(change, self)
            except PolicyError as exc:
                if status is None:
                    subject = change.version or change.previous
                    status = self.status(subject) if subject else None
                raise PolicyError(
                    f"Refused by policy {getattr(self.policy, 'name', type(self.policy).__name__)!r}, rule "
                    f"{exc.rule!r}: {change.action} of model {self.model!r} version "
                    f"{change.version or change.previous} (status {status or '?'}): {exc}; "
                    "nothing was changed",
                    rule=exc.rule,
                ) from exc

    def _change_aliases(
        self,
        entries: list[dict[str, Any]],
        *,
        verify: tuple[str, str] | None = None,
        request_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Record ``entries`` and move their aliases as one unit: intent, move, verify, commit.

        ``verify=(version, alias)`` re-reads that version's status after the move: a rejection made by
        hand in the MLflow UI meanwhile (which takes no lock) puts the aliases back and refuses.
        """
        state, writer = self._state, self.writer
        assert writer is not None
        before = dict(state.aliases)
        intents = writer.intend(entries, request_id)
        moved: list[dict[str, Any]] = []
        try:
            for e in entries:
                self._raw_alias(e["alias"], e.get("to"))
                state.aliases = H.applied(state.aliases, e)
                moved.append(e)
            if verify is not None:
                self._versions.pop(verify[0], None)
                self._eligible(verify[0], verify[1], self.version(verify[0]))
        except Exception as exc:
            if not isinstance(exc, RegistryError) or isinstance(exc, GovernanceBusyError):
                raise  # lock lost / server trouble: the next writer's recovery settles it
            log.warning(
                "Status of %r v%s changed while moving aliases; restoring %s", self.model, verify, before
            )
            for e in reversed(moved):
                self._raw_alias(e["alias"], before.get(e["alias"]))
            state.aliases = before
            writer.abandon(intents, f"refused after the alias moved: {exc}")
            raise
        written = writer.commit(intents)
        self.touched += [str(v) for e in written for v in (e.get("from"), e.get("to")) if v is not None]
        return written

    def _side_effects(self, entry: dict[str, Any]) -> None:
        """Version tags that follow an entry: no rollback mark on the champion, one on the rolled-back."""
        if entry["alias"] != T.CHAMPION:
            return
        if entry["action"] in ("promote", "rollback") and entry.get("to"):
            self._set_version_tags(str(entry["to"]), dict.fromkeys(ROLLBACK_TAGS))
        if entry["action"] == "rollback" and entry.get("from"):
            self._set_version_tags(
                str(entry["from"]),
                {
                    T.ROLLED_BACK_REASON: str(entry.get("reason") or "")[:MAX_REASON],
                    T.ROLLED_BACK_AT: str(entry["at"]),
                    T.ROLLED_BACK_BY: str(entry.get("by") or ""),
                },
            )

    # -- rules ------------------------------------------------------------------------------------------
    def _eligible(self, version: str, alias: str, mv: ModelVersion) -> str:
        status = S.get_status(mv)
        if alias == T.CHAMPION and status != T.APPROVED:
            raise PromotionError(_champion_refusal(self.model, version, status))
        if alias == T.CHALLENGER and status == T.REJECTED:
            raise PromotionError(
                f"Refusing to make model {self.model!r} version {version} challenger: its approval status "
                f"is {status}; a Rejected version cannot be shadow-tested (nothing was changed)"
            )
        return status

    def _expect(self, alias: str, expect_holder: Any) -> str | None:
        holder = self._state.aliases.get(alias)
        if expect_holder is not UNSET and (None if expect_holder is None else str(expect_holder)) != holder:
            raise AliasMovedError(
                f"Model {self.model!r}: @{alias} is held by version {holder or '(none)'}, not "
                f"{expect_holder or '(none)'} as expected; nothing was changed"
            )
        return holder

    # -- approval ---------------------------------------------------------------------------------------
    def observe(self, version: str) -> ModelVersion:
        """Record a decision made by hand in MLflow (status tag edited), once; return the fresh version.

        A hand-made decision that breaks a rule (rejecting the champion) or the policy does not count:
        it is logged as a violation and the status is put back.
        """
        version = str(version)
        mv = self.version(version)
        entry = S.unrecorded_decision(mv)
        if entry is None:
            return mv
        previous = entry.pop("from")
        violation = None
        if entry["status"] == T.REJECTED and self._state.aliases.get(T.CHAMPION) == version:
            violation = ("champion-not-rejected", "the current champion cannot be rejected; roll back first")
        else:
            try:
                self._check_policy(
                    [self._approval_change(version, entry, previous or T.PENDING, observed=True)], previous
                )
            except PolicyError as exc:
                violation = (exc.rule, str(exc))
        if violation is not None:
            restored = previous or T.PENDING
            log.error(
                "%s: status %s set by hand in MLflow by %s breaks rule %r; recorded as a violation, status "
                "put back to %s",
                S.version_label(mv),
                entry["status"],
                entry["by"],
                violation[0],
                restored,
            )
            entry = {
                **entry,
                "status": restored,
                "violation": {"rule": violation[0], "attempted": entry["status"], "message": violation[1]},
                "comment": f"VIOLATION ({violation[0]}): {entry['status']} set by hand does not count; "
                f"{entry['comment']}"[: S.MAX_COMMENT],
            }
        else:
            log.info(
                "Recording decision made in MLflow for %s: %s by %s",
                S.version_label(mv),
                entry["status"],
                entry["by"],
            )
        self._write_approval(mv, entry)
        if entry["status"] == T.REJECTED and self._state.aliases.get(T.CHALLENGER) == version:
            self._demote_rejected(version, entry)
        return self.version(version)

    def _approval_change(
        self, version: str, entry: dict[str, Any], previous: str, observed: bool
    ) -> P.Change:
        return P.Change(
            action=P.APPROVE if entry["status"] == T.APPROVED else P.REJECT,
            model=self.model,
            version=version,
            alias=None,
            previous=previous,
            by=str(entry["by"]),
            via=str(entry["via"]),
            reason=str(entry.get("comment") or ""),
            observed=observed,
        )

    def _write_approval(self, mv: ModelVersion, entry: dict[str, Any]) -> None:
        version = str(mv.version)
        entries = [*S.approval_log(mv), entry]
        # The log goes first: if we crash half-way, the status tag is still the old one and a retry redoes it.
        tags: dict[str, str | None] = {T.APPROVAL_LOG: json.dumps(entries)}
        for key, field in (
            (T.APPROVAL_BY, "by"),
            (T.APPROVAL_AT, "at"),
            (T.APPROVAL_COMMENT, "comment"),
            (T.APPROVAL_VIA, "via"),
            (T.APPROVAL_STATUS, "status"),
        ):
            tags[key] = str(entry[field])
        self._set_version_tags(version, tags)
        self.touched.append(version)

    def _demote_rejected(self, version: str, entry: dict[str, Any]) -> None:
        self._change_aliases(
            [
                {
                    "by": entry["by"],
                    "action": "demote",
                    "alias": T.CHALLENGER,
                    "from": version,
                    "to": None,
                    "reason": f"version {version} rejected: {entry.get('comment') or ''}",
                }
            ]
        )

    def set_status(
        self, version: str, status: str, *, by: str, comment: str = "", via: str = "api"
    ) -> ModelVersion:
        """Move ``version`` to approval ``status``, by the state machine and the cross rules."""
        version = str(version)
        mv = self.observe(version)
        current = S.get_status(mv)
        if current == status:
            log.info("%s is already %s; nothing to do", S.version_label(mv), status)
            return mv
        _check_transition(self.model, version, current, status)
        aliases = self._state.aliases
        if status == T.REJECTED and aliases.get(T.CHAMPION) == version:
            raise ApprovalError(_champion_reject_refusal(self.model, version, current))
        entry = {
            "status": status,
            "by": by,
            "at": utcnow_iso(),
            "via": via,
            "comment": (comment or "")[: S.MAX_COMMENT],
        }
        changes = [self._approval_change(version, entry, current, observed=False)]
        demote = status == T.REJECTED and aliases.get(T.CHALLENGER) == version
        if demote:
            changes.append(
                P.Change(
                    P.DEMOTE,
                    self.model,
                    None,
                    T.CHALLENGER,
                    version,
                    by,
                    via,
                    comment,
                    cause=changes[0].action,
                )
            )
        self._check_policy(changes, current)
        self._write_approval(mv, entry)
        if demote:
            self._demote_rejected(version, entry)
        return self.version(version)

    # -- aliases ----------------------------------------------------------------------------------------
    def promote(
        self,
        version: str,
        alias: str = T.CHAMPION,
        *,
        by: str,
        reason: str,
        via: str = "api",
        expect_holder: Any = UNSET,
    ) -> PromotionResult:
        """Point ``alias`` (champion | challenger | auto) at ``version``; a no-op if it already does."""
        version = str(version)
        aliases = self._state.aliases
        if alias == AUTO:
            alias = T.CHALLENGER if aliases.get(T.CHAMPION) else T.CHAMPION
        previous = self._expect(alias, expect_holder)
        mv = self.observe(version)
        status = self._eligible(version, alias, mv)
        if previous == version:
            # Put there by hand (outside saga)? Then this promotion is what records it, by the rules and
            # the policy, with the history's holder as "from"; otherwise a retry, nothing to do.
            moved = [u for u in H.unrecorded_in(self.client, self._state) if u.alias == alias]
            if not moved:
                log.info("Model %r version %s already holds %s; nothing to do", self.model, version, alias)
                return PromotionResult(self.model, alias, version, previous, changed=False)
            previous = moved[0].recorded
            log.warning(
                "Model %r: @%s was moved to version %s outside saga; recording it now",
                self.model,
                alias,
                version,
            )
        if alias == T.CHALLENGER and aliases.get(T.CHAMPION) == version:
            raise PromotionError(
                f"Refusing to make model {self.model!r} version {version} challenger: it is the current "
                f"champion (status {status}); nothing was changed"
            )
        entries = [
            {"by": by, "action": "promote", "alias": alias, "from": previous, "to": version, "reason": reason}
        ]
        if alias == T.CHAMPION and aliases.get(T.CHALLENGER) == version:
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
        self._check_policy(self._alias_changes(entries, via), status)
        written = self._change_aliases(entries, verify=(version, alias))
        self._side_effects(written[0])
        log.info("Model %r: %s %s -> %s by %s (%s)", self.model, alias, previous, version, by, reason)
        return PromotionResult(self.model, alias, version, previous, changed=True, entries=written)

    def _alias_changes(self, entries: list[dict[str, Any]], via: str) -> list[P.Change]:
        first = entries[0]["action"]
        return [
            P.Change(
                action=e["action"],
                model=self.model,
                version=e.get("to"),
                alias=e["alias"],
                previous=e.get("from"),
                by=str(e["by"]),
                via=via,
                reason=str(e.get("reason") or ""),
                cause=None if i == 0 else first,
            )
            for i, e in enumerate(entries)
        ]

    def previous_champion(self) -> str | None:
        """Most recent earlier champion that still exists, is Approved and was not itself rolled back.

        Walks the history newest first, a page at a time, and usually stops within the first page.
        """
        current = self._state.aliases.get(T.CHAMPION)
        seen: set[str] = set()
        for entry in H.iter_newest(self.client, self._state, alias=T.CHAMPION, page=50):
            for v in (entry.get("to"), entry.get("from")):
                if v is None or str(v) == current or str(v) in seen:
                    continue
                v = str(v)
                seen.add(v)
                try:
                    mv = self.version(v)
                    status = S.get_status(mv)
                except RegistryError as exc:
                    log.info("Skipping earlier champion %s of %r: %s", v, self.model, exc)
                    continue
                if T.ROLLED_BACK_REASON in (mv.tags or {}):
                    log.info("Skipping earlier champion %s of %r: it was rolled back", v, self.model)
                    continue
                if status != T.APPROVED:
                    log.info("Skipping earlier champion %s of %r: status is %s", v, self.model, status)
                    continue
                return v
        return None

    def rollback(
        self,
        target: str | None = None,
        *,
        by: str,
        reason: str,
        via: str = "api",
        expect_holder: Any = UNSET,
        request_id: str | None = None,
    ) -> PromotionResult:
        """Put champion back on the previous Approved champion, or on ``target`` (which must be Approved).

        A rollback is not idempotent by nature (a second one goes further back), so a caller that may retry
        (an Airflow task) passes ``request_id``: a retry of a request that was already committed returns
        what it did, unchanged, instead of rolling back again.
        """
        if request_id:
            done = H.find_request(self.client, self._state, request_id)
            if done:
                log.info(
                    "Rollback request %r of %r was already done (#%s)", request_id, self.model, done[0]["seq"]
                )
                first = done[0]
                return PromotionResult(
                    self.model, T.CHAMPION, first["to"], first["from"], changed=False, entries=done
                )
        champion = self._expect(T.CHAMPION, expect_holder)
        if target is None:
            found = self.previous_champion()
            if found is None:
                raise PromotionError(
                    f"Cannot roll back model {self.model!r}: no previous Approved champion in its promotion "
                    f"history (current champion: {champion or 'none'}); nothing was changed"
                )
            target = found
        target = str(target)
        if target == champion:
            raise PromotionError(
                f"Cannot roll back model {self.model!r} to version {target}: it is already champion"
            )
        status = S.get_status(self.observe(target))
        if status != T.APPROVED:
            raise PromotionError(
                f"Cannot roll back model {self.model!r} to version {target}: its approval status is "
                f"{status}; only {T.APPROVED} versions can become champion (nothing was changed)"
            )
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
        if self._state.aliases.get(T.CHALLENGER) == target:
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
        self._check_policy(self._alias_changes(entries, via), status)
        written = self._change_aliases(entries, verify=(target, T.CHAMPION), request_id=request_id)
        self._side_effects(written[0])
        log.info(
            "Model %r: rolled champion back %s -> %s by %s (%s)", self.model, champion, target, by, reason
        )
        return PromotionResult(self.model, T.CHAMPION, target, champion, changed=True, entries=written)

    def remove_alias(
        self, alias: str, *, by: str, reason: str, via: str = "api", expect_holder: Any = UNSET
    ) -> PromotionResult:
        """Drop ``alias`` (only if ``expect_holder`` still holds it, when given); no-op if nobody holds it."""
        holder = self._expect(alias, expect_holder)
        if holder is None:
            return PromotionResult(self.model, alias, None, None, changed=False)
        entries = [
            {"by": by, "action": "demote", "alias": alias, "from": holder, "to": None, "reason": reason}
        ]
        self._check_policy(self._alias_changes(entries, via))
        written = self._change_aliases(entries)
        log.info("Model %r: removed @%s from version %s by %s (%s)", self.model, alias, holder, by, reason)
        return PromotionResult(self.model, alias, None, holder, changed=True, entries=written)


# ---------------------------------------------------------------------------------------------- rules
def _read_version(client: MlflowClient, name: str, version: str) -> ModelVersion:
    """One request; RegistryError naming model and version when the version does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        if getattr(exc, "error_code", None) in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise RegistryError(f"Model {name!r} has no version {str(version)!r}") from exc
        raise


def _check_transition(name: str, version: str, current: str, status: str) -> None:
    if status not in S.TRANSITIONS[current]:
        hint = (
            " (Rejected is final: re-run the pipeline to register a new version)"
            if current == T.REJECTED
            else ""
        )
        raise ApprovalError(f"model {name!r} version {version} cannot go from {current} to {status}{hint}")


def _champion_reject_refusal(name: str, version: str, status: str) -> str:
    return (
        f"model {name!r} version {version} ({status}) is the current champion and cannot be rejected; roll "
        f"back or promote another Approved version first (saga rollback {name} --reason ...); "
        "nothing was changed"
    )


def _validate_alias(name: str, alias: str, allowed: tuple[str, ...]) -> None:
    if alias not in allowed:
        raise PromotionError(f"Unknown alias {alias!r} for model {name!r}; use {', '.join(allowed)}")


def _validate_text(field: str, value: str, what: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise PromotionError(f"{what} needs a non-empty {field}")


# ----------------------------------------------------------------------------------------- entry points
def set_status(
    client: MlflowClient,
    name: str,
    version: str | int,
    status: str,
    *,
    by: str,
    comment: str = "",
    via: str = "api",
    policy: P.Policy | None = None,
    lock_timeout: float = DEFAULT_TIMEOUT,
) -> ModelVersion:
    """Move a version to ``status``, recording who, when, why and how; return the updated version.

    Refuses invalid transitions and rejecting the champion with ``ApprovalError``, and policy refusals with
    ``PolicyError``, changing nothing. Rejecting the challenger also demotes it (recorded in the history).
    Setting the status a version already has is a no-op (retried tasks).
    """
    if status not in T.APPROVAL_STATUSES:
        raise ApprovalError(
            f"Unknown approval status {status!r}; use one of {', '.join(T.APPROVAL_STATUSES)}"
        )
    if via not in S.VIAS:
        raise ApprovalError(f"Unknown approval path via={via!r}; use one of {', '.join(S.VIAS)}")
    if not by or not str(by).strip():
        raise ApprovalError("An approval decision needs the identity of who made it (by=...)")
    version = str(version)
    mv = get_version(client, name, version)  # unknown model/version: fail before taking the lock
    current = S.get_status(mv)
    if S.unrecorded_decision(mv) is None:
        if current == status:
            return mv  # a retried task: nothing to do
        _check_transition(name, version, current, status)  # refusable without the lock
    with Transaction(
        client, name, purpose=f"set version {version} {status}", policy=policy, lock_timeout=lock_timeout
    ) as tx:
        return tx.set_status(version, status, by=by, comment=comment, via=via)


def observe(
    client: MlflowClient, name: str, version: str | int, *, policy: P.Policy | None = None
) -> ModelVersion:
    """Read a version; if its status was decided by hand in MLflow, record that (once, under the lock)."""
    mv = get_version(client, name, version)
    if S.unrecorded_decision(mv) is None:
        return mv
    with Transaction(client, name, purpose=f"observe approval of version {version}", policy=policy) as tx:
        return tx.observe(str(version))


def promote(
    client: MlflowClient,
    name: str,
    version: str | int,
    alias: str = T.CHAMPION,
    *,
    by: str,
    reason: str,
    via: str = "api",
    expect_holder: Any = UNSET,
    policy: P.Policy | None = None,
    lock_timeout: float = DEFAULT_TIMEOUT,
) -> PromotionResult:
    """Point ``alias`` (champion | challenger | auto) at ``version`` and record it in the history.

    ``auto`` means challenger, or champion when the model has no champion yet; it is resolved inside the
    lock so two pipelines finishing together cannot both become the first champion. ``expect_holder``
    makes the change conditional on the alias's current holder (``None``: nobody holds it).
    """
    version = str(version)
    _validate_alias(name, alias, (*ALIASES, AUTO))
    _validate_text("by", by, f"Promotion of model {name!r}")
    state = H.read_state(client, name)  # unknown model or version: refused before locking
    model_aliases = state.aliases
    status = S.get_status(_read_version(client, name, version))
    if alias == T.CHAMPION and status != T.APPROVED:
        raise PromotionError(_champion_refusal(name, version, status))
    if alias != T.CHAMPION and status == T.REJECTED:
        raise PromotionError(
            f"Refusing to make model {name!r} version {version} {alias}: its approval status is {status}; "
            f"a Rejected version cannot be shadow-tested (nothing was changed)"
        )
    recorded = state.head.aliases.get(alias) == version  # else a writer died between the move and its entry
    done = alias != AUTO and model_aliases.get(alias) == version and recorded
    if (
        done
        and expect_holder in (UNSET, version)
        and not any(u.alias == alias for u in H.unrecorded_in(client, state))
    ):
        # Already done (a retried task): true at the moment of that read, so no lock is needed. When the
        # history head does not record it, the transaction below settles the interrupted writer's entry.
        return PromotionResult(name, alias, version, version, changed=False)
    with Transaction(
        client, name, purpose=f"promote v{version} to {alias}", policy=policy, lock_timeout=lock_timeout
    ) as tx:
        return tx.promote(version, alias, by=by, reason=reason, via=via, expect_holder=expect_holder)


def rollback(
    client: MlflowClient,
    name: str,
    target_version: str | int | None = None,
    *,
    by: str,
    reason: str,
    via: str = "api",
    expect_holder: Any = UNSET,
    request_id: str | None = None,
    policy: P.Policy | None = None,
    lock_timeout: float = DEFAULT_TIMEOUT,
) -> PromotionResult:
    """Put champion back on the previous champion, or on ``target_version`` (which must be Approved).

    With no previous champion (or an ineligible target) raises ``PromotionError`` and changes nothing.
    ``request_id`` makes retries of one request safe (see ``Transaction.rollback``).
    """
    if not isinstance(reason, str) or not reason.strip():
        raise PromotionError(f"Rollback of {name!r} needs a reason")
    _validate_text("by", by, f"Rollback of model {name!r}")
    target = None if target_version is None else str(target_version)
    if target is not None:
        status = S.get_status(get_version(client, name, target))
        if status != T.APPROVED:
            raise PromotionError(
                f"Cannot roll back model {name!r} to version {target}: its approval status is {status}; "
                f"only {T.APPROVED} versions can become champion (nothing was changed)"
            )
    else:
        H.read_state(client, name)  # unknown model: RegistryError before locking
    with Transaction(client, name, purpose="rollback", policy=policy, lock_timeout=lock_timeout) as tx:
        return tx.rollback(
            target, by=by, reason=reason, via=via, expect_holder=expect_holder, request_id=request_id
        )


def remove_alias(
    client: MlflowClient,
    name: str,
    alias: str,
    *,
    by: str,
    reason: str,
    via: str = "api",
    expect_holder: Any = UNSET,
    policy: P.Policy | None = None,
    lock_timeout: float = DEFAULT_TIMEOUT,
) -> PromotionResult:
    """Drop ``alias`` (e.g. the challenger after a failed shadow test) and record a ``demote`` entry.

    With ``expect_holder=v`` the alias is removed only if version ``v`` still holds it (checked inside
    the lock); otherwise ``PromotionError`` and nothing changes.
    """
    _validate_alias(name, alias, ALIASES)
    _validate_text("by", by, f"Removing @{alias} of model {name!r}")
    H.read_state(client, name)
    with Transaction(client, name, purpose=f"remove {alias}", policy=policy, lock_timeout=lock_timeout) as tx:
        return tx.remove_alias(alias, by=by, reason=reason, via=via, expect_holder=expect_holder)
