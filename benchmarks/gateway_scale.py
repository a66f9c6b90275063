"""Gateway benchmark suites ``scale`` and ``large`` (``bench_gateway.py --suite scale|large``).

scale: one-row requests, closed loop, at 8, 32 and 64 connections, load from ``wrk`` pinned to the last core
(``taskset``), interleaved rounds, medians. Servers, all on one registered LogisticRegression:

  (b)  saga serve, 1 worker, MLflow protocol (``dataframe_split``)        pinned to core 0
  (w)  saga serve --workers 2                                             both cores (shared with wrk)
  (bt) saga serve --batching (adaptive micro-batching)                    pinned to core 0
  (v)  (b)'s server over the Open Inference Protocol (V2 2-D FP64 tensor)  pinned to core 0
  (m)  MLServer + mlserver-sklearn, V2, the same model (joblib)           pinned to core 0
  (a)  mlflow models serve, 1 worker                                      pinned to core 0

Server CPU per request is read with psutil over the server's process tree before and after each run.
MLServer runs from its own virtualenv (``--mlserver-venv``; created with uv when missing), never the
project's, with ``parallel_workers: 0`` (with the default, its inference worker dies here with "There is no
current event loop in thread 'MainThread'" and restarts forever).

large: small-request latency while 100k-row requests arrive, against idle in the same run, with the gateway
scoring large bodies in its large-request lane (a separate, niced process: the default), in a thread
(``--large-workers 0``) and on the event loop (the large-request thresholds set above the body size),
measured from a separate process. ``--large-cores`` pins the gateway (and so its lane) with taskset.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

WRK_LUA = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("SAGA_BODY"), "rb"); wrk.body = f:read("*a"); f:close()
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK {"requests": %d, "duration_us": %d, "errors": %d, "non2xx": %d, ' ..
    '"p50_us": %d, "p99_us": %d, "max_us": %d}\n', summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout, e.status, latency:percentile(50), latency:percentile(99),
    latency.max))
end
"""


def _tree_cpu(pid: int) -> float:
    import psutil

    try:
        p = psutil.Process(pid)
        procs = [p, *p.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for q in procs:
        with contextlib.suppress(psutil.Error):
            t = q.cpu_times()
            total += t.user + t.system
    return total


def wrk(url: str, body: Path, conns: int, seconds: float, script: Path, pid: int, core: str | None) -> dict:
    cmd = [
        "wrk",
        "-t1",
        f"-c{conns}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    if core is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", core, *cmd]
    import resource

    c0 = _tree_cpu(pid)
    g0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "SAGA_BODY": str(body)},
                         timeout=seconds + 60, check=True).stdout  # fmt: skip
    c1 = _tree_cpu(pid)
    g1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next(x for x in out.splitlines() if x.startswith("WRK "))
    r = json.loads(line[4:])
    n = max(1, r["requests"])
    return {
        "rps": r["requests"] / (r["duration_us"] / 1e6),
        "p50_ms": r["p50_us"] / 1000,
        "p99_ms": r["p99_us"] / 1000,
        "errors": r["errors"] + r["non2xx"],
        "cpu_ms": 1000 * (c1 - c0) / n,
        "gen_cpu_ms": 1000 * (g1.ru_utime + g1.ru_stime - g0.ru_utime - g0.ru_stime) / n,  # wrk's own CPU
        "requests": r["requests"],
    }


PROBE = (
    "import time\nt = time.perf_counter()\nn = 0\nwhile time.perf_counter() - t < {s}:\n"
    "    sum(range(20000)); n += 1\nprint(n)"
)


def parallel_probe(seconds: float = 3.0) -> dict:
    """How much a second core adds on this machine: the same CPU-bound loop in one process pinned to core 0,
    then in two processes pinned to cores 0 and 1 at once (a VM's two vCPUs may share a physical core, and
    other workloads share both)."""

    def run(cores: list[str]) -> list[int]:
        procs = [subprocess.Popen(["taskset", "-c", c, sys.executable, "-c", PROBE.format(s=seconds)],
                                  stdout=subprocess.PIPE, text=True) for c in cores]  # fmt: skip
        return [int(p.communicate()[0]) for p in procs]

    if not shutil.which("taskset"):
        return {}
    one = run(["0"])[0]
    two = sum(run(["0", "1"]))
    return {"one": one, "two": two, "speedup": two / one}


def ensure_mlserver(venv: Path) -> Path:
    """MLServer in its own virtualenv, with the project's scikit-learn version so the pickle loads."""
    import sklearn

    py = venv / "bin" / "python"
    if not (venv / "bin" / "mlserver").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "uv"], check=True)
        subprocess.run([str(venv / "bin" / "uv"), "pip", "install", "-q", "--python", str(py), "mlserver",
                        "mlserver-sklearn", f"scikit-learn=={sklearn.__version__}"], check=True)  # fmt: skip
    return venv / "bin" / "mlserver"


def mlserver_dir(root: Path, estimator: object, port: int, grpc: int, metrics: int) -> Path:
    import joblib

    model = root / "mlserver" / "m"
    model.mkdir(parents=True, exist_ok=True)
    joblib.dump(estimator, model / "model.joblib")
    (model / "model-settings.json").write_text(json.dumps(
        {"name": "m", "implementation": "mlserver_sklearn.SKLearnModel", "parameters": {"uri": "./model.joblib"}}
    ))  # fmt: skip
    (root / "mlserver" / "settings.json").write_text(json.dumps(
        {"http_port": port, "grpc_port": grpc, "metrics_port": metrics, "host": "127.0.0.1",
         "parallel_workers": 0, "debug": False}
    ))  # fmt: skip
    return root / "mlserver"


def _median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def run_scale(
    args, work: Path, mlflow_url: str, name: str, env: dict, start, stop, wait_http, free_port
) -> None:
    from tests.support import models

    cols, row = models.columns(), models.sample_rows(1)
    bodies = {
        "mlflow": work / "body-mlflow.json",
        "v2": work / "body-v2.json",
    }
    bodies["mlflow"].write_text(json.dumps({"dataframe_split": {"columns": cols, "data": row}}))
    bodies["v2"].write_text(json.dumps({"inputs": [{"name": "predict", "shape": [1, 30], "datatype": "FP64",
                                                    "data": row[0]}]}))  # fmt: skip
    script = work / "wrk.lua"
    script.write_text(WRK_LUA)
    ncpu = os.cpu_count() or 2
    gen_core = str(ncpu - 1)
    server_core = "0"
    saga = [sys.executable, "-m", "airflow_saga.cli", "serve", name, "--tracking-uri", mlflow_url]
    servers: dict[str, tuple[list[str], str | None, dict]] = {
        "b": ([*saga], server_core, env),
        "w": ([*saga, "--workers", "2"], None, env),
        "bt": ([*saga, "--batching"], server_core, env),
    }
    keys = [k for k in args.scale_only.split(",") if k]
    procs: dict[str, subprocess.Popen] = {}
    urls: dict[str, str] = {}
    paths = {"b": "/invocations", "w": "/invocations", "bt": "/invocations", "v": f"/v2/models/{name}/infer",
             "m": "/v2/models/m/infer", "a": "/invocations"}  # fmt: skip
    body_of = {"b": "mlflow", "w": "mlflow", "bt": "mlflow", "v": "v2", "m": "v2", "a": "mlflow"}
    try:
        for key in keys:
            if key == "v":
                continue  # same server as (b)
            port = free_port()
            urls[key] = f"http://127.0.0.1:{port}"
            log = work / f"scale-{key}.log"
            if key == "m":
                exe = ensure_mlserver(Path(args.mlserver_venv))
                folder = mlserver_dir(work, models.fit(), port, free_port(), free_port())
                cmd, core, penv = [str(exe), "start", str(folder)], server_core, dict(env)
            elif key == "a":
                venv_bin = str(Path(sys.executable).parent)
                cmd = [f"{venv_bin}/mlflow", "models", "serve", "-m", f"models:/{name}/1", "--env-manager",
                       "local", "-p", str(port), "-h", "127.0.0.1", "-w", "1"]  # fmt: skip
                core = server_core
                penv = dict(env, MLFLOW_TRACKING_URI=mlflow_url, PATH=f"{venv_bin}:{env.get('PATH', '')}")
            else:
                cmd, core, penv = [*servers[key][0], "--port", str(port)], servers[key][1], servers[key][2]
            if core is not None and shutil.which("taskset"):
                cmd = ["taskset", "-c", core, *cmd]
            procs[key] = start(cmd, log, penv)
        for key, proc in procs.items():
            probe = "/v2/health/ready" if key == "m" else "/ping"
            wait_http(urls[key] + probe, 240, proc, work / f"scale-{key}.log", ok=(200,))
        if "v" in keys:
            urls["v"], procs["v"] = urls["b"], procs["b"]
        for key in keys:  # warm up
            wrk(urls[key] + paths[key], bodies[body_of[key]], 8, 2, script, procs[key].pid, gen_core)
        results: dict[tuple[str, int], list[dict]] = {}
        probes = []
        conns_list = [int(c) for c in args.scale_connections.split(",")]
        load: list[float] = []
        for rnd in range(args.repeats):
            probes.append(parallel_probe())
            print(json.dumps({"round": rnd, "probe": probes[-1]}), flush=True)
            for conns in conns_list:
                for key in keys:
                    if key == "a" and conns != conns_list[0]:
                        continue  # ~100 req/s: more connections only queue
                    load.append(os.getloadavg()[0])
                    res = wrk(urls[key] + paths[key], bodies[body_of[key]], conns, args.scale_seconds, script,
                              procs[key].pid, gen_core)  # fmt: skip
                    results.setdefault((key, conns), []).append(res)
                    print(json.dumps({"round": rnd, "server": key, "conns": conns, **res}), flush=True)
    finally:
        for key, proc in procs.items():
            if key != "v":
                stop(proc, timeout=60)
    labels = {"b": "(b) saga serve, 1 worker, MLflow protocol", "w": "(w) saga serve --workers 2",
              "bt": "(bt) saga serve --batching", "v": "(v) saga serve, 1 worker, V2",
              "m": "(m) MLServer 1.7 sklearn runtime, V2", "a": "(a) mlflow models serve"}  # fmt: skip
    print()
    print(
        f"scale: one-row requests, closed loop ({args.scale_seconds:g} s per run, wrk -t1 pinned to core "
        f"{gen_core}), medians of {args.repeats} interleaved rounds, {ncpu} cores; load average during the "
        f"runs {min(load):.1f}-{max(load):.1f}"
    )
    print()
    speedups = [p["speedup"] for p in probes if p]
    if speedups:
        print(f"two processes on cores 0 and 1 vs one on core 0, same CPU-bound loop: "
              f"{min(speedups):.2f}-{max(speedups):.2f}x (median {statistics.median(speedups):.2f}x)")  # fmt: skip
    print()
    print("| server | conns | req/s | p50 ms | p99 ms | CPU ms/req | wrk CPU ms/req | vs (b) req/s | vs (m) | "
          "vs (a) | errors |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for conns in conns_list:
        ref = results.get(("b", conns))
        mls = results.get(("m", conns))
        mlf = results.get(("a", conns_list[0]))  # (a) runs at the first connection count only

        def vs(rps: float, runs: list[dict] | None) -> str:
            return f"{rps / _median(runs, 'rps'):.2f}x" if runs else "-"

        for key in keys:
            runs = results.get((key, conns))
            if not runs:
                continue
            rps = _median(runs, "rps")
            print(f"| {labels[key]} | {conns} | {rps:.0f} | {_median(runs, 'p50_ms'):.2f} | "
                  f"{_median(runs, 'p99_ms'):.2f} | {_median(runs, 'cpu_ms'):.3f} | "
                  f"{_median(runs, 'gen_cpu_ms'):.3f} | {vs(rps, ref)} | {vs(rps, mls)} | {vs(rps, mlf)} | "
                  f"{sum(r['errors'] for r in runs)} |")  # fmt: skip


def run_large(args, work: Path, mlflow_url: str, name: str, env: dict, start, stop, wait_http, free_port,
              run_load) -> None:  # fmt: skip
    """Small-request latency (open loop) while 100k-row requests arrive, vs idle; thread vs event loop."""
    import threading

    import requests

    from tests.support import models

    cols = models.columns()
    small = work / "small.json"
    small.write_text(json.dumps({"dataframe_split": {"columns": cols, "data": models.sample_rows(1)}}))
    rows = models.sample_rows(500)
    big_rows = [rows[i % 500] for i in range(args.large_rows)]
    big = json.dumps({"dataframe_split": {"columns": cols, "data": big_rows}}).encode()
    saga = [sys.executable, "-m", "airflow_saga.cli", "serve", name, "--tracking-uri", mlflow_url,
            "--max-body-bytes", str(len(big) + 1024)]  # fmt: skip
    flags = {
        "lane": [],
        "thread": ["--large-workers", "0"],
        "loop": ["--large-workers", "0", "--large-body-bytes", str(len(big) + 1), "--large-rows", str(10**9)],
    }
    modes = {m: flags[m] for m in args.large_modes.split(",") if m}
    pin = ["taskset", "-c", args.large_cores] if args.large_cores and shutil.which("taskset") else []
    load: list[float] = []
    table: dict[tuple[str, str], list[dict]] = {}
    big_times: dict[str, list[float]] = {}
    for mode, extra in modes.items():
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = start([*pin, *saga, *extra, "--port", str(port)], work / f"large-{mode}.log", dict(env))
        try:
            wait_http(url + "/ping", 240, proc, work / f"large-{mode}.log", ok=(200,))
            run_load(url, 300, 8, small)
            for rnd in range(args.repeats):
                load.append(os.getloadavg()[0])
                table.setdefault((mode, "idle"), []).append(
                    run_load(url, int(args.large_rate * args.large_seconds), 8, small, args.large_rate)
                )
                stop_big = threading.Event()

                def send_big(url: str = url, mode: str = mode, stop_big: threading.Event = stop_big) -> None:
                    with requests.Session() as s:
                        while not stop_big.is_set():
                            t0 = time.perf_counter()
                            r = s.post(url + "/invocations", data=big, headers={"Content-Type": "application/json"},
                                       timeout=120)  # fmt: skip
                            assert r.status_code == 200, r.text[:300]
                            big_times.setdefault(mode, []).append(time.perf_counter() - t0)
                            stop_big.wait(args.large_gap)

                t = threading.Thread(target=send_big, daemon=True)
                t.start()
                time.sleep(0.5)
                table.setdefault((mode, "busy"), []).append(
                    run_load(url, int(args.large_rate * args.large_seconds), 8, small, args.large_rate)
                )
                stop_big.set()
                t.join(timeout=180)
                print(json.dumps({"round": rnd, "mode": mode, "idle": table[(mode, "idle")][-1],
                                  "busy": table[(mode, "busy")][-1]}), flush=True)  # fmt: skip
        finally:
            stop(proc, timeout=60)
    print()
    print(
        f"large: one-row requests at {args.large_rate:g} req/s (open loop, latency from the scheduled send "
        f"time) for {args.large_seconds:g} s, idle and while {args.large_rows:,}-row requests "
        f"({len(big) / 1e6:.1f} MB JSON) arrive back to back with {args.large_gap:g} s gaps; gateway "
        f"{'pinned to cores ' + args.large_cores if pin else 'not pinned'}; medians of {args.repeats} rounds; "
        f"load average {min(load):.1f}-{max(load):.1f}"
    )
    print()
    print("| large bodies scored in | small p50 ms idle | p99 idle | p50 with large | p99 with large | "
          "p99 with / idle | max with large | large request s |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    names = {"lane": "the large-request lane (default)", "thread": "a thread (`--large-workers 0`)",
             "loop": "the event loop"}  # fmt: skip
    for mode in modes:
        idle, busy = table[(mode, "idle")], table[(mode, "busy")]
        ratio = _median(busy, "p99_ms") / _median(idle, "p99_ms")
        print(f"| {names[mode]} | "
              f"{_median(idle, 'p50_ms'):.2f} | {_median(idle, 'p99_ms'):.2f} | {_median(busy, 'p50_ms'):.2f} | "
              f"{_median(busy, 'p99_ms'):.2f} | {ratio:.1f}x | {_median(busy, 'max_ms'):.1f} | "
              f"{statistics.median(big_times.get(mode, [0])):.2f} |")  # fmt: skip
