"""Registering model versions on the MLflow registry, idempotently, with an approval status.

A retried or re-run register task must find the version it created before instead of creating another:
versions are keyed by their source training run (tag ``saga.lineage.run_id``). MLflow has no atomic
"create if absent", so after creating we search again and, if a concurrent writer won the race, keep the
lowest version and delete ours (see ``register_version``).
"""

from __future__ import annotations

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
    hits = client.search_model_versions(f"name='{name}' and tags.`{T.RUN_ID}`='{run_id}'")
    return sorted(hits, key=lambda mv: int(mv.version))


def register_version(
    client: MlflowClient,
    name: str,
    *,
    model_uri: str,
    run_id: str,
    tags: dict[str, str],
    approval_status: str = T.PENDING,
    approved_by: str = "airflow-saga",
    via: str = "api",
    description: str | None = None,
) -> tuple[ModelVersion, bool]:
    """Register ``model_uri`` from ``run_id`` under ``name``; return ``(version, created)``.

    Idempotent per (model, run): a second call returns the existing version with ``created=False`` and
    changes nothing. ``approval_status`` is the initial status (PendingManualApproval, or Approved when the
    pipeline auto-approves); the transition is recorded in the version's approval log.
    """
    import json

    if approval_status not in (T.PENDING, T.APPROVED):
        raise RegistryError(
            f"Initial approval status for {name!r} must be {T.PENDING} or {T.APPROVED}, "
            f"got {approval_status!r}"
        )
    ensure_registered_model(client, name)
    existing = find_versions_for_run(client, name, run_id)
    if existing:
        return existing[0], False

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
        T.RUN_ID: run_id,
        T.MODEL_URI: model_uri,
        T.APPROVAL_STATUS: approval_status,
        T.APPROVAL_BY: approved_by,
        T.APPROVAL_AT: now,
        T.APPROVAL_VIA: via,
        T.APPROVAL_COMMENT: entry["comment"],
        T.APPROVAL_LOG: json.dumps([entry]),
    }
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
    winners = find_versions_for_run(client, name, run_id)
    if winners and str(winners[0].version) != str(mv.version):
        client.delete_model_version(name, str(mv.version))
        return winners[0], False
    return mv, True
