"""The operator's HTTP endpoints: GET /metrics on one port, GET /healthz and /readyz on another.

Owns the aiohttp servers only. What "live" and "ready" mean is up to the caller's callables, what
/metrics says is up to `metrics.Metrics`; nothing here touches Kubernetes or the scalers. Each
server is an async context manager: it listens on entry (port 0 picks a free port) and is shut
down on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
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
    """Serve `metrics` at GET /metrics (text format, or OpenMetrics when the scraper asks).

    The body is rendered on a thread of its own, never on the event loop: at 10,000
    ScaledObjects a render takes seconds of CPU, during which polls would stop. Scrapes that
    arrive while a render for the same format runs share its body instead of starting another.
    A scraper that accepts gzip (Prometheus does) gets the body compressed, on the same thread.
    """
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metrics-render")
    renders = _SharedRenders(metrics, executor)

    async def handle_metrics(request: web.Request) -> web.Response:
        compress = accepts_gzip(request.headers.get("Accept-Encoding"))
        key = (request.headers.get("Accept") or "", compress)
        body, content_type = await renders.encode(key)
        headers = {"Content-Type": content_type, "Vary": "Accept, Accept-Encoding"}
        if compress:
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=body, headers=headers)

    app = web.Application()
    app.router.add_get("/metrics", handle_metrics)
    try:
        async with _serve(app, host=host, port=port) as server:
            yield server
    finally:
        # Not waiting: a render still running finishes on its own thread, unread.
        executor.shutdown(wait=False, cancel_futures=True)


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an `Accept-Encoding` header allows gzip (listed, and not with `q=0`)."""
    for item in (accept_encoding or "").split(","):
        coding, _, params = item.partition(";")
        if coding.strip().lower() not in ("gzip", "x-gzip"):
            continue
        weight = params.strip().lower().replace(" ", "")
        if not weight.startswith("q="):
            return True
        try:
            return float(weight[2:]) > 0
        except ValueError:
            return False
    return False


_Key = tuple[str, bool]
"""A render's `Accept` header value, and whether it is gzipped."""


class _SharedRenders:
    """`metrics.encode()` on `executor`, one render at a time per format and encoding, shared by
    every request that arrives while it runs. A finished render is not kept: the next
    request starts a fresh one, so a scrape never sees values older than its own arrival by
    more than one render."""

    def __init__(self, metrics: Metrics, executor: ThreadPoolExecutor) -> None:
        self._metrics = metrics
        self._executor = executor
        self._running: dict[_Key, asyncio.Future[tuple[bytes, str]]] = {}

    async def encode(self, key: _Key) -> tuple[bytes, str]:
        running = self._running.get(key)
        if running is None:
            loop = asyncio.get_running_loop()
            running = loop.run_in_executor(self._executor, self._render, key)
            self._running[key] = running
            running.add_done_callback(lambda done: self._finished(key, done))
        # A scraper that hangs up cancels its own wait, not the render others share.
        return await asyncio.shield(running)

    def _render(self, key: _Key) -> tuple[bytes, str]:
        accept, compress = key
        body, content_type = self._metrics.encode(accept)
        if compress:
            # Level 1: most of the gain (about 10x on this text) for a fraction of the CPU.
            body = gzip.compress(body, compresslevel=1, mtime=0)
        return body, content_type

    def _finished(self, key: _Key, done: asyncio.Future[tuple[bytes, str]]) -> None:
        if self._running.get(key) is done:
            del self._running[key]
        if not done.cancelled() and done.exception() is not None:
            log.warning("rendering /metrics failed", exc_info=done.exception())


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
