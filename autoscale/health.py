"""The operator's HTTP endpoints: GET /metrics on one port, GET /healthz and /readyz on another.

Owns the aiohttp servers only. What "live" and "ready" mean is up to the caller's callables, what
/metrics says is up to `metrics.Metrics`; nothing here touches Kubernetes or the scalers. Each
server is an async context manager: it listens on entry (port 0 picks a free port) and is shut
down on exit.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from autoscale.metrics import Metrics

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT: Final = 2.0
"""Seconds that open requests get to finish when a server shuts down."""

Check = Callable[[], bool]


@dataclass(frozen=True, slots=True, kw_only=True)
class Server:
    """A listening server: the address asked for, with the port actually bound."""

    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


@contextlib.asynccontextmanager
async def serve_metrics(metrics: Metrics, *, host: str, port: int) -> AsyncIterator[Server]:
    """Serve `metrics` at GET /metrics (text format, or OpenMetrics when the scraper asks)."""

    async def handle_metrics(request: web.Request) -> web.Response:
        body, content_type = metrics.encode(request.headers.get("Accept"))
        return web.Response(body=body, headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_get("/metrics", handle_metrics)
    async with _serve(app, host=host, port=port) as server:
        yield server


@contextlib.asynccontextmanager
async def serve_health(*, host: str, port: int, live: Check, ready: Check) -> AsyncIterator[Server]:
    """Serve GET /healthz (200 "ok" while `live()`, else 503) and GET /readyz (200 "ok" while
    `ready()`, else 503 "not ready"). A check that raises counts as failed and is logged."""
    app = web.Application()
    app.router.add_get("/healthz", _probe(live, "healthz", "not live"))
    app.router.add_get("/readyz", _probe(ready, "readyz", "not ready"))
    async with _serve(app, host=host, port=port) as server:
        yield server


def _probe(
    check: Check, name: str, failure: str
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        try:
            ok = check()
        except Exception:
            log.warning("the %s check raised", name, exc_info=True)
            return web.Response(status=503, text=f"{failure}: the check failed")
        if ok:
            return web.Response(text="ok")
        return web.Response(status=503, text=failure)

    return handle


@contextlib.asynccontextmanager
async def _serve(app: web.Application, *, host: str, port: int) -> AsyncIterator[Server]:
    """Run `app` on host:port until the block exits, then stop listening and shut it down."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1]
        log.debug("listening on %s:%d", host, bound)
        yield Server(host=host, port=bound)
    finally:
        await runner.cleanup()
