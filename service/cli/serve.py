"""``weaver serve`` (gateway; embedded worker unless --redis-url) and ``weaver worker`` (Redis consumer)."""

from __future__ import annotations

import asyncio
import logging
import math
import os
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer

ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="gateway YAML (docs/reference/configuration.md); WEAVER_* env overrides")
]


def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="interface to bind (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default 8000)")] = None,
    redis_url: Annotated[
        str | None, typer.Option("--redis-url", help="distributed mode: gateway only, jobs go to Redis workers")
    ] = None,
    worker_config: Annotated[
        Path | None, typer.Option("--worker-config", help="embedded mode: worker YAML (default: CPU set)")
    ] = None,
) -> None:
    """Serve the OpenAI-compatible API. Without --redis-url the worker runs in this process (embedded mode)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import uvicorn

    from service.app import create_app
    from service.settings import load_settings
    from workers.cancellation import SHUTDOWN

    settings = load_settings(config, host=host, port=port, redis_url=redis_url, worker_config=worker_config)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    class Server(uvicorn.Server):
        """On SIGTERM/SIGINT: requests still running after the grace period are cancelled as 'shutdown'."""

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            SHUTDOWN.started = True
            super().handle_exit(sig, frame)

    config_ = uvicorn.Config(
        create_app(settings, background_load=True),  # bind the port at once; /readyz says when models are in
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=max(1, math.ceil(settings.queue.shutdown_grace_s)),
        **http_limits(settings),
    )
    Server(config_).run()


def http_limits(settings: Any) -> dict[str, Any]:
    """uvicorn options that bound what one connection can hold: header size and header read time, and
    which proxies may name the client in X-Forwarded-For. h11, not httptools: only h11 caps header size."""
    from service.http_limits import header_timeout_protocol

    return {"http": header_timeout_protocol(settings.limits.header_timeout_s),
            "h11_max_incomplete_event_size": settings.limits.max_header_bytes,
            "forwarded_allow_ips": settings.forwarded_allow_ips}


def worker(
    redis_url: Annotated[str, typer.Option("--redis-url", help="Redis holding the job stream")],
    config: ConfigOption = None,
    worker_config: Annotated[
        Path | None, typer.Option("--worker-config", help="worker YAML (default: the embedded CPU set)")
    ] = None,
    concurrency: Annotated[int | None, typer.Option(help="jobs run at once (default: queue.concurrency)")] = None,
    metrics_port: Annotated[
        int | None, typer.Option("--metrics-port", help="serve this worker's Prometheus metrics on this port")
    ] = None,
    metrics_host: Annotated[
        str | None, typer.Option("--metrics-host", envvar="WEAVER_METRICS_HOST",
                                 help="interface the metrics port binds (default: the `host` setting, like the "
                                      "gateway: 127.0.0.1 unless the config or WEAVER_HOST says otherwise)")
    ] = None,
) -> None:
    """Consume jobs from Redis until SIGTERM; then finish or hand back in-flight jobs and exit."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from service.settings import load_settings
    from workers.serve import run_redis_worker

    settings = load_settings(config, redis_url=redis_url, worker_config=worker_config)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr=metrics_host or settings.host)
    q = settings.queue
    processed = asyncio.run(
        run_redis_worker(
            redis_url,
            settings.worker_config,
            prefix=q.prefix,
            concurrency=concurrency or q.concurrency,
            visibility_timeout_s=q.visibility_timeout_s,
            result_ttl_s=q.result_ttl_s,
            max_attempts=q.max_attempts,
            shutdown_grace_s=q.shutdown_grace_s,
            online=settings.online,
        )
    )
    typer.echo(f"worker stopped after {processed} job(s)", err=True)


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.command()(worker)
