"""Run the gateway under uvicorn (uvloop + httptools when installed).

With ``workers == 1`` the app object is built here and handed to uvicorn directly. With more workers,
uvicorn spawns processes that each build their own gateway from the config file named by
``SAGA_SERVE_CONFIG_FILE`` (private to this user, removed at exit: the config holds the bearer token
and webhook secret, which must not travel in the environment, where ``ps e`` and crash reports show
it; a directory left by a killed gateway is removed at the next start). Every worker loads the models,
runs its own shadow process and writes its own capture files (file names carry a per-writer id, so they
never collide). Their metrics are merged through prometheus_client's multiprocess mode in a private
directory made here (and removed at exit, or at the next start after a kill).
SIGTERM makes uvicorn finish in-flight requests, then our lifespan shutdown flushes capture.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_saga.serving.config import GatewayConfig

METRICS_PREFIX = "saga-metrics-"
CONFIG_PREFIX = "saga-serve-config-"


def uvicorn_kwargs(cfg: GatewayConfig) -> dict:
    import importlib.util

    return {
        "host": cfg.host,
        "port": cfg.port,
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "http": "httptools" if importlib.util.find_spec("httptools") else "h11",
        "lifespan": "on",
        "access_log": False,
        "proxy_headers": False,  # a middleware per request we do not need on loopback/behind our own LB
        "log_level": cfg.log_level,
        "timeout_graceful_shutdown": 30,
    }


def serve(cfg: GatewayConfig) -> int:
    import uvicorn

    logging.basicConfig(level=cfg.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from airflow_saga.core.redaction import install_log_redaction

    install_log_redaction()  # credentials never reach the gateway's log
    if cfg.workers > 1:
        from airflow_saga.serving import tempdirs

        for prefix in (CONFIG_PREFIX, METRICS_PREFIX):
            tempdirs.clean_stale(prefix)  # what a killed gateway left behind
        private = tempdirs.make(CONFIG_PREFIX)  # 0700
        path = os.path.join(private, "config.json")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(cfg.to_json())
        metrics_dir = tempdirs.make(METRICS_PREFIX)  # empty: no counts of an earlier run leak in
        os.environ["SAGA_SERVE_CONFIG_FILE"] = path  # a path, inherited by uvicorn's worker processes
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        failed = os.path.join(private, "failed")  # written by a worker whose models did not load
        try:
            app = "airflow_saga.serving.app:create_app"
            uvicorn.run(app, factory=True, workers=cfg.workers, **uvicorn_kwargs(cfg))
            if os.path.exists(failed):
                with open(failed, encoding="utf-8") as fh:
                    reasons = fh.read().strip()
                logging.getLogger(__name__).error("gateway stopped: %s", reasons.splitlines()[0])
                return 1
        finally:
            tempdirs.remove(private)
            tempdirs.remove(metrics_dir)
        return 0
    # one process: metrics live in memory (an inherited multiprocess directory is not ours to write)
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    from airflow_saga.serving.app import Gateway

    gateway = Gateway(cfg)
    server = uvicorn.Server(uvicorn.Config(gateway, **uvicorn_kwargs(cfg)))

    def fatal(message: str) -> None:  # no production variant loaded: stop serving, exit non-zero
        server.should_exit = True

    gateway.on_fatal = fatal
    server.run()
    return 0 if server.started and gateway.failure is None else 1
