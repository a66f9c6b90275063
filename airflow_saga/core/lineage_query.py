"""Lineage queries: the whole story of a model version, and the reverse look-ups.

Forward: version -> training run (params, metrics, tags) -> dataset (digest, source) -> code version
(package version, DAG file hash) -> Airflow DAG run (ids, URL) -> evaluation report -> gate decision ->
approvals (the version's approval log) -> promotions (history entries that moved an alias to or from it).
Everything is read from the tags written by ``core.lineage``/``core.registry`` and from the MLflow run, so
the answer is whatever was actually recorded, not a reconstruction.

Reverse: which versions were trained on dataset digest X, which came from Airflow DAG run Y; both are
``search_model_versions`` tag filters (backticks around the dotted tag keys).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow_saga.core import alias_history, approval, promotion
from airflow_saga.core import tags as T
from airflow_saga.core.errors import ParameterError, RegistryError
from airflow_saga.core.registry import get_registered_model, get_version, reuse_entries

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion


def resolve_version(client: MlflowClient, name: str, version_or_alias: str | int | None) -> str:
    """``"3"`` / ``3`` / ``"@champion"`` / ``"champion"`` / None (champion, else the latest version)."""
    model = get_registered_model(client, name)
    model_aliases = {k: str(v) for k, v in (model.aliases or {}).items()}
    if version_or_alias is None:
        if T.CHAMPION in model_aliases:
            return model_aliases[T.CHAMPION]
        versions = client.search_model_versions(f"name='{_q(name)}'", order_by=["version_number DESC"])
        if not versions:
            raise RegistryError(f"Registered model {name!r} has no versions")
        return str(versions[0].version)
    ref = str(version_or_alias)
    if ref.isdigit():
        return ref
    alias = ref.removeprefix("@")
    if alias not in model_aliases:
        raise RegistryError(
            f"Registered model {name!r} has no alias {alias!r} "
            f"(aliases: {', '.join(model_aliases) or 'none'})"
        )
    return model_aliases[alias]


def _q(value: str) -> str:
    """Values go into single-quoted filter strings; refuse quotes rather than guess MLflow's escaping."""
    if "'" in value:
        raise RegistryError(f"Value {value!r} contains a single quote, which registry filters cannot express")
    return value


def _run_facts(client: MlflowClient, run_id: str | None) -> dict[str, Any] | None:
    if not run_id:
        return None
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        return {"id": run_id, "error": f"run not readable: {exc.message if hasattr(exc, 'message') else exc}"}
    datasets = [
        {
            "name": di.dataset.name,
            "digest": di.dataset.digest,
            "source": di.dataset.source,
            "context": next((t.value for t in di.tags if t.key == "mlflow.data.context"), None),
        }
        for di in (run.inputs.dataset_inputs if run.inputs else [])
    ]
    return {
        "id": run_id,
        "experiment_id": run.info.experiment_id,
        "name": run.info.run_name,
        "status": run.info.status,
        "start_time": run.info.start_time,
        "end_time": run.info.end_time,
        "params": dict(run.data.params),
        "metrics": dict(run.data.metrics),
        "tags": {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.log-model")},
        "datasets": datasets,
    }


def _version_story(mv: ModelVersion, model_aliases: dict[str, str]) -> dict[str, Any]:
    tags = dict(mv.tags or {})
    try:
        status: str | None = approval.get_status(mv)
        status_error = None
    except RegistryError as exc:
        status, status_error = tags.get(T.APPROVAL_STATUS), str(exc)
    out = {
        "model": mv.name,
        "version": str(mv.version),
        "aliases": sorted(a for a, v in model_aliases.items() if v == str(mv.version)),
        "source": mv.source,
        "created": mv.creation_timestamp,
        "status": status,
        "tags": tags,
    }
    if status_error:
        out["status_error"] = status_error
    return out


def lineage(client: MlflowClient, name: str, version_or_alias: str | int | None = None) -> dict[str, Any]:
    """The full recorded chain for one version (see module docstring); RegistryError if it does not exist."""
    version = resolve_version(client, name, version_or_alias)
    mv = get_version(client, name, version)
    model_aliases = promotion.aliases(client, name)
    tags = dict(mv.tags or {})
    run_id = tags.get(T.RUN_ID) or mv.run_id
    try:
        approvals = approval.approval_log(mv)
    except RegistryError as exc:
        approvals = [{"error": str(exc)}]
    promotions = promotion.entries_for_version(client, name, version)
    rollback = {
        k.rsplit(".", 1)[-1]: tags[k]
        for k in (T.ROLLED_BACK_REASON, T.ROLLED_BACK_AT, T.ROLLED_BACK_BY)
        if k in tags
    }
    return {
        "version": _version_story(mv, model_aliases),
        "requested": None if version_or_alias is None else str(version_or_alias),
        "run": _run_facts(client, run_id),
        "dataset": {
            "digest": tags.get(T.DATASET_DIGEST),
            "source": tags.get(T.DATASET_SOURCE),
            "rows": tags.get(T.DATASET_ROWS),
        },
        "code": {
            "package_version": tags.get(T.PACKAGE_VERSION),
            "dag_file_hash": tags.get(T.DAG_FILE_HASH),
            "estimator": tags.get(T.ESTIMATOR),
            "training_function": tags.get(T.TRAINING_FUNCTION),
            "flavor": tags.get(T.MODEL_FLAVOR),
        },
        "origin": _origin(tags, run_id),
        "reuses": {
            "entries": reuse_entries(mv),
            "overflow": int(tags.get(T.REUSE_OVERFLOW, "0") or 0),
            "last": _json_or_none(tags.get(T.REUSE_LAST)),
        },
        "airflow": {
            "dag_id": tags.get(T.AIRFLOW_DAG_ID),
            "run_id": tags.get(T.AIRFLOW_RUN_ID),
            "task_id": tags.get(T.AIRFLOW_TASK_ID),
            "try_number": tags.get(T.AIRFLOW_TRY_NUMBER),
            "url": tags.get(T.AIRFLOW_RUN_URL),
        },
        "evaluation": {
            "report_uri": tags.get(T.EVAL_REPORT_URI),
            "metrics": {
                k[len(T.METRIC_PREFIX) :]: _num(v) for k, v in tags.items() if k.startswith(T.METRIC_PREFIX)
            },
        },
        "gate": {
            "decision": tags.get(T.GATE_DECISION),
            "report_uri": tags.get(T.GATE_REPORT_URI),
            "summary": tags.get(T.GATE_SUMMARY),
        },
        "approvals": approvals,
        "promotions": promotions,
        "rollback": rollback or None,
    }


def _origin(tags: dict[str, str], run_id: str | None) -> dict[str, Any]:
    """How the version's model came to be, and which run actually fitted it."""
    cache_hit = tags.get(T.CACHE_HIT) == "true"
    kind = tags.get(T.ORIGIN) or ("cache" if cache_hit else "trained")
    fitted_by = tags.get(T.CACHE_SOURCE_RUN) if cache_hit else run_id
    return {
        "kind": kind,
        "cache_hit": cache_hit,
        "fitted_by_run": fitted_by,
        "source_model_uri": tags.get(T.SOURCE_MODEL_URI),
        "source_registry_version": tags.get(T.SOURCE_REGISTRY),
    }


def _json_or_none(value: str | None) -> Any:
    if not value:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return {"error": "unreadable"}


def _num(value: str) -> float | str:
    try:
        return float(value)
    except ValueError:
        return value


def _summary(mv: ModelVersion) -> dict[str, Any]:
    tags = dict(mv.tags or {})
    return {
        "model": mv.name,
        "version": str(mv.version),
        "status": tags.get(T.APPROVAL_STATUS),
        "run_id": tags.get(T.RUN_ID) or mv.run_id,
        "dataset_digest": tags.get(T.DATASET_DIGEST),
        "dag_id": tags.get(T.AIRFLOW_DAG_ID),
        "dag_run_id": tags.get(T.AIRFLOW_RUN_ID),
        "dag_run_url": tags.get(T.AIRFLOW_RUN_URL),
    }


def _search(client: MlflowClient, filter_string: str) -> list[dict[str, Any]]:
    hits = client.search_model_versions(filter_string, max_results=1000)
    return [_summary(mv) for mv in sorted(hits, key=lambda m: (m.name, int(m.version)))]


def versions_by_dataset(client: MlflowClient, digest: str, name: str | None = None) -> list[dict[str, Any]]:
    """Every version (of ``name``, or of any model) whose training data had content digest ``digest``."""
    filt = f"tags.`{T.DATASET_DIGEST}` = '{_q(digest)}'"
    if name:
        filt = f"name = '{_q(name)}' AND {filt}"
    return _search(client, filt)


def versions_by_dag_run(client: MlflowClient, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    """Every version registered by Airflow DAG run ``run_id`` of ``dag_id``."""
    return _search(
        client, f"tags.`{T.AIRFLOW_DAG_ID}` = '{_q(dag_id)}' AND tags.`{T.AIRFLOW_RUN_ID}` = '{_q(run_id)}'"
    )


# --- time travel -----------------------------------------------------------------------------------

MAX_AT_CHARS = 64
_EPOCH_MS = re.compile(r"\d{1,16}")
AT_FORMATS = (
    "an ISO-8601 time (2026-12-01T14:30:00Z, 2026-12-01T15:30:00+01:00, or 2026-12-01 14:30, which "
    "without a zone means UTC) or epoch milliseconds (1796135400000)"
)


def parse_at(value: Any, *, field: str = "at") -> int:
    """A moment as epoch milliseconds (UTC); ParameterError naming ``field`` and the value otherwise.

    Accepts an ISO-8601 string (a trailing ``Z`` or an offset; **no zone means UTC**, never the machine's
    local zone, so the answer does not depend on where the command runs), a timezone-aware or naive (UTC)
    ``datetime``, or epoch milliseconds as an int or a string of digits.
    """
    if isinstance(value, bool):
        raise ParameterError(f"{field}: {value!r} is not a time; give {AT_FORMATS}")
    if isinstance(value, int):
        ms = value
    elif isinstance(value, datetime):
        ms = round((value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp() * 1000)
    elif isinstance(value, str):
        text = value.strip()
        if not text or len(text) > MAX_AT_CHARS:
            raise ParameterError(f"{field}: {value[:100]!r} is not a time; give {AT_FORMATS}")
        if _EPOCH_MS.fullmatch(text):
            ms = int(text)
        else:
            try:
                moment = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1] in "Zz" else text)
                if moment.tzinfo is None:
                    moment = moment.replace(tzinfo=UTC)
                ms = round(moment.timestamp() * 1000)
            except (ValueError, OverflowError, OSError):
                raise ParameterError(f"{field}: {text!r} is not a time; give {AT_FORMATS}") from None
    else:
        raise ParameterError(f"{field}: {value!r} ({type(value).__name__}) is not a time; give {AT_FORMATS}")
    if ms < 0:
        raise ParameterError(f"{field}: {value!r} is before 1970; give {AT_FORMATS}")
    try:
        alias_history.iso_ms(ms)
    except (ValueError, OverflowError, OSError):
        raise ParameterError(f"{field}: {value!r} is out of range; give {AT_FORMATS}") from None
    return ms


def aliases_at(client: MlflowClient, name: str, at: Any, *, field: str = "at") -> dict[str, Any]:
    """Which version held each governed alias of ``name`` at ``at``, with the entry that put it there.

    ``at`` is anything ``parse_at`` takes (``field`` names it in errors). The answer per alias is
    ``{version, entry, next, unrecorded}``:
    ``entry`` is the last committed history entry of the alias at or before ``at`` (None: saga had not
    set it yet; ``version`` None: unset), ``next`` the entry after it. ``unrecorded`` is None, or says why
    the registry may have differed at that moment: the next entry found the alias on another version than
    the history recorded (moved outside saga at some time between the two entries), or, with no later
    entry, the registry holds another version now (moved outside saga after the last entry). Costs one
    read of the model and two indexed searches per alias, however long the history.

    ParameterError for a malformed time; RegistryError for an unknown model, a time before the model was
    created, or a time in the future (the history cannot know it yet).
    """
    at_ms = parse_at(at, field=field)
    state = alias_history.read_state(client, name)
    at_iso = alias_history.iso_ms(at_ms)
    created = alias_history.iso_ms(state.created_ms)
    if at_ms < state.created_ms:
        hint = ""
        if isinstance(at, int | str) and str(at).strip().isdigit() and at_ms < 10**11:
            hint = (
                f"; {str(at).strip()} was read as epoch milliseconds ({at_iso}): as epoch seconds it would "
                f"be {str(at).strip()}000"
            )
        raise RegistryError(
            f"Registered model {name!r} did not exist at {at_iso}: it was created at {created}{hint}"
        )
    now = alias_history.now_ms()
    if at_ms > now:
        raise RegistryError(
            f"at {at_iso} is in the future (now {alias_history.iso_ms(now)}): the history of model "
            f"{name!r} can only answer for past moments"
        )
    out: dict[str, Any] = {}
    current: list[alias_history.UnrecordedAlias] | None = None
    for alias in alias_history.ALIASES:
        entry = alias_history.entry_at(client, state, alias, at_ms)
        nxt = alias_history.entry_after(client, state, alias, at_ms)
        version = None if entry is None or entry.get("to") is None else str(entry["to"])
        unrecorded = None
        if nxt is not None:
            found = None if nxt.get("from") is None else str(nxt["from"])
            if found != version:
                unrecorded = (
                    f"entry #{nxt['seq']} ({nxt['at']}) found @{alias} on {_v(found)}, not "
                    f"{_v(version)}: it was moved outside saga at an unrecorded time between "
                    f"{entry['at'] if entry else 'the model creation'} and {nxt['at']}"
                )
        else:
            if current is None:
                current = alias_history.unrecorded_in(client, state)
            moved = next((u for u in current if u.alias == alias), None)
            if moved is not None:
                unrecorded = (
                    f"the registry now has @{alias} on {_v(moved.registry)}, moved outside saga at an "
                    f"unrecorded time after "
                    f"{entry['at'] if entry else 'the model creation'}"
                )
        out[alias] = {"version": version, "entry": entry, "next": nxt, "unrecorded": unrecorded}
    return {
        "model": name,
        "at": at_iso,
        "at_ms": at_ms,
        "model_created": created,
        "aliases": out,
        "now": {a: v for a, v in sorted(state.aliases.items()) if a in alias_history.ALIASES},
    }


def _v(version: str | None) -> str:
    return f"v{version}" if version else "no version"


def format_aliases_at(d: dict[str, Any]) -> str:
    """Render ``aliases_at()`` for a human: one line per alias, and the entry that explains it."""
    lines = [f"Model {d['model']} at {d['at']} (model created {d['model_created']}):"]
    for alias, a in d["aliases"].items():
        e = a["entry"]
        held = f"v{a['version']}" if a["version"] else "(no version)"
        if e is None:
            why = "no history entry yet: saga had not set it"
        else:
            why = (
                f"since #{e['seq']} {e['at']} {e['action']} {e.get('from') or '-'} -> {e.get('to') or '-'} "
                f"by {e.get('by')}" + (f": {e['reason']}" if e.get("reason") else "")
            )
        lines.append(f"  @{alias:<10} {held:<12} {why}")
        if a["unrecorded"]:
            lines.append(f"      UNRECORDED CHANGE: {a['unrecorded']}")
    return "\n".join(lines)


# --- human-readable rendering ---------------------------------------------------------------------


def _fmt_kv(d: dict[str, Any], indent: str = "      ") -> list[str]:
    return [f"{indent}{k} = {v}" for k, v in sorted(d.items())]


def format_lineage(d: dict[str, Any]) -> str:
    """Render ``lineage()`` output as the chain a human reads top to bottom."""
    v = d["version"]
    lines = [
        f"Model {v['model']} version {v['version']}"
        + (f"  [{', '.join('@' + a for a in v['aliases'])}]" if v["aliases"] else "")
    ]
    lines.append(
        f"  status: {v['status']}" + (f"  (!! {v['status_error']})" if v.get("status_error") else "")
    )
    lines.append(f"  source: {v['source']}")
    run = d.get("run")
    if run:
        lines.append(
            f"  <- training run {run['id']}"
            + (f" ({run.get('name')}, {run.get('status')})" if "status" in run else "")
        )
        if run.get("error"):
            lines.append(f"      {run['error']}")
        if run.get("params"):
            lines.append("    params:")
            lines += _fmt_kv(run["params"])
        if run.get("metrics"):
            lines.append("    metrics:")
            lines += _fmt_kv(run["metrics"])
    else:
        lines.append("  <- training run: (not recorded)")
    lines += _origin_lines(d)
    ds = d["dataset"]
    lines.append(
        f"  <- dataset digest {ds['digest'] or '?'} from {ds['source'] or '?'}"
        + (f" ({ds['rows']} rows)" if ds.get("rows") else "")
    )
    code = d["code"]
    lines.append(
        f"  <- code: airflow-saga {code['package_version'] or '?'}, "
        f"DAG file sha256 {code['dag_file_hash'] or '?'}"
        + (f", estimator {code['estimator']}" if code.get("estimator") else "")
        + (f", training function {code['training_function']}" if code.get("training_function") else "")
        + (f", flavour {code['flavor']}" if code.get("flavor") else "")
    )
    af = d["airflow"]
    if af.get("dag_id"):
        lines.append(
            f"  <- Airflow DAG run {af['dag_id']} / {af['run_id']} "
            f"(task {af['task_id']}, try {af['try_number']})"
        )
        if af.get("url"):
            lines.append(f"      {af['url']}")
    else:
        lines.append("  <- Airflow DAG run: (not recorded)")
    ev = d["evaluation"]
    lines.append(f"  evaluation report: {ev['report_uri'] or '(none)'}")
    if ev["metrics"]:
        lines += _fmt_kv(ev["metrics"])
    gate = d["gate"]
    lines.append(
        f"  gate: {gate['decision'] or '(none)'}"
        + (f"  report {gate['report_uri']}" if gate.get("report_uri") else "")
    )
    if gate.get("summary"):
        lines.append(f"      {gate['summary']}")
    lines.append("  approvals:")
    for e in d["approvals"] or []:
        if "error" in e:
            lines.append(f"    !! {e['error']}")
            continue
        lines.append(
            f"    {e.get('at')}  {e.get('status'):<22} by {e.get('by')} via {e.get('via')}"
            + (f": {e['comment']}" if e.get("comment") else "")
        )
    if not d["approvals"]:
        lines.append("    (none recorded)")
    lines.append("  promotions:")
    for h in d["promotions"]:
        lines.append(
            f"    #{h['seq']} {h['at']}  {h['action']} {h['alias']}: {h['from']} -> {h['to']} by {h['by']}"
            + (f": {h['reason']}" if h.get("reason") else "")
        )
    if not d["promotions"]:
        lines.append("    (none)")
    if d.get("rollback"):
        rb = d["rollback"]
        lines.append(f"  rolled back at {rb.get('at')} by {rb.get('by')}: {rb.get('reason')}")
    return "\n".join(lines)


def _origin_lines(d: dict[str, Any]) -> list[str]:
    origin = d.get("origin") or {}
    lines = []
    if origin.get("cache_hit"):
        lines.append(
            f"  <- CACHE HIT: this run reused the model; it was fitted by run {origin.get('fitted_by_run')}"
        )
    elif origin.get("kind") == "external":
        lines.append(
            f"  <- external model {origin.get('source_model_uri')}"
            + (
                f" (registry version {origin['source_registry_version']})"
                if origin.get("source_registry_version")
                else ""
            )
            + (f", from run {origin['fitted_by_run']}" if origin.get("fitted_by_run") else ", no source run")
        )
    reuses = d.get("reuses") or {}
    entries, overflow = reuses.get("entries") or [], reuses.get("overflow") or 0
    if entries or overflow:
        lines.append(
            f"  reused by {len(entries) + overflow} later cache hit(s) (same model, no new version"
            + (
                f"; fitted by run {entries[0].get('fitted_by')}"
                if entries and entries[0].get("fitted_by")
                else ""
            )
            + "):"
        )
        for e in entries:
            if "error" in e:
                lines.append(f"    !! {e['error']}")
                continue
            lines.append(
                f"    {e.get('at')}  Airflow {e.get('dag_id') or '?'} / {e.get('dag_run_id') or '?'}"
                f"  (training run {e.get('run_id') or '?'})"
            )
        if overflow:
            last = reuses.get("last") or {}
            lines.append(f"    ... and {overflow} more; latest {last.get('at')} {last.get('dag_run_id')}")
    return lines


def format_history(entries: list[dict[str, Any]]) -> str:
    if not entries:
        return "(no promotion history)"
    return "\n".join(
        f"#{h['seq']:<4} {h['at']}  {h['action']:<8} {h['alias']:<10} "
        f"{h['from'] or '-':>4} -> {h['to'] or '-':<4} "
        f"by {h['by']}: {h.get('reason', '')}"
        for h in entries
    )


def format_gap(g: dict[str, Any]) -> str:
    """One unrecorded change found inside the history (see ``alias_history.history_gaps``)."""
    was = f"v{g['recorded']}" if g.get("recorded") else "no version"
    found = f"v{g['found']}" if g.get("found") else "no version"
    where = (
        f"between #{g['after_seq']} ({g['since']}) and #{g['before_seq']} ({g['until']})"
        if g.get("after_seq")
        else f"before #{g['before_seq']} ({g['until']})"
    )
    return f"UNRECORDED CHANGE: @{g['alias']} went from {was} to {found} outside saga, {where}"


def format_versions(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no matching versions)"
    return "\n".join(
        f"{r['model']} v{r['version']}  {r['status'] or '?':<22} run {r['run_id']}  "
        f"data {r['dataset_digest'] or '?'}  "
        f"dag run {r['dag_id'] or '?'}/{r['dag_run_id'] or '?'}"
        for r in rows
    )


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=str)
