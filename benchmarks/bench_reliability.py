"""Reliability report: the promises of governance, fault handling, capture and input hardening, measured.

Prints one table assembled from the section modules in ``benchmarks/reliability/`` (each also runs on its
own: ``python -m benchmarks.reliability.<section>``). Every section starts the real servers it needs on
127.0.0.1 (MLflow on PostgreSQL or SQLite, the gateway) and stops them.

    .venv/bin/python -m benchmarks.bench_reliability            # the full report (tens of minutes)
    .venv/bin/python -m benchmarks.bench_reliability --quick    # smaller counts, for a smoke run
    .venv/bin/python -m benchmarks.bench_reliability --only governance,fuzz
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback

SECTIONS = ("fuzz", "governance", "faults", "capture")


def render(rows: list[dict]) -> str:
    """A Markdown table (pasted into the README as is)."""
    lines = ["| section | measure | value | target | met |", "|---|---|---:|---|:---:|"]
    for r in rows:
        met = {True: "yes", False: "**no**", None: "-"}[r.get("met")]
        lines.append(f"| {r['section']} | {r['measure']} | {r['value']} | {r.get('target') or '-'} | {met} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts, for a smoke run")
    parser.add_argument("--only", help=f"comma-separated sections of {','.join(SECTIONS)}")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    wanted = [s.strip() for s in args.only.split(",")] if args.only else list(SECTIONS)
    unknown = sorted(set(wanted) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {list(SECTIONS)}")
    rows: list[dict] = []
    failed = False
    for name in wanted:
        t0 = time.perf_counter()
        try:
            module = importlib.import_module(f"benchmarks.reliability.{name}")
            section_rows = module.measure(quick=args.quick)
        except Exception:  # one broken section must not hide the others' figures
            failed = True
            traceback.print_exc()
            section_rows = [{"section": name, "measure": "section crashed", "value": "see log", "met": False}]
        print(f"[{name}] {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        rows.extend(section_rows)
    print(render(rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 1 if failed or any(r.get("met") is False for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
