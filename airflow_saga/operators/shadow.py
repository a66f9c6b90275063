"""Shadow comparison (champion vs challenger on the same requests) and its promotion gate.

``ShadowComparisonOperator`` builds the report (from a capture window, or by replaying a dataset through
both models) and logs it, JSON and HTML, on the challenger version's run. ``ShadowGateOperator`` applies the
training gate's condition language to it and does one of three things: promote the challenger to champion
(through ``core.promotion``: only Approved versions, recorded in the promotion history), keep testing, or
remove the challenger alias. Heavy imports happen inside ``execute`` so DAG files parse in milliseconds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from airflow_saga.core.outcomes import ShadowAction
from airflow_saga.links import MlflowModelVersionLink, mlflow_model_version_url, set_mlflow_links
from airflow_saga.openlineage import OpenLineageMixin
from airflow_saga.operators._monitor import as_number, default_capture_dir, monitor_window
from airflow_saga.operators._util import as_dict, saga_errors
from airflow_saga.operators.base import SagaBaseOperator

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.sdk import Context

ACTIONS = tuple(a.value for a in ShadowAction)  # promote, keep, remove
DEFAULT_SHADOW_CONDITIONS = "error_rate <= 0.01 and agreement >= 0.9 and latency_p99_ms <= 2000"


class ShadowComparisonOperator(OpenLineageMixin, SagaBaseOperator):
    """Compare ``champion`` and ``challenger`` of ``model_name`` on a capture window (or a replayed dataset)
    with ``core.shadow.run_comparison``; returns the report (XCom), whose ``candidate``/``champion`` metrics
    (and ``slices``) the gate reads.

    Skips (with the reason) when there is no challenger, or the window holds fewer than ``min_requests``
    mirrored requests. The window is ``start``/``end`` if given, else the run's data interval (scheduled
    runs: a re-run judges the same traffic), else the last ``window_hours``.

    :param replay_dataset: if set, offline mode: score this dataset (path, ``sklearn:<name>`` or ``runs:/``
        URI) with both models instead of reading capture; ``replay_target`` names its label column.
    :param slices: slice definitions (``core.slices``; e.g. ``["region", {"column": "age", "edges": [40]}]``)
        for per-slice agreement and quality; default: those of the challenger's evaluation report.
    :param slice_min_rows: slices with fewer compared rows are reported but not gated on.
    """

    template_fields: Sequence[str] = (
        "model_name",
        "capture_dir",
        "window_hours",
        "start",
        "end",
        "min_requests",
        "replay_dataset",
        "replay_target",
        "regression_tolerance",
        "prediction_task",
        "slices",
        "slice_min_rows",
    )
    ui_color = "#e0f0ff"
    operator_extra_links = (MlflowModelVersionLink(),)

    def __init__(
        self,
        *,
        model_name: str,
        capture_dir: str | None = None,
        window_hours: float | str = 24,
        start: str | None = None,
        end: str | None = None,
        min_requests: int | str = 100,
        prediction_task: str = "auto",
        replay_dataset: str | None = None,
        replay_target: str | None = None,
        regression_tolerance: float | str = 0.01,
        slices: Any = None,
        slice_min_rows: int | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.capture_dir = capture_dir
        self.window_hours = window_hours
        self.start = start
        self.end = end
        self.min_requests = min_requests
        self.prediction_task = prediction_task
        self.replay_dataset = replay_dataset
        self.replay_target = replay_target
        self.regression_tolerance = regression_tolerance
        self.slices = slices
        self.slice_min_rows = slice_min_rows

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_saga.core import shadow

        name = str(self.model_name)
        min_requests = as_number(self.min_requests, "min_requests", integer=True)
        tolerance = as_number(self.regression_tolerance, "regression_tolerance")
        slice_min_rows = as_number(self.slice_min_rows, "slice_min_rows", integer=True, allow_none=True)
        window: dict[str, Any] = {}
        if not self.replay_dataset:
            s, e, source = monitor_window(context, self.start, self.end, self.window_hours)
            window = {"start": s, "end": e, "window_source": source}
        with saga_errors():
            found = shadow.run_comparison(
                self.hook.settings,
                self.hook.client,
                model_name=name,
                capture_root=str(self.capture_dir or default_capture_dir()),
                min_requests=min_requests,
                task=str(self.prediction_task or "auto"),
                regression_tolerance=tolerance,
                replay_dataset=str(self.replay_dataset) if self.replay_dataset else None,
                replay_target=str(self.replay_target) if self.replay_target else None,
                slices=_slices(self.slices),
                slice_min_rows=slice_min_rows,
                **window,
            )
        if found.report is None:
            raise AirflowSkipException(found.skipped)
        report = found.report
        if report.get("challenger_failed"):
            self.log.error("%s", report["challenger_failed"])
        self._log_metrics(report)
        ui = self.hook.settings.browser_url
        set_mlflow_links(
            self, context, model_version_url=mlflow_model_version_url(ui, name, found.challenger_version)
        )
        return report

    def openlineage_io(self, result: Any) -> tuple[list, list]:
        """OpenLineage: the capture window (or replayed data) and both versions in; nothing persisted out."""
        from airflow_saga import openlineage as ol

        if not result:
            return [], []
        ns, name = self.saga_namespace(), str(self.model_name)
        if self.replay_dataset:
            data = ol.source_dataset(str(self.replay_dataset))
        else:
            root = str(self.capture_dir or default_capture_dir())
            data = ol.source_dataset(f"{root.rstrip('/')}/{name}", window=result.get("window"))
        return [
            data,
            ol.model_version_dataset(ns, name, result["champion"]["version"], alias="champion"),
            ol.model_version_dataset(ns, name, result["candidate"]["version"], alias="challenger"),
        ], []

    def _log_metrics(self, report: dict[str, Any]) -> None:
        for side in ("champion", "candidate"):
            m = report[side]["metrics"]
            shown = {k: v for k, v in m.items() if not k.endswith(("_ci_low", "_ci_high"))}
            self.log.info(
                "%s v%s: %s",
                side,
                report[side]["version"],
                ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()),
            )


def _slices(value: Any) -> Any:
    """A rendered Param: '' or [] means the evaluation report's definitions; JSON text is parsed later."""
    if value is None or (isinstance(value, str) and not value.strip()) or value == []:
        return None
    return value


class ShadowGateOperator(OpenLineageMixin, SagaBaseOperator):
    """Decide on a shadow report with the gate's condition language, act, and log the report in MLflow.

    :param conditions: e.g. ``"error_rate <= 0.01 and agreement >= 0.95 and accuracy >= champion.accuracy"``.
    :param on_pass: ``promote`` (challenger -> champion; must be Approved), ``keep`` or ``remove``.
    :param on_fail: ``remove`` (drop the challenger alias), ``keep`` (keep testing) or ``promote``.
    :param fail_on_block: also fail the task when the gate blocks (after acting), so alerting fires.
    """

    template_fields: Sequence[str] = ("model_name", "report", "conditions", "on_pass", "on_fail")
    ui_color = "#ffe9c7"
    operator_extra_links = (MlflowModelVersionLink(),)

    def __init__(
        self,
        *,
        model_name: str,
        report: dict[str, Any] | str,
        conditions: Any = DEFAULT_SHADOW_CONDITIONS,
        on_pass: str = "keep",
        on_fail: str = "keep",
        fail_on_block: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.report = report
        self.conditions = conditions
        self.on_pass = on_pass
        self.on_fail = on_fail
        self.fail_on_block = fail_on_block

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_saga.core import shadow
        from airflow_saga.core.conditions import format_decision

        name = str(self.model_name)
        report = as_dict(self.report, "report")
        if not report:
            raise AirflowSkipException("No shadow report (the comparison was skipped)")
        for field, value in (("on_pass", self.on_pass), ("on_fail", self.on_fail)):
            if value not in ACTIONS:
                raise AirflowFailException(f"{field} must be one of {ACTIONS}, got {value!r}")
        with saga_errors():
            result = shadow.gate(
                self.hook.client,
                name,
                report,
                conditions=self.conditions,
                on_pass=self.on_pass,
                on_fail=self.on_fail,
                where=f"{context['ti'].dag_id} run {context['ti'].run_id}",
                policy=self.saga_policy(name),
            )
        decision, version = result["decision"], result["version"]
        self.log.info("%s", format_decision(decision))
        self.log.info("Shadow report logged on run %s: %s", result["run_id"], result["html_uri"])
        action = result["action"]
        ui = self.hook.settings.browser_url
        set_mlflow_links(self, context, model_version_url=mlflow_model_version_url(ui, name, version))
        context["ti"].xcom_push(key="decision", value=decision)
        if self.fail_on_block and not decision["passed"]:
            raise AirflowFailException(
                f"Shadow gate blocked challenger v{version} ({action}):\n" + format_decision(decision)
            )
        return result

    def openlineage_io(self, result: Any) -> tuple[list, list]:
        """OpenLineage: the challenger version in; the logged shadow report (and the alias it moved) out."""
        from airflow_saga import openlineage as ol

        if not result:
            return [], []
        ns, name = self.saga_namespace(), str(self.model_name)
        outputs = [ol.artifact_dataset(ns, result.get("report_uri"), decision=result.get("action"))]
        outputs += ol.alias_promotion_io(ns, name, result.get("promotion"))[1]
        return [ol.model_version_dataset(ns, name, result["version"])], outputs
