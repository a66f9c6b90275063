"""Registering model versions on the MLflow registry, idempotently, with an approval status.

A retried or re-run register task must find the version it created before instead of creating another:
versions are keyed by their source training run (tag ``saga.lineage.run_id``) and by their underlying model
(tag ``saga.lineage.model_uri``), so a cache hit, which reuses an earlier run's model, returns the version
that model already has and records the reuse in its lineage. MLflow has no atomic "create if absent", so
after creating we search again and, if a concurrent writer won the race, keep the lowest version and delete
ours (see ``register``). Any MLflow model can be registered, trained anywhere: ``resolve_model_uri`` checks
that a ``runs:/``, ``models:/`` or logged-model URI exists and finds the run behind it.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow_saga.core import tags as T
from airflow_saga.core.errors import RegistryError

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion


def utcnow_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _error_code(exc: Exception) -> str | None:
    return getattr(exc, "error_code", None)


def _missing(exc: Exception) -> bool:
    """Whether an MLflow error says the thing asked for does not exist."""
    return _error_code(exc) in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")


def ensure_registered_model(client: MlflowClient, name: str, description: str | None = None) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, description=description)
    except MlflowException as exc:
        if _error_code(exc) != "RESOURCE_ALREADY_EXISTS":
            raise


def get_registered_model(client: MlflowClient, name: str) -> Any:
    """The registered model, or a RegistryError naming it when it does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if _error_code(exc) == "RESOURCE_DOES_NOT_EXIST":
            raise RegistryError(f"Unknown registered model {name!r}") from exc
        raise


def get_version(client: MlflowClient, name: str, version: str | int) -> ModelVersion:
    """A model version, or a RegistryError naming model and version when either is unknown."""
    from mlflow.exceptions import MlflowException

    get_registered_model(client, name)
    try:
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        if _error_code(exc) in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise RegistryError(f"Model {name!r} has no version {version!r}") from exc
        raise


def version_by_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version holding ``alias``, or None when no version holds it."""
    model = get_registered_model(client, name)
    version = (model.aliases or {}).get(alias)
    if version is None:
        return None
    return client.get_model_version(name, str(version))


def find_versions_for_run(client: MlflowClient, name: str, run_id: str) -> list[ModelVersion]:
    hits = client.search_model_versions(f"name='{_q(name)}' and tags.`{T.RUN_ID}`='{_q(run_id)}'")
    return sorted(hits, key=lambda mv: int(mv.version))


def find_versions_for_model(client: MlflowClient, name: str, model_uri: str) -> list[ModelVersion]:
    """Versions of ``name`` whose underlying model is ``model_uri`` (the lineage tag), oldest first."""
    hits = client.search_model_versions(f"name='{_q(name)}' and tags.`{T.MODEL_URI}`='{_q(model_uri)}'")
    return sorted(hits, key=lambda mv: int(mv.version))


def _q(value: str) -> str:
    if "'" in value:
        raise RegistryError(f"Value {value!r} contains a single quote, which registry filters cannot express")
    return value


# ------------------------------------------------------------------------------------ any model URI
@dataclasses.dataclass(frozen=True)
class ResolvedModel:
    """Where a model URI given by a user really points, checked to exist.

    ``model_uri`` is what a version's source becomes (``models:/m-...`` whenever a LoggedModel backs the
    URI, so the same model registered through different URIs is recognised as the same); ``run_id`` is the
    run that produced it, if any; ``registry_version`` is ``"<name>/<version>"`` when the URI named one.
    """

    given_uri: str
    model_uri: str
    run_id: str | None
    model_id: str | None
    registry_version: str | None
    flavor: str | None
    run_tags: dict[str, str]


def resolve_model_uri(client: MlflowClient, uri: str, *, field: str = "model_uri") -> ResolvedModel:
    """Resolve ``runs:/<run>/<path>``, ``models:/<name>/<version>``, ``models:/<name>@<alias>``,
    ``models:/m-<id>`` or a bare ``m-<id>`` (through ``core.scoring.resolve_model``, the one resolver) and
    check that a model is really there; RegistryError naming the URI when it is not."""
    from mlflow.exceptions import MlflowException

    from airflow_saga.core.errors import ModelError
    from airflow_saga.core.scoring import resolve_model

    if not isinstance(uri, str) or not uri.strip():
        raise RegistryError(
            f"{field} is empty; give runs:/<run>/<path>, models:/<name>/<version|@alias> or m-<id>"
        )
    given = uri.strip()
    if not given.startswith(("runs:/", "models:/", "m-")):
        raise RegistryError(
            f"{field} {given!r} is not a model URI; use runs:/<run>/<path>, models:/<name>/<version>, "
            "models:/<name>@<alias>, models:/m-<id> or m-<id>"
        )
    try:
        ref = resolve_model(client, given)
        flavor = None
        if ref.model_id:
            logged = client.get_logged_model(ref.model_id)
            status = str(getattr(logged.status, "name", logged.status) or "")
            if status and "READY" not in status.upper():
                raise RegistryError(f"{field} {given!r}: logged model {ref.model_id} is {status}, not READY")
            if "MLmodel" not in {f.path for f in client.list_logged_model_artifacts(ref.model_id)}:
                raise RegistryError(f"{field} {given!r}: logged model {ref.model_id} has no MLmodel file")
            flavor = getattr(logged, "model_type", None) or None
        run_tags = dict(client.get_run(ref.source_run_id).data.tags) if ref.source_run_id else {}
    except ModelError as exc:
        raise RegistryError(f"{field}: {exc}") from exc
    except MlflowException as exc:
        if _missing(exc):
            raise RegistryError(f"{field} {given!r} does not exist: {exc.message}") from exc
        raise
    return ResolvedModel(
        given_uri=given,
        model_uri=f"models:/{ref.model_id}" if ref.model_id else ref.artifact_uri,
        run_id=ref.source_run_id,
        model_id=ref.model_id,
        registry_version=None
        if ref.registered_name is None
        else f"{ref.registered_name}/{ref.registered_version}",
        flavor=flavor,
        run_tags=run_tags,
    )


# ------------------------------------------------------------------------------------ registration
@dataclasses.dataclass(frozen=True)
class Registration:
    """``version``; ``created`` when this call made it; ``reused`` when it already held the same model."""

    version: ModelVersion
    created: bool
    reused: bool


def register_version(client: MlflowClient, name: str, **kwargs: Any) -> tuple[ModelVersion, bool]:
    """``register(client, name, **kwargs)`` as ``(version, created)``, the shape older callers use."""
    reg = register(client, name, **kwargs)
    return reg.version, reg.created


def register(
    client: MlflowClient,
    name: str,
    *,
    model_uri: str,
    run_id: str | None,
    tags: dict[str, str],
    approval_status: str = T.PENDING,
    approved_by: str = "airflow-saga",
    via: str = "api",
    description: str | None = None,
) -> Registration:
    """Register ``model_uri`` (from ``run_id``) under ``name``, unless it is already there.

    Idempotent: a retry (same run, same Airflow DAG run) returns the version it made and changes nothing.
    One model, one version: when a version already holds the same underlying model and came from another
    Airflow run (a cache hit reused its model, or the same URI is registered again later), that version is
    returned with ``reused=True``, the new run is recorded in its lineage (``record_reuse``), and nothing is
    created, so a cache hit never becomes a second version, nor gets promoted over itself.
    ``approval_status`` is the initial status (PendingManualApproval, or Approved when the pipeline
    auto-approves).
    """
    import json

    if approval_status not in (T.PENDING, T.APPROVED):
        raise RegistryError(
            f"Initial approval status for {name!r} must be {T.PENDING} or {T.APPROVED}, "
            f"got {approval_status!r}"
        )
    ensure_registered_model(client, name)
    existing = find_versions_for_run(client, name, run_id) if run_id else []
    if existing and _same_airflow_run(existing[0], tags):
        return Registration(existing[0], created=False, reused=False)  # a retry of the same registration
    existing = existing or find_versions_for_model(client, name, model_uri)
    if existing:
        record_reuse(client, existing[0], run_id=run_id, tags=tags)
        return Registration(client.get_model_version(name, str(existing[0].version)), False, True)

    now = utcnow_iso()
    entry = {
        "status": approval_status,
        "by": approved_by,
        "at": now,
        "via": via,
        "comment": "registered" if approval_status == T.PENDING else "auto-approved: gate passed",
    }
    all_tags = {
        **{k: str(v) for k, v in tags.items() if v is not None},
        T.MODEL_URI: model_uri,
        T.APPROVAL_STATUS: approval_status,
        T.APPROVAL_BY: approved_by,
        T.APPROVAL_AT: now,
        T.APPROVAL_VIA: via,
        T.APPROVAL_COMMENT: entry["comment"],
        T.APPROVAL_LOG: json.dumps([entry]),
    }
    if run_id:
        all_tags[T.RUN_ID] = run_id
    if description is None:  # the human summary, in the same request (see core.descriptions)
        from types import SimpleNamespace

        from airflow_saga.core.descriptions import render

        description = render(SimpleNamespace(tags=all_tags, version="", run_id=run_id, aliases=[]))
    run_link = all_tags.get(T.AIRFLOW_RUN_URL)
    model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
    mv = client.create_model_version(
        name,
        model_uri,
        run_id=run_id,
        tags=all_tags,
        run_link=run_link,
        description=description,
        model_id=model_id,
    )
    # Close the check-then-create race: if two writers both created, the lowest version wins.
    winners = find_versions_for_model(client, name, model_uri)
    if winners and str(winners[0].version) != str(mv.version):
        client.delete_model_version(name, str(mv.version))
        winner = winners[0]
        retry = (winner.tags or {}).get(T.RUN_ID) == run_id and _same_airflow_run(winner, tags)
        if not retry:
            record_reuse(client, winner, run_id=run_id, tags=tags)
        return Registration(client.get_model_version(name, str(winner.version)), False, not retry)
    return Registration(mv, created=True, reused=False)


def _same_airflow_run(mv: ModelVersion, tags: dict[str, str]) -> bool:
    """Whether ``mv`` was registered by the Airflow DAG run these tags describe (or neither names one)."""
    have = dict(mv.tags or {})
    return all(have.get(k) == tags.get(k) for k in (T.AIRFLOW_DAG_ID, T.AIRFLOW_RUN_ID))


def reuse_entries(mv: ModelVersion) -> list[dict[str, Any]]:
    """The recorded reuses of a version (oldest first); see ``record_reuse``."""
    import json

    out = []
    for key, value in (mv.tags or {}).items():
        if key.startswith(T.REUSE_PREFIX):
            try:
                entry = json.loads(value)
            except ValueError:
                entry = {"error": f"unreadable reuse entry {key}"}
            out.append(entry if isinstance(entry, dict) else {"error": f"unreadable reuse entry {key}"})
    return sorted(out, key=lambda e: str(e.get("at", "")))


def record_reuse(client: MlflowClient, mv: ModelVersion, *, run_id: str | None, tags: dict[str, str]) -> bool:
    """Append "this later run reused the version's model" to its lineage; False when already recorded.

    One small tag per reusing run (``saga.reuse.<run_id>``), so a retry writes the same key again instead
    of a duplicate and two concurrent writers never overwrite each other; at most ``REUSE_CAP`` of them,
    after which only a count and the latest entry are kept, so the version's tags stay bounded.
    """
    import hashlib
    import json

    current = dict(mv.tags or {})
    ident = (
        run_id
        or hashlib.sha256(f"{tags.get(T.AIRFLOW_DAG_ID)}/{tags.get(T.AIRFLOW_RUN_ID)}".encode()).hexdigest()[
            :16
        ]
    )
    key = f"{T.REUSE_PREFIX}{ident}"
    if key in current:
        return False
    entry = {
        "at": utcnow_iso(),
        "run_id": run_id,
        "fitted_by": tags.get(T.CACHE_SOURCE_RUN) or current.get(T.RUN_ID),
        "cache_hit": tags.get(T.CACHE_HIT) == "true",
        "dag_id": tags.get(T.AIRFLOW_DAG_ID),
        "dag_run_id": tags.get(T.AIRFLOW_RUN_ID),
        "task_id": tags.get(T.AIRFLOW_TASK_ID),
        "run_url": tags.get(T.AIRFLOW_RUN_URL),
    }
    text = json.dumps({k: v for k, v in entry.items() if v is not None}, sort_keys=True)[:4000]
    name, version = mv.name, str(mv.version)
    if sum(1 for k in current if k.startswith(T.REUSE_PREFIX)) < T.REUSE_CAP:
        client.set_model_version_tag(name, version, key, text)
    else:
        if current.get(T.REUSE_LAST) == text:
            return False
        count = int(current.get(T.REUSE_OVERFLOW, "0") or 0) + 1
        client.set_model_version_tag(name, version, T.REUSE_OVERFLOW, str(count))
        client.set_model_version_tag(name, version, T.REUSE_LAST, text)
    return True
