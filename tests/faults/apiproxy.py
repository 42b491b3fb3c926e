"""A fault-injecting, TLS-terminating reverse proxy in front of the bench's real kube-apiserver.

The operator's kubeconfig points at the proxy; the proxy forwards every request (watches
included, streamed line by line) to the real apiserver and can, by rule, answer some requests
itself instead: the next N PATCHes of a `/scale` with 429 and `Retry-After`, with 500 or 409; a
watch with a `410 Gone` ERROR event; or hold a request without answering. It can also drop the
events of open watch streams (so the client misses them) and end those streams with a 410, as
the apiserver does when a client's resourceVersion has been compacted away. Every request is
logged with its time, method, path and the status the client got, for assertions on retry
spacing.

Authentication: the proxy presents its own client certificate to the apiserver (a user in
`system:masters`, issued by the bench's client CA) and ignores whatever the client sends; the
operator authenticates to the proxy with a placeholder bearer token. TLS towards the client uses
a serving certificate issued by the bench's serving CA, so the operator's kubeconfig carries the
same CA as the bench's own. Everything runs on a thread of its own with its own event loop, so
synchronous tests can use it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web
from yarl import URL

from tests.testbed.kube import KubeAPIServer
from tests.testbed.procs import LOOPBACK, free_port

HOP_BY_HOP = {
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "authorization",
}
TOKEN = "fault-proxy-placeholder"  # the proxy ignores it; the apiserver never sees it


@dataclass
class Logged:
    """One request as the client saw it."""

    at: float  # time.monotonic() when it arrived
    method: str
    path: str
    query: str
    status: int
    injected: bool  # answered by a rule, not by the apiserver


@dataclass
class Rule:
    """Answer matching requests ourselves, `times` times (None: until removed)."""

    method: str | None
    path: re.Pattern[str]
    status: int
    times: int | None = 1
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    hang: float = 0.0  # hold the request this long first; 0: answer at once
    watch_error: bool = False  # answer 200 with one ERROR event (a watch's way to fail)
    forward_after_hang: bool = False  # after `hang`, forward instead of answering
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        return (self.method is None or self.method == method) and bool(self.path.search(path))


def status_body(code: int, reason: str, message: str) -> bytes:
    """A metav1.Status, as the apiserver writes one."""
    return json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }
    ).encode()


REASONS = {
    409: "Conflict",
    410: "Expired",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


@dataclass
class _Watch:
    path: str
    expire: asyncio.Event
    code: int = 410


class ApiProxy:
    """Start with `ApiProxy.start(kube, workdir)`; `stop()` when done."""

    def __init__(self, kube: KubeAPIServer, workdir: Path) -> None:
        self.kube = kube
        self.workdir = workdir
        self.port = free_port()
        self.url = f"https://{LOOPBACK}:{self.port}"
        self.log: list[Logged] = []
        self._rules: list[Rule] = []
        self._held: list[re.Pattern[str]] = []
        self._watches: dict[int, _Watch] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        pki = workdir / "pki"
        pki.mkdir(exist_ok=True)
        assert kube.serving_ca is not None
        assert kube.client_ca is not None
        self._serving = kube.serving_ca.issue(
            "fault-proxy", hosts=("localhost", LOOPBACK), server=True
        ).write(pki, "proxy-serving")
        self._client = kube.client_ca.issue(
            "fault-proxy", organizations=("system:masters",), client=True
        ).write(pki, "proxy-client")
        self.kubeconfig = workdir / "via-proxy.kubeconfig"
        self._write_kubeconfig()

    @classmethod
    def start(cls, kube: KubeAPIServer, workdir: Path) -> ApiProxy:
        proxy = cls(kube, workdir)
        ready = threading.Event()
        errors: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            proxy._loop = loop
            try:
                loop.run_until_complete(proxy._start())
            except BaseException as exc:
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(proxy._shutdown())
            loop.close()

        proxy._thread = threading.Thread(target=main, name="apiproxy", daemon=True)
        proxy._thread.start()
        ready.wait(30)
        if errors:
            raise errors[0]
        return proxy

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)

    # --- rules ---------------------------------------------------------------------------

    def fail(
        self,
        method: str | None,
        path: str,
        status: int,
        *,
        times: int | None = 1,
        retry_after: float | None = None,
        message: str = "injected by the fault proxy",
    ) -> Rule:
        """Answer the next `times` matching requests with `status` (a metav1.Status body)."""
        headers = {"Content-Type": "application/json"}
        if retry_after is not None:
            headers["Retry-After"] = str(int(retry_after))
        rule = Rule(
            method=method,
            path=re.compile(path),
            status=status,
            times=times,
            headers=headers,
            body=status_body(status, REASONS.get(status, "Unknown"), message),
        )
        return self._add(rule)

    def hang(self, method: str | None, path: str, seconds: float, *, times: int | None = 1) -> Rule:
        """Hold matching requests `seconds` without a byte of answer, then forward them."""
        rule = Rule(
            method=method,
            path=re.compile(path),
            status=0,
            times=times,
            hang=seconds,
            forward_after_hang=True,
        )
        return self._add(rule)

    def fail_watch(self, path: str, *, code: int = 410, times: int | None = 1) -> Rule:
        """Answer matching watch requests 200 with one ERROR event of `code`, then end."""
        rule = Rule(
            method="GET",
            path=re.compile(path),
            status=200,
            times=times,
            watch_error=True,
            body=_error_event(code),
        )
        return self._add(rule)

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def hits(self, rule: Rule) -> int:
        with self._lock:
            return rule.hits

    def _add(self, rule: Rule) -> Rule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def _match(self, method: str, path: str) -> Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.matches(method, path):
                    rule.hits += 1
                    return rule
        return None

    # --- open watches --------------------------------------------------------------------

    def hold_watch_events(self, path: str) -> None:
        """Drop the events of open and new watch streams whose path matches (the client
        misses them), until `expire_watches` ends those streams."""
        with self._lock:
            self._held.append(re.compile(path))

    def open_watches(self, path: str) -> int:
        pattern = re.compile(path)
        with self._lock:
            return sum(1 for w in self._watches.values() if pattern.search(w.path))

    def expire_watches(self, path: str, *, code: int = 410) -> int:
        """End every open watch stream matching `path` with an ERROR event of `code`, and stop
        holding events of matching streams. Returns how many streams were ended."""
        pattern = re.compile(path)
        with self._lock:
            self._held = [p for p in self._held if p.pattern != pattern.pattern]
            ended = [w for w in self._watches.values() if pattern.search(w.path)]
        assert self._loop is not None
        for watch in ended:
            watch.code = code
            self._loop.call_soon_threadsafe(watch.expire.set)
        return len(ended)

    def _is_held(self, path: str) -> bool:
        with self._lock:
            return any(p.search(path) for p in self._held)

    # --- the log -------------------------------------------------------------------------

    def requests(self, method: str | None = None, path: str | None = None) -> list[Logged]:
        pattern = re.compile(path) if path else None
        with self._lock:
            entries = list(self.log)
        return [
            e
            for e in entries
            if (method is None or e.method == method)
            and (pattern is None or pattern.search(e.path))
        ]

    # --- serving -------------------------------------------------------------------------

    async def _start(self) -> None:
        upstream = ssl.create_default_context(cafile=str(self.kube.ca_file))
        upstream.load_cert_chain(str(self._client[0]), str(self._client[1]))
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=upstream, limit=0),
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        )
        app = web.Application(client_max_size=16 * 2**20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        serving = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        serving.load_cert_chain(str(self._serving[0]), str(self._serving[1]))
        site = web.TCPSite(self._runner, LOOPBACK, self.port, ssl_context=serving)
        await site.start()

    async def _shutdown(self) -> None:
        for watch in list(self._watches.values()):
            watch.expire.set()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def _record(self, request: web.Request, status: int, injected: bool, at: float) -> None:
        with self._lock:
            self.log.append(
                Logged(
                    at=at,
                    method=request.method,
                    path=request.path,
                    query=request.query_string,
                    status=status,
                    injected=injected,
                )
            )

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        at = time.monotonic()
        rule = self._match(request.method, request.path)
        if rule is not None and rule.hang:
            await asyncio.sleep(rule.hang)
        if rule is not None and not rule.forward_after_hang:
            self._record(request, rule.status, True, at)
            if rule.watch_error:
                response = web.StreamResponse(
                    status=200, headers={"Content-Type": "application/json"}
                )
                await response.prepare(request)
                await response.write(rule.body)
                await response.write_eof()
                return response
            return web.Response(status=rule.status, body=rule.body, headers=rule.headers)
        return await self._forward(request, at)

    async def _forward(self, request: web.Request, at: float) -> web.StreamResponse:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        body = await request.read() if request.can_read_body else None
        url = URL(self.kube.server + request.raw_path, encoded=True)
        is_watch = request.query.get("watch") in ("true", "1")
        try:
            upstream = await self._session.request(
                request.method, url, headers=headers, data=body, allow_redirects=False
            )
        except (aiohttp.ClientError, OSError) as exc:
            self._record(request, 502, True, at)
            return web.Response(
                status=502, body=status_body(502, "BadGateway", f"fault proxy: {exc}")
            )
        out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
        self._record(request, upstream.status, False, at)
        async with upstream:
            if not (is_watch and upstream.status == 200):
                data = await upstream.read()
                return web.Response(status=upstream.status, body=data, headers=out_headers)
            return await self._stream_watch(request, upstream, out_headers)

    async def _stream_watch(
        self,
        request: web.Request,
        upstream: aiohttp.ClientResponse,
        headers: dict[str, str],
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers=headers)
        await response.prepare(request)
        watch = _Watch(path=request.path, expire=asyncio.Event())
        key = id(watch)
        with self._lock:
            self._watches[key] = watch

        async def pump() -> None:
            while True:
                line = await upstream.content.readline()
                if not line:
                    return
                if self._is_held(request.path):
                    continue  # dropped: the client never sees this event
                await response.write(line)

        pumping = asyncio.create_task(pump())
        expiring = asyncio.create_task(watch.expire.wait())
        try:
            await asyncio.wait({pumping, expiring}, return_when=asyncio.FIRST_COMPLETED)
            if watch.expire.is_set() and not pumping.done():
                pumping.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pumping
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await response.write(_error_event(watch.code))
            with contextlib.suppress(ConnectionError, RuntimeError):
                await response.write_eof()
        except (ConnectionError, aiohttp.ClientError):
            pass
        finally:
            for task in (pumping, expiring):
                task.cancel()
            with self._lock:
                self._watches.pop(key, None)
        return response

    # --- the client's side ---------------------------------------------------------------

    def _write_kubeconfig(self) -> None:
        config: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "fault-proxy",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority-data": base64.b64encode(
                            self.kube.serving_ca.cert_pem
                        ).decode(),
                    },
                }
            ],
            "users": [{"name": "via-proxy", "user": {"token": TOKEN}}],
            "contexts": [
                {"name": "fault-proxy", "context": {"cluster": "fault-proxy", "user": "via-proxy"}}
            ],
            "current-context": "fault-proxy",
        }
        self.kubeconfig.write_text(yaml.safe_dump(config, sort_keys=False))
        self.kubeconfig.chmod(0o600)


def _error_event(code: int) -> bytes:
    reason = REASONS.get(code, "Unknown")
    message = (
        "too old resource version: 1 (2)" if code == 410 else f"injected {code} by the fault proxy"
    )
    status = json.loads(status_body(code, reason, message))
    return json.dumps({"type": "ERROR", "object": status}).encode() + b"\n"


@contextlib.contextmanager
def running(kube: KubeAPIServer, workdir: Path) -> Iterator[ApiProxy]:
    proxy = ApiProxy.start(kube, workdir)
    try:
        yield proxy
    finally:
        proxy.stop()
