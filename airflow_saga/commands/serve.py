"""``saga serve MODEL``: the inference gateway for one registered model."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve a registered model's champion with variants, shadow mirroring and data capture",
        description=(
            "Serve MODEL@champion over MLflow's scoring protocol (POST /invocations), optionally splitting "
            "traffic between aliases, mirroring a sample to a shadow alias and capturing requests. "
            "Flags override values from --config."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("model", help="registered model name")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI)")
    p.add_argument("--registry-uri", help="MLflow registry URI if different from the tracking URI")
    p.add_argument("--config", help="JSON or TOML file with any of the options below (keys use underscores)")
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="bind port (default 5005)")
    p.add_argument("--variants", help="weighted production aliases, e.g. champion=90,challenger=10")
    p.add_argument("--shadow", help="alias that receives mirrored copies (its answers are never returned)")
    p.add_argument(
        "--shadow-sample", type=float, help="percent of requests mirrored to the shadow (default 100)"
    )
    p.add_argument("--shadow-queue", type=int, help="shadow queue capacity; copies beyond it are dropped")
    p.add_argument(
        "--shadow-timeout", type=float, help="seconds before a shadow call is recorded as timed out"
    )
    p.add_argument(
        "--capture-dir",
        help="where captured requests and feedback go: a directory or a URI (s3://bucket/prefix, gs://..., "
        "any pyarrow or fsspec filesystem; credentials from the environment, never the URI)",
    )
    p.add_argument(
        "--capture-format", choices=["jsonl", "parquet"], help="capture file format (default jsonl)"
    )
    p.add_argument(
        "--capture-durability",
        choices=["buffered", "durable"],
        help="buffered (default): written every --flush-interval; durable: each record written before its "
        "response, so a killed gateway loses no answered request",
    )
    p.add_argument(
        "--capture-spool-dir",
        help="local write-ahead spool of durable capture to object stores or Parquet "
        "(default <capture-dir>/_spool, or .saga/capture-spool for URIs)",
    )
    p.add_argument("--capture-file-mode", help="permissions of capture files (octal, default 0640)")
    p.add_argument("--capture-dir-mode", help="permissions of capture directories (octal, default 0750)")
    p.add_argument("--capture-sample", type=float, help="percent of requests captured (default 100)")
    p.add_argument(
        "--flush-interval", type=float, help="seconds between capture flushes (max loss on hard kill)"
    )
    p.add_argument(
        "--poll-interval", type=float, help="seconds between alias checks for hot swap (default 5)"
    )
    p.add_argument(
        "--auth-token-file",
        help="require 'Authorization: Bearer TOKEN' with the token in this file "
        "(or set SAGA_SERVE_TOKEN, or SAGA_SERVE_TOKEN_FILE)",
    )
    p.add_argument(
        "--webhook-secret-file",
        help="enable POST /webhooks/mlflow with the HMAC secret in this file "
        "(or set SAGA_WEBHOOK_SECRET, or SAGA_WEBHOOK_SECRET_FILE)",
    )
    p.add_argument("--auth-token", help="the bearer token itself (discouraged: visible in ps)")
    p.add_argument("--webhook-secret", help="the webhook secret itself (discouraged: visible in ps)")
    p.add_argument("--max-body-bytes", type=int, help="largest accepted request body (default 1 MiB)")
    p.add_argument("--workers", type=int, help="uvicorn worker processes (default 1)")
    p.add_argument(
        "--batching",
        action="store_true",
        default=None,
        help="score concurrent requests for one variant in one predict call (adaptive micro-batching)",
    )
    p.add_argument("--batch-max-size", type=int, help="rows per batched predict call, 1-4096 (default 64)")
    p.add_argument(
        "--batch-max-wait-ms", type=float, help="longest a request waits for a batch, 0-100 ms (default 2)"
    )
    p.add_argument(
        "--large-body-bytes",
        type=int,
        help="bodies over this size are scored in the large-request lane (default 262144)",
    )
    p.add_argument(
        "--large-rows",
        type=int,
        help="requests with more rows are scored in the large-request lane (default 2000)",
    )
    p.add_argument(
        "--large-workers",
        type=int,
        help="processes of the large-request lane per gateway worker; 0 scores large requests in a thread "
        "(default 1)",
    )
    p.add_argument(
        "--large-max-pending",
        type=int,
        help="large requests in flight per gateway worker; more are answered 503 with Retry-After "
        "(default 2)",
    )
    p.add_argument("--log-level", help="uvicorn/gateway log level (default warning)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from airflow_saga.core.redaction import split_userinfo
    from airflow_saga.serving import config
    from airflow_saga.serving.auth import resolve_secret
    from airflow_saga.serving.server import serve

    for flag in ("tracking_uri", "registry_uri"):
        if getattr(args, flag) and split_userinfo(getattr(args, flag))[1]:
            print(
                f"saga serve: warning: --{flag.replace('_', '-')} carries credentials, visible to every user "
                "(ps, /proc); set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD instead",
                file=sys.stderr,
            )
    token = resolve_secret(
        flag=args.auth_token,
        flag_name="--auth-token",
        file=args.auth_token_file,
        env_name="SAGA_SERVE_TOKEN",
        what="bearer token",
    )
    webhook_secret = resolve_secret(
        flag=args.webhook_secret,
        flag_name="--webhook-secret",
        file=args.webhook_secret_file,
        env_name="SAGA_WEBHOOK_SECRET",
        what="webhook secret",
    )

    variants = config.parse_variants(args.variants) if args.variants else None
    cfg = config.build(
        args.config,
        model=args.model,
        tracking_uri=args.tracking_uri,
        registry_uri=args.registry_uri,
        host=args.host,
        port=args.port,
        variants=variants,
        shadow=args.shadow,
        shadow_sample=args.shadow_sample,
        shadow_queue=args.shadow_queue,
        shadow_timeout=args.shadow_timeout,
        capture_dir=args.capture_dir,
        capture_format=args.capture_format,
        capture_sample=args.capture_sample,
        capture_durability=args.capture_durability,
        capture_spool_dir=args.capture_spool_dir,
        capture_file_mode=args.capture_file_mode,
        capture_dir_mode=args.capture_dir_mode,
        flush_interval=args.flush_interval,
        poll_interval=args.poll_interval,
        auth_token=token,
        webhook_secret=webhook_secret,
        max_body_bytes=args.max_body_bytes,
        workers=args.workers,
        batching=args.batching,
        batch_max_size=args.batch_max_size,
        batch_max_wait_ms=args.batch_max_wait_ms,
        large_body_bytes=args.large_body_bytes,
        large_rows=args.large_rows,
        large_workers=args.large_workers,
        large_max_pending=args.large_max_pending,
        log_level=args.log_level,
    )
    return serve(cfg)
