"""Run the gateway under uvicorn (uvloop + httptools when installed).

With ``workers == 1`` the app object is built here and handed to uvicorn directly. With more workers,
uvicorn spawns processes that each build their own gateway from ``SAGA_SERVE_CONFIG``; every worker loads
the models and writes its own capture files (file names carry a per-writer id, so they never collide).
SIGTERM makes uvicorn finish in-flight requests, then our lifespan shutdown flushes capture.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_saga.serving.config import GatewayConfig


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
    if cfg.workers > 1:
        os.environ["SAGA_SERVE_CONFIG"] = cfg.to_json()  # inherited by uvicorn's worker processes
        uvicorn.run(
            "airflow_saga.serving.app:create_app", factory=True, workers=cfg.workers, **uvicorn_kwargs(cfg)
        )
        return 0
    from airflow_saga.serving.app import Gateway

    server = uvicorn.Server(uvicorn.Config(Gateway(cfg), **uvicorn_kwargs(cfg)))
    server.run()
    return 0 if server.started else 1
