"""A model with a demo-like story, made by the same core calls the operators make, on a real MLflow server.

The Models view tests and the browser check need a model whose registry holds everything the view shows:
versions trained on real data with lineage tags, evaluation reports against the champion, gate decisions,
approvals by several people (one rejection), promotions, shadow comparisons, drift checks and a rollback.
Running the DAGs for that through a scheduler takes minutes; calling the operators' core functions in the
same order takes seconds and writes exactly what the operators write.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from airflow_saga.core import approval, promotion
from airflow_saga.core import tags as T

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from airflow_saga.core.mlflow_client import MlflowSettings

CONDITIONS = "accuracy >= 0.85 and improves(f1, min_absolute=-0.05)"


def _airflow(dag_run: str, task: str = "register") -> dict[str, str]:
    return {
        "dag_id": "saga_training_pipeline",
        "run_id": dag_run,
        "task_id": task,
        "try_number": "1",
        "run_url": f"http://127.0.0.1:8080/dags/saga_training_pipeline/runs/{dag_run}",
    }


def train_and_register(
    settings: MlflowSettings,
    client: MlflowClient,
    name: str,
    *,
    hyperparameters: dict[str, Any],
    dag_run: str,
    conditions: str = CONDITIONS,
) -> tuple[str, dict[str, Any]]:
    """train, evaluate, gate, register, as ``saga_training_pipeline`` does; returns (version, decision)."""
    from airflow_saga.core import conditions as C
    from airflow_saga.core.evaluation import evaluate, log_json_artifact
    from airflow_saga.core.lineage import lineage_tags
    from airflow_saga.core.registry import register_version
    from airflow_saga.core.training import TrainSpec, train

    facts = _airflow(dag_run)
    spec = TrainSpec(
        model_name=name,
        estimator="sklearn.tree.DecisionTreeClassifier",  # fits in milliseconds, unlike unscaled logreg
        data_source="sklearn:breast_cancer",
        target="target",
        hyperparameters=hyperparameters,
    )
    training = train(client, spec, airflow=facts)
    report = evaluate(
        settings,
        client,
        model_name=name,
        candidate_uri=training["model_uri"],
        candidate_run_id=training["run_id"],
        holdout=training["holdout_uri"],
        target=training["target"],
        task=training["task"],
        dataset=training.get("dataset"),
    )
    decision = C.evaluate(C.parse_condition(conditions), report)
    decision["report_uri"] = report.get("report_uri")
    decision["decision_uri"] = log_json_artifact(client, training["run_id"], decision, "gate/decision.json")
    tags = lineage_tags(
        run_id=training["run_id"],
        model_uri=training["model_uri"],
        dataset=training.get("dataset"),
        airflow=facts,
        estimator=training.get("estimator"),
        metrics=(report.get("candidate") or {}).get("metrics"),
        gate={**decision, "report_uri": decision["decision_uri"]},
        eval_report_uri=report.get("report_uri"),
        champion=report.get("champion"),
    )
    if training.get("reference_uri"):
        tags[T.BASELINE_URI] = training["reference_uri"]
    if training.get("reference_stats_uri"):
        tags[T.BASELINE_STATS_URI] = training["reference_stats_uri"]
    mv, _ = register_version(
        client,
        name,
        model_uri=training["model_uri"],
        run_id=training["run_id"],
        tags=tags,
        via="airflow",
    )
    return str(mv.version), decision


def shadow_compare(settings: MlflowSettings, client: MlflowClient, name: str, action: str = "keep") -> dict:
    """Replay breast_cancer through champion and challenger, gate the report, log it on the challenger."""
    from airflow_saga.core import shadow
    from airflow_saga.core.conditions import evaluate
    from airflow_saga.core.monitoring import log_shadow_report

    current = promotion.aliases(client, name)
    cv, hv = current[T.CHAMPION], current[T.CHALLENGER]
    table, labels = shadow.replay(
        settings,
        model_name=name,
        dataset="sklearn:breast_cancer",
        target="target",
        champion_uri=f"models:/{name}/{cv}",
        challenger_uri=f"models:/{name}/{hv}",
    )
    report = shadow.compare(
        table,
        model_name=name,
        labels=labels,
        window={"replay_dataset": "sklearn:breast_cancer"},
        mode="replay",
    )
    report["champion"]["version"], report["candidate"]["version"] = cv, hv
    decision = evaluate("error_rate <= 0.01 and agreement >= 0.9", report)
    decision["action"] = action
    logged = log_shadow_report(client, name, hv, report, decision)
    return {"report": report, "decision": decision, **logged}


def drift_check(
    settings: MlflowSettings, client: MlflowClient, name: str, *, shift: float, seed: int
) -> dict:
    """Drift of a breast_cancer window (``shift`` sigmas on 20 of 30 features) vs the champion's baseline."""
    import numpy as np

    from airflow_saga.core.baselines import resolve_baseline
    from airflow_saga.core.drift import compute_drift
    from airflow_saga.core.monitoring import log_drift_run

    version = promotion.aliases(client, name)[T.CHAMPION]
    baseline = resolve_baseline(settings, client, name, version)
    ref = baseline.reference
    rng = np.random.default_rng(seed)
    current = ref.sample(n=400, replace=True, random_state=seed).reset_index(drop=True)
    cols = list(current.columns)[:20]
    current[cols] = current[cols] + shift * ref[cols].std().to_numpy() + rng.normal(0, 1e-6, (400, len(cols)))
    result, _ = compute_drift(baseline, current, model_name=name, window={"rows": 400}, with_report=False)
    result["quality"] = None
    logged = log_drift_run(client, result, None)
    return {"result": result, **logged}


def seed_story(settings: MlflowSettings, client: MlflowClient, name: str) -> dict[str, Any]:
    """Three versions and everything that happens to them; returns what was done, for assertions.

    v1: gate passed, approved by alice, champion. v2: approved by bob, challenger, two shadow comparisons,
    promoted to champion. Two drift checks of v2 (the second drifts), then a rollback to v1 with a reason.
    v3: gate passed, rejected by carol.
    """
    v1, d1 = train_and_register(settings, client, name, hyperparameters={"max_depth": 3}, dag_run="manual__1")
    approval.set_status(
        client, name, v1, T.APPROVED, by="alice", comment="first model, looks good", via="airflow"
    )
    promotion.promote(client, name, v1, T.CHAMPION, by="alice", reason="first champion")
    v2, d2 = train_and_register(settings, client, name, hyperparameters={"max_depth": 4}, dag_run="manual__2")
    approval.set_status(client, name, v2, T.APPROVED, by="bob", comment="better f1 on holdout", via="api")
    promotion.promote(client, name, v2, T.CHALLENGER, by="bob", reason="shadow test the new candidate")
    s1 = shadow_compare(settings, client, name, action="keep")
    time.sleep(1.1)  # shadow reports are stamped to the second
    s2 = shadow_compare(settings, client, name, action="promote")
    promotion.promote(
        client, name, v2, T.CHAMPION, by="airflow-saga shadow gate", reason="shadow gate passed"
    )
    drift = [
        drift_check(settings, client, name, shift=0.0, seed=1),
        drift_check(settings, client, name, shift=1.5, seed=2),
    ]
    promotion.rollback(client, name, by="carol", reason="drift alert after the promotion")
    v3, d3 = train_and_register(settings, client, name, hyperparameters={"max_depth": 2}, dag_run="manual__3")
    approval.set_status(client, name, v3, T.REJECTED, by="carol", comment="not convincing", via="api")
    return {
        "versions": {"v1": v1, "v2": v2, "v3": v3},
        "decisions": {v1: d1, v2: d2, v3: d3},
        "shadow": [s1, s2],
        "drift": drift,
    }
