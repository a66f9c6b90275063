"""Aliases and their history: the registry primitives the governance unit of work is built on.

Why runs: MLflow aliases move silently and keep no history, so every alias change saga makes is recorded
as an entry ``{seq, at, by, action, alias, from, to, reason}``. Each entry is one MLflow **run** in the
experiment ``saga-history/<model>``: its fields are run tags, its start time is the entry's time and its
name reads ``#000042 promote champion 3 -> 4``. MLflow's runs table is then a readable, searchable history
page, "what held champion at time T" is a search by start time, and writing entry N costs the same at
N = 10 as at N = 10,000. The registered model carries one small tag, the **head**::

    saga.history.head = {"seq": 42, "experiment_id": "7", "time_ms": 1732249875123,
                         "aliases": {"champion": "4"}, "runs": ["<run id of entry 42>"]}

Commit protocol (the caller holds the model's lock and fences every write): the entries of one change are
first created as RUNNING runs numbered ``head + 1 ...`` (the intent), then the aliases move, then the head
is advanced (the commit point); the runs are ended FINISHED after the lock is released. An entry counts
once ``seq <= head.seq`` and it is FINISHED or named in ``head.runs``. A writer that crashed leaves RUNNING
runs behind; the next writer's ``recover()`` (one search for RUNNING runs) commits an intent whose first
alias change took effect (finishing the rest of it) and deletes one that did not. So entries are never
lost or duplicated and sequence numbers run 1, 2, 3, ... without gaps, crash or no crash.

Entries have strictly increasing start times too (``max(now, previous + 1 ms)``), so ordering by start
time is ordering by sequence number; readers page by start time.

Histories written before 0.2 (one ``saga.history.NNNNNN`` tag per entry on the registered model) are
copied to runs under the lock by the next change of the model, idempotently (a copy interrupted half-way
resumes where it stopped), and the old tags are then deleted. Until then readers merge both.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import re
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow_saga.core import compat
from airflow_saga.core import tags as T
from airflow_saga.core.errors import RegistryError
from airflow_saga.core.registry import get_registered_model

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from mlflow import MlflowClient

log = logging.getLogger(__name__)

ALIASES = (T.CHAMPION, T.CHALLENGER)
ACTIONS = ("promote", "rollback", "demote")
SEQ_WIDTH = 6
MAX_REASON = 1000
MAX_BY = 250
PAGE = 2000  # runs per search request when reading a whole history
SWEEP_EVERY = 16  # an unforced recovery search in one of this many units of work
MODEL_CREATED_TAG = "saga.history.model_created"  # experiment tag: which incarnation of the model
_LEGACY_KEY = re.compile(re.escape(T.LEGACY_HISTORY_PREFIX) + r"(\d+)$")


def experiment_name(model_name: str) -> str:
    return f"{T.HISTORY_EXPERIMENT_PREFIX}{model_name}"


def iso_ms(time_ms: int) -> str:
    return (
        datetime.fromtimestamp(time_ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def parse_time_ms(at: Any) -> int | None:
    try:
        return round(datetime.fromisoformat(str(at).replace("Z", "+00:00")).timestamp() * 1000)
    except (TypeError, ValueError):
        return None


# ------------------------------------------------------------------------------------------ model state
@dataclasses.dataclass
class Head:
    """The last committed entry of a model's history (``seq == 0``: no history yet)."""

    seq: int = 0
    experiment_id: str | None = None
    time_ms: int = 0
    aliases: dict[str, str] = dataclasses.field(default_factory=dict)
    runs: list[str] = dataclasses.field(default_factory=list)

    def to_tag(self) -> str:
        return json.dumps(
            {
                "seq": self.seq,
                "experiment_id": self.experiment_id,
                "time_ms": self.time_ms,
                "aliases": dict(sorted(self.aliases.items())),
                "runs": self.runs,
            },
            separators=(",", ":"),
        )

    @classmethod
    def parse(cls, model_name: str, raw: str | None) -> Head:
        if not raw:
            return cls()
        try:
            d = json.loads(raw)
            return cls(
                seq=int(d["seq"]),
                experiment_id=None if d.get("experiment_id") is None else str(d["experiment_id"]),
                time_ms=int(d.get("time_ms") or 0),
                aliases={str(k): str(v) for k, v in (d.get("aliases") or {}).items()},
                runs=[str(r) for r in d.get("runs") or []],
            )
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise RegistryError(
                f"Registered model {model_name!r} has an unreadable {T.HISTORY_HEAD} tag {raw!r} "
                f"(edited by hand?): {exc}"
            ) from exc


@dataclasses.dataclass
class ModelState:
    """One read of a registered model: its aliases, tags, history head and any not-yet-migrated entries."""

    name: str
    created_ms: int
    aliases: dict[str, str]
    tags: dict[str, str]
    head: Head
    legacy: list[dict[str, Any]]


def legacy_entries(tags: dict[str, str]) -> list[dict[str, Any]]:
    """Entries still stored in the pre-0.2 format (one ``saga.history.NNNNNN`` tag each), by sequence."""
    out = []
    for key, raw in tags.items():
        m = _LEGACY_KEY.match(key)
        if not m:
            continue
        try:
            entry = json.loads(raw)
            entry["seq"] = int(m.group(1))
        except (ValueError, TypeError):
            log.warning("Ignoring unreadable legacy history tag %s=%r", key, raw)
            continue
        out.append({k: entry.get(k) for k in ("seq", "at", "by", "action", "alias", "from", "to", "reason")})
    return sorted(out, key=lambda e: e["seq"])


def legacy_key(seq: int) -> str:
    return f"{T.LEGACY_HISTORY_PREFIX}{seq:0{SEQ_WIDTH}d}"


def read_state(client: MlflowClient, name: str) -> ModelState:
    """The registered model as one consistent read (one request); RegistryError for an unknown model."""
    model = get_registered_model(client, name)
    tags = dict(model.tags or {})
    return ModelState(
        name=name,
        created_ms=int(model.creation_timestamp or 0),
        aliases={k: str(v) for k, v in (model.aliases or {}).items()},
        tags=tags,
        head=Head.parse(name, tags.get(T.HISTORY_HEAD)),
        legacy=legacy_entries(tags),
    )


# ------------------------------------------------------------------------------------------------ aliases
def aliases(client: MlflowClient, name: str) -> dict[str, str]:
    """``{alias: version}`` of a registered model (RegistryError for an unknown model)."""
    return {k: str(v) for k, v in (get_registered_model(client, name).aliases or {}).items()}


def set_alias(client: MlflowClient, name: str, alias: str, version: str | None) -> None:
    """Point ``alias`` at ``version``, or remove it (``None``). Callers hold the lock and fenced the write."""
    if version is None:
        compat.registry_writer(client).delete_registered_model_alias(name, alias)
    else:
        compat.registry_writer(client).set_registered_model_alias(name, alias, str(version))


# ------------------------------------------------------------------------------------ entries <-> runs
def run_name(entry: dict[str, Any]) -> str:
    return (
        f"#{int(entry['seq']):0{SEQ_WIDTH}d} {entry['action']} {entry['alias']} "
        f"{entry.get('from') or '-'} -> {entry.get('to') or '-'}"
    )


def entry_tags(model: str, entry: dict[str, Any], txn: str) -> dict[str, str]:
    tags = {
        T.RUN_KIND: "history",
        T.HISTORY_MODEL: model,
        T.HISTORY_SEQ: f"{int(entry['seq']):0{SEQ_WIDTH}d}",
        T.HISTORY_AT: str(entry["at"]),
        T.HISTORY_BY: str(entry.get("by") or "")[:MAX_BY],
        T.HISTORY_ACTION: str(entry["action"]),
        T.HISTORY_ALIAS: str(entry["alias"]),
        T.HISTORY_REASON: str(entry.get("reason") or "")[:MAX_REASON],
        T.HISTORY_TXN: txn,
    }
    for key, field in ((T.HISTORY_FROM, "from"), (T.HISTORY_TO, "to"), (T.HISTORY_REQUEST, "request")):
        if entry.get(field) is not None:
            tags[key] = str(entry[field])
    return tags


def request_key(request_id: str) -> str:
    """An idempotency key as stored (quotes cannot appear in a search filter, so they are replaced)."""
    return request_id.replace("'", "_")[:250]


def find_request(client: MlflowClient, state: ModelState, request_id: str) -> list[dict[str, Any]]:
    """The committed entries an earlier try of the request ``request_id`` wrote (one indexed search)."""
    if not (state.head.experiment_id and state.head.seq):
        return []
    runs = _search(
        client,
        state.head.experiment_id,
        f"tags.`{T.HISTORY_REQUEST}` = '{request_key(request_id)}'",
        max_results=10,
    )
    return sorted(_committed_entries(runs, state.head, set()), key=lambda e: e["seq"])


def _seq_of(run: Any) -> int | None:
    try:
        return int(run.data.tags[T.HISTORY_SEQ])
    except (KeyError, ValueError):
        return None


def entry_from_run(run: Any) -> dict[str, Any]:
    t = run.data.tags
    return {
        "seq": int(t[T.HISTORY_SEQ]),
        "at": t.get(T.HISTORY_AT) or iso_ms(run.info.start_time or 0),
        "by": t.get(T.HISTORY_BY, ""),
        "action": t.get(T.HISTORY_ACTION),
        "alias": t.get(T.HISTORY_ALIAS),
        "from": t.get(T.HISTORY_FROM),
        "to": t.get(T.HISTORY_TO),
        "reason": t.get(T.HISTORY_REASON, ""),
    }


def is_committed(run: Any, head: Head) -> bool:
    seq = _seq_of(run)
    if seq is None or seq > head.seq:
        return False
    return run.info.status == "FINISHED" or run.info.run_id in head.runs


def _search(
    client: MlflowClient,
    experiment_id: str,
    filter_string: str = "",
    *,
    max_results: int,
    newest_first: bool = False,
    page_token: str | None = None,
) -> Any:
    from mlflow.entities import ViewType

    return client.search_runs(
        [experiment_id],
        filter_string=filter_string,
        run_view_type=ViewType.ACTIVE_ONLY,
        max_results=max_results,
        order_by=[f"attributes.start_time {'DESC' if newest_first else 'ASC'}"],
        page_token=page_token,
    )


def _committed_entries(runs: Any, head: Head, seen: set[int]) -> list[dict[str, Any]]:
    out = []
    for run in runs:
        if not is_committed(run, head):
            continue
        seq = _seq_of(run)
        if seq in seen:
            continue
        seen.add(seq)
        out.append(entry_from_run(run))
    return out


# ------------------------------------------------------------------------------------------------ readers
def history_of(client: MlflowClient, state: ModelState) -> list[dict[str, Any]]:
    """Every committed entry of the model read as ``state``, oldest first (merging not-yet-migrated ones)."""
    entries: list[dict[str, Any]] = []
    seen: set[int] = set()
    if state.head.experiment_id and state.head.seq:
        token = None
        while True:
            page = _search(client, state.head.experiment_id, max_results=PAGE, page_token=token)
            entries += _committed_entries(page, state.head, seen)
            token = page.token
            if not token:
                break
    entries += [e for e in state.legacy if e["seq"] > state.head.seq and e["seq"] not in seen]
    entries.sort(key=lambda e: e["seq"])
    _warn_gaps(state.name, entries)
    return entries


def _warn_gaps(name: str, entries: list[dict[str, Any]]) -> None:
    if entries and [e["seq"] for e in entries] != list(range(1, len(entries) + 1)):
        log.warning(
            "History of %r has gaps (runs deleted by hand in the MLflow UI?): %d entries up to #%d",
            name,
            len(entries),
            entries[-1]["seq"],
        )


def history(client: MlflowClient, name: str) -> list[dict[str, Any]]:
    """The complete promotion history of ``name``, oldest first (RegistryError for an unknown model)."""
    return history_of(client, read_state(client, name))


@dataclasses.dataclass
class HistoryPage:
    """Up to ``limit`` consecutive entries, oldest first; ``older`` is the ``before=`` of the page before."""

    model: str
    entries: list[dict[str, Any]]
    head: int
    older: int | None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def iter_newest(
    client: MlflowClient,
    state: ModelState,
    *,
    alias: str | None = None,
    before: int | None = None,
    page: int = 200,
) -> Iterator[dict[str, Any]]:
    """Committed entries newest first (of ``alias``; with ``seq < before``), fetched a page at a time.

    Costs one request per ``page`` entries read, however long the history: rollback and the UI stop
    after the first page or two.
    """
    legacy = [e for e in reversed(state.legacy) if e["seq"] > state.head.seq]
    for e in legacy:
        if (alias is None or e["alias"] == alias) and (before is None or e["seq"] < before):
            yield e
    if not (state.head.experiment_id and state.head.seq):
        return
    filters = [f"tags.`{T.HISTORY_ALIAS}` = '{alias}'"] if alias is not None else []
    if alias is not None and alias not in ALIASES:
        raise RegistryError(f"Unknown alias {alias!r}; history is kept for {', '.join(ALIASES)}")
    if before is not None:
        start = _start_time_of(client, state, before)
        if start is None:
            return
        filters.append(f"attributes.start_time < {start}")
    token = None
    seen: set[int] = set()
    while True:
        runs = _search(
            client,
            state.head.experiment_id,
            " and ".join(filters),
            max_results=page,
            newest_first=True,
            page_token=token,
        )
        yield from _committed_entries(runs, state.head, seen)
        token = runs.token
        if not token:
            return


def _start_time_of(client: MlflowClient, state: ModelState, seq: int) -> int | None:
    """Start time of committed entry ``seq`` (one tag lookup); None when there is no such entry."""
    if seq > state.head.seq:
        return state.head.time_ms + 1
    if seq < 1 or not state.head.experiment_id:
        return None
    runs = _search(
        client,
        state.head.experiment_id,
        f"tags.`{T.HISTORY_SEQ}` = '{seq:0{SEQ_WIDTH}d}'",
        max_results=10,
    )
    for run in runs:
        if is_committed(run, state.head):
            return int(run.info.start_time)
    return None


def history_page(
    client: MlflowClient, name: str, *, limit: int = 1000, before: int | None = None
) -> HistoryPage:
    """The newest ``limit`` entries with ``seq < before`` (default: the newest), oldest first.

    For timelines: the cost is one or two requests per page, independent of the history's length. Page
    back with ``before=page.older`` until ``older`` is None.
    """
    if not 1 <= limit <= 10_000:
        raise RegistryError(f"history page limit must be between 1 and 10000, got {limit}")
    if before is not None and before < 1:
        raise RegistryError(f"history page 'before' must be a sequence number >= 1, got {before}")
    state = read_state(client, name)
    entries: list[dict[str, Any]] = []
    for e in iter_newest(client, state, before=before, page=min(limit + 10, 5000)):
        entries.append(e)
        if len(entries) >= limit:
            break
    entries.reverse()
    head = max(state.head.seq, state.legacy[-1]["seq"] if state.legacy else 0)
    older = entries[0]["seq"] if entries and entries[0]["seq"] > 1 else None
    return HistoryPage(model=name, entries=entries, head=head, older=older)


def entries_for_version(
    client: MlflowClient,
    name: str,
    version: str,
    *,
    state: ModelState | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Entries that moved an alias to or from ``version``, oldest first (two indexed searches).

    ``state``: the model as already read (saves the read). ``limit``: only the newest ``limit`` entries,
    in one bounded request per search, so a caller on the promotion path (the version description) costs
    the same at 10 entries as at 10,000; without it, every entry (paged).
    """
    version = str(version)
    if not version.isdigit():
        raise RegistryError(f"Model {name!r} has no version {version!r}")
    if limit is not None and limit <= 0:
        return []
    state = state if state is not None else read_state(client, name)
    out: dict[int, dict[str, Any]] = {
        e["seq"]: e
        for e in state.legacy
        if e["seq"] > state.head.seq and version in (str(e.get("from")), str(e.get("to")))
    }
    if state.head.experiment_id and state.head.seq:
        for key in (T.HISTORY_FROM, T.HISTORY_TO):
            token = None
            while True:
                runs = _search(
                    client,
                    state.head.experiment_id,
                    f"tags.`{key}` = '{version}'",
                    max_results=PAGE if limit is None else limit,
                    newest_first=limit is not None,
                    page_token=token,
                )
                for e in _committed_entries(runs, state.head, set()):
                    out[e["seq"]] = e
                token = runs.token
                if not token or limit is not None:
                    break
    seqs = sorted(out)
    if limit is not None:
        seqs = seqs[-limit:]
    return [out[s] for s in seqs]


# ------------------------------------------------------------------------------------------------ writers
@dataclasses.dataclass
class Intent:
    """An entry written as a RUNNING run, not yet committed by the head."""

    entry: dict[str, Any]
    run_id: str
    time_ms: int


class HistoryWriter:
    """Appends entries for one unit of work. The caller holds the lock; ``fence()`` runs before each write.

    ``state`` is the model as read inside the lock; ``commit`` updates ``state.head``.
    """

    def __init__(self, client: MlflowClient, state: ModelState, fence: Callable[[], None]) -> None:
        self.client = client
        self.state = state
        self.fence = fence
        self.txn = uuid.uuid4().hex
        self.to_finish: dict[str, int] = {}  # committed run -> end time, ended once the lock is released

    # -- experiment -----------------------------------------------------------------------------------
    def experiment_id(self) -> str:
        """The history experiment of this model (created on the first entry)."""
        if self.state.head.experiment_id:
            return self.state.head.experiment_id
        name = experiment_name(self.state.name)
        exp = self.client.get_experiment_by_name(name)
        created = str(self.state.created_ms)
        if exp is not None and exp.lifecycle_stage == "deleted":
            raise RegistryError(
                f"The promotion history experiment {name!r} (id {exp.experiment_id}) of model "
                f"{self.state.name!r} was deleted in MLflow; restore it (mlflow experiments restore "
                f"--experiment-id {exp.experiment_id}) and retry; nothing was changed"
            )
        if exp is not None and (exp.tags or {}).get(MODEL_CREATED_TAG) != created:
            # A model of this name was deleted and created again: keep the old history under a new name.
            old = f"{name} (model created {iso_ms(int((exp.tags or {}).get(MODEL_CREATED_TAG) or 0))})"
            log.warning(
                "Renaming history experiment %r of an earlier model %r to %r", name, self.state.name, old
            )
            self.fence()
            self.client.rename_experiment(exp.experiment_id, old)
            exp = None
        self.fence()
        if exp is None:
            eid = self.client.create_experiment(
                name,
                tags={
                    T.HISTORY_MODEL: self.state.name,
                    MODEL_CREATED_TAG: created,
                    "mlflow.note.content": (
                        f"Promotion history of registered model `{self.state.name}`, written by "
                        "airflow-saga: one run per alias change (promote, rollback, demote), in order. "
                        "Read-only: do not edit or delete these runs."
                    ),
                },
            )
        else:
            eid = exp.experiment_id
        self.state.head.experiment_id = str(eid)
        return str(eid)

    # -- recovery ---------------------------------------------------------------------------------------
    def recover(
        self, apply_alias: Callable[[str, str | None], None], *, force: bool = False
    ) -> list[dict[str, Any]]:
        """Settle what a crashed (or lease-expired) writer left: returns the entries committed on its behalf.

        One search for RUNNING runs. An intent whose first alias change is visible in the registry is
        finished (its remaining alias changes applied through ``apply_alias``) and committed; any other
        leftover intent is deleted. Committed runs not yet ended are queued to be ended.

        The search is skipped when nothing can need settling: the aliases are those the head recorded (no
        writer stopped after moving one) and the lock was not taken from a crashed holder (``force``).
        Leftovers of a writer that failed before moving anything never count as entries (they are
        RUNNING and not in the head), so one search in every ``SWEEP_EVERY`` also tidies those.
        """
        head = self.state.head
        if (
            not force
            and head.seq
            and head.aliases == self.state.aliases
            and random.random() >= 1 / SWEEP_EVERY
        ):
            return []
        eid = head.experiment_id
        if eid is None:
            exp = self.client.get_experiment_by_name(experiment_name(self.state.name))
            if exp is None or exp.lifecycle_stage == "deleted":
                return []
            if (exp.tags or {}).get(MODEL_CREATED_TAG) != str(self.state.created_ms):
                return []
            eid = str(exp.experiment_id)
        running = list(_search(self.client, eid, "attributes.status = 'RUNNING'", max_results=1000))
        pending: list[Any] = []
        for run in running:
            seq = _seq_of(run)
            if seq is not None and seq <= head.seq and head.experiment_id:
                if run.info.run_id in head.runs:
                    self.to_finish[run.info.run_id] = int(run.info.start_time or now_ms())
                else:
                    self._abandon(run.info.run_id, f"stale entry #{seq} of an interrupted writer")
            elif seq is not None:
                pending.append(run)
        if not pending:
            return []
        pending.sort(key=lambda r: _seq_of(r) or 0)
        first_txn = pending[0].data.tags.get(T.HISTORY_TXN)
        group = [r for r in pending if r.data.tags.get(T.HISTORY_TXN) == first_txn]
        for run in pending:
            if run not in group:
                self._abandon(run.info.run_id, "entry of an interrupted writer after another one")
        seqs = [_seq_of(r) for r in group]
        entries = [entry_from_run(r) for r in group]
        if seqs != list(range(head.seq + 1, head.seq + 1 + len(group))) or not self._took_effect(entries[0]):
            for run in group:
                self._abandon(run.info.run_id, "interrupted before its alias change took effect")
            return []
        for e in entries[1:]:
            if not self._took_effect(e):
                self.fence()
                apply_alias(e["alias"], e["to"])
                self.state.aliases = applied(self.state.aliases, e)
        log.warning(
            "Completing history entries %s of %r left by an interrupted writer",
            [e["seq"] for e in entries],
            self.state.name,
        )
        self.state.head.experiment_id = eid
        self._commit(
            [Intent(e, r.info.run_id, int(r.info.start_time)) for e, r in zip(entries, group, strict=True)]
        )
        return entries

    def _took_effect(self, entry: dict[str, Any]) -> bool:
        holder = self.state.aliases.get(entry["alias"])
        if entry["action"] == "demote":
            return holder != entry["from"]
        return holder == entry["to"]

    def _abandon(self, run_id: str, why: str) -> None:
        log.warning("Deleting history run %s of %r: %s", run_id, self.state.name, why)
        self.fence()
        self.client.set_tag(run_id, "saga.history.abandoned", why[:250])
        compat.end_run(self.client, run_id, "FAILED", now_ms())
        self.client.delete_run(run_id)

    # -- migration --------------------------------------------------------------------------------------
    def migrate_legacy(self) -> int:
        """Copy pre-0.2 tag entries to runs (idempotent, resumable), advance the head, delete the tags."""
        legacy = self.state.legacy
        if not legacy:
            return 0
        head = self.state.head
        eid = self.experiment_id()
        todo = [e for e in legacy if e["seq"] > head.seq]
        if todo:
            existing: set[int] = set()
            token = None
            while True:  # runs copied by an earlier, interrupted migration (ended, or killed before that)
                page = _search(
                    self.client,
                    eid,
                    f"tags.`{T.HISTORY_MIGRATED}` = 'true'",
                    max_results=PAGE,
                    page_token=token,
                )
                for r in page:
                    seq = _seq_of(r)
                    if seq is None or seq in existing:
                        continue
                    existing.add(seq)
                    if r.info.status == "RUNNING":
                        self.fence()
                        compat.end_run(
                            self.client, r.info.run_id, "FINISHED", int(r.info.start_time or now_ms())
                        )
                token = page.token
                if not token:
                    break
            last_ms = head.time_ms
            expected = head.seq + 1
            for e in todo:
                if e["seq"] != expected:
                    raise RegistryError(
                        f"Cannot migrate the history of model {self.state.name!r}: legacy entries jump from "
                        f"#{expected - 1} to #{e['seq']} (tags deleted by hand?); nothing more was migrated"
                    )
                expected += 1
                t = max(parse_time_ms(e.get("at")) or last_ms + 1, last_ms + 1)
                last_ms = t
                if e["seq"] in existing:
                    continue
                tags = {**entry_tags(self.state.name, e, self.txn), T.HISTORY_MIGRATED: "true"}
                if not e.get("at"):
                    tags[T.HISTORY_AT] = iso_ms(t)
                self.fence()
                run = self.client.create_run(eid, start_time=t, tags=tags, run_name=run_name(e))
                compat.end_run(self.client, run.info.run_id, "FINISHED", t)
            self.fence()
            new_head = dataclasses.replace(
                head,
                seq=todo[-1]["seq"],
                experiment_id=eid,
                time_ms=last_ms,
                aliases=dict(self.state.aliases),
                runs=[],
            )
            compat.registry_writer(self.client).set_registered_model_tag(
                self.state.name, T.HISTORY_HEAD, new_head.to_tag()
            )
            self.state.head = new_head
        for e in legacy:
            self.fence()
            compat.registry_writer(self.client).delete_registered_model_tag(
                self.state.name, legacy_key(e["seq"])
            )
        log.info(
            "Migrated %d history entries of %r to runs in experiment %s", len(todo), self.state.name, eid
        )
        self.state.legacy = []
        return len(todo)

    # -- append -----------------------------------------------------------------------------------------
    def intend(self, entries: list[dict[str, Any]], request_id: str | None = None) -> list[Intent]:
        """Write ``entries`` (without seq/at) as RUNNING runs numbered from ``head + 1``.

        ``request_id`` (an idempotency key) is stored on the first entry so a retry can find it.
        """
        eid = self.experiment_id()
        seq, last_ms = self.state.head.seq, self.state.head.time_ms
        intents = []
        for partial in entries:
            seq += 1
            t = max(now_ms(), last_ms + 1)
            last_ms = t
            entry = {
                "seq": seq,
                "at": iso_ms(t),
                "by": str(partial.get("by") or "")[:MAX_BY],
                "action": partial["action"],
                "alias": partial["alias"],
                "from": partial.get("from"),
                "to": partial.get("to"),
                "reason": str(partial.get("reason") or "")[:MAX_REASON],
            }
            tags = entry_tags(self.state.name, entry, self.txn)
            if request_id and not intents:
                tags[T.HISTORY_REQUEST] = request_key(request_id)
            self.fence()
            run = self.client.create_run(eid, start_time=t, tags=tags, run_name=run_name(entry))
            intents.append(Intent(entry, run.info.run_id, t))
        return intents

    def commit(self, intents: list[Intent]) -> list[dict[str, Any]]:
        """Advance the head past ``intents`` (the commit point); the runs are ended after the lock is gone."""
        self._commit(intents)
        return [i.entry for i in intents]

    def _commit(self, intents: list[Intent]) -> None:
        if not intents:
            return
        last = intents[-1].entry
        new_head = Head(
            seq=int(last["seq"]),
            experiment_id=self.state.head.experiment_id,
            time_ms=max(i.time_ms for i in intents),
            aliases=dict(self.state.aliases),
            runs=[i.run_id for i in intents],
        )
        self.fence()
        compat.registry_writer(self.client).set_registered_model_tag(
            self.state.name, T.HISTORY_HEAD, new_head.to_tag()
        )
        self.state.head = new_head
        for i in intents:
            self.to_finish[i.run_id] = i.time_ms

    def abandon(self, intents: list[Intent], why: str) -> None:
        for i in intents:
            self._abandon(i.run_id, why)

    def finish(self) -> None:
        """End committed runs FINISHED (after the lock is released: nobody waits for this)."""
        for run_id, end_ms in self.to_finish.items():
            try:
                compat.end_run(self.client, run_id, "FINISHED", end_ms)
            except Exception as exc:  # the next writer's recover() ends it instead
                log.warning("Could not end history run %s: %s", run_id, exc)
        self.to_finish = {}


def applied(current: dict[str, str], entry: dict[str, Any]) -> dict[str, str]:
    out = dict(current)
    if entry.get("to") is None:
        out.pop(entry["alias"], None)
    else:
        out[entry["alias"]] = str(entry["to"])
    return out


# --------------------------------------------------------------------------- changes saga did not make
@dataclasses.dataclass(frozen=True)
class UnrecordedAlias:
    """A governed alias whose holder in the registry is not the one saga's history says.

    ``registry`` is what MLflow serves now (None: the alias is unset), ``recorded`` the holder after the
    last committed history entry of that alias (None: saga never set it, or last removed it), ``seq`` that
    entry's number (None: the alias has no entry). The alias was moved outside saga, by hand in the MLflow
    UI or with ``set_registered_model_alias``: the history does not say who moved it, when, or why.
    """

    model: str
    alias: str
    registry: str | None
    recorded: str | None
    seq: int | None
    recorded_at: str | None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def message(self) -> str:
        now = f"v{self.registry}" if self.registry else "no version"
        was = f"v{self.recorded}" if self.recorded else "no version"
        where = f" (entry #{self.seq} at {self.recorded_at})" if self.seq else " (no history entry)"
        return (
            f"@{self.alias} of model {self.model!r} is on {now} in the registry, but saga's history says "
            f"{was}{where}: the alias was moved outside saga and the change is unrecorded"
        )


def _last_entry(client: MlflowClient, state: ModelState, alias: str) -> dict[str, Any] | None:
    return next(iter_newest(client, state, alias=alias, page=20), None)


def _in_flight(client: MlflowClient, state: ModelState, alias: str, version: str | None) -> bool:
    """A saga change of ``alias`` to ``version`` written after the head: being committed, or interrupted.

    Either way the next saga change commits it (``HistoryWriter.recover``), so it is not unrecorded. One
    search: intents start after the head's time (entries' start times strictly increase).
    """
    eid = state.head.experiment_id
    if eid is None:
        exp = client.get_experiment_by_name(experiment_name(state.name))
        if exp is None or exp.lifecycle_stage == "deleted":
            return False
        if (exp.tags or {}).get(MODEL_CREATED_TAG) != str(state.created_ms):
            return False
        eid = str(exp.experiment_id)
    runs = _search(
        client,
        eid,
        f"tags.`{T.HISTORY_ALIAS}` = '{alias}' and attributes.start_time > {state.head.time_ms}",
        max_results=50,
    )
    for run in runs:
        seq = _seq_of(run)
        if seq is None or seq <= state.head.seq:
            continue
        to = run.data.tags.get(T.HISTORY_TO)
        if (to or None) == version:
            return True
    return False


def unrecorded_in(client: MlflowClient, state: ModelState) -> list[UnrecordedAlias]:
    """``unrecorded_aliases`` for a model already read as ``state``.

    Compared with each alias's last history entry, not with the head's alias snapshot: the next saga
    commit snapshots whatever the registry holds, a hand-moved alias included, so the snapshot would
    forget the change.
    """
    out = []
    for alias in ALIASES:
        actual = state.aliases.get(alias)
        last = _last_entry(client, state, alias)
        recorded = None if last is None or last.get("to") is None else str(last["to"])
        if recorded == actual or _in_flight(client, state, alias, actual):
            continue
        out.append(
            UnrecordedAlias(
                model=state.name,
                alias=alias,
                registry=actual,
                recorded=recorded,
                seq=None if last is None else int(last["seq"]),
                recorded_at=None if last is None else last.get("at"),
            )
        )
    return out


def unrecorded_aliases(client: MlflowClient, name: str) -> list[UnrecordedAlias]:
    """Governed aliases (champion, challenger) moved outside saga: the registry disagrees with the history.

    Why: an alias moved in the MLflow UI bypasses approval, policies and the history, and the gateway
    would serve it silently. Cheap enough to call on every model load or swap (not per request): one
    ``get_registered_model`` and one indexed history search per alias; on disagreement one more search
    for in-flight saga changes, which are not reported (a promotion between its alias move and its
    commit, or one interrupted there, which the next saga change completes). An alias saga never set but
    that is set in the registry is reported with ``recorded=None, seq=None``.
    RegistryError for an unknown model.
    """
    return unrecorded_in(client, read_state(client, name))


def history_gaps(entries: list[dict[str, Any]], *, complete: bool = True) -> list[dict[str, Any]]:
    """Unrecorded changes visible inside a history: an entry's ``from`` is not the previous entry's ``to``.

    Each gap ``{alias, after_seq, before_seq, recorded, found, since, until}``: between entries
    ``after_seq`` (or the start, None) and ``before_seq`` the alias went from ``recorded`` to ``found``
    outside saga, at a time between ``since`` and ``until``. ``complete=False`` (a page of the newest
    entries): an alias's first entry on the page is not judged, having no predecessor to compare with.
    """
    last: dict[str, dict[str, Any]] = {}
    gaps = []
    for e in entries:
        alias = str(e.get("alias"))
        prev = last.get(alias)
        held = None if prev is None or prev.get("to") is None else str(prev["to"])
        found = None if e.get("from") is None else str(e["from"])
        if (prev is not None or complete) and held != found:
            gaps.append(
                {
                    "alias": alias,
                    "after_seq": None if prev is None else prev["seq"],
                    "before_seq": e["seq"],
                    "recorded": held,
                    "found": found,
                    "since": None if prev is None else prev.get("at"),
                    "until": e.get("at"),
                }
            )
        last[alias] = e
    return gaps


# ------------------------------------------------------------------------------------------ time travel
def _entry_time_ms(entry: dict[str, Any]) -> int:
    return parse_time_ms(entry.get("at")) or 0


def entry_at(client: MlflowClient, state: ModelState, alias: str, at_ms: int) -> dict[str, Any] | None:
    """The last committed entry of ``alias`` at or before ``at_ms`` (one indexed search), or None.

    Entries are ordered by their runs' start times, which are the entries' times to the millisecond.
    """
    legacy = [e for e in reversed(state.legacy) if e["seq"] > state.head.seq and e["alias"] == alias]
    for e in legacy:  # not yet migrated: all newer than every run
        if _entry_time_ms(e) <= at_ms:
            return e
    return _first_committed(
        client,
        state,
        f"tags.`{T.HISTORY_ALIAS}` = '{alias}' and attributes.start_time <= {int(at_ms)}",
        newest_first=True,
    )


def _first_committed(
    client: MlflowClient, state: ModelState, filter_string: str, *, newest_first: bool
) -> dict[str, Any] | None:
    """The first committed entry matching ``filter_string`` in start-time order, paging past intents."""
    if not (state.head.experiment_id and state.head.seq):
        return None
    token = None
    while True:
        runs = _search(
            client,
            state.head.experiment_id,
            filter_string,
            max_results=20,
            newest_first=newest_first,
            page_token=token,
        )
        found = _committed_entries(runs, state.head, set())
        if found:
            return found[0]
        token = runs.token
        if not token:
            return None


def entry_after(client: MlflowClient, state: ModelState, alias: str, at_ms: int) -> dict[str, Any] | None:
    """The first committed entry of ``alias`` after ``at_ms`` (one indexed search), or None."""
    found = _first_committed(
        client,
        state,
        f"tags.`{T.HISTORY_ALIAS}` = '{alias}' and attributes.start_time > {int(at_ms)}",
        newest_first=False,
    )
    if found is not None:
        return found
    for e in state.legacy:
        if e["seq"] > state.head.seq and e["alias"] == alias and _entry_time_ms(e) > at_ms:
            return e
    return None
