"""Reliability report, fuzz section: hostile inputs never escape as foreign errors.

Condition fuzzing (eval WP) runs the seeded generators of ``tests/support/fuzz_conditions.py`` (grammar
strings and JSON conditions: mutations of valid conditions, token soup, deep nesting, huge numbers, odd
unicode, wrong types) under an audit hook and a CPU-time limit, many more cases than the unit test. Gateway
body fuzzing (gateway WP) adds its rows in ``gateway_body_rows``.

    .venv/bin/python -m benchmarks.reliability.fuzz                 # 100,000 condition cases
    .venv/bin/python -m benchmarks.reliability.fuzz --quick         # 10,000
    .venv/bin/python -m benchmarks.reliability.fuzz --cases 20000 --seed 7
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import time

SECTION = "fuzz"
FULL_CASES = 100_000
QUICK_CASES = 10_000
SEED = 1


def _row(measure: str, value: str, target: str | None = None, met: bool | None = None) -> dict:
    return {"section": SECTION, "measure": measure, "value": value, "target": target, "met": met}


def condition_rows(cases: int, seed: int = SEED) -> list[dict]:
    """Fuzz the condition language (both forms); rows of case counts, outcomes and per-case times."""
    from tests.support import fuzz_conditions as F

    F.warm_up()
    watch = F.Watch.get()
    outcomes: collections.Counter[str] = collections.Counter()
    by_kind: collections.Counter[str] = collections.Counter()
    seconds: list[float] = []
    events = 0
    examples: list[str] = []
    t0 = time.perf_counter()
    for i, (kind, spec) in enumerate(F.generate(cases, seed=seed)):
        outcome = F.run(kind, spec, F.REPORTS[i % 2], watch)
        outcomes[outcome.result] += 1
        by_kind[kind] += 1
        seconds.append(outcome.seconds)
        events += len(outcome.events)
        if (outcome.result in ("foreign-error", "hang") or outcome.events) and len(examples) < 5:
            examples.append(f"{kind}: {outcome.result} {outcome.detail} {F.describe(spec, 80)}")
    wall = time.perf_counter() - t0
    for example in examples:
        print(f"[fuzz] finding: {example}", file=sys.stderr)
    ms = sorted(s * 1000 for s in seconds)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    kinds = ", ".join(f"{k} {n:,}" for k, n in sorted(by_kind.items()))
    return [
        _row(
            "condition cases (grammar + JSON), seed " + str(seed), f"{cases:,}", ">= 10,000", cases >= 10_000
        ),
        _row("condition case kinds", kinds),
        _row("condition outcome: ok", f"{outcomes['ok']:,}"),
        _row("condition outcome: package error (ConditionError)", f"{outcomes['package-error']:,}"),
        _row(
            "condition outcome: foreign error",
            f"{outcomes['foreign-error']:,}",
            "0",
            outcomes["foreign-error"] == 0,
        ),
        _row("condition outcome: hang (> 1 s CPU)", f"{outcomes['hang']:,}", "0", outcomes["hang"] == 0),
        _row("condition code-execution audit events", f"{events:,}", "0", events == 0),
        _row(
            "condition case time p50 / p99 / max (ms)",
            f"{statistics.median(ms):.2f} / {p99:.2f} / {ms[-1]:.1f}",
            "< 1000 each",
            ms[-1] < 1000,
        ),
        _row("condition fuzz wall time (s)", f"{wall:.1f}"),
    ]


def gateway_body_rows(quick: bool = False) -> list[dict]:
    """The gateway-body rows (``benchmarks/reliability/fuzz_gateway.py``: 10,000 bodies, 2,000 quick)."""
    from benchmarks.reliability import fuzz_gateway

    return fuzz_gateway.measure(quick=quick)


def measure(quick: bool = False) -> list[dict]:
    return condition_rows(QUICK_CASES if quick else FULL_CASES) + gateway_body_rows(quick)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_CASES:,} condition cases")
    parser.add_argument("--cases", type=int, help=f"condition cases (default {FULL_CASES:,})")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    from benchmarks.bench_reliability import render

    cases = args.cases or (QUICK_CASES if args.quick else FULL_CASES)
    rows = condition_rows(cases, args.seed) + gateway_body_rows(args.quick)
    print(render(rows))
    return 1 if any(r.get("met") is False for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
