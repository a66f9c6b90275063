"""HTML pages of the Models view, rendered on the server from ``core.model_story`` dicts.

Jinja2 (Airflow's own dependency) with autoescaping: every registry value is escaped, so a model name,
comment or reason cannot inject markup. Charts are inline SVG from ``ui.svg``; pages carry no script but
the small same-origin link helper in ``base.html``, and load nothing from outside.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow_saga.ui import svg

if TYPE_CHECKING:
    import jinja2

HISTORY_PAGE = 100
MAX_METRIC_COLUMNS = 4
MAX_DRIFT_FEATURES = 8
PREFERRED_METRICS = ("accuracy", "f1", "roc_auc", "rmse", "mae", "r2")


@functools.cache
def env() -> jinja2.Environment:
    import jinja2

    e = jinja2.Environment(
        loader=jinja2.PackageLoader("airflow_saga.ui", "templates"),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        undefined=jinja2.ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    e.filters["urlencode_segment"] = lambda s: quote(str(s), safe="")
    return e


def render(template: str, **context: Any) -> str:
    return env().get_template(template).render(**context)


def models_page(models: list[dict[str, Any]], *, base: str, mlflow_uri: str) -> str:
    return render("models.html", models=models, base=base, mlflow_uri=mlflow_uri)


def error_page(title: str, message: str, *, base: str) -> str:
    return render("error.html", title=title, message=message, base=base)


def _shown_metrics(names: list[str]) -> list[str]:
    preferred = [m for m in PREFERRED_METRICS if m in names]
    rest = [m for m in names if m not in preferred and m != "example_count"]
    return (preferred + rest)[:MAX_METRIC_COLUMNS]


def _history_page(history: list[dict[str, Any]], page: int) -> dict[str, Any]:
    total = len(history)
    pages = max(1, math.ceil(total / HISTORY_PAGE))
    page = min(max(page, 1), pages)
    newest_first = history[::-1]
    return {
        "entries": newest_first[(page - 1) * HISTORY_PAGE : page * HISTORY_PAGE],
        "page": page,
        "pages": pages,
        "total": total,
    }


def model_page(story: dict[str, Any], *, base: str, history_page: int = 1) -> str:
    shown = _shown_metrics(story["metric_names"])
    by_version = sorted(story["versions"], key=lambda v: int(v["version"]))

    def unit(name: str) -> bool:  # scores in [0, 1] share one axis; losses and errors would flatten them
        values = [v["metrics"].get(name) for v in by_version]
        return all(not isinstance(x, int | float) or 0 <= x <= 1 for x in values)

    plotted = [m for m in shown if unit(m)]
    series = [
        {"name": name, "points": [(int(v["version"]), v["metrics"].get(name)) for v in by_version]}
        for name in plotted
    ]
    metrics_svg = (
        svg.line_chart(series, title="Candidate metrics by version", x_kind="number", width=760)
        if plotted
        else ""
    )
    return render(
        "model.html",
        story=story,
        base=base,
        shown_metrics=shown,
        timeline_svg=svg.timeline(story["timeline"]),
        metrics_svg=metrics_svg,
        history_page=_history_page(story["history"], history_page),
    )


def _eval_rows(evaluation: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not evaluation or "error" in evaluation:
        return []
    cand, champ = evaluation.get("candidate") or {}, evaluation.get("champion") or {}
    rows = []
    for name in sorted(set(cand) | set(champ)):
        c, h = cand.get(name), champ.get(name)
        delta = c - h if isinstance(c, int | float) and isinstance(h, int | float) else None
        rows.append({"name": name, "candidate": c, "champion": h, "delta": delta})
    return rows


def version_page(story: dict[str, Any], *, base: str) -> str:
    rows = [r for r in _eval_rows(story.get("evaluation")) if r["name"] != "example_count"]
    evaluation = story.get("evaluation") or {}
    eval_svg = ""
    if rows:
        series: dict[str, list[float | None]] = {"this version": [r["candidate"] for r in rows]}
        if evaluation.get("champion"):
            series[f"champion v{evaluation.get('champion_version')}"] = [r["champion"] for r in rows]
        bounded = [r for r in rows if all(0 <= (x or 0) <= 1 for x in (r["candidate"], r["champion"]))]
        if bounded:  # scores in [0, 1] share an axis; unbounded ones (log_loss, rmse, ...) are in the table
            idx = [rows.index(r) for r in bounded]
            series = {k: [vals[i] for i in idx] for k, vals in series.items()}
            eval_svg = svg.bar_chart(
                [r["name"] for r in bounded], series, title="Evaluation: this version vs champion", width=700
            )
    shadow = [s for s in story.get("shadow") or [] if "error" not in s]
    agreement_svg = latency_svg = latency_time_svg = ""
    if shadow:
        agreement_svg = svg.line_chart(
            [{"name": "agreement", "points": [(s["at"], s.get("agreement")) for s in shadow]}],
            title="Agreement with the champion over time",
            y_label="share of rows",
        )
        latest = shadow[-1]
        keys = ["latency_p50_ms", "latency_p90_ms", "latency_p99_ms"]
        champ, cand = latest["champion"], latest["candidate"]
        latency_svg = svg.bar_chart(
            ["p50", "p90", "p99"],
            {
                f"champion v{champ['version']}": [champ["metrics"].get(k) for k in keys],
                f"v{cand['version']} (this)": [cand["metrics"].get(k) for k in keys],
            },
            title="Latency per request, latest comparison",
            y_label="ms",
        )

        def p99(side: str) -> list[tuple[Any, Any]]:
            return [(s["at"], s[side]["metrics"].get("latency_p99_ms")) for s in shadow]

        latency_time_svg = svg.line_chart(
            [
                {"name": "champion p99", "points": p99("champion")},
                {"name": "this version p99", "points": p99("candidate")},
            ],
            title="p99 latency over time",
            y_label="ms",
        )
    drift = story.get("drift") or []
    drift_share_svg = drift_scores_svg = ""
    features: list[str] = []
    if drift:
        drift_share_svg = svg.line_chart(
            [{"name": "drifted share of features", "points": [(d["at"], d.get("share")) for d in drift]}],
            title="Drifted share of features over time",
        )
        features = drift_features(story)
        latest_features = (story.get("drift_latest") or {}).get("features") or {}
        methods = {latest_features.get(f, {}).get("method") for f in features}
        method = next(iter(methods)) if len(methods) == 1 and None not in methods else None
        thresholds = {latest_features.get(f, {}).get("threshold") for f in features}
        threshold = next(iter(thresholds)) if len(thresholds) == 1 else None
        drift_scores_svg = svg.line_chart(
            [{"name": f, "points": [(d["at"], d["scores"].get(f)) for d in drift]} for f in features],
            title="Drift score per feature over time" + (f" ({method})" if method else ""),
            threshold=threshold if isinstance(threshold, int | float) else None,
            width=760,
            height=300,
        )
    return render(
        "version.html",
        story=story,
        base=base,
        eval_rows=rows,
        eval_svg=eval_svg,
        agreement_svg=agreement_svg,
        latency_svg=latency_svg,
        latency_time_svg=latency_time_svg,
        drift_share_svg=drift_share_svg,
        drift_scores_svg=drift_scores_svg,
        drift_features=features,
    )


def drift_features(story: dict[str, Any]) -> list[str]:
    """Features to plot: the latest check's drifted ones first, then the rest by name, at most a handful."""
    latest = story.get("drift_latest") or {}
    drifted = list(latest.get("drifted_features") or [])
    known = sorted(latest.get("features") or {})
    if not known:  # no result artifact: fall back to the logged score names
        known = sorted({k for d in story.get("drift") or [] for k in d["scores"]})
    ordered = drifted + [f for f in known if f not in drifted]
    return ordered[:MAX_DRIFT_FEATURES]
