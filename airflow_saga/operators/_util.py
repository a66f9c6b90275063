"""Small helpers shared by operators: coercing templated values and mapping core errors to Airflow's.

Operator fields arrive in three shapes: a Python value (a literal in the DAG file, or an ``XComArg`` such as
``train.output`` that Airflow resolved), a JSON string (a UI form, ``tojson``), or the ``str()`` of a Python
value, which is what a Jinja template such as ``"{{ ti.xcom_pull(task_ids='train') }}"`` renders to in a DAG
with default settings (no ``render_template_as_native_obj``): ``"{'run_id': 'ab12', 'cache_hit': False}"``.
``as_dict`` and its friends accept all three, so wiring works either way. The string forms are parsed as
data, never evaluated: JSON first, then ``ast.literal_eval``, after bounding the text's size and nesting
depth (both parsers otherwise fail with ``RecursionError``/``MemoryError`` on hostile input).
"""

from __future__ import annotations

import ast
import contextlib
import json
import math
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_saga.core.errors import ParameterError

if TYPE_CHECKING:
    from collections.abc import Iterator

#: Longest rendered value parsed (characters): a training summary or report is a few KiB.
MAX_LITERAL_CHARS = 1_000_000
#: Deepest bracket nesting parsed; real summaries and reports nest 3-5 levels.
MAX_LITERAL_DEPTH = 32


class InvalidParameterError(ParameterError, AirflowFailException):
    """A malformed operator parameter: a ``SagaError`` for core callers, no retry for Airflow."""


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def _nesting_depth(text: str, limit: int) -> int:
    """Bracket depth outside string literals; stops counting once ``limit`` is exceeded."""
    depth = deepest = 0
    quote: str | None = None
    escaped = False
    for ch in text:
        if quote is not None:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        elif ch in ")]}":
            depth -= 1
    return deepest


def parse_literal(text: str, field: str) -> Any:
    """The value a JSON document or a Python literal (``repr`` of dicts, lists, numbers...) stands for."""
    stripped = text.strip()
    if len(stripped) > MAX_LITERAL_CHARS:
        raise InvalidParameterError(
            f"{field} is {len(stripped)} characters long, over the {MAX_LITERAL_CHARS} allowed; "
            "pass large values through XCom or an artifact URI"
        )
    if sum(stripped.count(c) for c in "([{") > MAX_LITERAL_DEPTH:  # cheap test first: most values pass
        depth = _nesting_depth(stripped, MAX_LITERAL_DEPTH)
        if depth > MAX_LITERAL_DEPTH:
            raise InvalidParameterError(
                f"{field} is nested more than {MAX_LITERAL_DEPTH} levels deep: {_short(stripped, 80)}"
            )
    try:
        return json.loads(stripped)
    except (ValueError, RecursionError):
        pass
    try:
        return ast.literal_eval(stripped)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as exc:
        raise InvalidParameterError(
            f"{field} is neither JSON nor a Python literal: {_short(stripped)} ({type(exc).__name__}: "
            f"{str(exc)[:200]})"
        ) from exc


def _maybe_parse(value: Any, field: str) -> Any:
    return parse_literal(value, field) if isinstance(value, str) else value


def as_dict(value: Any, field: str) -> dict[str, Any]:
    """A mapping from a dict, a JSON object string, or a rendered Python dict literal; None/"" give {}."""
    if value is None or (isinstance(value, str) and value.strip() in ("", "None")):
        return {}
    parsed = _maybe_parse(value, field)
    if isinstance(parsed, dict):
        return parsed
    if parsed is None:
        return {}
    raise InvalidParameterError(
        f"{field} must be a mapping (JSON object), got {type(parsed).__name__}: {_short(value)}"
    )


def as_list(value: Any, field: str) -> list[Any]:
    """A list from a list/tuple, a JSON array or a rendered Python list literal; None/"" give []."""
    if value is None or (isinstance(value, str) and value.strip() in ("", "None")):
        return []
    parsed = _maybe_parse(value, field)
    if isinstance(parsed, list | tuple):
        return list(parsed)
    raise InvalidParameterError(f"{field} must be a list, got {type(parsed).__name__}: {_short(value)}")


def as_value(value: Any, field: str) -> Any:
    """A string that spells a JSON/Python literal becomes that value; any other string stays a string.

    For fields that take either text or structured data (a data-source spec can be a path or a mapping).
    """
    if not isinstance(value, str):
        return value
    stripped = value.strip()
    if stripped[:1] in ("{", "["):
        return parse_literal(stripped, field)
    return value


def as_bool(value: Any, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in (
        "true",
        "1",
        "yes",
        "on",
        "false",
        "0",
        "no",
        "off",
        "",
        "none",
    ):
        return value.strip().lower() in ("true", "1", "yes", "on")
    if isinstance(value, int):
        return bool(value)
    raise InvalidParameterError(f"{field} must be a boolean, got {_short(value)}")


def as_float(value: Any, field: str) -> float:
    try:
        out = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise InvalidParameterError(f"{field} must be a number, got {_short(value)}") from None
    if not math.isfinite(out):
        raise InvalidParameterError(f"{field} must be a finite number, got {_short(value)}")
    return out


def as_int(value: Any, field: str) -> int:
    number = as_float(value, field)
    if not number.is_integer() or isinstance(value, bool):
        raise InvalidParameterError(f"{field} must be an integer, got {_short(value)}")
    return int(number)


@contextlib.contextmanager
def saga_errors() -> Iterator[None]:
    """Bad input fails the task without retries (it will not fix itself); an unreachable MLflow retries.

    So does a governance change that could not get (or lost) the model's lock: nothing was written, and
    a retry usually finds the lock free.
    """
    from airflow_saga.core.errors import GovernanceBusyError, MlflowUnreachableError, SagaError
    from airflow_saga.core.redaction import redact

    try:
        yield
    except (MlflowUnreachableError, GovernanceBusyError) as exc:
        raise AirflowException(redact(exc)) from exc
    except InvalidParameterError:
        raise
    except SagaError as exc:
        raise AirflowFailException(redact(f"{type(exc).__name__}: {exc}")) from exc
