"""Where monitoring results go: MLflow (runs, artifacts, version tags), HTML reports, Evidently workspace.

Shadow reports are logged on the run that produced the challenger version, because that is the page a
reviewer opens for the version; drift results get their own monitoring run (one per check) in a
monitoring experiment, linked both ways with the version (run tags name the version; version tags name
the latest run and verdict), so MLflow's run list of that experiment is the drift history.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import itertools
import json
import math
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_saga.core import tags as T

if TYPE_CHECKING:
    from mlflow import MlflowClient

MONITORING_EXPERIMENT = "saga-monitoring"


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _log_text(client: MlflowClient, run_id: str, text: str, artifact_file: str) -> str:
    path = Path(artifact_file)
    with tempfile.TemporaryDirectory(prefix="saga-html-") as tmp:
        local = Path(tmp) / path.name
        local.write_text(text, encoding="utf-8")
        client.log_artifact(
            run_id, str(local), artifact_path=str(path.parent) if str(path.parent) != "." else None
        )
    return f"runs:/{run_id}/{artifact_file}"


# --- shadow ---------------------------------------------------------------------------------------------


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _shadow_plots(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(title, data-URI) pairs; empty when matplotlib is unavailable."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is an evidently dependency here
        return []
    out = []
    comp = report.get("comparison", {})
    cm = comp.get("confusion")
    if cm:
        fig, ax = plt.subplots(figsize=(4.5, 4))
        ax.imshow(cm["matrix"], cmap="Blues")
        ax.set_xticks(range(len(cm["labels"])), cm["labels"], rotation=45)
        ax.set_yticks(range(len(cm["labels"])), cm["labels"])
        ax.set_xlabel("challenger label")
        ax.set_ylabel("champion label")
        for i, row in enumerate(cm["matrix"]):
            for j, v in enumerate(row):
                ax.text(j, i, str(v), ha="center", va="center", fontsize=8)
        out.append(("Champion vs challenger labels", _png(fig)))
    diffs = comp.get("differences")
    if diffs:
        fig, ax = plt.subplots(figsize=(6, 3))
        edges, counts = diffs["histogram"]["edges"], diffs["histogram"]["counts"]
        ax.bar(edges[:-1], counts, width=[b - a for a, b in itertools.pairwise(edges)], align="edge")
        ax.set_xlabel("challenger - champion prediction")
        ax.set_ylabel("rows")
        out.append(("Distribution of prediction differences", _png(fig)))
    names = ["latency_p50_ms", "latency_p90_ms", "latency_p99_ms"]
    c, h = report["champion"]["metrics"], report["candidate"]["metrics"]
    if all(k in c and k in h for k in names):
        fig, ax = plt.subplots(figsize=(6, 3))
        xs = range(len(names))
        ax.bar([x - 0.2 for x in xs], [c[k] for k in names], width=0.4, label="champion")
        ax.bar([x + 0.2 for x in xs], [h[k] for k in names], width=0.4, label="challenger")
        ax.set_xticks(list(xs), ["p50", "p90", "p99"])
        ax.set_ylabel("ms per request")
        ax.legend()
        out.append(("Latency", _png(fig)))
    pairs = [k for k in ("accuracy", "f1", "mae", "rmse") if k in c and k in h]
    if pairs:
        fig, ax = plt.subplots(figsize=(6, 3))
        for i, (side, m) in enumerate((("champion", c), ("challenger", h))):
            ys = [m[k] for k in pairs]
            lo = [m[k] - m.get(f"{k}_ci_low", m[k]) for k in pairs]
            hi = [m.get(f"{k}_ci_high", m[k]) - m[k] for k in pairs]
            ax.errorbar(
                [x + (i - 0.5) * 0.2 for x in range(len(pairs))],
                ys,
                yerr=[lo, hi],
                fmt="o",
                capsize=4,
                label=side,
            )
        ax.set_xticks(range(len(pairs)), pairs)
        ax.legend()
        out.append(("Quality on labelled rows (95% intervals)", _png(fig)))
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:.4g}"
    return html.escape(str(v))


def shadow_html(report: dict[str, Any], decision: dict[str, Any] | None = None) -> str:
    """A self-contained page: verdict, side-by-side metrics, plots, errors, and the decision's reasons."""
    c, h = report["champion"], report["candidate"]
    keys = sorted(set(c["metrics"]) | set(h["metrics"]))
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{_fmt(c['metrics'].get(k, '-'))}</td>"
        f"<td>{_fmt(h['metrics'].get(k, '-'))}</td></tr>"
        for k in keys
    )
    plots = "".join(f"<h3>{html.escape(t)}</h3><img src='{uri}'/>" for t, uri in _shadow_plots(report))
    errors = report.get("comparison", {}).get("errors", {}).get("top") or {}
    err_html = "".join(f"<li>{html.escape(k)}: {v}</li>" for k, v in errors.items()) or "<li>none</li>"
    verdict = ""
    if decision:
        reasons = "".join(f"<li>{html.escape(str(r))}</li>" for r in decision.get("reasons", []))
        verdict = (
            f"<h2>Decision: {html.escape(str(decision.get('action', '')))} "
            f"(gate {'passed' if decision.get('passed') else 'not passed'})</h2>"
            f"<p><code>{html.escape(str(decision.get('expression', '')))}</code></p><ul>{reasons}</ul>"
        )
    window = html.escape(json.dumps(report.get("window", {}), default=str))
    title = f"{html.escape(report['model_name'])}"
    versions = f"champion v{_fmt(c.get('version'))} vs challenger v{_fmt(h.get('version'))}"
    comp = report.get("comparison", {})
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:1000px}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child{text-align:left}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Shadow test {title}</title>"
        f"<style>{style}</style></head><body>\n<h1>Shadow test: {title} {versions}</h1>\n"
        f"<p>Mode: {html.escape(report.get('mode', ''))}. Window: {window}. "
        f"Task: {html.escape(str(report.get('task', '')))}. "
        f"Agreement: <b>{_fmt(comp.get('agreement', float('nan')))}</b> over "
        f"{comp.get('compared_rows', 0)} rows.</p>\n"
        f"{verdict}\n<h2>Metrics</h2><table><tr><th>metric</th><th>champion</th><th>challenger</th></tr>{rows}"
        f"</table>\n<h2>Challenger errors</h2><ul>{err_html}</ul>\n{plots}\n</body></html>"
    )


def log_shadow_report(
    client: MlflowClient, model_name: str, version: str, report: dict[str, Any], decision: dict[str, Any]
) -> dict[str, str]:
    """Log JSON + HTML on the challenger version's run and tag the version with links and the decision."""
    from airflow_saga.core.evaluation import log_json_artifact

    mv = client.get_model_version(model_name, str(version))
    run_id = mv.run_id
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    base = f"shadow/{stamp}"
    payload = {**report, "decision": decision}
    json_uri = log_json_artifact(client, run_id, payload, f"{base}/report.json")
    html_uri = _log_text(client, run_id, shadow_html(report, decision), f"{base}/report.html")
    for key, value in (
        (T.SHADOW_REPORT_URI, json_uri),
        (T.SHADOW_HTML_URI, html_uri),
        (T.SHADOW_DECISION, str(decision.get("action"))),
        (T.SHADOW_PASSED, "true" if decision.get("passed") else "false"),
        (T.SHADOW_AT, now_iso()),
    ):
        client.set_model_version_tag(model_name, str(version), key, value)
    from airflow_saga.core.descriptions import refresh

    refresh(client, model_name, str(version))  # the version's MLflow description shows the result
    return {"run_id": run_id, "report_uri": json_uri, "html_uri": html_uri}


# --- drift ----------------------------------------------------------------------------------------------


def log_drift_run(
    client: MlflowClient,
    result: dict[str, Any],
    snapshot: Any,
    *,
    experiment: str = MONITORING_EXPERIMENT,
    airflow: dict[str, str] | None = None,
    quality_snapshot: Any = None,
    estimation_plot: bytes | None = None,
) -> dict[str, str]:
    """One MLflow run per drift check: metrics, per-feature table, Evidently HTML; tags link the version.

    Model quality on labelled rows (``result["quality"]``) adds ``quality.*`` metrics and
    ``drift/quality.html`` (Evidently's classification or regression preset); estimated quality
    (``result["estimated_quality"]``) adds ``estimated.<metric>`` (+ ``_ci_low``/``_ci_high``) metrics and
    ``drift/estimated_quality.html`` with the plot of estimated and realised quality over the window."""
    from mlflow.entities import Metric

    from airflow_saga.core.evaluation import log_json_artifact
    from airflow_saga.core.training import get_or_create_experiment

    name, version = str(result["model_name"]), str(result["version"])
    exp_id = get_or_create_experiment(client, experiment)
    tags = {
        T.RUN_KIND: "monitor",
        T.MONITOR_KIND: "drift",
        T.MONITOR_MODEL: name,
        T.MONITOR_VERSION: version,
        "saga.drift.verdict": "drift" if result["dataset_drift"] else "no_drift",
        "saga.drift.outcome": str(
            result.get("outcome") or ("drift" if result["dataset_drift"] else "no_drift")
        ),
        **{f"saga.airflow.{k}": v for k, v in (airflow or {}).items() if v},
    }
    from airflow_saga.core.runs import create_run, ended_on_error

    run = create_run(client, exp_id, run_name=f"drift-{name}-v{version}-{now_iso()}"[:250], tags=tags)
    run_id = run.info.run_id
    with ended_on_error(client, run_id):  # FAILED on error, KILLED when interrupted
        now = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
        metrics = [
            Metric("drift.share", float(result["drift_share"]), now, 0),
            Metric("drift.count", float(result["drifted_count"]), now, 0),
            Metric("drift.detected", 1.0 if result["dataset_drift"] else 0.0, now, 0),
            Metric("window.rows", float(result["window"].get("rows", 0)), now, 0),
        ]
        for feat, r in result["features"].items():
            if isinstance(r.get("score"), float) and math.isfinite(r["score"]):
                metrics.append(Metric(f"drift.score.{metric_key(feat)}", r["score"], now, 0))
        quality = result.get("quality") or {}
        if quality:
            metrics.append(Metric("quality.labelled_rows", float(quality.get("labelled_rows", 0)), now, 0))
        for key, value in (quality.get("metrics") or {}).items():
            if isinstance(value, float) and math.isfinite(value):
                metrics.append(Metric(f"quality.{metric_key(key)}", value, now, 0))
        estimated = result.get("estimated_quality") or {}
        for key, m in (estimated.get("metrics") or {}).items():
            for suffix, field in (("", "estimate"), ("_ci_low", "ci_low"), ("_ci_high", "ci_high")):
                value = m.get(field)
                if isinstance(value, float) and math.isfinite(value):
                    metrics.append(Metric(f"estimated.{metric_key(key)}{suffix}", value, now, 0))
        metrics.append(
            Metric("alert.raised", 1.0 if (result.get("alert") or {}).get("raised") else 0.0, now, 0)
        )
        client.log_batch(run_id, metrics=metrics)
        out = {"run_id": run_id, "experiment_id": exp_id}
        out["result_uri"] = log_json_artifact(client, run_id, result, "drift/result.json")
        if snapshot is not None:
            with tempfile.TemporaryDirectory(prefix="saga-drift-") as tmp:
                path = Path(tmp) / "report.html"
                snapshot.save_html(str(path))
                client.log_artifact(run_id, str(path), artifact_path="drift")
            out["html_uri"] = f"runs:/{run_id}/drift/report.html"
        if quality_snapshot is not None:
            with tempfile.TemporaryDirectory(prefix="saga-quality-") as tmp:
                path = Path(tmp) / "quality.html"
                quality_snapshot.save_html(str(path))
                client.log_artifact(run_id, str(path), artifact_path="drift")
            out["quality_html_uri"] = f"runs:/{run_id}/drift/quality.html"
        if estimated.get("status") == "computed":
            page = estimation_html(result, estimation_plot)
            out["estimation_html_uri"] = _log_text(client, run_id, page, "drift/estimated_quality.html")
        if estimation_plot:
            with tempfile.TemporaryDirectory(prefix="saga-estimate-") as tmp:
                path = Path(tmp) / "estimated_quality.png"
                path.write_bytes(estimation_plot)
                client.log_artifact(run_id, str(path), artifact_path="drift")
            out["estimation_plot_uri"] = f"runs:/{run_id}/drift/estimated_quality.png"
        client.set_terminated(run_id, "FINISHED")
    window_end = str((result.get("window") or {}).get("end") or "")
    if _is_latest_window(client, name, version, window_end):
        for key, value in (
            (T.DRIFT_RUN_ID, run_id),
            (T.DRIFT_VERDICT, tags["saga.drift.outcome"]),
            (T.DRIFT_AT, now_iso()),
            (T.DRIFT_WINDOW_END, window_end),
        ):
            if value:
                client.set_model_version_tag(name, version, key, value)
    else:
        out["version_tags"] = "kept: a later window was already judged"
    return out


def _is_latest_window(client: MlflowClient, name: str, version: str, window_end: str) -> bool:
    """Whether a check of the window ending at ``window_end`` may set the version's ``last_*`` drift tags:
    a re-run of a past interval (a backfill, a cleared task) is logged as its own run but does not replace
    the verdict of a later window."""
    previous = (client.get_model_version(name, version).tags or {}).get(T.DRIFT_WINDOW_END)
    if not previous or not window_end:
        return True
    try:
        return dt.datetime.fromisoformat(window_end) >= dt.datetime.fromisoformat(previous)
    except (TypeError, ValueError):  # a tag edited by hand: the newest check wins
        return True


def estimation_html(result: dict[str, Any], plot: bytes | None) -> str:
    """Estimated (and, where labels exist, realised) quality over the window: plot and table."""
    est = result.get("estimated_quality") or {}
    names = list(est.get("metrics") or {})
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)

    def cells(metrics: dict[str, Any]) -> str:
        out = []
        for n in names:
            m = metrics.get(n) or {}
            text = f"{_fmt(m.get('estimate'))} [{_fmt(m.get('ci_low'))}, {_fmt(m.get('ci_high'))}]"
            if m.get("realised") is not None:
                text += f"<br/>realised {_fmt(m['realised'])}"
            out.append(f"<td>{text}</td>")
        return "".join(out)

    rows = f"<tr><td>whole window</td><td>{est.get('rows')}</td>{cells(est.get('metrics') or {})}</tr>"
    for c in est.get("chunks") or []:
        rows += (
            f"<tr><td>{html.escape(str(c['start']))}</td><td>{c['rows']} ({c['labelled_rows']} labelled)</td>"
            f"{cells(c['metrics'])}</tr>"
        )
    img = ""
    if plot:
        img = "<img src='data:image/png;base64," + base64.b64encode(plot).decode() + "'/>"
    ref = json.dumps((est.get("reference") or {}).get("metrics", {}), default=str)
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in (result.get("alert") or {}).get("reasons", []))
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Estimated quality</title><style>"
        "body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;padding:4px 8px}"
        "table{border-collapse:collapse}</style></head><body>"
        f"<h1>Estimated quality: {html.escape(str(result['model_name']))} "
        f"v{html.escape(str(result['version']))}</h1>"
        f"<p>Method: {html.escape(str(est.get('method')))} ({html.escape(str(est.get('band', '')))}). "
        f"Outcome: <b>{html.escape(str(result.get('outcome')))}</b>. "
        f"Held-out reference: {html.escape(ref)}.</p>"
        f"<ul>{reasons}</ul>{img}<table><tr><th>time slice</th><th>rows</th>{head}</tr>{rows}</table>"
        "</body></html>"
    )


def metric_key(name: str) -> str:
    """MLflow metric names allow alphanumerics, _ - . space / only."""
    import re

    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", name)[:200]


def add_to_workspace(path: str, project_name: str, snapshot: Any) -> dict[str, str]:
    """Add the snapshot to a local Evidently workspace (created if needed); ``evidently ui`` shows trends."""
    from evidently.ui.workspace import Workspace

    ws = Workspace.create(path)
    found = ws.search_project(project_name)
    project = found[0] if found else ws.create_project(project_name, description="airflow-saga drift monitor")
    added = ws.add_run(project.id, snapshot, include_data=False)
    return {"workspace": path, "project_id": str(project.id), "snapshot_id": str(getattr(added, "id", added))}
