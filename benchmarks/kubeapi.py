"""Direct access to the bench's kube-apiserver for the benchmarks: bulk creation, watches, metrics.

Everything here goes straight to the REST API with the admin client certificate (no kubectl
process per call, no discovery requests), so the harness's own API traffic is small, known and
kept out of the steady window.
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
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

_VERB = re.compile(r'verb="([^"]*)"')
_RESOURCE = re.compile(r'resource="([^"]*)"')
_SUBRESOURCE = re.compile(r'subresource="([^"]*)"')


class KubeREST:
    """The apiserver of an admin kubeconfig with inline certificate data (the bench's)."""

    def __init__(self, kubeconfig: Path, workdir: Path) -> None:
        config = yaml.safe_load(kubeconfig.read_text())
        cluster = config["clusters"][0]["cluster"]
        user = config["users"][0]["user"]
        self.server: str = cluster["server"]
        workdir.mkdir(parents=True, exist_ok=True)
        ca = workdir / "bench-ca.crt"
        cert = workdir / "bench-client.crt"
        key = workdir / "bench-client.key"
        ca.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
        cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
        key.write_bytes(base64.b64decode(user["client-key-data"]))
        key.chmod(0o600)
        self.context = ssl.create_default_context(cafile=str(ca))
        self.context.load_cert_chain(str(cert), str(key))

    # --- plain requests -----------------------------------------------------------------

    def get_json(self, path: str, timeout: float = 60.0) -> Any:
        with urllib.request.urlopen(
            self.server + path, timeout=timeout, context=self.context
        ) as response:
            return json.load(response)

    def get_text(self, path: str, timeout: float = 60.0) -> str:
        with urllib.request.urlopen(
            self.server + path, timeout=timeout, context=self.context
        ) as response:
            return str(response.read().decode())

    def resource_version(self, collection: str) -> str:
        """The collection's current resourceVersion (a list of at most one item)."""
        listing = self.get_json(f"{collection}?limit=1")
        return str(listing["metadata"]["resourceVersion"])

    def request_totals(self) -> dict[tuple[str, str], float]:
        """apiserver_request_total summed by (verb, resource[/subresource]): one GET /metrics."""
        totals: dict[tuple[str, str], float] = {}
        for line in self.get_text("/metrics").splitlines():
            if not line.startswith("apiserver_request_total{"):
                continue
            labels, _, value = line.rpartition(" ")
            verb = _VERB.search(labels)
            resource = _RESOURCE.search(labels)
            subresource = _SUBRESOURCE.search(labels)
            what = resource.group(1) if resource else ""
            if subresource and subresource.group(1):
                # Without a resource, "subresource" holds a non-resource path (/readyz).
                what = f"{what}/{subresource.group(1)}" if what else f"path {subresource.group(1)}"
            key = (verb.group(1) if verb else "?", what)
            totals[key] = totals.get(key, 0.0) + float(value)
        return totals

    # --- bulk creation ------------------------------------------------------------------

    def create_all(self, items: Iterable[tuple[str, dict[str, Any]]], concurrency: int = 32) -> int:
        """POST every (collection path, manifest), `concurrency` at a time; returns how many.

        An object that exists already (409) counts as created; any other status fails the run.
        Runs its own event loop in this thread.
        """
        return asyncio.run(self._create_all(items, concurrency))

    async def _create_all(
        self, items: Iterable[tuple[str, dict[str, Any]]], concurrency: int
    ) -> int:
        import aiohttp

        connector = aiohttp.TCPConnector(ssl=self.context, limit=concurrency)
        timeout = aiohttp.ClientTimeout(total=120)
        queue: asyncio.Queue[tuple[str, dict[str, Any]] | None] = asyncio.Queue(
            maxsize=concurrency * 4
        )
        created = 0

        async def worker(session: aiohttp.ClientSession) -> None:
            nonlocal created
            while (item := await queue.get()) is not None:
                path, body = item
                for attempt in range(5):
                    async with session.post(self.server + path, json=body) as response:
                        if response.status in (200, 201, 409):
                            created += 1
                            break
                        text = await response.text()
                        if response.status in (429, 500, 503, 504) and attempt < 4:
                            await asyncio.sleep(0.5 * (attempt + 1))
                            continue
                        raise RuntimeError(f"POST {path}: HTTP {response.status}: {text[:300]}")

        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            workers = [asyncio.create_task(worker(session)) for _ in range(concurrency)]
            try:
                for item in items:
                    await queue.put(item)
                for _ in workers:
                    await queue.put(None)
                await asyncio.gather(*workers)
            finally:
                for task in workers:
                    task.cancel()
        return created


class Watch:
    """A watch on one collection in a thread, calling `on_event(type, object, wall_time)`.

    Starts at the collection's current resourceVersion (no initial listing, so its cost does
    not grow with the objects already there) and resumes from the last one seen when the
    server ends the request. `stop()` returns within about a second.
    """

    def __init__(
        self,
        kube: KubeREST,
        collection: str,
        on_event: Callable[[str, dict[str, Any], float], None],
    ) -> None:
        self.kube = kube
        self.collection = collection
        self.on_event = on_event
        self.version = kube.resource_version(collection)
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._response: Any = None
        self._thread = threading.Thread(target=self._run, name=f"watch {collection}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            query = urllib.parse.urlencode(
                {"watch": "1", "resourceVersion": self.version, "timeoutSeconds": "300"}
            )
            try:
                with urllib.request.urlopen(
                    f"{self.kube.server}{self.collection}?{query}",
                    timeout=1.0,
                    context=self.kube.context,
                ) as response:
                    self._response = response
                    self._read(response)
            except TimeoutError:
                continue  # idle for a second: check the stop flag, resume
            except (OSError, urllib.error.URLError, ValueError, AttributeError) as exc:
                # AttributeError: http.client's reader after stop() closed the response.
                if self._stop.is_set():
                    return
                self.errors.append(f"{type(exc).__name__}: {exc}")
                time.sleep(0.5)

    def _read(self, response: Any) -> None:
        # A read timing out leaves the response unusable: it propagates, and _run resumes.
        while not self._stop.is_set():
            line = response.readline()
            if not line:
                return
            now = time.time()
            event = json.loads(line)
            obj = event.get("object", {})
            if event.get("type") == "ERROR":
                # 410 Gone: start again from now; nothing we need happened before it here.
                self.version = self.kube.resource_version(self.collection)
                return
            version = obj.get("metadata", {}).get("resourceVersion")
            if version:
                self.version = version
            if event.get("type") != "BOOKMARK":
                self.on_event(event["type"], obj, now)

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(Exception):
            if self._response is not None:
                self._response.close()
        self._thread.join(timeout=5)
