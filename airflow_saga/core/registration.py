"""Register a candidate with its whole lineage: from a training summary, or from any MLflow model URI.

The use case behind ``RegisterModelOperator``, callable from a notebook. A training summary (whoever
produced it: ``TrainModelOperator``, ``@task.saga_train``) carries the run, dataset and cache facts; a
model URI trained anywhere (``runs:/``, ``models:/<name>/<v>``, ``models:/<name>@alias``, ``m-...``) is
checked to exist first, and its lineage says where it came from (``origin=external``, the URI as given,
the source run and registry version if any, and the source run's dataset tags when it has them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_saga.core import tags as T
from airflow_saga.core.errors import RegistryError
from airflow_saga.core.lineage import lineage_tags
from airflow_saga.core.registry import Registration, register, resolve_model_uri

if TYPE_CHECKING:
    from mlflow import MlflowClient

# Facts a saga training run records that an external registration copies onto the version when present.
_RUN_LINEAGE = (T.DATASET_DIGEST, T.DATASET_SOURCE, T.DATASET_ROWS, T.ESTIMATOR, T.BASELINE_URI)


def register_candidate(
    client: MlflowClient,
    name: str,
    *,
    training: dict[str, Any] | None = None,
    model_uri: str | None = None,
    report: dict[str, Any] | None = None,
    decision: dict[str, Any] | None = None,
    airflow: dict[str, str] | None = None,
    auto_approve: bool = False,
    via: str = "api",
    policy: Any = None,
) -> dict[str, Any]:
    """Register the candidate; return ``{name, version, created, reused, approval_status, model_uri, run_id,
    origin}``. Exactly one of ``training`` (a training summary) and ``model_uri`` is needed; a URI that
    does not exist raises ``RegistryError`` and registers nothing."""
    report, decision = report or {}, decision or {}
    if not name or not str(name).strip():
        raise RegistryError("model_name is empty")
    if training and model_uri is not None:
        raise RegistryError("give either training (a training summary) or model_uri, not both")
    if not training and model_uri is None:
        raise RegistryError("nothing to register: give training (a training summary) or model_uri")
    extra: dict[str, str | None] = {}
    if training:
        for key in ("run_id", "model_uri"):
            if not training.get(key):
                raise RegistryError(f"training summary lacks {key!r}; pass the train task's return value")
        run_id, uri = str(training["run_id"]), str(training["model_uri"])
        origin = training.get("origin") or ("cache" if training.get("cache_hit") else "trained")
        dataset, estimator, flavor = (
            training.get("dataset"),
            training.get("estimator"),
            training.get("flavor"),
        )
        extra[T.BASELINE_URI] = training.get("reference_uri")
        extra[T.BASELINE_STATS_URI] = training.get("reference_stats_uri")
        extra[T.TRAINING_FUNCTION] = training.get("training_function")
        extra[T.MODEL_CLASS] = training.get("model_class")
        if training.get("cache_hit"):
            extra[T.CACHE_HIT] = "true"
            extra[T.CACHE_SOURCE_RUN] = str(training.get("cache_source_run_id"))
    else:
        resolved = resolve_model_uri(client, str(model_uri))
        run_id, uri, origin, flavor = resolved.run_id, resolved.model_uri, "external", resolved.flavor
        rt = resolved.run_tags
        dataset = None
        estimator = rt.get(T.ESTIMATOR)
        extra |= {k: rt[k] for k in _RUN_LINEAGE if rt.get(k)}
        extra[T.SOURCE_MODEL_URI] = resolved.given_uri
        extra[T.SOURCE_REGISTRY] = resolved.registry_version
    tags = lineage_tags(
        run_id=run_id,
        model_uri=uri,
        dataset=dataset,
        airflow=airflow,
        estimator=estimator,
        metrics=(report.get("candidate") or {}).get("metrics"),
        gate={**decision, "report_uri": decision.get("decision_uri")} if decision else None,
        eval_report_uri=report.get("report_uri"),
        origin=origin,
        flavor=flavor,
        extra=extra,
        champion=report.get("champion"),
    )
    approver = "airflow-saga (auto-approve: gate passed)"
    if auto_approve:  # the policy decides whether a gate may approve; refused before anything is written
        from airflow_saga.core.policy import policy_for

        check = getattr(policy if policy is not None else policy_for(name), "check_auto_approve", None)
        if check is not None:
            check(approver)
    reg: Registration = register(
        client,
        name,
        model_uri=uri,
        run_id=run_id,
        tags=tags,
        approval_status=T.APPROVED if auto_approve else T.PENDING,
        approved_by=approver if auto_approve else "airflow-saga",
        via=via,
    )
    mv = reg.version
    vtags = dict(mv.tags or {})
    return {
        "name": name,
        "version": str(mv.version),
        "created": reg.created,
        "reused": reg.reused,
        "approval_status": vtags.get(T.APPROVAL_STATUS),
        "model_uri": uri,
        "run_id": run_id,
        "origin": origin,
        "registered_run_id": vtags.get(T.RUN_ID) or mv.run_id,
    }
