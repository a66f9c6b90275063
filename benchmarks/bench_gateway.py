"""Benchmark: ``mlflow models serve`` vs the saga gateway on the same registered model (issue 4, item 8).

Scenarios, each one server process with one worker, all on 127.0.0.1:
  (a) mlflow models serve -m models:/NAME/1 --env-manager local
  (b) saga serve NAME                       champion only
  (c) saga serve NAME --shadow challenger   100 % shadow (a second LogisticRegression) + JSONL capture
  (d) saga serve NAME --shadow sleeper      shadow sleeps 5 s per call (timeout 2 s) + capture
  (e) saga serve NAME --shadow raiser       shadow raises on every call + capture
  (k) saga serve NAME + capture             no shadow: the gateway process writes every record (buffered)
  (q) like (k) --capture-durability durable each record written (one write(2), no fsync) before the response
  (r) like (c) --capture-durability durable the champion's record written before the response; the shadow
                                            process writes only the shadow results

Two load shapes, both from a separate process (an asyncio HTTP/1.1 client with keep-alive connections,
one-row breast_cancer requests in ``dataframe_split`` format, bounded request counts):

closed loop  ``--connections`` clients each send a request as soon as the previous answer arrives. This
             measures the maximum throughput; the server is saturated, so its latency is mostly queueing
             behind other requests and any extra CPU in the server shows up as queueing delay.
open loop    requests are sent on a fixed schedule (``--rates``, fractions of (b)'s closed-loop
             throughput) over a pool of ``--open-connections`` connections, and latency is measured from
             each request's *scheduled* send time, so a stall also counts against the requests it delayed
             (no coordinated omission). This is the latency a client sees at a given offered load.

Each run also reports the server's CPU time per request (gateway process + shadow process), read with
psutil before and after the run: on a shared machine it is a steadier signal than latency percentiles.

The gateway scenarios run side by side (one process each, idle while another is measured) and are measured
in interleaved rounds, so a change in background load on the machine hits every scenario alike; the table
reports the median over ``--repeats`` rounds. (a) is measured alone first, closed loop only: at the
gateway's offered loads it would just queue without bound. Capture completeness is checked after SIGTERM
by counting records against every request sent (warm-up included).

Run from the repository root:  python benchmarks/bench_gateway.py [--only abcde] [--repeats 7]

Two more suites (``benchmarks/gateway_scale.py``): ``--suite scale`` (Open Inference Protocol V2 against
MLServer and ``mlflow models serve``, 1 worker against 2, batching off against on, at 8, 32 and 64
connections with wrk) and ``--suite large`` (small-request latency while 100k-row requests arrive).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


# --- load generator (runs in its own process) --------------------------------------------------------------


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


async def _closed_client(host: str, port: int, request: bytes, n: int, lat: list, errors: list) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            status = await _exchange(reader, writer, request)
            lat.append(time.perf_counter() - t0)
            if status != 200:
                errors.append(status)
    finally:
        writer.close()


async def _open_client(
    host: str,
    port: int,
    request: bytes,
    schedule: itertools.count,
    total: int,
    start: float,
    rate: float,
    lat: list,
    errors: list,
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while True:
            i = next(schedule)
            if i >= total:
                return
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            status = await _exchange(reader, writer, request)
            lat.append(time.perf_counter() - due)  # from the scheduled send time: stalls count in full
            if status != 200:
                errors.append(status)
    finally:
        writer.close()


def _summary(lat: list[float], errors: list[int], total: int, wall: float, failed: int) -> dict:
    lat.sort()
    return {
        "sent": total,
        "ok": len(lat) - len(errors),
        "errors": len(errors) + (total - len(lat)),
        "broken_connections": failed,
        "rps": len(lat) / wall,
        "p50_ms": 1000 * lat[len(lat) // 2] if lat else None,
        "p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None,
        "max_ms": 1000 * lat[-1] if lat else None,
        "mean_ms": 1000 * statistics.fmean(lat) if lat else None,
    }


async def _load(url: str, total: int, connections: int, body: bytes, rate: float | None) -> dict:
    from urllib.parse import urlparse

    u = urlparse(url)
    request = (
        f"POST /invocations HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    lat: list[float] = []
    errors: list[int] = []
    if rate is None:
        per = [total // connections + (1 if i < total % connections else 0) for i in range(connections)]
        clients = [_closed_client(u.hostname, u.port, request, n, lat, errors) for n in per]
    else:
        schedule = itertools.count()
        start = time.perf_counter() + 0.2  # after every connection is open
        clients = [
            _open_client(u.hostname, u.port, request, schedule, total, start, rate, lat, errors)
            for _ in range(connections)
        ]
    t0 = time.perf_counter()
    results = await asyncio.gather(*clients, return_exceptions=True)
    wall = time.perf_counter() - (t0 if rate is None else start)
    failed = sum(1 for r in results if isinstance(r, Exception))
    return _summary(lat, errors, total, wall, failed)


def load_main(url: str, total: int, connections: int, body_file: str, rate: float | None) -> None:
    body = Path(body_file).read_bytes()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(_load(url, total, connections, body, rate))))


def run_load(url: str, total: int, connections: int, body_file: Path, rate: float | None = None) -> dict:
    cmd = [sys.executable, __file__, "--load", url, str(total), str(connections), str(body_file)]
    if rate is not None:
        cmd.append(str(rate))
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True, timeout=600)
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- orchestration ----------------------------------------------------------------------------------------


def _start(cmd: list[str], log: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        cmd, cwd=REPO, stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env, start_new_session=True
    )


def _cpu(proc: subprocess.Popen) -> tuple[float, float]:
    """CPU seconds (user + system) used so far by the server process and by its child processes."""
    try:
        import psutil
    except ImportError:  # pragma: no cover
        return 0.0, 0.0
    try:
        p = psutil.Process(proc.pid)
        t = p.cpu_times()
        own = t.user + t.system
        kids = 0.0
        for c in p.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                ct = c.cpu_times()
                kids += ct.user + ct.system
        return own, kids
    except psutil.Error:
        return 0.0, 0.0


def measured(
    proc: subprocess.Popen, url: str, total: int, conns: int, body: Path, rate: float | None
) -> dict:
    """One load run plus the server's CPU per request (ms), which background load barely disturbs."""
    own0, kids0 = _cpu(proc)
    res = run_load(url, total, conns, body, rate)
    own1, kids1 = _cpu(proc)
    res["cpu_ms"] = 1000 * (own1 - own0) / max(1, total)
    res["child_cpu_ms"] = 1000 * (kids1 - kids0) / max(1, total)
    return res


def _median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def _cpu_cell(runs: list[dict]) -> str:
    """Gateway process CPU per request, plus the shadow process's when there is one."""
    if "cpu_ms" not in runs[0]:
        return "-"
    own, kids = _median(runs, "cpu_ms"), _median(runs, "child_cpu_ms")
    return f"{own:.3f} + {kids:.3f}" if kids >= 0.0005 else f"{own:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=3000, help="requests per closed-loop run")
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--connections", type=int, default=8, help="closed-loop connections")
    ap.add_argument("--open-connections", type=int, default=32, help="open-loop connection pool")
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per open-loop run")
    ap.add_argument("--rates", default="0.5,0.8", help="open-loop rates as fractions of (b)'s max req/s")
    ap.add_argument("--repeats", type=int, default=7, help="interleaved rounds; the table shows medians")
    ap.add_argument("--max-rps", type=float, help="reference req/s for --rates (default: (b)'s median)")
    ap.add_argument("--only", default="abcde", help="scenarios to run, e.g. abcde")
    ap.add_argument("--gateway-args", default="", help="extra saga serve flags for every gateway")
    ap.add_argument(
        "--suite",
        default="classic",
        choices=["classic", "scale", "large"],
        help="classic: the scenarios above; scale: V2, workers and batching at 8/32/64 connections vs "
        "MLServer and mlflow models serve (benchmarks/gateway_scale.py); large: small-request latency while "
        "100k-row requests arrive",
    )
    ap.add_argument("--scale-only", default="b,w,bt,v,m,a", help="scale suite servers (see gateway_scale.py)")
    ap.add_argument("--scale-connections", default="8,32,64")
    ap.add_argument("--scale-seconds", type=float, default=4.0, help="seconds per wrk run")
    ap.add_argument(
        "--mlserver-venv",
        default=str(REPO.parent / ".bench-venvs" / "mlserver"),
        help="virtualenv with MLServer (created with uv when missing; never the project's venv)",
    )
    ap.add_argument("--large-rows", type=int, default=100_000)
    ap.add_argument("--large-rate", type=float, default=200.0, help="small requests per second")
    ap.add_argument("--large-seconds", type=float, default=6.0)
    ap.add_argument("--large-gap", type=float, default=0.5, help="seconds between large requests")
    ap.add_argument("--large-modes", default="lane,thread,loop", help="where large bodies are scored")
    ap.add_argument("--large-cores", default="0", help="taskset core list for the gateway ('' = not pinned)")
    args = ap.parse_args()

    from airflow_saga.core.capture_scan import read_capture
    from airflow_saga.core.mlflow_client import MlflowSettings, build_client
    from tests.support import models
    from tests.support.procs import MlflowServer, free_port, stop, wait_http

    work = Path(tempfile.mkdtemp(prefix="saga-bench-"))
    body_file = work / "body.json"
    body_file.write_text(
        json.dumps({"dataframe_split": {"columns": models.columns(), "data": models.sample_rows(1)}})
    )
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="1")
    print(f"workdir {work}", flush=True)
    mlflow = MlflowServer(work / "mlflow").start()
    if args.suite != "classic":
        from benchmarks import gateway_scale

        try:
            client = build_client(MlflowSettings(tracking_uri=mlflow.url))
            name = "bench-breast-cancer"
            models.register_sklearn(client, name, aliases=("champion",))
            if args.suite == "scale":
                gateway_scale.run_scale(args, work, mlflow.url, name, env, _start, stop, wait_http, free_port)
            else:
                gateway_scale.run_large(
                    args, work, mlflow.url, name, env, _start, stop, wait_http, free_port, run_load
                )
        finally:
            mlflow.stop()
        return
    closed: dict[str, list[dict]] = {}
    opened: dict[tuple[str, float], list[dict]] = {}
    sent: dict[str, int] = {}
    captured: dict[str, int] = {}
    labels = {
        "a": "mlflow models serve",
        "b": "gateway champion only",
        "c": "gateway 100% shadow + capture",
        "d": "gateway shadow sleeps 5 s + capture",
        "e": "gateway shadow raises + capture",
        "k": "gateway capture only (buffered)",
        "q": "gateway capture only, durable",
        "r": "(c) with durable capture",
    }
    try:
        client = build_client(MlflowSettings(tracking_uri=mlflow.url))
        name = "bench-breast-cancer"
        models.register_sklearn(client, name, aliases=("champion",))
        models.register_sklearn(client, name, models.fit(seed=1), aliases=("challenger",))
        models.register_pyfunc(client, name, models.SlowOrFailingModel(delay=5.0), aliases=("sleeper",))
        models.register_pyfunc(client, name, models.SlowOrFailingModel(fail=True), aliases=("raiser",))

        if "a" in args.only:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            venv_bin = str(Path(sys.executable).parent)
            cmd = [f"{venv_bin}/mlflow", "models", "serve", "-m", f"models:/{name}/1"]
            cmd += ["--env-manager", "local", "-p", str(port), "-h", "127.0.0.1", "-w", "1"]
            # the child's env only; mlflow execs `uvicorn`, so the venv's bin must be on PATH
            penv = dict(env, MLFLOW_TRACKING_URI=mlflow.url, PATH=f"{venv_bin}:{env.get('PATH', '')}")
            proc = _start(cmd, work / "server-a.log", penv)
            try:
                wait_http(f"{url}/ping", 180, proc, work / "server-a.log")
                run_load(url, args.warmup, args.connections, body_file)
                closed["a"] = [run_load(url, args.requests, args.connections, body_file)]
                print(json.dumps({"a": closed["a"][0]}), flush=True)
            finally:
                stop(proc, timeout=60)

        saga = [sys.executable, "-m", "airflow_saga.cli", "serve", name, "--tracking-uri", mlflow.url]
        extra_args = args.gateway_args.split()
        scenario_args = {
            "b": [],
            "c": ["--shadow", "challenger"],
            "d": ["--shadow", "sleeper", "--shadow-timeout", "2"],
            "e": ["--shadow", "raiser"],
            "k": [],
            "q": ["--capture-durability", "durable"],
            "r": ["--shadow", "challenger", "--capture-durability", "durable"],
        }
        keys = [k for k in scenario_args if k in args.only]
        procs: dict[str, subprocess.Popen] = {}
        urls: dict[str, str] = {}
        try:
            for key in keys:
                port = free_port()
                urls[key] = f"http://127.0.0.1:{port}"
                cmd = [*saga, "--port", str(port), *scenario_args[key], *extra_args]
                if key != "b":
                    cmd += ["--capture-dir", str(work / f"capture-{key}"), "--flush-interval", "1"]
                procs[key] = _start(cmd, work / f"server-{key}.log", env)
            for key in keys:
                wait_http(f"{urls[key]}/ping", 180, procs[key], work / f"server-{key}.log")
                run_load(urls[key], args.warmup, args.connections, body_file)
                sent[key] = args.warmup
            for rnd in range(args.repeats):
                for key in keys:
                    res = measured(procs[key], urls[key], args.requests, args.connections, body_file, None)
                    closed.setdefault(key, []).append(res)
                    sent[key] += args.requests
                    print(json.dumps({"round": rnd, key: res}), flush=True)
            ref = "b" if "b" in closed else keys[0]
            max_rps = args.max_rps or _median(closed[ref], "rps")
            rates = [float(f) for f in args.rates.split(",") if f]
            for rnd in range(args.repeats):
                for frac in rates:
                    rate = frac * max_rps
                    total = int(rate * args.duration)
                    for key in keys:
                        res = measured(procs[key], urls[key], total, args.open_connections, body_file, rate)
                        opened.setdefault((key, frac), []).append(res)
                        sent[key] += total
                        print(json.dumps({"round": rnd, "rate": round(rate), key: res}), flush=True)
        finally:
            for proc in procs.values():
                stop(proc, timeout=60)
        for key in keys:
            if key != "b":
                captured[key] = len(read_capture(work / f"capture-{key}", name))
    finally:
        mlflow.stop()

    print()
    print(
        f"closed loop: {args.requests} one-row requests per run, {args.connections} connections; open loop: "
        f"{args.duration:g} s per run at fixed rates, {args.open_connections} connections, latency from the "
        f"scheduled send time. Medians of {args.repeats} interleaved rounds (a: one run). "
        f"{os.cpu_count()} cores, one server worker each."
    )
    print()
    base = closed.get("a", [None])[0]
    ref_p99 = _median(closed["b"], "p99_ms") if "b" in closed else None
    print("Closed loop (saturated: max throughput)")
    print()
    print("| scenario | req/s | p50 ms | p99 ms | p99 vs (b) | errors | vs (a) req/s | CPU ms/req |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for key, runs in closed.items():
        rps, p50, p99 = _median(runs, "rps"), _median(runs, "p50_ms"), _median(runs, "p99_ms")
        ratio = f"{rps / base['rps']:.1f}x" if base else "-"
        vs_b = f"{100 * (p99 / ref_p99 - 1):+.0f}%" if ref_p99 and key not in ("a", "b") else "-"
        errs = sum(r["errors"] for r in runs)
        print(
            f"| ({key}) {labels[key]} | {rps:.0f} | {p50:.2f} | {p99:.2f} | {vs_b} | {errs} | {ratio} | "
            f"{_cpu_cell(runs)} |"
        )
    if opened:
        print()
        print("Open loop (fixed offered load; latency from scheduled send time)")
        print()
        print(
            "| scenario | offered req/s | achieved req/s | p50 ms | p99 ms | p99 vs (b) | errors | CPU ms/req |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        fracs = sorted({f for _, f in opened})
        for frac in fracs:
            ref = _median(opened[("b", frac)], "p99_ms") if ("b", frac) in opened else None
            for key in keys:
                runs = opened[(key, frac)]
                offered = runs[0]["sent"] / args.duration
                p99 = _median(runs, "p99_ms")
                vs_b = f"{100 * (p99 / ref - 1):+.0f}%" if ref and key != "b" else "-"
                print(
                    f"| ({key}) {labels[key]} @ {frac:.0%} | {offered:.0f} | {_median(runs, 'rps'):.0f} | "
                    f"{_median(runs, 'p50_ms'):.2f} | {p99:.2f} | {vs_b} | {sum(r['errors'] for r in runs)} | "
                    f"{_cpu_cell(runs)} |"
                )
    if captured:
        print()
        print("| scenario | capture records written / requests sent |")
        print("|---|---:|")
        for key, n in captured.items():
            print(f"| ({key}) | {n} / {sent[key]} |")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--load":
        rate_arg = float(sys.argv[6]) if len(sys.argv) > 6 else None
        load_main(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], rate_arg)
    else:
        main()
