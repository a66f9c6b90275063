"""Inline SVG charts for the Models view: no JavaScript, no CDN, a few milliseconds per chart.

Why hand-drawn SVG rather than a plotting library: the view must work on Airflow installations without
internet access (no CDN scripts), stay light in the API server, and render a model with 1,000 history
entries in milliseconds; ``benchmarks/bench_view.py`` measures this module against matplotlib's SVG
backend on the same timeline. Every text that came from the registry is escaped here. Elements carry
``data-*`` attributes (alias, version, seq) so a browser test can compare the drawing with the registry.
"""

from __future__ import annotations

import datetime as dt
import math
from html import escape
from typing import TYPE_CHECKING, Any

from airflow_saga.core.model_story import parse_iso

if TYPE_CHECKING:
    from collections.abc import Sequence

PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#e15759",
    "#76b7b2",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)
ACTION_COLOURS = {"promote": "#2f7d32", "rollback": "#c62828", "demote": "#757575"}
FONT = "font-family:system-ui,-apple-system,'Segoe UI',sans-serif"


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def colour(key: Any) -> str:
    """A stable colour per version (the same version has the same colour in every lane and chart)."""
    text = str(key)
    index = int(text) if text.isdigit() else sum(map(ord, text))
    return PALETTE[index % len(PALETTE)]


def _parse(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return parse_iso(value)


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round-numbered axis ticks between lo and hi."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        return []
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    first = math.ceil(lo / step) * step
    out, x = [], first
    while x <= hi + step * 1e-9 and len(out) < 50:
        out.append(round(x, 12))
        x += step
    return out


def _fmt_num(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000 or abs(v) < 0.01:
        return f"{v:.3g}"
    return f"{v:.3f}".rstrip("0").rstrip(".")


def _time_label(t: dt.datetime, span: float) -> str:
    if span > 3 * 86400:
        return t.strftime("%Y-%m-%d")
    if span > 6 * 3600:
        return t.strftime("%m-%d %H:%M")
    return t.strftime("%H:%M:%S")


def empty(message: str, width: int = 600, height: int = 60) -> str:
    return (
        f'<svg class="chart empty" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{_e(message)}" xmlns="http://www.w3.org/2000/svg">'
        f'<text x="8" y="{height // 2}" style="{FONT};font-size:13px;fill:#777">{_e(message)}</text></svg>'
    )


# --- alias timeline ---------------------------------------------------------------------------------


def timeline(tl: dict[str, Any], *, width: int = 1100) -> str:
    """Lanes of alias holdings over time (``model_story.timeline`` output) with a marker per history entry."""
    lanes = [(alias, holdings) for alias, holdings in tl["lanes"].items()]
    if not lanes:
        return empty("No aliases and no promotion history yet.")
    start = _parse(tl.get("start"))
    end = _parse(tl.get("end"))
    times = [_parse(e.get("at")) for e in tl.get("events", [])]
    known = [t for t in (start, end, *times) if t]
    if not known:
        return empty("No dated history entries.")
    t0, t1 = min(known), max(known)
    span = max((t1 - t0).total_seconds(), 1.0)
    left, right, lane_h, top = 100, 20, 34, 22
    plot_w = width - left - right
    height = top + lane_h * len(lanes) + 34

    def x(t: dt.datetime | None) -> float:
        if t is None:
            return left + plot_w
        return left + plot_w * max(0.0, min(1.0, (t - t0).total_seconds() / span))

    out = [
        f'<svg class="chart timeline" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="Alias timeline" xmlns="http://www.w3.org/2000/svg" style="{FONT}">'
    ]
    for i, (alias, holdings) in enumerate(lanes):
        y = top + i * lane_h
        out.append(
            f'<text x="{left - 8}" y="{y + lane_h / 2 + 4:.1f}" text-anchor="end" '
            f'style="font-size:13px;font-weight:600">@{_e(alias)}</text>'
            f'<rect x="{left}" y="{y + 4}" width="{plot_w}" height="{lane_h - 8}" fill="#f3f3f3"/>'
        )
        for h in holdings:
            a, b = x(_parse(h.get("from"))), x(_parse(h.get("to")) if h.get("to") else end)
            w = max(b - a, 2.0)
            v = _e(h.get("version"))
            until = _e(h.get("to") or "now")
            tip = (
                f"@{_e(alias)} = v{v} from {_e(h.get('from'))} until {until}"
                f" ({_e(h.get('action'))} by {_e(h.get('by'))}: {_e(h.get('reason'))})"
            )
            out.append(
                f'<g class="holding" data-alias="{_e(alias)}" data-version="{v}" '
                f'data-from-seq="{_e(h.get("from_seq"))}" data-to-seq="{_e(h.get("to_seq"))}">'
                f"<title>{tip}</title>"
                f'<rect x="{a:.1f}" y="{y + 4}" width="{w:.1f}" height="{lane_h - 8}" '
                f'fill="{colour(h.get("version"))}" stroke="#fff" stroke-width="1"/>'
            )
            if w > 26:
                out.append(
                    f'<text x="{a + 4:.1f}" y="{y + lane_h / 2 + 4:.1f}" '
                    f'style="font-size:12px;fill:#fff;font-weight:600">v{v}</text>'
                )
            out.append("</g>")
        for e, t in zip(tl.get("events", []), times, strict=False):
            if e.get("alias") != alias:
                continue
            cx, action = x(t), str(e.get("action"))
            fill = ACTION_COLOURS.get(action, "#333")
            tip = (
                f"#{_e(e.get('seq'))} {_e(e.get('at'))} {_e(action)} @{_e(alias)}: "
                f"{_e(e.get('from') or '-')} -> {_e(e.get('to') or '-')} by {_e(e.get('by'))}: "
                f"{_e(e.get('reason'))}"
            )
            shape = (
                f'<path d="M{cx - 5:.1f},{y + 2} L{cx + 5:.1f},{y + 2} L{cx:.1f},{y + 10} Z" fill="{fill}"/>'
                if action != "rollback"
                else f'<circle cx="{cx:.1f}" cy="{y + 6}" r="5" fill="{fill}"/>'
            )
            out.append(
                f'<g class="event" data-seq="{_e(e.get("seq"))}" data-action="{_e(action)}" '
                f'data-alias="{_e(alias)}"><title>{tip}</title>{shape}</g>'
            )
    axis_y = top + lane_h * len(lanes) + 4
    out.append(f'<line x1="{left}" y1="{axis_y}" x2="{left + plot_w}" y2="{axis_y}" stroke="#999"/>')
    for k in range(6):
        t = t0 + (t1 - t0) * (k / 5)
        tx = left + plot_w * k / 5
        anchor = "start" if k == 0 else ("end" if k == 5 else "middle")
        out.append(
            f'<line x1="{tx:.1f}" y1="{axis_y}" x2="{tx:.1f}" y2="{axis_y + 4}" stroke="#999"/>'
            f'<text x="{tx:.1f}" y="{axis_y + 17}" text-anchor="{anchor}" style="font-size:11px;fill:#555">'
            f"{_e(_time_label(t, span))}</text>"
        )
    out.append("</svg>")
    return "".join(out)


# --- line and bar charts ----------------------------------------------------------------------------


def _frame(
    kind: str,
    title: str,
    y_label: str,
    box: tuple[float, float, float, float, float, float],
    ticks: list[float],
    sy: Any,
) -> list[str]:
    """The opening of a chart: svg element, title, horizontal grid with y tick labels, y axis label."""
    width, height, left, top, pw, ph = box
    out = [
        f'<svg class="chart {kind}" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{_e(title)}" xmlns="http://www.w3.org/2000/svg" style="{FONT}">'
        f'<text x="{left}" y="16" style="font-size:13px;font-weight:600">{_e(title)}</text>'
    ]
    for tv in ticks:
        yy = sy(tv)
        out.append(
            f'<line x1="{left}" y1="{yy:.1f}" x2="{left + pw}" y2="{yy:.1f}" stroke="#eee"/>'
            f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end" style="font-size:11px;fill:#555">'
            f"{_e(_fmt_num(tv))}</text>"
        )
    if y_label:
        out.append(
            f'<text transform="translate(12,{top + ph / 2:.0f}) rotate(-90)" text-anchor="middle" '
            f'style="font-size:11px;fill:#555">{_e(y_label)}</text>'
        )
    return out


def line_chart(
    series: Sequence[dict[str, Any]],
    *,
    title: str,
    y_label: str = "",
    threshold: float | None = None,
    width: int = 640,
    height: int = 240,
    x_kind: str = "time",
) -> str:
    """Lines of ``{"name", "points": [(x, y), ...]}``; x is an ISO time (``x_kind="time"``) or a number.

    Points with a missing or non-finite y are skipped; a series with one point is drawn as a dot.
    """
    pts: list[tuple[str, list[tuple[float, float, str]]]] = []
    for s in series:
        clean = []
        for xv, yv in s.get("points", []):
            if not isinstance(yv, int | float) or not math.isfinite(float(yv)):
                continue
            if x_kind == "time":
                t = _parse(xv)
                if t is None:
                    continue
                clean.append((t.timestamp(), float(yv), t.isoformat(timespec="seconds")))
            else:
                try:
                    clean.append((float(xv), float(yv), str(xv)))
                except (TypeError, ValueError):
                    continue
        if clean:
            pts.append((str(s.get("name")), clean))
    if not pts:
        return empty(f"{title}: no data yet.", width)
    xs = [p[0] for _, c in pts for p in c]
    ys = [p[1] for _, c in pts for p in c] + ([threshold] if threshold is not None else [])
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if y0 == y1:
        y0, y1 = y0 - (abs(y0) * 0.1 or 0.5), y1 + (abs(y1) * 0.1 or 0.5)
    pad = (y1 - y0) * 0.08
    y0, y1 = (0.0 if y0 >= 0 and y0 - pad < 0 else y0 - pad), y1 + pad
    legend_rows = math.ceil(len(pts) / 3)
    left, right, top, bottom = 56, 16, 26, 34 + 16 * legend_rows
    height = max(height, top + bottom + 120)
    pw, ph = width - left - right, height - top - bottom

    def sx(v: float) -> float:
        return left + (pw * (v - x0) / (x1 - x0) if x1 > x0 else pw / 2)

    def sy(v: float) -> float:
        return top + ph * (1 - (v - y0) / (y1 - y0))

    out = _frame("line", title, y_label, (width, height, left, top, pw, ph), _ticks(y0, y1), sy)
    if threshold is not None and math.isfinite(threshold):
        ty = sy(threshold)
        out.append(
            f'<line class="threshold" x1="{left}" y1="{ty:.1f}" x2="{left + pw}" y2="{ty:.1f}" '
            f'stroke="#c62828" stroke-dasharray="5,4">'
            f"<title>threshold {_e(_fmt_num(threshold))}</title></line>"
        )
    span = x1 - x0
    xt = sorted({p[0] for _, c in pts for p in c}) if x_kind != "time" else None
    if xt is not None and len(xt) <= 12:
        tick_x = xt
    else:
        tick_x = [x0 + span * k / 4 for k in range(5)] if span else [x0]
    edge = x_kind == "time" and len(tick_x) > 1  # outer time labels hang inwards: the edges do not clip them
    for i, tx in enumerate(tick_x):
        label = _time_label(dt.datetime.fromtimestamp(tx, dt.UTC), span) if x_kind == "time" else _fmt_num(tx)
        anchor = "start" if edge and i == 0 else ("end" if edge and i == len(tick_x) - 1 else "middle")
        out.append(
            f'<text x="{sx(tx):.1f}" y="{top + ph + 15}" text-anchor="{anchor}" '
            f'style="font-size:11px;fill:#555">{_e(label)}</text>'
        )
    out.append(
        f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#999"/>'
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="#999"/>'
    )
    for i, (name, clean) in enumerate(pts):
        c = PALETTE[i % len(PALETTE)]
        clean.sort()
        path = " ".join(
            f"{'M' if j == 0 else 'L'}{sx(a):.1f},{sy(b):.1f}" for j, (a, b, _) in enumerate(clean)
        )
        out.append(f'<g class="series" data-name="{_e(name)}">')
        if len(clean) > 1:
            out.append(f'<path d="{path}" fill="none" stroke="{c}" stroke-width="2"/>')
        for a, b, label in clean:
            out.append(
                f'<circle cx="{sx(a):.1f}" cy="{sy(b):.1f}" r="3" fill="{c}">'
                f"<title>{_e(name)} @ {_e(label)}: {_e(_fmt_num(b))}</title></circle>"
            )
        out.append("</g>")
        lx, ly = left + (i % 3) * (pw / 3), top + ph + 30 + 16 * (i // 3)
        out.append(
            f'<rect x="{lx:.1f}" y="{ly - 9}" width="10" height="10" fill="{c}"/>'
            f'<text x="{lx + 14:.1f}" y="{ly}" style="font-size:11px">{_e(name[:40])}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def bar_chart(
    categories: Sequence[str],
    series: dict[str, Sequence[float | None]],
    *,
    title: str,
    y_label: str = "",
    width: int = 640,
    height: int = 240,
) -> str:
    """Grouped bars: one group per category, one bar per series (e.g. candidate vs champion)."""
    values = [v for vs in series.values() for v in vs if isinstance(v, int | float) and math.isfinite(v)]
    if not categories or not values:
        return empty(f"{title}: no data yet.", width)
    hi = max(0.0, *values)
    lo = min(0.0, *values)
    if hi == lo:
        hi = lo + 1.0
    left, right, top, bottom = 56, 16, 26, 52
    pw, ph = width - left - right, height - top - bottom

    def sy(v: float) -> float:
        return top + ph * (1 - (v - lo) / (hi - lo))

    out = _frame("bar", title, y_label, (width, height, left, top, pw, ph), _ticks(lo, hi), sy)
    group_w = pw / len(categories)
    names = list(series)
    bar_w = max(min(group_w * 0.8 / max(len(names), 1), 40), 2)
    for gi, cat in enumerate(categories):
        gx = left + gi * group_w + (group_w - bar_w * len(names)) / 2
        for si, name in enumerate(names):
            vals = series[name]
            v = vals[gi] if gi < len(vals) else None
            if not isinstance(v, int | float) or not math.isfinite(v):
                continue
            y_a, y_b = sy(max(v, 0.0)), sy(min(v, 0.0))
            out.append(
                f'<rect class="bar" data-series="{_e(name)}" data-category="{_e(cat)}" data-value="{v!r}" '
                f'x="{gx + si * bar_w:.1f}" y="{y_a:.1f}" width="{bar_w - 2:.1f}" '
                f'height="{max(y_b - y_a, 1):.1f}" fill="{PALETTE[si % len(PALETTE)]}">'
                f"<title>{_e(name)} {_e(cat)}: {_e(_fmt_num(float(v)))}</title></rect>"
            )
        out.append(
            f'<text x="{left + gi * group_w + group_w / 2:.1f}" y="{top + ph + 15}" text-anchor="middle" '
            f'style="font-size:11px;fill:#555">{_e(str(cat)[:18])}</text>'
        )
    out.append(f'<line x1="{left}" y1="{sy(0):.1f}" x2="{left + pw}" y2="{sy(0):.1f}" stroke="#999"/>')
    for si, name in enumerate(names):
        lx = left + si * 140
        out.append(
            f'<rect x="{lx}" y="{height - 14}" width="10" height="10" fill="{PALETTE[si % len(PALETTE)]}"/>'
            f'<text x="{lx + 14}" y="{height - 5}" style="font-size:11px">{_e(name)}</text>'
        )
    out.append("</svg>")
    return "".join(out)
