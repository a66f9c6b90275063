"""The story of a registered model as plain dicts: what the Models view, the CLI and tests read.

Why a module of its own: the Airflow UI view must render fast for a model with hundreds of versions and
thousands of history entries, and every number it shows must be what the registry recorded. So the model
page is built from exactly three registry reads, whatever the number of versions: the registered model
(aliases, description), one ``search_model_versions`` (every version with its tags: approval log, gate
decision, metrics, shadow and drift verdicts, Airflow run) and the promotion history through
``core.promotion``. Per-version detail that lives in artifacts and runs (the evaluation report with the
champion's metrics, the gate's decision record, every shadow report, every drift check) is read only for
the one version a person opens (``version_story``), and each read is bounded.

Nothing here moves an alias or writes a tag: this is a reader. Errors keep the ``core.errors`` families:
an unknown model or version is a ``RegistryError`` (the view answers 404), a value the registry cannot
express in a filter is a ``RegistryError`` too (400), an unreachable server is ``MlflowUnreachableError``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow_saga.core import approval, promotion
from airflow_saga.core import tags as T
from airflow_saga.core.errors import RegistryError
from airflow_saga.core.locking import LOCK_PREFIX
from airflow_saga.core.monitoring import MONITORING_EXPERIMENT
from airflow_saga.core.registry import get_registered_model, get_version

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

SCHEMA = "saga.model_story/v1"
HISTORY_VIEW = 1000  # newest history entries one model page draws; older ones page with ``before=``
MAX_SHADOW_REPORTS = 30
MAX_DRIFT_RUNS = 200
MAX_ARTIFACT_BYTES = 5 * 1024 * 1024
MAX_NAME = 256


# --- small helpers ----------------------------------------------------------------------------------


def iso_from_ms(ms: int | None) -> str | None:
    if ms is None:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_iso(value: Any) -> dt.datetime | None:
    """An aware UTC datetime from the ISO-8601 forms saga writes (``Z`` or ``+00:00``); None if unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def check_name(name: str) -> str:
    """Refuse names the registry cannot hold or a filter cannot quote, naming the value."""
    if not isinstance(name, str) or not name.strip():
        raise RegistryError("A registered model name is required")
    if len(name) > MAX_NAME:
        raise RegistryError(f"Model name is {len(name)} characters long; at most {MAX_NAME} are allowed")
    bad = [c for c in ("/", ":", "'", "\x00") if c in name]
    if bad or any(ord(c) < 32 for c in name):
        raise RegistryError(f"Invalid model name {name!r}: it contains {bad or 'control characters'}")
    return name


def check_version(version: str | int) -> str:
    text = str(version).strip()
    if not text.isdigit() or len(text) > 12 or int(text) < 1:
        raise RegistryError(f"Invalid model version {version!r}: versions are positive whole numbers")
    return str(int(text))


def mlflow_links(
    ui_base: str | None, name: str, version: str | None = None, run_id: str | None = None
) -> dict:
    """MLflow UI pages (hash routes of MLflow 3's single-page app); empty when there is no browser URL."""
    if not ui_base:
        return {}
    base = ui_base.rstrip("/")
    out = {"model": f"{base}/#/models/{quote(name, safe='')}"}
    if version is not None:
        out["version"] = f"{out['model']}/versions/{version}"
    if run_id:
        out["run"] = f"{base}/#/runs/{quote(run_id, safe='')}"
    return out


def _num(value: str) -> float | str:
    try:
        return float(value)
    except ValueError:
        return value


# --- one version's row, from its tags alone ---------------------------------------------------------


def version_row(
    mv: ModelVersion, model_aliases: dict[str, str], ui_base: str | None = None
) -> dict[str, Any]:
    """Everything the model page shows about a version, read from the version object (no extra call)."""
    tags = dict(mv.tags or {})
    version = str(mv.version)
    row: dict[str, Any] = {"version": version, "created": mv.creation_timestamp}
    row["created_at"] = iso_from_ms(mv.creation_timestamp)
    row["aliases"] = sorted(a for a, v in model_aliases.items() if v == version)
    try:
        row["status"] = approval.get_status(mv)
    except RegistryError as exc:
        row["status"], row["status_error"] = tags.get(T.APPROVAL_STATUS), str(exc)
    try:
        row["approvals"] = approval.approval_log(mv)
    except RegistryError as exc:
        row["approvals"], row["approvals_error"] = [], str(exc)
    last = row["approvals"][-1] if row["approvals"] else {}
    if last.get("status") != row["status"]:  # decided by hand in MLflow and not yet recorded by saga
        last = {
            "status": row["status"],
            "by": tags.get(T.APPROVAL_BY),
            "at": tags.get(T.APPROVAL_AT),
            "comment": tags.get(T.APPROVAL_COMMENT),
            "via": tags.get(T.APPROVAL_VIA) or "mlflow",
            "unrecorded": True,
        }
    row["approval"] = {
        k: last.get(k) for k in ("status", "by", "at", "comment", "via", "unrecorded") if k in last
    }
    run_id = tags.get(T.RUN_ID) or mv.run_id
    row["run_id"] = run_id
    row["source"] = mv.source
    row["dataset"] = {
        "digest": tags.get(T.DATASET_DIGEST),
        "source": tags.get(T.DATASET_SOURCE),
        "rows": tags.get(T.DATASET_ROWS),
    }
    row["estimator"] = tags.get(T.ESTIMATOR)
    row["airflow"] = {
        "dag_id": tags.get(T.AIRFLOW_DAG_ID),
        "run_id": tags.get(T.AIRFLOW_RUN_ID),
        "task_id": tags.get(T.AIRFLOW_TASK_ID),
        "url": tags.get(T.AIRFLOW_RUN_URL),
    }
    row["metrics"] = {
        k[len(T.METRIC_PREFIX) :]: _num(v) for k, v in sorted(tags.items()) if k.startswith(T.METRIC_PREFIX)
    }
    row["gate"] = {
        "decision": tags.get(T.GATE_DECISION),
        "summary": tags.get(T.GATE_SUMMARY),
        "report_uri": tags.get(T.GATE_REPORT_URI),
    }
    row["evaluation_report_uri"] = tags.get(T.EVAL_REPORT_URI)
    row["shadow"] = {
        "decision": tags.get(T.SHADOW_DECISION),
        "at": tags.get(T.SHADOW_AT),
        "report_uri": tags.get(T.SHADOW_REPORT_URI),
        "html_uri": tags.get(T.SHADOW_HTML_URI),
    }
    row["drift"] = {
        "verdict": tags.get(T.DRIFT_VERDICT),
        "at": tags.get(T.DRIFT_AT),
        "run_id": tags.get(T.DRIFT_RUN_ID),
    }
    rollback = {
        k.rsplit(".", 1)[-1]: tags[k]
        for k in (T.ROLLED_BACK_REASON, T.ROLLED_BACK_AT, T.ROLLED_BACK_BY)
        if k in tags
    }
    row["rollback"] = rollback or None
    row["links"] = {
        **{f"mlflow_{k}": v for k, v in mlflow_links(ui_base, mv.name, version, run_id).items()},
        "airflow_run": row["airflow"]["url"],
    }
    return row


# --- the alias timeline -----------------------------------------------------------------------------


def timeline(
    history: list[dict[str, Any]],
    current_aliases: dict[str, str],
    *,
    start: str | None = None,
    end: str | None = None,
    complete: bool = True,
) -> dict[str, Any]:
    """Which version held each alias over time, from the promotion history, checked against the registry.

    Each lane is a list of holdings ``{version, from, to, from_seq, to_seq, by, reason}`` (``to`` None while
    it still holds). ``unrecorded`` lists aliases whose holder in the registry is not the one the history
    ends with: the alias was moved outside saga, so the history alone cannot explain what is served.
    ``complete=False`` means ``history`` is the newest page only: a lane then starts with the holder the
    page's first entry of that alias replaced, and aliases the page never mentions are not judged.
    """
    end = end or _now_iso()
    lanes: dict[str, list[dict[str, Any]]] = {a: [] for a in promotion.ALIASES}
    for alias in current_aliases:
        lanes.setdefault(alias, [])
    page_start = history[0].get("at") if history else None
    for entry in history:
        alias = entry.get("alias")
        if not alias:
            continue
        lane = lanes.setdefault(str(alias), [])
        if not lane and not complete and entry.get("from") is not None:
            lane.append(
                {
                    "version": str(entry["from"]),
                    "from": page_start,
                    "to": None,
                    "from_seq": None,
                    "to_seq": None,
                    "action": None,
                    "by": None,
                    "reason": "held before the entries shown",
                }
            )
        if lane and lane[-1]["to"] is None:
            lane[-1]["to"], lane[-1]["to_seq"] = entry.get("at"), entry.get("seq")
        to = entry.get("to")
        if to is not None:
            lane.append(
                {
                    "version": str(to),
                    "from": entry.get("at"),
                    "to": None,
                    "from_seq": entry.get("seq"),
                    "to_seq": None,
                    "action": entry.get("action"),
                    "by": entry.get("by"),
                    "reason": entry.get("reason"),
                }
            )
    unrecorded = []
    mentioned = {str(e.get("alias")) for e in history}
    for alias, lane in lanes.items():
        if not complete and alias not in mentioned:
            continue  # its last change is older than this page: nothing here to judge it by
        held = lane[-1]["version"] if lane and lane[-1]["to"] is None else None
        actual = current_aliases.get(alias)
        if held != actual:
            unrecorded.append({"alias": alias, "registry": actual, "history": held})
    known = [t for t in (parse_iso(start), *(parse_iso(e.get("at")) for e in history[:1])) if t]
    return {
        "start": min(known).isoformat(timespec="seconds").replace("+00:00", "Z") if known else end,
        "end": end,
        "lanes": lanes,
        "events": [
            {k: e.get(k) for k in ("seq", "at", "action", "alias", "from", "to", "by", "reason")}
            for e in history
        ],
        "unrecorded": unrecorded,
        "complete": complete,
    }


def _judged(
    client: MlflowClient, name: str, tl: dict[str, Any], history: list[dict[str, Any]], complete: bool
) -> dict[str, Any]:
    """The timeline with hand-made alias moves judged against the whole history, not only this page."""
    from airflow_saga.core import alias_history as H

    tl["unrecorded"] = [
        {"alias": u.alias, "registry": u.registry, "history": u.recorded, "seq": u.seq}
        for u in H.unrecorded_aliases(client, name)
    ]
    tl["gaps"] = H.history_gaps(history, complete=complete)
    return tl


# --- the model page ---------------------------------------------------------------------------------


def list_models(client: MlflowClient, *, max_results: int = 1000) -> list[dict[str, Any]]:
    """Registered models (governance locks excluded), newest change first, with their alias holders."""
    out = []
    token = None
    while True:
        page = client.search_registered_models(max_results=min(max_results, 1000), page_token=token)
        for rm in page:
            if rm.name.startswith(LOCK_PREFIX):
                continue
            out.append(
                {
                    "name": rm.name,
                    "description": rm.description or "",
                    "created_at": iso_from_ms(rm.creation_timestamp),
                    "updated_at": iso_from_ms(rm.last_updated_timestamp),
                    "updated": rm.last_updated_timestamp,
                    "aliases": {k: str(v) for k, v in sorted((rm.aliases or {}).items())},
                }
            )
        token = page.token
        if not token or len(out) >= max_results:
            break
    return sorted(out, key=lambda m: m["updated"] or 0, reverse=True)[:max_results]


def search_versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    """Every version of ``name`` (all pages), newest first."""
    filt = f"name='{check_name(name)}'"
    versions: list[ModelVersion] = []
    token = None
    while True:
        page = client.search_model_versions(filt, max_results=10_000, page_token=token)
        versions.extend(page)
        token = page.token
        if not token:
            break
    return sorted(versions, key=lambda mv: int(mv.version), reverse=True)


def model_story(
    client: MlflowClient,
    name: str,
    *,
    ui_base: str | None = None,
    history_limit: int = HISTORY_VIEW,
    before: int | None = None,
    at: Any = None,
) -> dict[str, Any]:
    """The model page: versions with approvals, gate, metrics and monitors; history; alias timeline.

    ``at`` (a time ``lineage_query.parse_at`` reads) adds ``at``: which version held each alias then,
    and the entry that put it there (``lineage_query.aliases_at``). ``timeline.unrecorded`` is judged by
    ``alias_history.unrecorded_aliases`` (each alias against its last history entry, whatever page is
    shown); ``timeline.gaps`` lists unrecorded changes inside the page's entries.

    The history is the newest ``history_limit`` entries (with ``seq < before``), read through the paged
    reader, so the cost does not grow with the length of the history; ``history_page.older`` is the
    ``before=`` of the previous page (None when this page starts at the first entry).
    ``RegistryError`` for an unknown model, an invalid name or page.
    """
    check_name(name)
    answer_at = None
    if at is not None and at != "":
        from airflow_saga.core.lineage_query import aliases_at

        answer_at = aliases_at(client, name, at)  # bad time / before creation: refused before the reads
    rm = get_registered_model(client, name)
    current = {k: str(v) for k, v in (rm.aliases or {}).items()}
    versions = [version_row(mv, current, ui_base) for mv in search_versions(client, name)]
    page = promotion.history_page(client, name, limit=history_limit, before=before)
    history = page.entries
    complete = page.older is None
    created = iso_from_ms(rm.creation_timestamp)
    metric_names = sorted({m for v in versions for m, x in v["metrics"].items() if isinstance(x, float)})
    return {
        "schema": SCHEMA,
        "model": {
            "name": rm.name,
            "description": rm.description or "",
            "created_at": created,
            "updated_at": iso_from_ms(rm.last_updated_timestamp),
            "aliases": dict(sorted(current.items())),
            "links": {f"mlflow_{k}": v for k, v in mlflow_links(ui_base, rm.name).items()},
        },
        "versions": versions,
        "history": history,
        "history_page": {"head": page.head, "older": page.older, "before": before, "limit": history_limit},
        "timeline": _judged(
            client,
            name,
            timeline(history, current, start=created if complete else None, complete=complete),
            history,
            complete,
        ),
        "at": answer_at,
        "metric_names": metric_names,
        "counts": {
            "versions": len(versions),
            "history": page.head,
            **{s: sum(1 for v in versions if v["status"] == s) for s in (T.PENDING, T.APPROVED, T.REJECTED)},
        },
    }


# --- one version in depth ---------------------------------------------------------------------------


def _runs_uri(uri: str | None) -> tuple[str, str] | None:
    if not uri or not uri.startswith("runs:/"):
        return None
    run_id, _, path = uri[len("runs:/") :].partition("/")
    return (run_id, path) if run_id and path else None


def read_json_artifact(client: MlflowClient, uri: str | None) -> dict[str, Any] | None:
    """A JSON artifact named by ``runs:/<run>/<path>``; ``{"error": ...}`` when it cannot be read.

    Bounded: artifacts over ``MAX_ARTIFACT_BYTES`` are not parsed (a view must not stall on a huge file).
    """
    if not uri:
        return None
    parsed = _runs_uri(uri)
    if parsed is None:
        return {"error": f"not a runs:/ artifact URI: {uri}"}
    from mlflow.exceptions import MlflowException

    run_id, path = parsed
    try:
        with tempfile.TemporaryDirectory(prefix="saga-view-") as tmp:
            local = Path(client.download_artifacts(run_id, path, tmp))
            size = local.stat().st_size
            if size > MAX_ARTIFACT_BYTES:
                return {"error": f"{uri} is {size} bytes; the view reads at most {MAX_ARTIFACT_BYTES}"}
            data = json.loads(local.read_text(encoding="utf-8"))
    except (MlflowException, OSError, ValueError) as exc:
        return {"error": f"{uri} could not be read: {type(exc).__name__}: {exc}"}
    return data if isinstance(data, dict) else {"error": f"{uri} is not a JSON object"}


def _shadow_reports(client: MlflowClient, run_id: str | None, version: str) -> list[dict[str, Any]]:
    """Every shadow comparison logged on the version's run (``shadow/<stamp>/report.json``), oldest first."""
    if not run_id:
        return []
    from mlflow.exceptions import MlflowException

    try:
        stamps = sorted(f.path for f in client.list_artifacts(run_id, "shadow") if f.is_dir)
    except MlflowException as exc:
        return [{"error": f"shadow reports of run {run_id} could not be listed: {exc}"}]
    out = []
    for stamp in stamps[-MAX_SHADOW_REPORTS:]:
        report = read_json_artifact(client, f"runs:/{run_id}/{stamp}/report.json") or {}
        if "error" in report:
            out.append({"stamp": stamp, "error": report["error"]})
            continue
        cand = report.get("candidate") or {}
        if str(cand.get("version")) != version:
            continue  # the same run may back another version's report
        comp = report.get("comparison") or {}
        decision = report.get("decision") or {}
        out.append(
            {
                "stamp": stamp.rsplit("/", 1)[-1],
                "at": _stamp_iso(stamp.rsplit("/", 1)[-1]),
                "mode": report.get("mode"),
                "window": report.get("window"),
                "agreement": comp.get("agreement"),
                "compared_rows": comp.get("compared_rows"),
                "champion": {
                    "version": (report.get("champion") or {}).get("version"),
                    "metrics": (report.get("champion") or {}).get("metrics") or {},
                },
                "candidate": {"version": cand.get("version"), "metrics": cand.get("metrics") or {}},
                "decision": {
                    "action": decision.get("action"),
                    "passed": decision.get("passed"),
                    "expression": decision.get("expression"),
                    "reasons": decision.get("reasons") or [],
                },
                "report_uri": f"runs:/{run_id}/{stamp}/report.json",
            }
        )
    return out


def _stamp_iso(stamp: str) -> str | None:
    try:
        return (
            dt.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ")
            .replace(tzinfo=dt.UTC)
            .isoformat(timespec="seconds")
            .replace("+00:00", "Z")
        )
    except ValueError:
        return None


def _drift_runs(client: MlflowClient, name: str, version: str) -> list[dict[str, Any]]:
    """Every drift check of the version (monitoring runs tagged with model and version), oldest first."""
    exp = client.get_experiment_by_name(MONITORING_EXPERIMENT)
    if exp is None:
        return []
    filt = (
        f"tags.`{T.MONITOR_KIND}` = 'drift' and tags.`{T.MONITOR_MODEL}` = '{check_name(name)}' "
        f"and tags.`{T.MONITOR_VERSION}` = '{version}'"
    )
    runs = client.search_runs(
        [exp.experiment_id], filt, max_results=MAX_DRIFT_RUNS, order_by=["attributes.start_time DESC"]
    )
    out = []
    for run in reversed(list(runs)):
        metrics = dict(run.data.metrics)
        prefix = "drift.score."
        out.append(
            {
                "run_id": run.info.run_id,
                "experiment_id": run.info.experiment_id,
                "at": iso_from_ms(run.info.start_time),
                "verdict": run.data.tags.get("saga.drift.verdict"),
                "share": metrics.get("drift.share"),
                "drifted": metrics.get("drift.count"),
                "rows": metrics.get("window.rows"),
                "scores": {k[len(prefix) :]: v for k, v in sorted(metrics.items()) if k.startswith(prefix)},
                "quality": {k[len("quality.") :]: v for k, v in metrics.items() if k.startswith("quality.")},
            }
        )
    return out


def version_story(
    client: MlflowClient, name: str, version: str | int, *, ui_base: str | None = None
) -> dict[str, Any]:
    """One version in depth: its row, the evaluation against the champion, the gate's checks, every shadow
    comparison and every drift check. ``RegistryError`` for an unknown model or version."""
    check_name(name)
    version = check_version(version)
    mv = get_version(client, name, version)
    current = promotion.aliases(client, name)
    row = version_row(mv, current, ui_base)
    report = read_json_artifact(client, row["evaluation_report_uri"])
    evaluation = None
    if report is not None:
        if "error" in report:
            evaluation = {"error": report["error"]}
        else:
            champ = report.get("champion") or None
            evaluation = {
                "candidate": (report.get("candidate") or {}).get("metrics") or {},
                "champion": (champ or {}).get("metrics") if champ else None,
                "champion_version": (champ or {}).get("version") if champ else None,
                "dataset": report.get("dataset"),
                "report_uri": row["evaluation_report_uri"],
            }
    gate = read_json_artifact(client, row["gate"]["report_uri"])
    drift = _drift_runs(client, name, version)
    for d in drift:
        d["links"] = mlflow_links(ui_base, name, run_id=d["run_id"])
    drift_latest = None
    if drift:  # the per-feature methods, thresholds and verdicts of the latest check (one artifact)
        result = read_json_artifact(client, f"runs:/{drift[-1]['run_id']}/drift/result.json") or {}
        drift_latest = {
            "run_id": drift[-1]["run_id"],
            "error": result.get("error"),
            "drifted_features": list(result.get("drifted_features") or []),
            "features": {
                str(f): {k: r.get(k) for k in ("method", "score", "threshold", "drifted", "type")}
                for f, r in (result.get("features") or {}).items()
                if isinstance(r, dict)
            },
        }
        from airflow_saga.core.monitoring import metric_key  # the names scores are logged under

        by_key = {metric_key(f): f for f in drift_latest["features"]}
        for d in drift:
            d["scores"] = {by_key.get(k, k): v for k, v in d["scores"].items()}
    promotions = promotion.entries_for_version(client, name, version)
    return {
        "schema": SCHEMA,
        "model": name,
        "aliases": current,
        "version": row,
        "evaluation": evaluation,
        "gate": gate,
        "shadow": _shadow_reports(client, row["run_id"], version),
        "drift": drift,
        "drift_latest": drift_latest,
        "promotions": promotions,
    }
