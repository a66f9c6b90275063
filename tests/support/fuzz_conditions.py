"""Seeded generators of hostile and odd quality-gate conditions, and a runner that classifies each outcome.

Shared by the fuzz test (``tests/unit/test_fuzz_conditions.py``) and the reliability report
(``benchmarks/reliability/fuzz.py``). Cases are grammar strings and JSON-form conditions: mutations of valid
conditions, random token soup, deep nesting, huge numbers, odd unicode and wrong types. The contract each
case is checked against: it parses and evaluates, or it raises the package's own ``SagaError``; it never
raises anything else, never runs longer than ``HANG_SECONDS``, and never executes code (no ``exec``,
``compile``, ``import``, ``os.system``, ``subprocess.Popen``, ... audit events while it runs).
"""

from __future__ import annotations

import contextlib
import copy
import json
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_saga.core import conditions as C
from airflow_saga.core.errors import SagaError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

HANG_SECONDS = 1.0
KINDS = ("text-mutation", "token-soup", "deep-nesting", "numbers", "unicode", "json-mutation", "wrong-types")
# Audit events that mean code ran or the outside world was touched while a condition was parsed/evaluated.
FORBIDDEN_EVENTS = frozenset(
    {
        "exec",
        "compile",
        "import",
        "open",
        "os.system",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.fork",
        "os.startfile",
        "subprocess.Popen",
        "ctypes.dlopen",
        "ctypes.dlsym",
        "socket.connect",
        "builtins.input",
        "pickle.find_class",
        "marshal.loads",
        "code.__new__",
        "function.__new__",
    }
)

VALID_TEXT = [
    "accuracy >= 0.9",
    "accuracy >= 0.9 and f1 >= 0.9 and improves(f1, min_absolute=-0.01)",
    "f1 > champion.f1 or not champion.exists",
    "improves(rmse, min_absolute=0.5, lower_is_better)",
    'candidate.label in ["a", "b"]',
    'candidate["val loss"] < 0.3',
    "not (accuracy < 0.5) and label != 'x'",
    'slice_improves(f1, min_absolute=-0.02, by="site", min_rows=10)',
    "slice_improves(rmse, lower_is_better)",
    "n in [1, 2, 3] and flag == true",
    "champion.exists and improves(f1, min_relative=0.01)",
    "(accuracy > 0.5 or f1 > 0.5) and not (rmse >= 3 or n not in [4])",
    "cost <= 10 and roc_auc >= 0.8",
]
TOKENS = [
    "(", ")", "[", "]", ",", "=", ">=", ">", "<=", "<", "==", "!=", "and", "or", "not", "in", "AND", "Or",
    "true", "false", "True", "null", "None", "improves", "slice_improves", "accuracy", "f1", "champion.f1",
    "candidate.n", "champion.exists", "champion", "candidate", "candidate.", '"a"', "'b'", "0.9", "-1", ".5",
    "1e308", "1e309", "-1e-400", "9" * 41, "0x1F", "1_000", "min_absolute", "min_relative", "lower_is_better",
    "greater_is_better", "by", "min_rows", "__import__", "os.system", "eval", "exec", "lambda", "print",
    "open", "'\\u0041'", '"\\ud800"', '"\\x41"', "\\", '"unterminated', "{", "}", ":", ";", "@", "$", "#",
    "..", "a.b.c", "_", "a..b", "-", "+", "*", "**", "//", "%", "~", "^", "|", "&", "`", "?", "!",
]  # fmt: skip
ODD_TEXT = [
    "\u200b", "\u202e", "\u0301", "\U0001f600", "\x00", "\ufeff", "\u2028", "\u00a0", "\u2003", "\t", "\n",
    "\r", "ǅ", "αβ", "ﬁ", "١٢٣", "\uff11\uff12", "²", "\ud800", "\udfff", "\U0010ffff", "\x7f",
    "\\", '"', "'",
]  # fmt: skip
ODD_VALUES: list[Any] = [
    None, 0, -0.0, 1, 1.5, True, False, "", "x", "accuracy", "champion.", "candidate.f1", [], {}, [[]],
    [None], {"": None}, {"metric": None}, {"value": []}, 10**60, -(10**400), 2**63, float("nan"),
    float("inf"), -float("inf"), 1e308, 5e-324, b"bytes", (1, 2), {"ge": []}, {"and": [{}]},
]  # fmt: skip


def _valid_json() -> list[Any]:
    out: list[Any] = [C.parse_condition(t).to_dict() for t in VALID_TEXT]
    out.append([{"ge": ["accuracy", 0.9]}, "f1 >= 0.5", {"not": {"lt": ["rmse", 1]}}])
    out.append({"in": [{"metric": "label"}, ["a", {"value": "b"}]]})
    return out


VALID_JSON = _valid_json()


def report(with_champion: bool) -> dict[str, Any]:
    """A saga.evaluation/v1 report with slices, user metrics and an unavailable metric."""
    metrics = {"accuracy": 0.95, "f1": 0.94, "rmse": 2.0, "label": "a", "n": 3, "flag": True, "val loss": 0.2}
    metrics |= {"cost": 7.0}

    def side(shift: float) -> dict[str, Any]:
        return {"metrics": {"f1": 0.9 + shift, "rmse": 1.5 - shift}, "unavailable": {}}

    return {
        "schema": "saga.evaluation/v1",
        "task": "classification",
        "model_name": "fuzz",
        "candidate": {
            "run_id": "r",
            "model_uri": "m",
            "metrics": metrics,
            "unavailable": {"roc_auc": "no proba"},
        },
        "champion": {"version": "2", "model_uri": "c", "metrics": {**metrics, "f1": 0.93}}
        if with_champion
        else None,
        "user_metrics": {"cost": {"function": "x:y", "needs_proba": False, "greater_is_better": False}},
        "slices": {
            "min_rows": 10,
            "definitions": [{"column": "site", "kind": "values"}],
            "results": [
                {"name": f"site={s}", "by": "site", "rows": rows, "candidate": side(d), "champion": side(0.0)}
                for s, rows, d in (("A", 100, 0.01), ("B", 50, -0.05), ("C", 3, -0.5))
            ],
        },
    }


REPORTS = (report(True), report(False))

# ------------------------------------------------------------------------------------------ generators


def _mutate_text(rng: random.Random, text: str) -> str:
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(9)
        i = rng.randint(0, len(text))
        j = min(len(text), i + rng.randint(0, 8))
        if op == 0:
            text = text[:i] + text[j:]
        elif op == 1:
            text = text[:i] + rng.choice(TOKENS) + text[i:]
        elif op == 2:
            text = text[:i] + rng.choice(ODD_TEXT) + text[j:]
        elif op == 3:
            text = text[:i] + text[i:j] * rng.randint(2, 5) + text[j:]
        elif op == 4:
            text = "(" * rng.randint(1, 80) + text + ")" * rng.randint(0, 80)
        elif op == 5:
            text = "not " * rng.randint(1, 80) + text
        elif op == 6:
            text = f"{text} {rng.choice(['and', 'or', 'and not'])} {rng.choice(VALID_TEXT)}"
        elif op == 7:
            text = text[: rng.randint(0, len(text))]
        else:
            parts = text.split(" ")
            a, b = rng.randrange(len(parts)), rng.randrange(len(parts))
            parts[a], parts[b] = parts[b], parts[a]
            text = " ".join(parts)
    return text


def _token_soup(rng: random.Random) -> str:
    spaces = [" ", "", "\t", "\n", "  ", "\u00a0"]
    return "".join(rng.choice(TOKENS) + rng.choice(spaces) for _ in range(rng.randint(1, 30)))


def _nested_data(depth: int, leaf: Any) -> Any:
    node = leaf
    for _ in range(depth):
        node = {"not": node}
    return node


def _deep(rng: random.Random) -> Any:
    depth = rng.choice([10, 32, 63, 64, 65, 100, 250, 1_000, 5_000, 20_000])
    choice = rng.randrange(8)
    if choice == 0:
        return "(" * depth + "accuracy > 0.5" + ")" * depth
    if choice == 1:
        return "not " * depth + "accuracy > 0.5"
    if choice == 2:
        return "[" * depth + "]" * rng.choice([0, depth])
    if choice == 3:
        return '{"not": ' * depth + '{"ge": ["accuracy", 0.5]}' + "}" * depth
    if choice == 4:
        return _nested_data(depth, {"ge": ["accuracy", 0.5]})
    if choice == 5:
        nested: list[Any] = []
        node = nested
        for _ in range(depth):
            node.append([])
            node = node[0]
        return nested
    if choice == 6:
        cycle: list[Any] = []
        cycle.append(cycle)
        return cycle if rng.random() < 0.5 else {"and": [cycle, "f1 > 0"]}
    node = C.Ge("accuracy", 0.5)
    for _ in range(min(depth, 5_000)):
        node = C.Not(node)
    return node


def _numbers(rng: random.Random) -> Any:
    digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 500)))
    forms = [
        digits,
        f"-{digits}",
        f"{digits}.{digits[:5]}",
        f"1e{digits[: rng.randint(1, 12)]}",
        f"1e-{digits[: rng.randint(1, 12)]}",
        f".{digits}",
        f"0{digits[:3]}",
        "١٢٣",
        "\uff11\uff12",
        f"{digits[:3]}e",
        "1e+",
        "--1",
        "1..2",
    ]
    number = rng.choice(forms)
    shape = rng.randrange(4)
    if shape == 0:
        return f"accuracy > {number}"
    if shape == 1:
        return f"improves(f1, min_absolute={number})"
    if shape == 2:
        return f'{{"ge": ["accuracy", {number}]}}'
    return {"ge": ["accuracy", int(digits[:400]) * rng.choice([1, -1, 10 ** rng.randint(0, 400)])]}


def _unicode(rng: random.Random) -> Any:
    base = rng.choice(VALID_TEXT)
    chars = "".join(rng.choice(ODD_TEXT) for _ in range(rng.randint(1, 10)))
    i = rng.randint(0, len(base))
    text = base[:i] + chars + base[i:]
    shape = rng.randrange(4)
    if shape == 0:
        return text
    if shape == 1:
        return f"candidate[{json.dumps(chars)}] > 0"
    if shape == 2:
        return {"ge": [chars, 1]}
    return json.dumps({"eq": ["label", chars]}, ensure_ascii=rng.random() < 0.5)


def _json_mutation(rng: random.Random) -> Any:
    data = copy.deepcopy(rng.choice(VALID_JSON))
    for _ in range(rng.randint(1, 3)):
        data = _replace_random_node(rng, data)
    if rng.random() < 0.4:
        try:
            text = json.dumps(data, allow_nan=True)
        except (TypeError, ValueError):
            return data
        return _mutate_text(rng, text) if rng.random() < 0.5 else text
    return data


def _replace_random_node(rng: random.Random, data: Any) -> Any:
    if rng.random() < 0.25 or not isinstance(data, dict | list) or not data:
        value = rng.choice(ODD_VALUES)
        return copy.deepcopy(value) if isinstance(value, dict | list) else value
    if isinstance(data, dict):
        key = rng.choice(list(data))
        roll = rng.random()
        if roll < 0.2:
            data[rng.choice(["gte", "ne", "improve", "", "metric", "value", "and", "by"])] = data.pop(key)
        elif roll < 0.3:
            data[rng.choice(TOKENS)] = rng.choice(ODD_VALUES)
        else:
            data[key] = _replace_random_node(rng, data[key])
        return data
    index = rng.randrange(len(data))
    data[index] = _replace_random_node(rng, data[index])
    if rng.random() < 0.1:
        data.append(rng.choice(ODD_VALUES))
    return data


class _Opaque:
    def __repr__(self) -> str:
        return "<opaque>"


def _wrong_types(rng: random.Random) -> Any:
    values: list[Any] = [
        None, 0, 3.5, True, b"accuracy >= 1", bytearray(b"x"), set(), frozenset({"a"}), {1, 2}, object(),
        _Opaque(), 1j, range(3), [1, 2], (), {1: 2}, {None: "x"}, {("ge",): 1}, {"ge": {"a": 1}},
        {"ge": ("accuracy", 1)}, {"in": ["label", "ab"]}, {"in": ["label", {"a"}]}, [b"x"], [object()],
        {"improves": ["f1"]}, {"improves": {"metric": b"f1"}}, {"slice_improves": {"metric": "f1", "by": 3}},
        {"slice_improves": {"metric": "f1", "min_rows": 2.5}}, {"not": []}, {"and": "f1 > 0"}, float("nan"),
    ]  # fmt: skip
    return rng.choice(values)


_GENERATORS: dict[str, Callable[[random.Random], Any]] = {
    "text-mutation": lambda rng: _mutate_text(rng, rng.choice(VALID_TEXT)),
    "token-soup": _token_soup,
    "deep-nesting": _deep,
    "numbers": _numbers,
    "unicode": _unicode,
    "json-mutation": _json_mutation,
    "wrong-types": _wrong_types,
}
# how often each kind is drawn; deep nesting is costly to build, so it is rarer
_WEIGHTS = {"text-mutation": 30, "token-soup": 15, "deep-nesting": 4, "numbers": 10, "unicode": 12,
            "json-mutation": 25, "wrong-types": 4}  # fmt: skip


def generate(n: int, seed: int = 0) -> Iterator[tuple[str, Any]]:
    """``n`` cases ``(kind, spec)``, the same for the same seed."""
    rng = random.Random(seed)
    kinds = list(_WEIGHTS)
    weights = [_WEIGHTS[k] for k in kinds]
    for _ in range(n):
        kind = rng.choices(kinds, weights)[0]
        yield kind, _GENERATORS[kind](rng)


# ------------------------------------------------------------------------------------------ running


class Hang(Exception):
    """A case ran past HANG_SECONDS of CPU time."""


@dataclass
class Outcome:
    kind: str
    result: str  # ok | package-error | foreign-error | hang
    seconds: float
    detail: str = ""
    events: list[str] = field(default_factory=list)


class Watch:
    """An audit hook (installed once per process; hooks cannot be removed) that records, and refuses, the
    forbidden events this thread raises while ``active``."""

    _installed: Watch | None = None

    def __init__(self) -> None:
        self.active = False
        self.events: list[str] = []
        self.thread = threading.get_ident()

    @classmethod
    def get(cls) -> Watch:
        if cls._installed is None:
            watch = cls()
            sys.addaudithook(watch._hook)
            cls._installed = watch
        return cls._installed

    def _hook(self, event: str, args: tuple[Any, ...]) -> None:
        if self.active and event in FORBIDDEN_EVENTS and threading.get_ident() == self.thread:
            self.events.append(f"{event} {str(args)[:120]}")
            # Raising from an audit hook aborts the operation: the fuzzer must not run what it found.
            raise RuntimeError(f"audit hook: forbidden {event!r} while a condition was parsed or evaluated")


@contextlib.contextmanager
def _cpu_limit(seconds: float) -> Iterator[None]:
    """Raise Hang after ``seconds`` of process CPU time (not wall time: the machine may be busy)."""
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def _raise(signum: int, frame: Any) -> None:
        raise Hang(f"over {seconds} s of CPU time")

    previous = signal.signal(signal.SIGVTALRM, _raise)
    signal.setitimer(signal.ITIMER_VIRTUAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        signal.signal(signal.SIGVTALRM, previous)


def check(spec: Any, rep: dict[str, Any]) -> None:
    """Parse and evaluate ``spec``; a parsed condition must round-trip and give a JSON decision record."""
    condition = C.parse_condition(spec)
    assert C.parse_condition(str(condition)) == condition, f"string round trip changed {condition}"
    assert C.parse_condition(condition.to_dict()) == condition, f"JSON round trip changed {condition}"
    decision = C.evaluate(condition, rep)
    json.dumps(decision)
    C.format_decision(decision)


def run(kind: str, spec: Any, rep: dict[str, Any], watch: Watch) -> Outcome:
    """One case under the audit hook and the CPU-time limit, classified."""
    watch.events = []
    t0 = time.perf_counter()
    cpu0 = time.thread_time()
    result, detail = "ok", ""
    try:
        with _cpu_limit(HANG_SECONDS * 5):  # the hard stop; over HANG_SECONDS of CPU is a hang anyway
            watch.active = True
            try:
                check(spec, rep)
            finally:
                watch.active = False
    except Hang as exc:
        result, detail = "hang", str(exc)
    except SagaError:
        result = "package-error"
    except Exception as exc:  # the point of the fuzz test: anything else is a finding
        result, detail = "foreign-error", f"{type(exc).__name__}: {str(exc)[:300]}"
    cpu = time.thread_time() - cpu0
    if result != "hang" and cpu > HANG_SECONDS:
        result, detail = "hang", f"{cpu:.2f} s of CPU time"
    return Outcome(kind, result, time.perf_counter() - t0, detail, list(watch.events))


def warm_up() -> None:
    """Exercise every code path once before watching, so lazy imports in the libraries are done."""
    for kind, spec in generate(300, seed=12345):
        for rep in REPORTS:
            with contextlib.suppress(Exception):
                check(spec, rep)
        del kind


def describe(spec: Any, limit: int = 160) -> str:
    try:
        text = repr(spec)
    except Exception:
        text = f"<{type(spec).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."
