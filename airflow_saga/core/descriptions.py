"""Each model version's MLflow description: a human summary rendered from its ``saga.*`` tags and history.

Why: MLflow shows a version's description as Markdown on the version page, while saga's record (the
approval log, the gate, the promotion history) is JSON in tags and runs a reviewer should not have to
read. The description says, in prose and one table: the approval status and every decision (who, when,
why, how), the candidate's metrics against the champion it was evaluated against, the gate decision and
its expression, the latest shadow comparison and drift check, every promotion, demotion and rollback of
the version, and links to the Airflow run, the MLflow training run and the evaluation report.

The description is a **rendering, not the record**: it is written from the tags and the history and
rewritten, whole, at each transition; the tags and the history stay the source of truth (a hand edit of
the description is overwritten at the next transition, and never read back).

When it is written:

- at registration, in the same ``create_model_version`` call (no extra request);
- after each governance transition (approval, rejection, promotion, demotion, rollback, a decision made
  by hand in MLflow and recorded), for every version the transition touched (the subject and the version
  it displaced), by ``core.governance`` **after the model's lock is released**, so the governance storm's
  critical section is not longer; one read of each version, two bounded history searches (only the
  version's newest entries, so the cost does not grow with the history) and at most one
  ``update_model_version`` per touched version (none when the text is unchanged, e.g. a retry), reusing
  the model as the transaction left it;
- after a shadow comparison is logged on the challenger (``core.monitoring.log_shadow_report``).

``SAGA_VERSION_DESCRIPTIONS=off`` turns the rewrites after transitions off (registration still writes
the first one); a team that curates descriptions by hand, or measures governance without them, uses it.

Failure policy: a description that cannot be written is logged as a warning and the transition stands
(it already committed; the description is derived data). ``refresh()`` rewrites it on demand; the next
transition of the version also does. Two transitions of one version finishing at the same moment may
leave the older rendering for a while (each renders what it read after its own commit); the next
transition or ``refresh()`` corrects it.

Untrusted text (approval comments, reasons, user names, tag values) is escaped: it can neither add
Markdown links, images or HTML, nor break the table. Links are written only for ``http(s)`` URLs. The
whole text is kept under MLflow's 5,000-character column (older approvals and promotions are elided,
with a count).
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from airflow_saga.core import tags as T

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

MAX_CHARS = 4900  # MLflow's model_versions.description is VARCHAR(5000) on SQL backends
MAX_FIELD = 300  # one user-supplied value (comment, reason) in the text
MAX_METRICS = 20
FOOTER = (
    "_Written by airflow-saga from this version's `saga.*` tags and its promotion history, and rewritten at "
    "each transition: edits here are not kept._"
)
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]!~])")
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "|": "&#124;"}


def md(value: Any, limit: int = MAX_FIELD) -> str:
    """Untrusted text as inert Markdown: one line, bounded, Markdown and HTML characters escaped."""
    text = " ".join(str(value if value is not None else "").split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    text = "".join(_ENTITIES.get(ch, ch) for ch in text)
    return _MD_SPECIAL.sub(r"\\\1", text)


def code(value: Any, limit: int = MAX_FIELD) -> str:
    """A URI or identifier as a code span (backticks inside cannot end it)."""
    text = " ".join(str(value or "").split()).replace("`", "'")
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return f"`{text}`" if text else ""


def link(label: str, url: str | None) -> str:
    """``[label](url)`` for an http(s) URL without spaces or brackets; otherwise the URL as code."""
    if not url:
        return ""
    if re.fullmatch(r"https?://[^\s()<>\[\]`]+", url) and len(url) <= 1000:
        return f"[{md(label)}]({url})"
    return f"{md(label)} {code(url)}"


def _num(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if x == x and abs(x) != float("inf") else None


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


def _metrics(tags: dict[str, str]) -> tuple[list[str], str | None]:
    candidate = {k[len(T.METRIC_PREFIX) :]: _num(v) for k, v in tags.items() if k.startswith(T.METRIC_PREFIX)}
    champion = {
        k[len(T.EVAL_CHAMPION_METRIC_PREFIX) :]: _num(v)
        for k, v in tags.items()
        if k.startswith(T.EVAL_CHAMPION_METRIC_PREFIX)
    }
    names = sorted(n for n in set(candidate) | set(champion) if n)
    if not names:
        return [], None
    against = tags.get(T.EVAL_CHAMPION_VERSION)
    head = f"champion v{md(against, 20)} at evaluation" if against else "champion at evaluation"
    rows = [f"| metric | this version | {head} | difference |", "|---|---:|---:|---:|"]
    for name in names[:MAX_METRICS]:
        c, h = candidate.get(name), champion.get(name)
        diff = "-" if c is None or h is None else f"{c - h:+.4g}"
        rows.append(f"| {md(name, 80)} | {_fmt(c)} | {_fmt(h)} | {diff} |")
    if len(names) > MAX_METRICS:
        rows.append(f"| … {len(names) - MAX_METRICS} more in the tags | | | |")
    note = None if champion or against else "No champion to compare with when it was evaluated."
    return rows, note


def render(
    mv: ModelVersion,
    *,
    aliases: dict[str, str] | None = None,
    promotions: list[dict[str, Any]] | None = None,
) -> str:
    """The Markdown description of ``mv`` from its tags, current ``aliases`` and history ``promotions``.

    Pure (no requests). ``aliases`` (``{alias: version}``) defaults to the version's own ``aliases``.
    At registration ``mv`` is any object with ``tags``, ``version`` (empty) and ``run_id``. Long lists
    and long texts are shortened step by step until the whole fits MLflow's limit.
    """
    text = ""
    for approvals, entries, field in LIMITS:
        text = _render(mv, aliases, promotions, approvals, entries, field)
        if len(text) <= MAX_CHARS - len(FOOTER) - 2:
            break
    return _bounded(text)


LIMITS = ((10, 12, 300), (6, 8, 120), (3, 4, 60), (1, 2, 40))
PROMOTIONS_READ = max(entries for _, entries, _ in LIMITS) + 1  # "+ 1": enough to know there are earlier ones


def _render(
    mv: ModelVersion,
    aliases: dict[str, str] | None,
    promotions: list[dict[str, Any]] | None,
    max_approvals: int,
    max_promotions: int,
    field: int,
) -> str:
    from airflow_saga.core import approval_state as S
    from airflow_saga.core.errors import RegistryError

    tags = dict(getattr(mv, "tags", None) or {})
    version = str(getattr(mv, "version", "") or "")
    if aliases is None:
        held = sorted(str(a) for a in getattr(mv, "aliases", None) or [])
    else:
        held = sorted(a for a, v in aliases.items() if str(v) == version and version)
    try:
        status = S.get_status(mv)
        approvals = S.approval_log(mv)
    except RegistryError as exc:
        status, approvals = tags.get(T.APPROVAL_STATUS) or "?", [{"error": str(exc)}]

    out = []
    first = f"**airflow-saga** · approval status **{md(status, 40)}**"
    if tags.get(T.APPROVAL_BY):
        first += f" by {md(tags.get(T.APPROVAL_BY))} ({md(tags.get(T.APPROVAL_AT), 40)})"
    first += " · " + (" ".join(f"holds **@{md(a, 40)}**" for a in held) if held else "holds no alias")
    out.append(first)
    if tags.get(T.ROLLED_BACK_REASON):
        out += [
            "",
            f"**Rolled back** at {md(tags.get(T.ROLLED_BACK_AT), 40)} by {md(tags.get(T.ROLLED_BACK_BY))}: "
            f"{md(tags.get(T.ROLLED_BACK_REASON), field)}",
        ]

    rows, note = _metrics(tags)
    if rows:
        out += ["", "### Evaluation against the champion", "", *rows]
        if note:
            out += ["", note]
    report = tags.get(T.EVAL_REPORT_URI)
    if report:
        out += ["", f"Evaluation report: {code(report)}"]

    out += ["", "### Quality gate", ""]
    decision = tags.get(T.GATE_DECISION)
    if decision:
        line = f"**{md(decision, 20)}**"
        if tags.get(T.GATE_SUMMARY):
            line += f": {code(tags[T.GATE_SUMMARY], 600)}"
        if tags.get(T.GATE_REPORT_URI):
            line += f" (decision {code(tags[T.GATE_REPORT_URI])})"
        out.append(line)
    else:
        out.append("No gate decision recorded (registered without a gate).")

    if tags.get(T.SHADOW_DECISION) or tags.get(T.DRIFT_VERDICT):
        out += ["", "### Monitoring", ""]
        if tags.get(T.SHADOW_DECISION):
            out.append(
                f"- Shadow comparison ({md(tags.get(T.SHADOW_AT), 40)}): "
                f"**{md(tags[T.SHADOW_DECISION], 20)}**"
                + (f", report {code(tags[T.SHADOW_REPORT_URI])}" if tags.get(T.SHADOW_REPORT_URI) else "")
            )
        if tags.get(T.DRIFT_VERDICT):
            out.append(
                f"- Drift check ({md(tags.get(T.DRIFT_AT), 40)}): **{md(tags[T.DRIFT_VERDICT], 20)}**"
                + (f", monitoring run {code(tags[T.DRIFT_RUN_ID])}" if tags.get(T.DRIFT_RUN_ID) else "")
            )

    out += ["", "### Approvals", ""]
    shown = approvals[-max_approvals:]
    if len(approvals) > len(shown):
        out.append(f"- … {len(approvals) - len(shown)} earlier decisions in the tag `{T.APPROVAL_LOG}`")
    for e in shown:
        if "error" in e:
            out.append(f"- unreadable approval log: {md(e['error'])}")
            continue
        out.append(
            f"- {md(e.get('at'), 40)} **{md(e.get('status'), 40)}** by {md(e.get('by'), field)} "
            f"via {md(e.get('via'), 20)}" + (f": {md(e.get('comment'), field)}" if e.get("comment") else "")
        )
    if not approvals:
        out.append("- none recorded")

    entries = list(promotions or [])
    out += ["", "### Promotions", ""]
    shown_p = entries[-max_promotions:]
    if len(entries) > len(shown_p):
        out.append("- … earlier entries in the promotion history (`saga history` shows them all)")
    for h in shown_p:
        moved = f"{md(h.get('from') or '-', 20)} → {md(h.get('to') or '-', 20)}"
        out.append(
            f"- #{md(h.get('seq'), 12)} {md(h.get('at'), 40)} {md(h.get('action'), 20)} "
            f"@{md(h.get('alias'), 40)} {moved} by {md(h.get('by'), field)}"
            + (f": {md(h.get('reason'), field)}" if h.get("reason") else "")
        )
    if not entries:
        out.append("- none")

    out += ["", "### Lineage", ""]
    run_url = tags.get(T.AIRFLOW_RUN_URL)
    if tags.get(T.AIRFLOW_DAG_ID):
        label = f"Airflow run {tags.get(T.AIRFLOW_DAG_ID)} / {tags.get(T.AIRFLOW_RUN_ID)}"
        out.append(f"- {link(label, run_url) if run_url else md(label)}")
    run_id = tags.get(T.RUN_ID) or getattr(mv, "run_id", None)
    if run_id:
        out.append(f"- MLflow training run {code(run_id)}")
    if tags.get(T.DATASET_DIGEST):
        rows_n = tags.get(T.DATASET_ROWS)
        out.append(
            f"- data {code(tags[T.DATASET_DIGEST])} from {code(tags.get(T.DATASET_SOURCE))}"
            + (f" ({md(rows_n, 20)} rows)" if rows_n else "")
        )
    if tags.get(T.ESTIMATOR):
        out.append(f"- estimator {code(tags[T.ESTIMATOR])}")
    if tags.get(T.SOURCE_MODEL_URI):
        out.append(f"- external model {code(tags[T.SOURCE_MODEL_URI])}")
    return "\n".join(out)


def _bounded(text: str) -> str:
    room = MAX_CHARS - len(FOOTER) - 2
    if len(text) > room:
        cut = text[: room - 80].rsplit("\n", 1)[0]
        text = cut + "\n\n… (shortened to MLflow's description limit; the full record is in the tags)"
    return f"{text}\n\n{FOOTER}"


def refresh(client: MlflowClient, name: str, version: str | int, *, state: Any = None) -> bool:
    """Re-render ``version``'s description from the registry now; False (logged) if it could not be.

    Never raises: callers are transitions that already committed. Writes nothing when the text is
    already current. ``state``: the model as read after the transition (``alias_history.ModelState``),
    which saves one read per version.
    """
    from airflow_saga.core import alias_history as H
    from airflow_saga.core import compat

    version = str(version)
    try:
        mv = client.get_model_version(name, version)  # carries the aliases the version holds
        # Bounded: one more than the longest list a description shows, so promoting costs the same at
        # history entry 10 and 10,000 (the full history is one `saga history` away).
        promotions = H.entries_for_version(client, name, version, state=state, limit=PROMOTIONS_READ)
        text = render(mv, promotions=promotions)
        if (mv.description or "") == text:
            return True
        compat.registry_writer(client).update_model_version(name, version, text)
        return True
    except Exception as exc:  # derived data: the transition stands, the next one or refresh() retries
        log.warning("Could not update the MLflow description of %r version %s: %s", name, version, exc)
        return False


def enabled() -> bool:
    """False when ``SAGA_VERSION_DESCRIPTIONS=off`` (or 0/false/no): transitions then leave descriptions."""
    import os

    value = os.environ.get("SAGA_VERSION_DESCRIPTIONS", "on").strip().lower()
    return value not in ("off", "0", "false", "no")


def refresh_all(client: MlflowClient, name: str, versions: Any, *, state: Any = None) -> None:
    """``refresh`` each distinct version in ``versions`` (None entries skipped), unless disabled.

    ``state`` (the model as the transaction left it) is shared by all of them.
    """
    if not enabled():
        return
    seen: set[str] = set()
    for v in versions:
        if v is None or str(v) in seen:
            continue
        seen.add(str(v))
        refresh(client, name, v, state=state)
