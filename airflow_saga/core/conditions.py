"""Quality-gate conditions: the small, safe language that decides whether a candidate model may be registered.

Why this exists
    SageMaker Pipelines gates registration with a ConditionStep ("register only if accuracy >= 0.9") and
    MLflow judges a candidate against a baseline with MetricThreshold ("only if it beats the champion by at
    least X"). Airflow users write such rules in DAG files, Airflow params and YAML, so a rule must be
    *data* (JSON) or a short *string*, never Python that somebody evals. This module gives both forms one
    object model, a hand-written parser that cannot execute anything, and an evaluator that returns a
    complete, JSON-serialisable decision record for the task log and the registry tags.

Condition objects (frozen dataclasses, hashable, comparable)
    ``Ge Gt Le Lt Eq`` (two operands), ``In`` (operand in a list of literals), ``Not``, ``And``, ``Or``,
    ``Improves(metric, min_absolute=None, min_relative=None, greater_is_better=True)`` and
    ``SliceImproves(metric, ..., by=None, min_rows=None)``. ``a & b``, ``a | b`` and ``~a`` build ``And``,
    ``Or`` and ``Not``.

Operands
    A ``Metric`` reference or a literal ``Value`` (number, string, boolean). ``candidate.accuracy`` and a
    bare ``accuracy`` read ``report["candidate"]["metrics"]["accuracy"]``; ``champion.accuracy`` reads the
    champion's metrics; ``champion.exists`` is true when ``report["champion"]`` is not null (so a champion
    metric named ``exists`` cannot be referenced). Names that are not dotted identifiers are written
    ``candidate["val loss"]`` / ``champion["val/acc"]``.

String form (grammar)
    ::

        condition  := or
        or         := and ("or" and)*
        and        := not ("and" not)*
        not        := "not" not | atom
        atom       := "(" condition ")" | call | comparison | "champion.exists"
        comparison := operand (">=" | ">" | "<=" | "<" | "==" | "!=") operand
                    | operand ["not"] "in" "[" [literal ("," literal)* [","]] "]"
        call       := ("improves" | "slice_improves") "(" metric ("," kwarg)* ")"
        kwarg      := "min_absolute" "=" number | "min_relative" "=" number
                    | ("greater_is_better" | "lower_is_better") ["=" ("true" | "false")]
                    | "by" "=" (string | name) | "min_rows" "=" integer     (slice_improves only)
        operand    := metric | literal
        metric     := name ("." name)* | ("candidate" | "champion") "[" string "]"
        literal    := number | string | "true" | "false"

    Keywords (``and or not in true false``) are case-insensitive; ``a != b`` means ``not (a == b)``; numbers
    may be negative and use exponents; strings take double or single quotes with JSON escapes. Precedence is
    ``not`` > ``and`` > ``or``. ``str(condition)`` renders this form with explicit ``candidate.`` prefixes.

JSON form (``Condition.to_dict()``)
    ``{"ge": [left, right]}`` (also ``gt le lt eq ne``), ``{"in": [left, [literals]]}``, ``{"not": c}``,
    ``{"and": [c1, c2, ...]}``, ``{"or": [...]}``, ``{"improves": {"metric": "f1", "min_relative": 0.01}}``,
    ``{"slice_improves": {"metric": "f1", "min_absolute": -0.02, "by": "region", "min_rows": 50}}``.
    A list in condition position means AND of its items (SageMaker's ConditionStep list), and a string in
    condition position is parsed with the grammar. Operand rule for plain strings: the *left* operand string
    is always a metric reference; a *right* operand string is a literal unless it starts with ``candidate.``
    or ``champion.``; list items of ``in`` are always literals. ``{"metric": "accuracy"}`` and
    ``{"value": "accuracy"}`` say explicitly which is meant, and ``to_dict()`` uses them where needed.

Evaluation semantics (``evaluate``)
    * Every leaf is evaluated (no short-circuit), so the record lists every comparison with its values.
    * A comparison that reads ``champion.<metric>`` when the report has no champion is *unknown*. Unknown
      propagates by Kleene's three-valued logic (false and unknown = false, true or unknown = true,
      not unknown = unknown), so ``not`` cannot turn a missing champion into a pass; a gate whose result
      is unknown is blocked. Write ``f1 > champion.f1 or not champion.exists`` or use ``improves(f1)``,
      which passes when there is no champion.
    * ``Improves``: with greater_is_better, passes iff ``cand - champ >= min_absolute`` and (``champ == 0`` or
      ``(cand - champ) / |champ| >= min_relative``); lower-is-better mirrors it (improvement = champ - cand).
      An omitted threshold is not checked (MLflow MetricThreshold); with none applicable the candidate must
      be at least as good as the champion. So ``improves(f1, min_absolute=-0.01)`` tolerates a 0.01 drop.
      Both thresholds tolerate float rounding in the subtraction (relative 1e-9), because ``0.3 - 0.2`` must
      count as an improvement of 0.1. Plain comparisons are exact, as written.
    * ``slice_improves(metric, ...)`` applies ``improves`` to every slice of the report's sliced evaluation
      (``report["slices"]``, see ``core.slices``), or to the slices of one definition with ``by=``, and
      passes iff every slice with at least ``min_rows`` rows (default: the report's ``min_rows``) passes.
      E.g. ``slice_improves(f1, min_absolute=-0.02, by="region")``: no region's F1 may fall more than 0.02
      below the champion's on that region. Smaller slices, and slices where either model lacks the metric,
      are skipped and listed in the record. With no champion it passes; with a champion but nothing to
      compare it is unknown. Its check record names the worst (failing) slice (``slice``, ``slice_rows``)
      and every failing one (``failing_slices``), and the reason says which slice blocked.
    * A referenced metric the report lacks, a null or NaN metric, and comparing incompatible types (a string
      with ``>=``, a number with a string) raise ``ConditionError`` rather than silently pass or fail. The
      message says why a metric is missing: unavailable on this data (e.g. ``roc_auc`` of a model without
      probabilities, with the evaluation's reason), a metric of the other task, or neither a catalogue
      metric (``core.metrics``) nor a user metric of the evaluation, with a did-you-mean hint.

Limits (hostile input gets this module's ``ConditionError``, never a RecursionError or OverflowError)
    * ``MAX_LENGTH`` = 10,000 characters: a condition text, JSON text, and any string in the JSON form.
    * ``MAX_DEPTH`` = 64 levels of nesting: parentheses and ``not`` in the text form; objects and lists in
      the JSON form (and ``Not``/``And``/``Or`` nesting of Condition objects built in Python).
    * ``MAX_NODES`` = 2,000 items (objects, lists, strings, numbers) in a JSON-form condition.
    * ``MAX_NUMBER_DIGITS`` = 40 digits in a number literal (integer or mantissa; exponents up to 6
      digits), and the value must fit a 64-bit float (JSON's ``NaN``/``Infinity`` are refused).
    * Strings must be text: an unpaired UTF-16 surrogate (``"\\ud800"``) is refused.
    The message names the limit, e.g. "the condition nests more than 64 levels deep, beyond the limit of
    64 levels (MAX_DEPTH)". Each limit is far beyond any real gate and keeps parsing and evaluation linear
    in the input: under a millisecond for typical conditions.
"""

from __future__ import annotations

import difflib
import json
import math
import numbers
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, TypeAlias

from airflow_saga.core import metrics as _catalogue
from airflow_saga.core.errors import ConditionError
from airflow_saga.core.slices import DEFAULT_MIN_ROWS as _DEFAULT_MIN_SLICE_ROWS

__all__ = [
    "MAX_DEPTH",
    "MAX_LENGTH",
    "MAX_NODES",
    "MAX_NUMBER_DIGITS",
    "NO_CHAMPION_NOTE",
    "And",
    "Condition",
    "ConditionSpec",
    "Eq",
    "Ge",
    "Gt",
    "Improves",
    "In",
    "Le",
    "Lt",
    "Metric",
    "Not",
    "Operand",
    "Or",
    "SliceImproves",
    "Value",
    "evaluate",
    "format_decision",
    "parse_condition",
    "referenced_metrics",
    "validate_refs",
]

CANDIDATE: Final = "candidate"
CHAMPION: Final = "champion"
_SOURCES: Final = (CANDIDATE, CHAMPION)
_REF_PREFIXES: Final = ("candidate.", "champion.")
_EXISTS: Final = "exists"
NO_CHAMPION_NOTE: Final = "no champion to compare against"

_KEYWORDS: Final = frozenset({"and", "or", "not", "in", "true", "false"})
_IDENT: Final = r"[A-Za-z_][A-Za-z0-9_]*"
_DOTTED_RE: Final = re.compile(rf"{_IDENT}(?:\.{_IDENT})*")
# Float rounding tolerance for the subtraction inside Improves (see module docstring).
_REL_TOL: Final = 1e-9
_ABS_TOL: Final = 1e-12

# Input limits (module docstring, "Limits"): beyond them parsing raises ConditionError naming the limit.
MAX_LENGTH: Final = 10_000
MAX_DEPTH: Final = 64
MAX_NODES: Final = 2_000
MAX_NUMBER_DIGITS: Final = 40
_MAX_INT: Final = 10**MAX_NUMBER_DIGITS
_SHOW_LIMIT: Final = 200
_SURROGATE_RE: Final = re.compile("[\ud800-\udfff]")

Scalar: TypeAlias = str | int | float | bool


# ----------------------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------------------


def _kind(value: object) -> str | None:
    """The type family used for compatibility checks: boolean, number, string, or None (unsupported)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, numbers.Real):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


def _show(value: object) -> str:
    """Render user input for an error message (JSON when possible, so it looks like what they wrote)."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=True)
    except (TypeError, ValueError, RecursionError):
        try:
            text = repr(value)
        except Exception:  # a hostile __repr__ must not replace the real error
            text = f"<{type(value).__name__}>"
    return text if len(text) <= _SHOW_LIMIT else f"{text[: _SHOW_LIMIT - 3]}..."


def _limit_error(what: str, limit: str) -> ConditionError:
    return ConditionError(f"{what}, beyond the limit of {limit}")


def _check_integer(value: int, what: str) -> None:
    if abs(value) >= _MAX_INT:
        raise _limit_error(
            f"{what} has more than {MAX_NUMBER_DIGITS} digits",
            f"{MAX_NUMBER_DIGITS} digits (MAX_NUMBER_DIGITS)",
        )


def _check_text(text: str, what: str) -> None:
    if len(text) > MAX_LENGTH:
        raise _limit_error(f"{what} is {len(text)} characters long", f"{MAX_LENGTH} characters (MAX_LENGTH)")
    if _SURROGATE_RE.search(text):
        raise ConditionError(f"{what} contains an unpaired UTF-16 surrogate, which is not text")


def _depth_error(depth: int | str) -> ConditionError:
    return _limit_error(f"the condition nests {depth} levels deep", f"{MAX_DEPTH} levels (MAX_DEPTH)")


def _check_data(data: object) -> None:
    """Bound a JSON-form condition before walking it recursively: depth, item count, string and int size.

    Iterative, so a hostile structure (100k nested lists, a list that contains itself) costs at most
    ``MAX_NODES`` steps and never the interpreter's recursion limit.
    """
    stack: list[tuple[object, int]] = [(data, 1)]
    nodes = 0
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise _limit_error(
                f"the condition has more than {MAX_NODES} items", f"{MAX_NODES} items (MAX_NODES)"
            )
        if depth > MAX_DEPTH and isinstance(item, Mapping | list | tuple | Condition):
            raise _depth_error(f"more than {MAX_DEPTH}")
        if isinstance(item, str):
            _check_text(item, "a string in the condition")
        elif isinstance(item, bool):
            continue
        elif isinstance(item, numbers.Integral):
            _check_integer(int(item), "a number in the condition")
        elif isinstance(item, Condition):
            _check_condition(item, depth)
        elif isinstance(item, Mapping):
            stack.extend((key, depth + 1) for key in item)
            stack.extend((value, depth + 1) for value in item.values())
        elif isinstance(item, list | tuple):
            stack.extend((child, depth + 1) for child in item)


def _check_condition(condition: Condition, depth: int = 1) -> None:
    """Bound the nesting of a Condition built in Python, before anything recurses over it."""
    stack: list[tuple[Condition, int]] = [(condition, depth)]
    while stack:
        node, level = stack.pop()
        if level > MAX_DEPTH:
            raise _depth_error(f"more than {MAX_DEPTH}")
        if isinstance(node, Not):
            stack.append((node.condition, level + 1))
        elif isinstance(node, And | Or):
            stack.extend((child, level + 1) for child in node.conditions)


def _render_scalar(value: Scalar) -> str:
    """Render a literal in grammar syntax; parsing the result yields an equal value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def _round(value: float) -> float:
    """Drop float noise from computed deltas (0.010000000000000009 -> 0.01) for records and messages."""
    return float(f"{value:.12g}")


def _at_least(value: float, bound: float) -> bool:
    return value >= bound or math.isclose(value, bound, rel_tol=_REL_TOL, abs_tol=_ABS_TOL)


def _suggest(name: str, available: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, [a for a in available if a != name], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _names(available: Iterable[str]) -> str:
    names = sorted(str(n) for n in available)
    return ", ".join(names) if names else "(none)"


# ----------------------------------------------------------------------------------------------------------
# operands
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, init=False)
class Metric:
    """A reference into the evaluation report: ``candidate.<name>``, ``champion.<name>``, ``champion.exists``.

    A distinct type (rather than a bare string) so that "accuracy the metric" and "accuracy the label" stay
    different through JSON and string round trips. ``Metric("accuracy")`` means the candidate's metric.
    """

    source: str
    name: str

    def __init__(self, ref: str, source: str | None = None) -> None:
        if not isinstance(ref, str):
            raise ConditionError(f"a metric reference must be a string, got {_show(ref)}")
        _check_text(ref, "a metric reference")
        if source is None:
            head, dot, rest = ref.partition(".")
            if head in _SOURCES:
                if not dot or not rest:
                    raise ConditionError(
                        f"metric reference {ref!r} needs a metric name after {head!r}, e.g. {head}.accuracy"
                    )
                source, name = head, rest
            else:
                source, name = CANDIDATE, ref
        else:
            if source not in _SOURCES:
                raise ConditionError(f"metric source must be 'candidate' or 'champion', got {_show(source)}")
            name = ref
        if not name.strip():
            raise ConditionError(f"metric reference {ref!r} has an empty metric name")
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "name", name)

    @property
    def ref(self) -> str:
        """Canonical dotted reference, as used in decision records and the JSON form."""
        return f"{self.source}.{self.name}"

    @property
    def is_champion_exists(self) -> bool:
        return self.source == CHAMPION and self.name == _EXISTS

    def __str__(self) -> str:
        if _DOTTED_RE.fullmatch(self.name):
            return self.ref
        return f"{self.source}[{_render_scalar(self.name)}]"


@dataclass(frozen=True, eq=False)
class Value:
    """A literal operand: a finite number, a string or a boolean.

    Equality includes the type family, so ``Value(True) != Value(1)`` although ``True == 1`` in Python;
    ``Value(1) == Value(1.0)`` because the gate compares numbers by value.
    """

    value: Scalar

    def __post_init__(self) -> None:
        raw = self.value
        kind = _kind(raw)
        if kind is None:
            raise ConditionError(f"a literal must be a number, string or boolean, got {_show(raw)}")
        if kind == "number":
            if isinstance(raw, numbers.Integral):
                _check_integer(int(raw), "a numeric literal")
            normalised: Scalar = int(raw) if isinstance(raw, numbers.Integral) else float(raw)
            if not math.isfinite(normalised):
                raise ConditionError(f"a numeric literal must be finite, got {normalised!r}")
        elif kind == "boolean":
            normalised = bool(raw)
        else:
            normalised = str(raw)
            _check_text(normalised, "a string literal")
        object.__setattr__(self, "value", normalised)

    @property
    def kind(self) -> str:
        return _kind(self.value) or "unknown"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Value):
            return NotImplemented
        return self.kind == other.kind and self.value == other.value

    def __hash__(self) -> int:
        return hash((self.kind, self.value))

    def __str__(self) -> str:
        return _render_scalar(self.value)


Operand: TypeAlias = Metric | Value
OperandLike: TypeAlias = Metric | Value | Scalar | Mapping[str, Any]


def _coerce_operand(raw: object, side: str) -> Operand:
    """Turn user input into an operand, applying the documented plain-string rule for ``side``."""
    if isinstance(raw, Metric | Value):
        return raw
    if isinstance(raw, str):
        if side == "left" or raw.startswith(_REF_PREFIXES):
            return Metric(raw)
        return Value(raw)
    if isinstance(raw, Mapping):
        if len(raw) == 1:
            ((key, inner),) = raw.items()
            if key == "metric":
                if not isinstance(inner, str):
                    raise ConditionError(f'{{"metric": ...}} needs a metric name string, got {_show(inner)}')
                return Metric(inner)
            if key == "value":
                return Value(inner)
        raise ConditionError(
            f'an operand object must be {{"metric": "<name>"}} or {{"value": <literal>}}, got {_show(raw)}'
        )
    if isinstance(raw, list | tuple):
        raise ConditionError(f"a list ({_show(raw)}) is only valid as the right operand of 'in'")
    if raw is None:
        raise ConditionError("null is not a valid operand")
    return Value(raw)  # type: ignore[arg-type]  # Value validates and names the offending value


def _operand_to_data(operand: Operand, side: str) -> Any:
    """JSON form of an operand; uses ``{"value": ...}`` only where the plain-string rule would misread it."""
    if isinstance(operand, Metric):
        return operand.ref
    value = operand.value
    if isinstance(value, str) and (side == "left" or value.startswith(_REF_PREFIXES)):
        return {"value": value}
    return value


# ----------------------------------------------------------------------------------------------------------
# conditions
# ----------------------------------------------------------------------------------------------------------


class Condition:
    """Base of every gate condition.

    Subclasses are immutable so that a gate defined once in a DAG file can be shared by many task runs and
    compared for equality in tests; every subclass renders itself in both the JSON and the grammar form so a
    decision record can always say exactly which rule was applied.
    """

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        """The JSON form; ``parse_condition(c.to_dict()) == c``."""
        raise NotImplementedError

    def __str__(self) -> str:  # the grammar form; parse_condition(str(c)) == c
        raise NotImplementedError

    def __and__(self, other: object) -> And:
        if not isinstance(other, Condition):
            return NotImplemented
        return And(self, other)

    def __or__(self, other: object) -> Or:
        if not isinstance(other, Condition):
            return NotImplemented
        return Or(self, other)

    def __invert__(self) -> Not:
        return Not(self)


@dataclass(frozen=True, init=False)
class _Compare(Condition):
    """A binary comparison of two operands; subclasses fix the operator."""

    left: Operand
    right: Operand
    op: ClassVar[str] = ""
    symbol: ClassVar[str] = ""
    ordered: ClassVar[bool] = True

    def __init__(self, left: OperandLike, right: OperandLike) -> None:
        lhs = _coerce_operand(left, "left")
        rhs = _coerce_operand(right, "right")
        self._check_static_types(lhs, rhs)
        object.__setattr__(self, "left", lhs)
        object.__setattr__(self, "right", rhs)

    def _check_static_types(self, lhs: Operand, rhs: Operand) -> None:
        """Reject comparisons that can never be valid, at definition time rather than mid-pipeline."""
        for operand in (lhs, rhs):
            if self.ordered and isinstance(operand, Value) and operand.kind != "number":
                hint = ""
                if operand.kind == "string":
                    hint = (
                        f'; to reference a metric write {{"metric": {_show(operand.value)}}} '
                        f"or candidate.{operand.value}"
                    )
                raise ConditionError(
                    f"'{self.symbol}' compares numbers, but {operand} is a {operand.kind} literal{hint}"
                )
            if self.ordered and isinstance(operand, Metric) and operand.is_champion_exists:
                raise ConditionError(
                    f"champion.exists is a boolean and cannot be compared with '{self.symbol}'"
                )
        if not self.ordered:
            kinds = []
            for operand in (lhs, rhs):
                if isinstance(operand, Value):
                    kinds.append(operand.kind)
                elif operand.is_champion_exists:
                    kinds.append("boolean")
            if len(kinds) == 2 and kinds[0] != kinds[1]:
                raise ConditionError(
                    f"'{self.symbol}' cannot compare {lhs} (a {kinds[0]}) with {rhs} (a {kinds[1]})"
                )

    def to_dict(self) -> dict[str, Any]:
        return {self.op: [_operand_to_data(self.left, "left"), _operand_to_data(self.right, "right")]}

    def __str__(self) -> str:
        return f"{self.left} {self.symbol} {self.right}"


@dataclass(frozen=True, init=False)
class Ge(_Compare):
    """``left >= right`` (SageMaker ConditionGreaterThanOrEqualTo): the usual "at least this good" bar."""

    op: ClassVar[str] = "ge"
    symbol: ClassVar[str] = ">="


@dataclass(frozen=True, init=False)
class Gt(_Compare):
    """``left > right`` (SageMaker ConditionGreaterThan): strictly better, e.g. beat the champion outright."""

    op: ClassVar[str] = "gt"
    symbol: ClassVar[str] = ">"


@dataclass(frozen=True, init=False)
class Le(_Compare):
    """``left <= right`` (SageMaker ConditionLessThanOrEqualTo): ceilings for errors, latency, size."""

    op: ClassVar[str] = "le"
    symbol: ClassVar[str] = "<="


@dataclass(frozen=True, init=False)
class Lt(_Compare):
    """``left < right`` (SageMaker ConditionLessThan): strict ceilings."""

    op: ClassVar[str] = "lt"
    symbol: ClassVar[str] = "<"


@dataclass(frozen=True, init=False)
class Eq(_Compare):
    """``left == right`` (SageMaker ConditionEquals): numbers by value, strings and booleans exactly.

    ``Eq(Metric("champion.exists"), True)`` is what a bare ``champion.exists`` in the grammar means, and it
    renders back as ``champion.exists``.
    """

    op: ClassVar[str] = "eq"
    symbol: ClassVar[str] = "=="
    ordered: ClassVar[bool] = False

    @property
    def is_exists_check(self) -> bool:
        return isinstance(self.left, Metric) and self.left.is_champion_exists and self.right == Value(True)

    def __str__(self) -> str:
        return str(self.left) if self.is_exists_check else super().__str__()


@dataclass(frozen=True, init=False)
class In(Condition):
    """``left in [literals]`` (SageMaker ConditionIn): membership in a fixed set of literals."""

    left: Operand
    values: tuple[Value, ...]
    op: ClassVar[str] = "in"

    def __init__(self, left: OperandLike, values: Iterable[Scalar | Value]) -> None:
        if isinstance(values, str | bytes | Mapping) or not isinstance(values, Iterable):
            raise ConditionError(f"'in' needs a list of literal values on the right, got {_show(values)}")
        items = tuple(v if isinstance(v, Value) else Value(v) for v in values)
        kinds = sorted({v.kind for v in items})
        if len(kinds) > 1:
            raise ConditionError(
                f"the list of 'in' mixes {' and '.join(kinds)} values: {self._render(items)}; use one type"
            )
        lhs = _coerce_operand(left, "left")
        left_kind = lhs.kind if isinstance(lhs, Value) else ("boolean" if lhs.is_champion_exists else None)
        if left_kind and kinds and left_kind != kinds[0]:
            raise ConditionError(
                f"'in' cannot look for {lhs} (a {left_kind}) "
                f"in a list of {kinds[0]} values {self._render(items)}"
            )
        object.__setattr__(self, "left", lhs)
        object.__setattr__(self, "values", items)

    @staticmethod
    def _render(items: Iterable[Value]) -> str:
        return "[" + ", ".join(str(v) for v in items) + "]"

    def to_dict(self) -> dict[str, Any]:
        return {"in": [_operand_to_data(self.left, "left"), [v.value for v in self.values]]}

    def __str__(self) -> str:
        return f"{self.left} in {self._render(self.values)}"


@dataclass(frozen=True)
class Not(Condition):
    """Logical negation (SageMaker ConditionNot). ``Not(Eq(a, b))`` is what ``a != b`` means."""

    condition: Condition

    def __post_init__(self) -> None:
        if not isinstance(self.condition, Condition):
            raise ConditionError(f"'not' needs a condition, got {_show(self.condition)}")

    def to_dict(self) -> dict[str, Any]:
        return {"not": self.condition.to_dict()}

    def __str__(self) -> str:
        inner = self.condition
        if isinstance(inner, Eq):
            return f"not {inner}" if inner.is_exists_check else f"{inner.left} != {inner.right}"
        if isinstance(inner, In):
            return f"{inner.left} not in {inner._render(inner.values)}"
        if isinstance(inner, Not | Improves):
            return f"not {inner}"
        return f"not ({inner})"


def _flatten(cls: type[And | Or], conditions: tuple[object, ...]) -> tuple[Condition, ...]:
    word = cls.__name__.lower()
    flat: list[Condition] = []
    for index, item in enumerate(conditions):
        if not isinstance(item, Condition):
            raise ConditionError(f"'{word}' item {index} is not a condition: {_show(item)}")
        # (a and b) and c is a and b and c: flattening keeps the string form round-trippable.
        flat.extend(item.conditions if isinstance(item, cls) else (item,))
    if len(flat) < 2:
        raise ConditionError(f"'{word}' needs at least 2 conditions, got {len(flat)}")
    return tuple(flat)


@dataclass(frozen=True, init=False)
class And(Condition):
    """All conditions must hold (a SageMaker ConditionStep's condition list). Nested ``And`` is flattened."""

    conditions: tuple[Condition, ...]

    def __init__(self, *conditions: Condition) -> None:
        object.__setattr__(self, "conditions", _flatten(And, conditions))

    def to_dict(self) -> dict[str, Any]:
        return {"and": [c.to_dict() for c in self.conditions]}

    def __str__(self) -> str:
        return " and ".join(f"({c})" if isinstance(c, Or) else str(c) for c in self.conditions)


@dataclass(frozen=True, init=False)
class Or(Condition):
    """At least one condition must hold (SageMaker ConditionOr). Nested ``Or`` is flattened."""

    conditions: tuple[Condition, ...]

    def __init__(self, *conditions: Condition) -> None:
        object.__setattr__(self, "conditions", _flatten(Or, conditions))

    def to_dict(self) -> dict[str, Any]:
        return {"or": [c.to_dict() for c in self.conditions]}

    def __str__(self) -> str:
        return " or ".join(str(c) for c in self.conditions)


def _finite_number(value: object, what: str) -> float:
    if _kind(value) != "number":
        raise ConditionError(f"{what} must be a number, got {_show(value)}")
    if isinstance(value, numbers.Integral):
        _check_integer(int(value), what)
    number = float(value)  # type: ignore[arg-type]
    if not math.isfinite(number):
        raise ConditionError(f"{what} must be a finite number, got {number!r}")
    return number


@dataclass(frozen=True)
class Improves(Condition):
    """The candidate beats the current champion on ``metric`` (MLflow MetricThreshold semantics).

    Passes when there is no champion (a first model has nothing to beat). Otherwise, with improvement =
    ``cand - champ`` (or ``champ - cand`` when lower is better), passes iff improvement >= ``min_absolute``
    and (``champ == 0`` or improvement / |champ| >= ``min_relative``).

    A threshold left as ``None`` is not checked, as in MLflow; with neither given (or only a relative one
    that cannot apply because the champion's value is 0), the candidate must be at least as good:
    improvement >= 0. For non-negative thresholds this is exactly "both default to 0.0"; it differs only
    for a negative threshold, which therefore means what it says: ``improves(f1, min_absolute=-0.01)``
    tolerates a regression of up to 0.01 (with a 0.0 default, the relative test would silently forbid it).
    """

    metric: str
    min_absolute: float | None = None
    min_relative: float | None = None
    greater_is_better: bool = True

    def __post_init__(self) -> None:
        metric = self.metric
        if not isinstance(metric, str) or not metric.strip():
            raise ConditionError(f"improves() needs a metric name, got {_show(metric)}")
        if metric.startswith("champion."):
            raise ConditionError(
                f"improves() compares candidate with champion by itself; give the metric name, not {metric!r}"
            )
        metric = metric.removeprefix("candidate.")
        if not metric.strip():
            raise ConditionError(f"improves() needs a metric name, got {_show(self.metric)}")
        if metric == _EXISTS:
            raise ConditionError("improves() cannot compare 'exists': champion.exists is reserved")
        if not isinstance(self.greater_is_better, bool):
            raise ConditionError(
                f"improves() greater_is_better must be true or false, got {_show(self.greater_is_better)}"
            )
        object.__setattr__(self, "metric", metric)
        for name in ("min_absolute", "min_relative"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _finite_number(value, f"improves() {name}"))

    @property
    def lower_is_better(self) -> bool:
        return not self.greater_is_better

    def to_dict(self) -> dict[str, Any]:
        args: dict[str, Any] = {"metric": self.metric}
        for name in ("min_absolute", "min_relative"):
            if getattr(self, name) is not None:
                args[name] = getattr(self, name)
        args["greater_is_better"] = self.greater_is_better
        return {"improves": args}

    def __str__(self) -> str:
        name = self.metric
        head = name.split(".", 1)[0]
        bare = _DOTTED_RE.fullmatch(name) and head.lower() not in _KEYWORDS and head not in _SOURCES
        args = [name if bare else _render_scalar(name)]
        if self.min_absolute is not None:
            args.append(f"min_absolute={_render_scalar(self.min_absolute)}")
        if self.min_relative is not None:
            args.append(f"min_relative={_render_scalar(self.min_relative)}")
        if not self.greater_is_better:
            args.append("lower_is_better")
        return f"improves({', '.join(args)})"


@dataclass(frozen=True)
class SliceImproves(Improves):
    """``improves`` on every slice of a sliced evaluation: a regression confined to one slice blocks.

    Each slice (of definition ``by``, or of every definition when ``by`` is None) with at least
    ``min_rows`` rows (default: the evaluation's ``min_rows``) is judged exactly like ``Improves``,
    candidate against champion on that slice's rows; the condition passes iff every such slice passes.
    Smaller slices, and slices on which either model lacks the metric, are skipped and listed. With no
    champion it passes, as ``improves`` does; with a champion but no slice to compare, it is unknown
    (which blocks). The decision record names the worst slice and every failing one.
    """

    by: str | None = None
    min_rows: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.by is not None and (not isinstance(self.by, str) or not self.by.strip()):
            raise ConditionError(f"slice_improves() by must be a slice name, got {_show(self.by)}")
        if self.by is not None:
            _check_text(self.by, "slice_improves() by")
        if self.min_rows is not None:
            rows = self.min_rows
            if isinstance(rows, bool) or not isinstance(rows, numbers.Integral) or not 1 <= rows < _MAX_INT:
                raise ConditionError(
                    f"slice_improves() min_rows must be a positive integer, got {_show(rows)}"
                )
            object.__setattr__(self, "min_rows", int(rows))

    def to_dict(self) -> dict[str, Any]:
        args = super().to_dict()["improves"]
        if self.by is not None:
            args["by"] = self.by
        if self.min_rows is not None:
            args["min_rows"] = self.min_rows
        return {"slice_improves": args}

    def __str__(self) -> str:
        text = "slice_" + super().__str__()[:-1]
        if self.by is not None:
            text += f", by={_render_scalar(self.by)}"
        if self.min_rows is not None:
            text += f", min_rows={self.min_rows}"
        return text + ")"


ConditionSpec: TypeAlias = Condition | str | Mapping[str, Any] | list[Any] | tuple[Any, ...]


def _leaves(condition: Condition) -> Iterator[Condition]:
    if isinstance(condition, Not):
        yield from _leaves(condition.condition)
    elif isinstance(condition, And | Or):
        for child in condition.conditions:
            yield from _leaves(child)
    else:
        yield condition


def _metric_refs(condition: Condition) -> list[Metric]:
    """Every metric reference, in expression order, without duplicates; Improves reads both sides."""
    refs: list[Metric] = []
    for leaf in _leaves(condition):
        if isinstance(leaf, _Compare):
            found = [o for o in (leaf.left, leaf.right) if isinstance(o, Metric)]
        elif isinstance(leaf, In):
            found = [leaf.left] if isinstance(leaf.left, Metric) else []
        elif isinstance(leaf, SliceImproves):
            found = []  # reads the slices' metrics, checked by _Report.slices_for
        elif isinstance(leaf, Improves):
            found = [Metric(leaf.metric, CANDIDATE), Metric(leaf.metric, CHAMPION)]
        else:
            found = []
        refs.extend(m for m in found if m not in refs)
    return refs


def referenced_metrics(condition: ConditionSpec) -> frozenset[str]:
    """Names of the metrics a condition reads (candidate or champion side, or per slice;
    ``champion.exists`` excluded)."""
    parsed = parse_condition(condition)
    names = {m.name for m in _metric_refs(parsed) if not m.is_champion_exists}
    names.update(leaf.metric for leaf in _leaves(parsed) if isinstance(leaf, SliceImproves))
    return frozenset(names)


def validate_refs(condition: ConditionSpec, available_metrics: Iterable[str]) -> None:
    """Raise ``ConditionError`` if the condition reads a metric outside ``available_metrics``.

    Lets a DAG or operator reject a gate at parse/plan time instead of after an hour of training.
    """
    parsed = parse_condition(condition)
    available = set(available_metrics)
    missing = sorted(referenced_metrics(parsed) - available)
    if missing:
        hints = "".join(_suggest(name, available) for name in missing)
        raise ConditionError(
            f"condition {str(parsed)!r} refers to metric(s) {', '.join(missing)} "
            f"that the evaluation does not produce{hints}; available metrics: {_names(available)}"
        )


# ----------------------------------------------------------------------------------------------------------
# JSON form
# ----------------------------------------------------------------------------------------------------------

_COMPARE_KEYS: Final[dict[str, type[_Compare]]] = {"eq": Eq, "ge": Ge, "gt": Gt, "le": Le, "lt": Lt}
_OPERATOR_KEYS: Final = sorted([*_COMPARE_KEYS, "ne", "in", "not", "and", "or", "improves", "slice_improves"])
# Spellings people bring from other tools, for "did you mean" hints only (not accepted as aliases).
_OPERATOR_HINTS: Final = {
    "gte": "ge",
    "lte": "le",
    "neq": "ne",
    "equals": "eq",
    "greater_than": "gt",
    "greater_than_or_equal_to": "ge",
    "less_than": "lt",
    "less_than_or_equal_to": "le",
    ">=": "ge",
    ">": "gt",
    "<=": "le",
    "<": "lt",
    "==": "eq",
    "!=": "ne",
}
_IMPROVES_ARGS: Final = ("min_absolute", "min_relative", "greater_is_better", "lower_is_better")
_SLICE_ARGS: Final = (*_IMPROVES_ARGS, "by", "min_rows")
_FUNCTIONS: Final = {"improves": _IMPROVES_ARGS, "slice_improves": _SLICE_ARGS}


def _at(path: str, exc: ConditionError) -> ConditionError:
    return ConditionError(f"{path}: {exc}")


def _pair(arg: object, path: str, key: str) -> tuple[object, object]:
    if not isinstance(arg, list | tuple) or len(arg) != 2:
        got = f"{len(arg)} operand(s)" if isinstance(arg, list | tuple) else _show(arg)
        raise ConditionError(f"{path}: '{key}' takes exactly 2 operands [left, right], got {got}")
    return arg[0], arg[1]


def _from_data(data: object, path: str) -> Condition:
    if isinstance(data, Condition):
        return data
    if isinstance(data, str):
        try:
            return _Parser(data).parse()
        except ConditionError as exc:
            if path == "$":
                raise
            raise _at(path, exc) from None
    if isinstance(data, list | tuple):
        if not data:
            raise ConditionError(f"{path}: an empty list of conditions is not a gate; give at least one")
        items = [_from_data(item, f"{path}[{i}]") for i, item in enumerate(data)]
        return items[0] if len(items) == 1 else And(*items)
    if not isinstance(data, Mapping):
        raise ConditionError(f"{path}: expected a condition (object, list or string), got {_show(data)}")
    if len(data) != 1:
        raise ConditionError(
            f"{path}: a condition object needs exactly one operator key, got {sorted(map(str, data))}"
        )
    ((key, arg),) = data.items()
    here = f"{path}.{key}"
    if key in _COMPARE_KEYS or key == "ne":
        left, right = _pair(arg, here, key)
        try:
            lhs = _coerce_operand(left, "left")
        except ConditionError as exc:
            raise _at(f"{here}[0]", exc) from None
        try:
            rhs = _coerce_operand(right, "right")
        except ConditionError as exc:
            raise _at(f"{here}[1]", exc) from None
        try:
            node: Condition = _COMPARE_KEYS["eq" if key == "ne" else key](lhs, rhs)
        except ConditionError as exc:
            raise _at(here, exc) from None
        return Not(node) if key == "ne" else node
    if key == "in":
        left, right = _pair(arg, here, key)
        if not isinstance(right, list | tuple):
            raise ConditionError(f"{here}[1]: 'in' needs a list of literal values, got {_show(right)}")
        try:
            return In(_coerce_operand(left, "left"), right)
        except ConditionError as exc:
            raise _at(here, exc) from None
    if key == "not":
        if isinstance(arg, list | tuple):
            if len(arg) != 1:
                raise ConditionError(f"{here}: 'not' takes exactly 1 condition, got {len(arg)}")
            return Not(_from_data(arg[0], f"{here}[0]"))
        return Not(_from_data(arg, here))
    if key in ("and", "or"):
        if not isinstance(arg, list | tuple) or len(arg) < 2:
            got = f"{len(arg)}" if isinstance(arg, list | tuple) else _show(arg)
            raise ConditionError(f"{here}: '{key}' takes a list of at least 2 conditions, got {got}")
        children = [_from_data(item, f"{here}[{i}]") for i, item in enumerate(arg)]
        return And(*children) if key == "and" else Or(*children)
    if key in _FUNCTIONS:
        return _improves_from_data(arg, here, key)
    hint = _OPERATOR_HINTS.get(str(key).lower())
    suggestion = f" (did you mean {hint!r}?)" if hint else _suggest(str(key), _OPERATOR_KEYS)
    raise ConditionError(
        f"{path}: unknown operator {_show(key)}{suggestion}; expected one of {', '.join(_OPERATOR_KEYS)}"
    )


def _improves_from_data(arg: object, path: str, function: str = "improves") -> Improves:
    allowed = _FUNCTIONS[function]
    if isinstance(arg, str):
        arg = {"metric": arg}
    if not isinstance(arg, Mapping):
        raise ConditionError(f'{path}: expected {{"metric": "<name>", ...}}, got {_show(arg)}')
    unknown = sorted(set(map(str, arg)) - {"metric", *allowed})
    if unknown:
        raise ConditionError(
            f"{path}: unknown argument(s) {', '.join(unknown)}{_suggest(unknown[0], allowed)}; "
            f"expected metric, {', '.join(allowed)}"
        )
    if "metric" not in arg:
        raise ConditionError(f"{path}: improves needs a 'metric'")
    kwargs = dict(arg)
    if "lower_is_better" in kwargs:
        if "greater_is_better" in kwargs:
            raise ConditionError(f"{path}: give greater_is_better or lower_is_better, not both")
        lower = kwargs.pop("lower_is_better")
        if not isinstance(lower, bool):
            raise ConditionError(f"{path}: lower_is_better must be true or false, got {_show(lower)}")
        kwargs["greater_is_better"] = not lower
    try:
        return SliceImproves(**kwargs) if function == "slice_improves" else Improves(**kwargs)
    except ConditionError as exc:
        raise _at(path, exc) from None


# ----------------------------------------------------------------------------------------------------------
# string form: tokenizer + recursive-descent parser (no eval of any kind)
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Token:
    kind: str  # num str name kw op ( ) [ ] , = error end
    text: str
    pos: int
    value: Any = field(default=None, compare=False)


_SCAN_RE: Final = re.compile(
    rf"""
      (?P<ws>\s+)
    | (?P<num>-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
    | (?P<name>{_IDENT}(?:\.{_IDENT})*)
    | (?P<op>>=|<=|==|!=|>|<)
    | (?P<punct>[()\[\],=])
    """,
    re.VERBOSE,
)
_ESCAPES: Final = {
    '"': '"',
    "'": "'",
    "\\": "\\",
    "/": "/",
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "b": "\b",
    "f": "\f",
}
_HEX: Final = frozenset("0123456789abcdefABCDEF")


def _syntax_error(text: str, pos: int, message: str) -> ConditionError:
    """An error that points at the offending character, with the line and a caret under it."""
    line_start = text.rfind("\n", 0, pos) + 1
    line_end = text.find("\n", pos)
    line = text[line_start : line_end if line_end != -1 else len(text)]
    column = pos - line_start + 1
    where = f"column {column}"
    if "\n" in text:
        where = f"line {text.count(chr(10), 0, pos) + 1}, {where}"
    offset = column - 1
    if len(line) > 120:  # show a window around the caret, not a 10,000-character line
        start = max(0, offset - 60)
        tail = "..." if start + 120 < len(line) else ""
        line = ("..." if start else "") + line[start : start + 120] + tail
        offset = offset - start + (3 if start else 0)
    caret = "".join(c if c == "\t" else " " for c in line[:offset]) + "^"
    return ConditionError(f"{message} (at {where})\n    {line}\n    {caret}")


def _scan_string(text: str, start: int) -> tuple[str, int]:
    quote = text[start]
    out: list[str] = []
    i = start + 1
    while i < len(text):
        char = text[i]
        if char == quote:
            return "".join(out), i + 1
        if char == "\\" and i + 1 < len(text):
            escape = text[i + 1]
            if escape in _ESCAPES:
                out.append(_ESCAPES[escape])
                i += 2
                continue
            digits = text[i + 2 : i + 6]
            if escape == "u" and len(digits) == 4 and set(digits) <= _HEX:
                out.append(chr(int(digits, 16)))
                i += 6
                continue
            raise _syntax_error(text, i, f"invalid escape {text[i : i + 2]!r} in string")
        out.append(char)
        i += 1
    raise _syntax_error(text, start, f"unterminated string starting with {quote}")


def _tokenize(text: str) -> list[_Token]:
    """Split ``text`` into tokens; a lexing error becomes an ``error`` token that the parser raises on reach.

    Deferring the error lets the parser report the first problem in reading order, e.g. the unknown
    function in ``__import__('os').system('x')`` rather than the ``.`` after it.
    """
    tokens: list[_Token] = []
    try:
        _scan(text, tokens)
    except ConditionError as exc:
        tokens.append(_Token("error", "", len(text), exc))
    tokens.append(_Token("end", "", len(text)))
    return tokens


def _scan(text: str, tokens: list[_Token]) -> None:
    pos = 0
    while pos < len(text):
        if text[pos] in "\"'":
            value, end = _scan_string(text, pos)
            tokens.append(_Token("str", text[pos:end], pos, value))
            pos = end
            continue
        match = _SCAN_RE.match(text, pos)
        if match is None:
            raise _syntax_error(text, pos, f"unexpected character {text[pos]!r}")
        kind, lexeme, end = match.lastgroup or "", match.group(), match.end()
        if kind == "num":
            if end < len(text) and (text[end].isalnum() or text[end] in "_."):
                raise _syntax_error(text, pos, f"malformed number {text[pos : end + 1]!r}")
            shown = lexeme if len(lexeme) <= 24 else f"{lexeme[:20]}..."
            mantissa, _, exponent = lexeme.lower().partition("e")
            if sum(c.isdigit() for c in mantissa) > MAX_NUMBER_DIGITS or len(exponent) > 6:
                raise _syntax_error(
                    text,
                    pos,
                    f"number {shown} has more than {MAX_NUMBER_DIGITS} digits, beyond the limit of "
                    f"{MAX_NUMBER_DIGITS} digits (MAX_NUMBER_DIGITS)",
                )
            number: int | float = float(lexeme) if exponent or "." in mantissa else int(lexeme)
            if not math.isfinite(number):
                raise _syntax_error(
                    text, pos, f"number {shown} is out of range (a number must fit a 64-bit float)"
                )
            tokens.append(_Token("num", lexeme, pos, number))
        elif kind == "name":
            lower = lexeme.lower()
            if lower in _KEYWORDS:
                tokens.append(_Token("kw", lexeme, pos, lower))
            else:
                tokens.append(_Token("name", lexeme, pos, lexeme))
        elif kind == "op":
            tokens.append(_Token("op", lexeme, pos, lexeme))
        elif kind == "punct":
            tokens.append(_Token(lexeme, lexeme, pos, lexeme))
        pos = end


def _describe(token: _Token) -> str:
    if token.kind == "end":
        return "end of input"
    labels = {"num": "number", "str": "string", "name": "name", "kw": "keyword", "op": "operator"}
    label = labels.get(token.kind)
    return (
        f"{label} {token.text}" if token.kind in ("num", "str") else f"{label or ''} {token.text!r}".strip()
    )


_GRAMMAR_OPS: Final[dict[str, type[_Compare]]] = {">=": Ge, ">": Gt, "<=": Le, "<": Lt, "==": Eq, "!=": Eq}


class _Parser:
    """Recursive-descent parser for the grammar in the module docstring; builds Condition objects only."""

    def __init__(self, text: str) -> None:
        _check_text(text, "the condition text")
        self.text = text
        self.tokens = _tokenize(text)
        self.index = 0
        self.depth = 0

    def enter(self, token: _Token) -> None:
        """One more level of nesting (a parenthesis or a ``not``), within MAX_DEPTH."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(token, str(_depth_error(f"more than {MAX_DEPTH}")))

    def peek(self, ahead: int = 0) -> _Token:
        token = self.tokens[min(self.index + ahead, len(self.tokens) - 1)]
        if token.kind == "error":  # a lexing error surfaces when the parser reaches it, in reading order
            raise token.value
        return token

    def advance(self) -> _Token:
        token = self.peek()
        if token.kind != "end":
            self.index += 1
        return token

    def error(self, token: _Token, message: str) -> ConditionError:
        return _syntax_error(self.text, token.pos, message)

    def column(self, token: _Token) -> int:
        return token.pos - (self.text.rfind("\n", 0, token.pos) + 1) + 1

    @staticmethod
    def is_kw(token: _Token, word: str) -> bool:
        return token.kind == "kw" and token.value == word

    def parse(self) -> Condition:
        if self.peek().kind == "end":
            raise self.error(self.peek(), "empty condition")
        node = self.parse_or()
        token = self.peek()
        if token.kind == ")":
            raise self.error(token, "unbalanced ')': it has no matching '('")
        if token.kind == "op":
            raise self.error(
                token,
                f"unexpected {token.text!r}: chained comparisons are not supported, join them with 'and'",
            )
        if token.kind != "end":
            raise self.error(
                token,
                f"unexpected {_describe(token)} after a complete condition (join conditions with and/or)",
            )
        return node

    def parse_or(self) -> Condition:
        items = [self.parse_and()]
        while self.is_kw(self.peek(), "or"):
            self.advance()
            items.append(self.parse_and())
        return items[0] if len(items) == 1 else Or(*items)

    def parse_and(self) -> Condition:
        items = [self.parse_not()]
        while self.is_kw(self.peek(), "and"):
            self.advance()
            items.append(self.parse_not())
        return items[0] if len(items) == 1 else And(*items)

    def parse_not(self) -> Condition:
        if self.is_kw(self.peek(), "not"):
            self.enter(self.advance())
            node = Not(self.parse_not())
            self.depth -= 1
            return node
        return self.parse_atom()

    def parse_atom(self) -> Condition:
        token = self.peek()
        if token.kind == "(":
            self.enter(self.advance())
            if self.peek().kind == ")":
                raise self.error(self.peek(), "empty parentheses '()'")
            node = self.parse_or()
            close = self.peek()
            if close.kind != ")":
                raise self.error(
                    close,
                    f"unbalanced '(' opened at column {self.column(token)}: "
                    f"expected ')', got {_describe(close)}",
                )
            self.advance()
            self.depth -= 1
            return node
        if token.kind == "name" and self.peek(1).kind == "(":
            return self.parse_call()
        if token.kind in ("end", ")", "op", ",", "]", "=") or (
            token.kind == "kw" and token.value in ("and", "or", "in")
        ):
            raise self.error(token, f"unexpected {_describe(token)}: expected a condition")
        left = self.parse_operand()
        op = self.peek()
        if op.kind == "op":
            self.advance()
            right = self.parse_operand()
            try:
                node = _GRAMMAR_OPS[op.text](left, right)
            except ConditionError as exc:
                raise self.error(op, str(exc)) from None
            return Not(node) if op.text == "!=" else node
        if self.is_kw(op, "in"):
            self.advance()
            return self.parse_in(op, left)
        if self.is_kw(op, "not") and self.is_kw(self.peek(1), "in"):
            self.advance()
            self.advance()
            return Not(self.parse_in(op, left))
        if isinstance(left, Metric) and left.is_champion_exists:
            return Eq(left, True)
        hint = "; did you mean '=='?" if op.kind == "=" else ""
        raise self.error(
            op,
            f"expected a comparison operator (>=, >, <=, <, ==, !=) or 'in' after {left}, got {_describe(op)}"
            f"{hint} (only champion.exists can stand alone as a condition)",
        )

    def parse_operand(self) -> Operand:
        token = self.advance()
        if token.kind in ("num", "str"):
            return Value(token.value)
        if token.kind == "kw" and token.value in ("true", "false"):
            return Value(token.value == "true")
        if token.kind == "name":
            if token.text in _SOURCES and self.peek().kind == "[":
                self.advance()
                name = self.advance()
                if name.kind != "str":
                    raise self.error(
                        name, f"expected a quoted metric name in {token.text}[...], got {_describe(name)}"
                    )
                close = self.advance()
                if close.kind != "]":
                    raise self.error(
                        close, f"expected ']' after {token.text}[{name.text}, got {_describe(close)}"
                    )
                try:
                    return Metric(name.value, source=token.text)
                except ConditionError as exc:
                    raise self.error(name, str(exc)) from None
            try:
                return Metric(token.text)
            except ConditionError as exc:
                raise self.error(token, str(exc)) from None
        if token.kind == "[":
            raise self.error(token, "a list is only allowed after 'in'")
        raise self.error(token, f"expected a metric name or a value, got {_describe(token)}")

    def parse_literal(self, token: _Token) -> Scalar | None:
        if token.kind in ("num", "str"):
            return token.value  # type: ignore[no-any-return]
        if token.kind == "kw" and token.value in ("true", "false"):
            return token.value == "true"
        return None

    def parse_in(self, op: _Token, left: Operand) -> In:
        opening = self.advance()
        if opening.kind != "[":
            raise self.error(
                opening, f'expected a list like ["a", "b"] after \'in\', got {_describe(opening)}'
            )
        values: list[Scalar] = []
        while self.peek().kind != "]":
            token = self.advance()
            literal = self.parse_literal(token)
            if literal is None:
                extra = (
                    " (list items are literal values, not metric references)" if token.kind == "name" else ""
                )
                raise self.error(
                    token, f"expected a literal value in the list, got {_describe(token)}{extra}"
                )
            values.append(literal)
            separator = self.peek()
            if separator.kind == ",":
                self.advance()
            elif separator.kind != "]":
                raise self.error(
                    separator,
                    f"expected ',' or ']' in the list opened at column {self.column(opening)}, "
                    f"got {_describe(separator)}",
                )
        self.advance()
        try:
            return In(left, values)
        except ConditionError as exc:
            raise self.error(op, str(exc)) from None

    def parse_call(self) -> Improves:
        name = self.advance()
        self.advance()  # "("
        function = name.text.lower()
        if function not in _FUNCTIONS:
            raise self.error(
                name,
                f"unknown function {name.text!r}{_suggest(function, _FUNCTIONS)}; the functions are "
                "improves(metric, min_absolute=..., min_relative=..., lower_is_better) and "
                "slice_improves(metric, ..., by=..., min_rows=...)",
            )
        allowed = _FUNCTIONS[function]
        argument = self.advance()
        if argument.kind == "name":
            metric = argument.text
        elif argument.kind == "str":
            metric = argument.value
        else:
            raise self.error(
                argument,
                f"{function}() needs a metric name first, e.g. {function}(f1); got {_describe(argument)}",
            )
        kwargs: dict[str, Any] = {}
        while True:
            token = self.advance()
            if token.kind == ")":
                break
            if token.kind != ",":
                raise self.error(token, f"expected ',' or ')' in {function}(...), got {_describe(token)}")
            key = self.advance()
            if key.kind != "name":
                raise self.error(
                    key, f"expected a keyword argument ({', '.join(allowed)}), got {_describe(key)}"
                )
            if key.text not in allowed:
                raise self.error(
                    key,
                    f"unknown keyword argument {key.text!r} to {function}()"
                    f"{_suggest(key.text, allowed)}; "
                    f"expected one of {', '.join(allowed)}",
                )
            if key.text in kwargs:
                raise self.error(key, f"keyword argument {key.text!r} given twice")
            kwargs[key.text] = self.parse_kwarg_value(key)
        if "greater_is_better" in kwargs and "lower_is_better" in kwargs:
            raise self.error(name, "give greater_is_better or lower_is_better, not both")
        greater = kwargs.pop("greater_is_better", True)
        if "lower_is_better" in kwargs:
            greater = not kwargs.pop("lower_is_better")
        cls = SliceImproves if function == "slice_improves" else Improves
        try:
            return cls(metric, greater_is_better=greater, **kwargs)
        except ConditionError as exc:
            raise self.error(argument, str(exc)) from None

    def parse_kwarg_value(self, key: _Token) -> float | bool | int | str:
        if key.text in ("by", "min_rows"):
            if self.peek().kind != "=":
                raise self.error(
                    self.peek(),
                    f"{key.text} needs a value, e.g. {key.text}="
                    + ('"region"' if key.text == "by" else "50"),
                )
            self.advance()
            token = self.advance()
            if key.text == "by" and token.kind in ("str", "name"):
                return str(token.value)
            if key.text == "min_rows" and token.kind == "num" and isinstance(token.value, int):
                return int(token.value)
            expected = "a slice name" if key.text == "by" else "a whole number"
            raise self.error(token, f"{key.text} must be {expected}, got {_describe(token)}")
        numeric = key.text.startswith("min_")
        if self.peek().kind != "=":
            if numeric:
                raise self.error(self.peek(), f"{key.text} needs a value, e.g. {key.text}=0.01")
            return True  # a bare flag: lower_is_better
        self.advance()
        token = self.advance()
        if numeric and token.kind == "num":
            return float(token.value)
        if not numeric and token.kind == "kw" and token.value in ("true", "false"):
            return token.value == "true"
        expected = "a number" if numeric else "true or false"
        raise self.error(token, f"{key.text} must be {expected}, got {_describe(token)}")


def parse_condition(spec: ConditionSpec) -> Condition:
    """Build a Condition from a Condition, grammar string, JSON-form dict, or list (AND of its items).

    A string that starts with ``{`` or ``[`` is read as JSON (handy for templated Airflow params); any other
    string is parsed with the grammar. Raises ``ConditionError`` naming the offending text and position.
    """
    if isinstance(spec, Condition):
        _check_condition(spec)
        return spec
    if isinstance(spec, str):
        _check_text(spec, "the condition text")
        if spec.lstrip()[:1] in ("{", "["):
            spec = _load_json(spec)
    _check_data(spec)
    return _from_data(spec, "$")


def _json_depth(text: str) -> int:
    """Deepest nesting of objects and lists in JSON text (strings skipped), so json.loads never recurses
    past MAX_DEPTH; stops counting at the first level beyond it."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_DEPTH:
                    break
        elif char in "]}":
            depth -= 1
    return deepest


def _json_int(text: str) -> int:
    if sum(c.isdigit() for c in text) > MAX_NUMBER_DIGITS:
        shown = text if len(text) <= 24 else f"{text[:20]}..."
        raise _limit_error(
            f"number {shown} has more than {MAX_NUMBER_DIGITS} digits",
            f"{MAX_NUMBER_DIGITS} digits (MAX_NUMBER_DIGITS)",
        )
    return int(text)


def _json_float(text: str) -> float:
    mantissa, _, exponent = text.lower().partition("e")
    shown = text if len(text) <= 24 else f"{text[:20]}..."
    if sum(c.isdigit() for c in mantissa) > MAX_NUMBER_DIGITS or len(exponent) > 6:
        raise _limit_error(
            f"number {shown} has more than {MAX_NUMBER_DIGITS} digits",
            f"{MAX_NUMBER_DIGITS} digits (MAX_NUMBER_DIGITS)",
        )
    number = float(text)
    if not math.isfinite(number):
        raise ConditionError(f"number {shown} is out of range (a number must fit a 64-bit float)")
    return number


def _json_constant(text: str) -> float:
    raise ConditionError(f"{text} is not a number a condition can use (JSON has no {text})")


def _load_json(text: str) -> Any:
    if _json_depth(text) > MAX_DEPTH:
        raise _depth_error(f"more than {MAX_DEPTH}")
    try:
        return json.loads(text, parse_int=_json_int, parse_float=_json_float, parse_constant=_json_constant)
    except json.JSONDecodeError as exc:
        raise ConditionError(
            f"condition looks like JSON but is not valid JSON: {exc.msg} at line {exc.lineno}, "
            f"column {exc.colno}"
        ) from None
    except RecursionError:  # unreachable after _json_depth; kept so no input can escape as one
        raise _depth_error(f"more than {MAX_DEPTH}") from None
    except ValueError as exc:
        raise ConditionError(f"condition looks like JSON but cannot be read: {exc}") from None


# ----------------------------------------------------------------------------------------------------------
# evaluation
# ----------------------------------------------------------------------------------------------------------


class _Unknown:
    """Sentinel for a champion value when there is no champion."""

    def __repr__(self) -> str:
        return "UNKNOWN"


_UNKNOWN: Final = _Unknown()


@dataclass(frozen=True)
class _SliceRow:
    """One slice of a sliced evaluation, as the report gives it."""

    name: str
    by: str
    rows: int
    candidate: Mapping[str, Any]
    champion: Mapping[str, Any] | None
    candidate_unavailable: Mapping[str, Any]
    champion_unavailable: Mapping[str, Any]


def _side(entry: Any) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    metrics = entry.get("metrics") if isinstance(entry, Mapping) else None
    unavailable = entry.get("unavailable") if isinstance(entry, Mapping) else None
    return (
        metrics if isinstance(metrics, Mapping) else {},
        unavailable if isinstance(unavailable, Mapping) else {},
    )


@dataclass(frozen=True)
class _Report:
    """The parts of an evaluation report (``saga.evaluation/v1``) that conditions read."""

    candidate: Mapping[str, Any]
    champion: Mapping[str, Any] | None
    champion_version: str | None = None
    champion_error: str | None = None  # set by the evaluate step when the champion could not be scored
    task: str | None = None
    candidate_unavailable: Mapping[str, Any] = field(default_factory=dict)
    champion_unavailable: Mapping[str, Any] = field(default_factory=dict)
    user_metrics: frozenset[str] = frozenset()
    slices: Any = None  # the report's "slices" section, read by slices_for

    @classmethod
    def of(cls, report: Mapping[str, Any]) -> _Report:
        if not isinstance(report, Mapping):
            raise ConditionError(f"the evaluation report must be a mapping, got {type(report).__name__}")
        candidate = report.get("candidate")
        metrics = candidate.get("metrics") if isinstance(candidate, Mapping) else None
        if not isinstance(metrics, Mapping):
            raise ConditionError("the evaluation report has no candidate.metrics mapping")
        task = report.get("task") if isinstance(report.get("task"), str) else None
        user = report.get("user_metrics")
        common: dict[str, Any] = {
            "task": task,
            "candidate_unavailable": _side(candidate)[1],
            "user_metrics": frozenset(str(k) for k in user) if isinstance(user, Mapping) else frozenset(),
            "slices": report.get("slices"),
        }
        champion = report.get("champion")
        if champion is None:
            return cls(metrics, None, None, **common)
        champion_metrics = champion.get("metrics") if isinstance(champion, Mapping) else None
        if not isinstance(champion_metrics, Mapping):
            raise ConditionError(
                "the evaluation report's champion has no metrics mapping (it must be null or have metrics)"
            )
        version, error = champion.get("version"), champion.get("error")
        return cls(
            metrics,
            champion_metrics,
            None if version is None else str(version),
            None if error is None else str(error),
            champion_unavailable=_side(champion)[1],
            **common,
        )

    def metrics(self, source: str) -> Mapping[str, Any] | None:
        return self.candidate if source == CANDIDATE else self.champion

    def unavailable(self, source: str) -> Mapping[str, Any]:
        return self.candidate_unavailable if source == CANDIDATE else self.champion_unavailable

    @property
    def champion_label(self) -> str:
        return f" (version {self.champion_version})" if self.champion_version else ""

    def known_names(self) -> list[str]:
        """Every metric name a condition could mean here: the report's, the catalogue's, user metrics."""
        names = dict.fromkeys(str(n) for n in self.candidate)
        names.update(dict.fromkeys(str(n) for n in self.candidate_unavailable))
        names.update(dict.fromkeys(_catalogue.catalogue_names(self.task)))
        names.update(dict.fromkeys(sorted(self.user_metrics)))
        return list(names)

    def why_missing(self, name: str, ref: str, unavailable: Mapping[str, Any]) -> str | None:
        """Why a metric is not in the report: unavailable on this data, wrong task, or unknown."""
        if name in unavailable:
            return f"{ref} is unavailable: {unavailable[name]}"
        info = _catalogue.CATALOGUE.get(name)
        if info is not None:
            if self.task and info.task not in (self.task, "any"):
                return f"{name} is a {info.task} metric, but this is a {self.task} evaluation"
            return None
        if name in self.user_metrics:
            return None
        return f"{name!r} is neither in the metric catalogue nor a user metric of this evaluation" + (
            f" (user metrics: {_names(self.user_metrics)})" if self.user_metrics else ""
        )

    def check_refs(self, condition: Condition) -> None:
        """Raise once, naming every missing metric and what is available, before evaluating anything."""
        for leaf in _leaves(condition):
            if isinstance(leaf, SliceImproves):
                self.slices_for(leaf)
        missing = [
            m
            for m in _metric_refs(condition)
            if not m.is_champion_exists
            and (metrics := self.metrics(m.source)) is not None
            and m.name not in metrics
        ]
        if not missing:
            return
        known = self.known_names()
        parts = [
            "condition refers to "
            + ", ".join(
                m.ref
                + ("" if m.name in known else _suggest(m.name, [*(self.metrics(m.source) or ()), *known]))
                for m in missing
            )
            + ", which the evaluation report lacks"
        ]
        for m in missing:
            why = self.why_missing(m.name, m.ref, self.unavailable(m.source))
            if why and why not in parts:
                parts.append(why)
        for source in _SOURCES:
            if any(m.source == source for m in missing):
                label = self.champion_label if source == CHAMPION else ""
                parts.append(f"available {source} metrics{label}: {_names(self.metrics(source) or ())}")
        if self.champion_error and any(m.source == CHAMPION for m in missing):
            parts.append(f"the champion{self.champion_label} could not be evaluated: {self.champion_error}")
        raise ConditionError("; ".join(parts))

    def slices_for(self, node: SliceImproves) -> tuple[list[_SliceRow], int]:
        """The slices ``node`` judges and its minimum row count; ConditionError when it cannot apply."""
        raw = self.slices
        if raw is None:
            raise ConditionError(
                f"{node} needs a sliced evaluation, but the evaluation report has no slices; give the "
                'evaluate step slice definitions (e.g. slices=["region"])'
            )
        results = raw.get("results") if isinstance(raw, Mapping) else None
        if not isinstance(results, list | tuple):
            raise ConditionError("the evaluation report's slices have no results list")
        rows: list[_SliceRow] = []
        for entry in results:
            if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
                raise ConditionError(f"the evaluation report has a malformed slice entry: {_show(entry)}")
            count = entry.get("rows")
            if isinstance(count, bool) or not isinstance(count, numbers.Integral):
                raise ConditionError(f"slice {entry['name']!r} in the report has no row count")
            cand, cand_unavailable = _side(entry.get("candidate"))
            champ_entry = entry.get("champion")
            champ, champ_unavailable = _side(champ_entry)
            rows.append(
                _SliceRow(
                    entry["name"],
                    str(entry.get("by", entry["name"].split("=", 1)[0])),
                    int(count),
                    cand,
                    champ if isinstance(champ_entry, Mapping) else None,
                    cand_unavailable,
                    champ_unavailable,
                )
            )
        definitions = list(dict.fromkeys(r.by for r in rows))
        if node.by is not None:
            if node.by not in definitions:
                raise ConditionError(
                    f"{node}: the evaluation has no slices by {node.by!r}{_suggest(node.by, definitions)}; "
                    f"its slices are by: {_names(definitions)}"
                )
            rows = [r for r in rows if r.by == node.by]
        minimum = node.min_rows
        if minimum is None:
            configured = raw.get("min_rows")
            ok = isinstance(configured, numbers.Integral) and not isinstance(configured, bool)
            minimum = int(configured) if ok else _DEFAULT_MIN_SLICE_ROWS
        if rows and not any(
            node.metric in r.candidate or node.metric in r.candidate_unavailable for r in rows
        ):
            known = [*dict.fromkeys(n for r in rows for n in r.candidate), *self.known_names()]
            parts = [
                f"{node} refers to metric {node.metric!r}{_suggest(node.metric, known)}, which the "
                "evaluation's slices lack"
            ]
            why = self.why_missing(node.metric, node.metric, {})
            if why:
                parts.append(why)
            parts.append(f"slice metrics: {_names(rows[0].candidate)}")
            raise ConditionError("; ".join(parts))
        return rows, minimum

    def value(self, metric: Metric) -> Any:
        if metric.is_champion_exists:
            return self.champion is not None
        metrics = self.metrics(metric.source)
        if metrics is None:
            return _UNKNOWN
        raw = metrics[metric.name]
        where = f"{metric.ref}{self.champion_label if metric.source == CHAMPION else ''}"
        if raw is None:
            raise ConditionError(
                f"{where} is null in the evaluation report; a gate cannot judge a missing value"
            )
        kind = _kind(raw)
        if kind is None:
            raise ConditionError(
                f"{where} in the evaluation report is {_show(raw)}, not a number, string or boolean"
            )
        if kind == "number":
            if isinstance(raw, numbers.Integral):
                if abs(int(raw)) < _MAX_INT:
                    return int(raw)
                try:
                    return float(raw)
                except OverflowError:
                    raise ConditionError(
                        f"{where} in the evaluation report is too large to compare"
                    ) from None
            number = float(raw)
            if math.isnan(number):
                raise ConditionError(
                    f"{where} is NaN in the evaluation report; a NaN metric can neither pass nor fail "
                    "a gate, so the gate refuses to decide (fix the evaluation, e.g. a metric undefined "
                    "on this data)"
                )
            return number
        return bool(raw) if kind == "boolean" else str(raw)


@dataclass
class _Outcome:
    """Three-valued result of one node, its children, and (for leaves) reason texts for each polarity."""

    value: bool | None
    kind: str = "leaf"  # leaf | not | group
    children: list[_Outcome] = field(default_factory=list)
    fail_reason: str = ""  # why a leaf is not true
    negated_reason: str = ""  # why a leaf under an odd number of `not`s is not false


_OPS: Final = {
    "ge": lambda a, b: a >= b,
    "gt": lambda a, b: a > b,
    "le": lambda a, b: a <= b,
    "lt": lambda a, b: a < b,
    "eq": lambda a, b: a == b,
}


def _side_text(operand: Operand, value: Any) -> str:
    if isinstance(operand, Value):
        return str(operand)
    if value is _UNKNOWN:
        return operand.ref
    return f"{operand.ref} = {_render_scalar(value)}"


class _Evaluator:
    """Walks a condition tree over one report, collecting a check record for every leaf."""

    def __init__(self, report: _Report) -> None:
        self.report = report
        self.checks: list[dict[str, Any]] = []

    def run(self, node: Condition, negated: bool = False) -> _Outcome:
        if isinstance(node, Not):
            child = self.run(node.condition, not negated)
            return _Outcome(None if child.value is None else not child.value, "not", [child])
        if isinstance(node, And | Or):
            children = [self.run(c, negated) for c in node.conditions]
            values = [c.value for c in children]
            decisive = isinstance(node, Or)  # Or: any true -> true; And: any false -> false
            if decisive in values:
                result: bool | None = decisive
            elif None in values:
                result = None
            else:
                result = not decisive
            return _Outcome(result, "group", children)
        if isinstance(node, _Compare):
            return self.compare(node, negated)
        if isinstance(node, In):
            return self.member(node, negated)
        if isinstance(node, SliceImproves):
            return self.slice_improves(node, negated)
        if isinstance(node, Improves):
            return self.improves(node, negated)
        raise ConditionError(f"unsupported condition type {type(node).__name__}")

    def record(self, check: dict[str, Any], negated: bool, unknown: bool = False) -> None:
        if negated:
            check["negated"] = True
        if unknown:
            check["unknown"] = True
            check["note"] = NO_CHAMPION_NOTE
        self.checks.append(check)

    def operand(self, operand: Operand) -> tuple[Any, dict[str, Any]]:
        if isinstance(operand, Value):
            return operand.value, {"value": operand.value}
        value = self.report.value(operand)
        return value, {"ref": operand.ref, "value": None if value is _UNKNOWN else value}

    def unknown(self, node: Condition, check: dict[str, Any], negated: bool) -> _Outcome:
        self.record(check, negated, unknown=True)
        reason = f"{node} cannot be evaluated: {NO_CHAMPION_NOTE}"
        return _Outcome(None, fail_reason=reason, negated_reason=reason)

    def compare(self, node: _Compare, negated: bool) -> _Outcome:
        lv, left = self.operand(node.left)
        rv, right = self.operand(node.right)
        check: dict[str, Any] = {
            "expression": str(node),
            "operator": node.op,
            "left": left,
            "right": right,
            "passed": False,
        }
        if lv is _UNKNOWN or rv is _UNKNOWN:
            return self.unknown(node, check, negated)
        lhs, rhs = _side_text(node.left, lv), _side_text(node.right, rv)
        lk, rk = _kind(lv), _kind(rv)
        if node.ordered and (lk != "number" or rk != "number"):
            bad, kind = (lhs, lk) if lk != "number" else (rhs, rk)
            raise ConditionError(
                f"cannot evaluate {node}: {bad} is a {kind}, but '{node.symbol}' compares numbers"
            )
        if not node.ordered and lk != rk:
            raise ConditionError(f"cannot evaluate {node}: it compares {lhs} (a {lk}) with {rhs} (a {rk})")
        passed = bool(_OPS[node.op](lv, rv))
        check["passed"] = passed
        self.record(check, negated)
        if isinstance(node, Eq) and node.is_exists_check:
            fail = "there is no champion (champion.exists is false)"
            negated_reason = (
                f"there is a champion{self.report.champion_label}, "
                "but the condition requires that there be none"
            )
        else:
            fail = f"{lhs} is not {node.symbol} {rhs}"
            negated_reason = f"{lhs} {node.symbol} {rhs} holds, but the condition negates it"
        return _Outcome(passed, fail_reason=fail, negated_reason=negated_reason)

    def member(self, node: In, negated: bool) -> _Outcome:
        lv, left = self.operand(node.left)
        items = [v.value for v in node.values]
        check: dict[str, Any] = {
            "expression": str(node),
            "operator": "in",
            "left": left,
            "right": {"value": items},
            "passed": False,
        }
        if lv is _UNKNOWN:
            return self.unknown(node, check, negated)
        lhs, listing = _side_text(node.left, lv), In._render(node.values)
        kind = _kind(lv)
        if node.values and kind != node.values[0].kind:
            raise ConditionError(
                f"cannot evaluate {node}: {lhs} is a {kind}, but the list holds {node.values[0].kind} values"
            )
        passed = any(lv == item for item in items)
        check["passed"] = passed
        self.record(check, negated)
        return _Outcome(
            passed,
            fail_reason=f"{lhs} is not in {listing}",
            negated_reason=f"{lhs} is in {listing}, but the condition negates it",
        )

    def no_champion(self, node: Improves, check: dict[str, Any], negated: bool) -> _Outcome:
        """``improves``-style conditions pass when there is no champion: a first model has nothing to beat."""
        check["passed"] = True
        check["note"] = NO_CHAMPION_NOTE
        self.record(check, negated)
        return _Outcome(
            True,
            negated_reason=f"{node} passes because there is {NO_CHAMPION_NOTE}, but the condition negates it",
        )

    def improves(self, node: Improves, negated: bool) -> _Outcome:
        cand_ref, champ_ref = Metric(node.metric, CANDIDATE), Metric(node.metric, CHAMPION)
        cand, left = self.operand(cand_ref)
        champ, right = self.operand(champ_ref)
        check: dict[str, Any] = {
            "expression": str(node),
            "operator": "improves",
            "left": left,
            "right": right,
            "passed": False,
            "min_absolute": node.min_absolute,
            "min_relative": node.min_relative,
            "greater_is_better": node.greater_is_better,
            "absolute_improvement": None,
            "relative_improvement": None,
        }
        for ref, value in ((cand_ref, cand), (champ_ref, champ)):
            if value is not _UNKNOWN and _kind(value) != "number":
                raise ConditionError(
                    f"cannot evaluate {node}: {_side_text(ref, value)} is a {_kind(value)}, "
                    "but improves() compares numbers"
                )
        cand_text = _side_text(cand_ref, cand)
        if champ is _UNKNOWN:
            return self.no_champion(node, check, negated)
        verdict = _judge(node, cand, champ)
        check["passed"] = verdict.passed
        check["absolute_improvement"] = _round(verdict.improvement)
        check["relative_improvement"] = None if verdict.relative is None else _round(verdict.relative)
        if verdict.relative is None and node.min_relative is not None:
            check["note"] = f"{champ_ref.ref} is {_render_scalar(champ)}, so min_relative does not apply"
        self.record(check, negated)
        champ_text = f"{_side_text(champ_ref, champ)}{self.report.champion_label}"
        direction = "" if node.greater_is_better else " (lower is better)"
        return _Outcome(
            verdict.passed,
            fail_reason=(
                f"{cand_text} does not improve on {champ_text}{direction}: {verdict.shortfalls(node)}"
            ),
            negated_reason=(
                f"{cand_text} improves on {champ_text}{direction} ({verdict.deltas()}), "
                "but the condition negates it"
            ),
        )

    def slice_improves(self, node: SliceImproves, negated: bool) -> _Outcome:
        rows, minimum = self.report.slices_for(node)
        metric = node.metric
        check: dict[str, Any] = {
            "expression": str(node),
            "operator": "slice_improves",
            "left": {"ref": f"candidate.{metric}", "value": None},
            "right": {"ref": f"champion.{metric}", "value": None},
            "passed": False,
            "by": node.by,
            "min_rows": minimum,
            "min_absolute": node.min_absolute,
            "min_relative": node.min_relative,
            "greater_is_better": node.greater_is_better,
            "slice": None,
            "slice_rows": None,
            "absolute_improvement": None,
            "relative_improvement": None,
            "slices_compared": 0,
            "failing_slices": [],
            "skipped_slices": [],
        }
        if self.report.champion is None:
            return self.no_champion(node, check, negated)
        compared: list[tuple[_SliceRow, float, float, _Judgement]] = []
        skipped: list[dict[str, Any]] = []
        for row in rows:
            if row.rows < minimum:
                skipped.append({"slice": row.name, "rows": row.rows, "why": f"fewer than {minimum} rows"})
                continue
            values = []
            for side, metrics, unavailable in (
                ("candidate", row.candidate, row.candidate_unavailable),
                ("champion", row.champion, row.champion_unavailable),
            ):
                raw = None if metrics is None else metrics.get(metric)
                if raw is None:
                    why = unavailable.get(metric) if metrics is not None else "the champion was not scored"
                    skipped.append(
                        {"slice": row.name, "rows": row.rows, "why": f"{side}: {why or 'missing'}"}
                    )
                    break
                if _kind(raw) != "number" or (isinstance(raw, float) and math.isnan(raw)):
                    raise ConditionError(
                        f"cannot evaluate {node}: {side}.{metric} on slice {row.name!r} is {_show(raw)}, "
                        "not a number"
                    )
                values.append(float(raw))
            else:
                compared.append((row, values[0], values[1], _judge(node, values[0], values[1])))
        check["skipped_slices"] = skipped[:50]
        check["slices_compared"] = len(compared)
        by_text = f" by {node.by!r}" if node.by else ""
        if not compared:
            largest = max((r.rows for r in rows), default=0)
            reason = (
                f"{node} cannot be evaluated: no slice{by_text} has at least {minimum} rows with {metric} "
                f"for both models (largest slice: {largest} rows)"
            )
            check["unknown"] = True
            check["note"] = reason
            self.record(check, negated)
            return _Outcome(None, fail_reason=reason, negated_reason=reason)
        failing = [c for c in compared if not c[3].passed]
        row, cand, champ, verdict = min(failing or compared, key=lambda c: (c[3].improvement, c[0].name))
        check.update(
            passed=not failing,
            slice=row.name,
            slice_rows=row.rows,
            failing_slices=[c[0].name for c in failing],
            absolute_improvement=_round(verdict.improvement),
            relative_improvement=None if verdict.relative is None else _round(verdict.relative),
        )
        check["left"]["value"], check["right"]["value"] = cand, champ
        check["left"]["ref"] += f" [{row.name}]"
        check["right"]["ref"] += f" [{row.name}]"
        self.record(check, negated)
        direction = "" if node.greater_is_better else " (lower is better)"
        champ_text = f"champion.{metric} = {_render_scalar(champ)}{self.report.champion_label}"
        where = f"on slice {row.name} ({row.rows} rows)"
        others = [c[0].name for c in failing if c[0] is not row]
        more = ""
        if others:
            shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
            more = f"; also failing: {shown}"
        return _Outcome(
            not failing,
            fail_reason=(
                f"{node}: {where} candidate.{metric} = {_render_scalar(cand)} does not improve on "
                f"{champ_text}{direction}: {verdict.shortfalls(node)}{more}"
            ),
            negated_reason=(
                f"{node} holds on all {len(compared)} slices compared{by_text} (worst: {row.name}, "
                f"{verdict.deltas()}), but the condition negates it"
            ),
        )


@dataclass(frozen=True)
class _Judgement:
    """Improves' arithmetic for one candidate/champion pair (module docstring, "Improves")."""

    passed: bool
    improvement: float
    relative: float | None
    absolute_ok: bool
    relative_ok: bool
    absolute_bound: float | None
    relative_bound: float | None

    def shortfalls(self, node: Improves) -> str:
        parts = []
        if not self.absolute_ok:
            bound = (
                f"min_absolute {_render_scalar(self.absolute_bound or 0.0)}"
                if node.min_absolute is not None
                else "0 (worse than the champion)"
            )
            parts.append(f"absolute improvement {_render_scalar(_round(self.improvement))} < {bound}")
        if not self.relative_ok and self.relative is not None:
            parts.append(
                f"relative improvement {_render_scalar(_round(self.relative))} < "
                f"min_relative {_render_scalar(self.relative_bound or 0.0)}"
            )
        return "; ".join(parts)

    def deltas(self) -> str:
        text = f"absolute improvement {_render_scalar(_round(self.improvement))}"
        if self.relative is not None:
            text += f", relative improvement {_render_scalar(_round(self.relative))}"
        return text


def _judge(node: Improves, cand: float, champ: float) -> _Judgement:
    improvement = cand - champ if node.greater_is_better else champ - cand
    if math.isnan(improvement):
        raise ConditionError(
            f"cannot evaluate {node}: candidate {cand} and champion {champ} are both infinite"
        )
    # The relative test needs a finite, non-zero champion value to divide by.
    relative = None if champ == 0 or math.isinf(champ) else improvement / abs(champ)
    relative_bound = None if relative is None else node.min_relative
    absolute_bound = node.min_absolute
    if absolute_bound is None and relative_bound is None:
        absolute_bound = 0.0  # no threshold applies: at least as good as the champion
    absolute_ok = absolute_bound is None or _at_least(improvement, absolute_bound)
    relative_ok = relative is None or relative_bound is None or _at_least(relative, relative_bound)
    return _Judgement(
        absolute_ok and relative_ok,
        improvement,
        relative,
        absolute_ok,
        relative_ok,
        absolute_bound,
        relative_bound,
    )


def _explain(outcome: _Outcome, expected: bool) -> list[str]:
    """Reasons why ``outcome`` is not ``expected``: De Morgan over and/or, polarity flip under not."""
    if outcome.value is expected:
        return []
    if outcome.kind == "leaf":
        return [outcome.fail_reason if expected else outcome.negated_reason]
    if outcome.kind == "not":
        return _explain(outcome.children[0], not expected)
    reasons: list[str] = []
    for child in outcome.children:
        reasons.extend(_explain(child, expected))
    return reasons


def evaluate(condition: ConditionSpec, report: Mapping[str, Any]) -> dict[str, Any]:
    """Evaluate a gate over an evaluation report and return a JSON-serialisable decision record.

    ``{"passed", "expression", "checks": [...], "reasons": [...]}``: every leaf comparison appears in
    ``checks`` with its own truth value as written, plus ``negated: true`` when it sits under an odd number
    of ``not`` and ``unknown: true`` when it needed a champion that does not exist. ``reasons`` explains
    each leaf responsible for a blocked decision and is empty when the gate passes.
    """
    parsed = parse_condition(condition)
    facts = _Report.of(report)
    facts.check_refs(parsed)
    evaluator = _Evaluator(facts)
    outcome = evaluator.run(parsed)
    passed = outcome.value is True
    reasons = [] if passed else list(dict.fromkeys(_explain(outcome, True)))
    return {"passed": passed, "expression": str(parsed), "checks": evaluator.checks, "reasons": reasons}


def format_decision(decision: Mapping[str, Any]) -> str:
    """A readable multi-line summary of ``evaluate``'s record, for Airflow task logs.

    Each check is marked by what it contributes to the verdict: a leaf under ``not`` is shown as
    ``not (...)`` and passes when the leaf itself is false.
    """
    verdict = "PASSED" if decision.get("passed") else "BLOCKED"
    lines = [f"Quality gate {verdict}: {decision.get('expression', '')}"]
    for check in decision.get("checks", []):
        negated = bool(check.get("negated"))
        expression = f"not ({check.get('expression')})" if negated else str(check.get("expression"))
        passed = bool(check.get("passed")) != negated
        mark = "n/a " if check.get("unknown") else ("pass" if passed else "FAIL")
        details = [
            f"{side['ref']} = {'none' if side.get('value') is None else _render_scalar(side['value'])}"
            for side in (check.get("left") or {}, check.get("right") or {})
            if "ref" in side
        ]
        if check.get("absolute_improvement") is not None:
            details.append(f"absolute improvement {_render_scalar(check['absolute_improvement'])}")
        if check.get("relative_improvement") is not None:
            details.append(f"relative improvement {_render_scalar(check['relative_improvement'])}")
        if check.get("note"):
            details.append(str(check["note"]))
        suffix = f"  ({'; '.join(details)})" if details else ""
        lines.append(f"  [{mark}] {expression}{suffix}")
    reasons = decision.get("reasons") or []
    if reasons:
        lines.append("Reasons:")
        lines.extend(f"  - {reason}" for reason in reasons)
    return "\n".join(lines)
