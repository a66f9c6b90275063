"""Names of every MLflow tag and alias airflow-saga reads or writes.

These are a public interface (README "Registry data model"): dashboards, scripts and later releases depend
on them. Change a name only together with a migration note.
"""

from __future__ import annotations

from typing import Final

PREFIX: Final = "saga."

# --- aliases -------------------------------------------------------------------------------------
CHAMPION: Final = "champion"  # what production serves
CHALLENGER: Final = "challenger"  # the candidate under shadow test

# --- approval (model version tags) ---------------------------------------------------------------
APPROVAL_STATUS: Final = "saga.approval.status"
APPROVAL_BY: Final = "saga.approval.by"
APPROVAL_AT: Final = "saga.approval.at"
APPROVAL_COMMENT: Final = "saga.approval.comment"
APPROVAL_VIA: Final = "saga.approval.via"  # airflow | mlflow | api
APPROVAL_LOG: Final = "saga.approval.log"  # JSON list of every transition, oldest first

PENDING: Final = "PendingManualApproval"
APPROVED: Final = "Approved"
REJECTED: Final = "Rejected"
APPROVAL_STATUSES: Final = (PENDING, APPROVED, REJECTED)

# --- lineage (model version tags, mirrored on the training run) ----------------------------------
RUN_ID: Final = "saga.lineage.run_id"
MODEL_URI: Final = "saga.lineage.model_uri"
DATASET_DIGEST: Final = "saga.lineage.dataset_digest"
DATASET_SOURCE: Final = "saga.lineage.dataset_source"
DATASET_ROWS: Final = "saga.lineage.dataset_rows"
PACKAGE_VERSION: Final = "saga.lineage.package_version"
DAG_FILE_HASH: Final = "saga.lineage.dag_file_hash"
ESTIMATOR: Final = "saga.lineage.estimator"
ORIGIN: Final = "saga.lineage.origin"  # trained | cache | external: how the version's model came to be
MODEL_FLAVOR: Final = "saga.lineage.model_flavor"  # sklearn | xgboost | lightgbm | pyfunc | ...
MODEL_CLASS: Final = "saga.lineage.model_class"
TRAINING_FUNCTION: Final = "saga.lineage.training_function"  # module:qualname of a user training function
FUNCTION_HASH: Final = "saga.lineage.function_sha256"  # of its source code (also in the cache key)
SOURCE_MODEL_URI: Final = "saga.lineage.source_model_uri"  # an external URI as the user gave it
SOURCE_REGISTRY: Final = "saga.lineage.source_registry_version"  # "<model>/<version>" it was copied from
AIRFLOW_DAG_ID: Final = "saga.airflow.dag_id"
AIRFLOW_RUN_ID: Final = "saga.airflow.run_id"
AIRFLOW_TASK_ID: Final = "saga.airflow.task_id"
AIRFLOW_TRY_NUMBER: Final = "saga.airflow.try_number"
AIRFLOW_RUN_URL: Final = "saga.airflow.run_url"  # link back from MLflow to the Airflow DAG run
AIRFLOW_TRIGGERED_BY: Final = "saga.airflow.triggered_by"  # Airflow user who triggered the run (four-eyes)

# --- evaluation and gate -------------------------------------------------------------------------
METRIC_PREFIX: Final = "saga.metric."  # saga.metric.<name> = candidate metric value on the version
EVAL_REPORT_URI: Final = "saga.eval.report_uri"
EVAL_CANDIDATE_URI: Final = "saga.eval.candidate_uri"  # on an evaluation run of its own (external model)
EVAL_CANDIDATE_SOURCE_RUN: Final = "saga.eval.candidate_source_run_id"  # the run that produced that model
EVAL_CHAMPION_VERSION: Final = "saga.eval.champion_version"  # the champion it was evaluated against
EVAL_CHAMPION_METRIC_PREFIX: Final = "saga.eval.champion_metric."  # its metric values in that evaluation
GATE_DECISION: Final = "saga.gate.decision"  # passed | blocked
GATE_REPORT_URI: Final = "saga.gate.report_uri"
GATE_SUMMARY: Final = "saga.gate.summary"

# --- caching (run tags) --------------------------------------------------------------------------
CACHE_KEY: Final = "saga.cache_key"
CACHE_HIT: Final = "saga.cache.hit"  # "true" on a run that reused another run's model
CACHE_SOURCE_RUN: Final = "saga.cache.source_run_id"
# A version reused by a later cache hit (or a second registration of the same logged model): one tag per
# reusing training run, ``saga.reuse.<run_id>`` = JSON {at, dag_id, dag_run_id, ...}, up to REUSE_CAP;
# past the cap only the overflow count and the latest reuse are kept.
REUSE_PREFIX: Final = "saga.reuse."
REUSE_OVERFLOW: Final = "saga.reuse_overflow.count"
REUSE_LAST: Final = "saga.reuse_overflow.last"
REUSE_CAP: Final = 50

# --- rollback / promotion (version tags) ---------------------------------------------------------
ROLLED_BACK_REASON: Final = "saga.rollback.reason"
ROLLED_BACK_AT: Final = "saga.rollback.at"
ROLLED_BACK_BY: Final = "saga.rollback.by"

# --- promotion history: one MLflow run per entry, see core.alias_history ------------------------
# On the registered model, one small tag: the head (last committed sequence number, the history
# experiment, the entry time and the aliases it left). The entries are runs in experiment
# ``saga-history/<model>``, each with these run tags (its start time is the entry's time).
HISTORY_HEAD: Final = "saga.history.head"
HISTORY_EXPERIMENT_PREFIX: Final = "saga-history/"
HISTORY_SEQ: Final = "saga.history.seq"
HISTORY_AT: Final = "saga.history.at"
HISTORY_BY: Final = "saga.history.by"
HISTORY_ACTION: Final = "saga.history.action"  # promote | rollback | demote
HISTORY_ALIAS: Final = "saga.history.alias"
HISTORY_FROM: Final = "saga.history.from"  # absent when no version held the alias
HISTORY_TO: Final = "saga.history.to"  # absent for demote
HISTORY_REASON: Final = "saga.history.reason"
HISTORY_MODEL: Final = "saga.history.model"
HISTORY_TXN: Final = "saga.history.txn"  # the unit of work that wrote the entry
HISTORY_REQUEST: Final = "saga.history.request"  # idempotency key of a retried request (rollback task)
HISTORY_MIGRATED: Final = "saga.history.migrated"  # "true" on entries copied from the old tag format
# Before 0.2 each entry was a registered-model tag ``saga.history.NNNNNN`` holding the entry as JSON; such
# tags are migrated to runs (and deleted) by the next governance change of the model.
LEGACY_HISTORY_PREFIX: Final = "saga.history."

# --- baselines (issue 5) ------------------------------------------------------------------------
BASELINE_URI: Final = "saga.baseline.uri"
BASELINE_STATS_URI: Final = "saga.baseline.stats_uri"

# --- online monitoring (issue 5): version tags written by shadow comparison and drift monitoring -----
SHADOW_REPORT_URI: Final = "saga.shadow.report_uri"  # JSON report of the latest shadow comparison
SHADOW_HTML_URI: Final = "saga.shadow.html_uri"
SHADOW_DECISION: Final = "saga.shadow.decision"  # promote | keep | remove (what the gate decided)
SHADOW_AT: Final = "saga.shadow.at"
SHADOW_PASSED: Final = "saga.shadow.passed"  # true | false: the latest shadow comparison's verdict
DRIFT_RUN_ID: Final = "saga.drift.last_run_id"  # the MLflow monitoring run of the latest drift check
DRIFT_VERDICT: Final = "saga.drift.last_verdict"  # drift | degraded | no_drift (MonitorOutcome)
DRIFT_AT: Final = "saga.drift.last_at"
DRIFT_WINDOW_END: Final = "saga.drift.last_window_end"  # the latest judged window's end (ISO-8601 UTC)
MONITOR_MODEL: Final = "saga.monitor.model_name"  # run tags of monitoring runs
MONITOR_VERSION: Final = "saga.monitor.model_version"
MONITOR_KIND: Final = "saga.monitor.kind"  # drift | shadow

# --- run kinds -----------------------------------------------------------------------------------
RUN_KIND: Final = "saga.run.kind"  # train | evaluate | monitor | shadow | history


def metric_tag(name: str) -> str:
    return f"{METRIC_PREFIX}{name}"
