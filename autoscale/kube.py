"""The Kubernetes API, as the operator uses it; the only module that imports kubernetes_asyncio.

It returns plain dicts and small dataclasses, and raises the errors of `autoscale.errors`, so
nothing above it sees the client library's types. Scale targets of any kind are reached
through their `/scale` subresource, found by API discovery from `scaleTargetRef`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import os
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import aiohttp.helpers
import yarl
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from autoscale.errors import ConflictError, KubeError, TargetNotFoundError
from autoscale.model import GROUP, VERSION

log = logging.getLogger(__name__)

SCALED_OBJECTS = "scaledobjects"
MERGE_PATCH = "application/merge-patch+json"
COMPONENT = "autoscale-operator"
CONNECTION_POOL_SIZE = 256
# A client-side bound on every request that is not a watch: a server that accepted the
# connection but never answers must not hold a loop's tick past --poll-timeout. It bounds
# connecting and each wait for the answer's bytes, not the wait for a free pooled connection:
# thousands of loops starting at once queue for the pool, and must not time out there.
REQUEST_TIMEOUT_SECONDS = 8.0
REQUEST_TIMEOUT = aiohttp.ClientTimeout(
    sock_connect=REQUEST_TIMEOUT_SECONDS, sock_read=REQUEST_TIMEOUT_SECONDS
)
# Lists of watched collections come in pages, so 10,000 Deployments never sit in memory whole.
LIST_PAGE_SIZE = 500


class WatchExpiredError(KubeError):
    """HTTP 410 Gone on a watch: the resourceVersion is too old; list again."""


class NoScaleSubresourceError(KubeError):
    """The target's kind exists but has no `/scale` subresource."""


class ApiUnreachableError(KubeError):
    """The API server could not be reached, or the connection broke before the answer ended
    (e.g. the apiserver restarting): retry later."""


# What the HTTP client raises when the connection, not the server, fails: refused, reset,
# closed mid-answer (aiohttp's ServerDisconnectedError and ClientPayloadError are not OSErrors),
# or timed out.
CONNECTION_ERRORS = (aiohttp.ClientError, OSError, TimeoutError)


class ApiBusyError(KubeError):
    """429 Too Many Requests or a 5xx: the server asks us to come back later; `retry_after` is
    its Retry-After in seconds when it sent one."""

    def __init__(self, message: str, *, status: int, retry_after: float | None = None) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


def _unreachable(exc: BaseException, what: str) -> ApiUnreachableError:
    detail = str(exc) or type(exc).__name__
    return ApiUnreachableError(f"{what}: API server unreachable ({detail})")


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetResource:
    """A scale target's kind resolved by discovery."""

    group: str
    version: str
    kind: str
    resource: str  # the plural, e.g. "deployments"
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def gvkr(self) -> dict[str, str]:
        """KEDA's status.scaleTargetGVKR."""
        return {
            "group": self.group,
            "version": self.version,
            "kind": self.kind,
            "resource": self.resource,
        }

    def path(self, namespace: str, name: str) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        return f"{base}/namespaces/{namespace}/{self.resource}/{name}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Scale:
    """A target's /scale: the replicas asked for (spec) and running (status)."""

    spec_replicas: int
    status_replicas: int
    selector: str | None = None
    resource_version: str | None = None  # the target's, when the server told it


def _scale(body: Mapping[str, Any]) -> Scale:
    spec, status = body.get("spec") or {}, body.get("status") or {}
    version = (body.get("metadata") or {}).get("resourceVersion")
    return Scale(
        spec_replicas=int(spec.get("replicas") or 0),
        status_replicas=int(status.get("replicas") or 0),
        selector=status.get("selector"),
        resource_version=str(version) if version else None,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class WatchEvent:
    type: str  # ADDED, MODIFIED, DELETED, BOOKMARK
    object: dict[str, Any]


async def connect(kubeconfig: str | None = None) -> client.ApiClient:
    """An API client: the given kubeconfig; else in-cluster; else $KUBECONFIG or ~/.kube/config."""
    configuration = client.Configuration()
    if kubeconfig:
        await config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    elif os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        await config.load_kube_config(client_configuration=configuration)
    # Watches hold a connection each: leave room for them beside the short requests.
    configuration.connection_pool_maxsize = CONNECTION_POOL_SIZE
    # The client's aiohttp session trusts the environment, which means reading ~/.netrc and
    # the proxy variables again on every request (a tenth of the operator's CPU at 10,000
    # ScaledObjects). Resolve the proxy once, here, and stop the per-request lookups.
    if not configuration.proxy:
        with contextlib.suppress(LookupError):
            proxy, _ = aiohttp.helpers.get_env_proxy_for_url(yarl.URL(configuration.host or ""))
            configuration.proxy = str(proxy)
    api = client.ApiClient(configuration)
    api.rest_client.pool_manager._trust_env = False
    return api


def _translate(exc: ApiException, what: str) -> KubeError:
    """Our error for an API failure; the message carries the server's, never request bodies."""
    return _http_error(exc.status, exc.reason, exc.body, exc.headers, what)


def _http_error(
    status: int | None,
    reason: str | None,
    body: bytes | str | None,
    headers: Mapping[str, str] | None,
    what: str,
) -> KubeError:
    reason = reason or ""
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        reason = json.loads(body or b"{}").get("message", reason)
    message = f"{what}: {status} {reason}".strip()
    if status == 404:
        return TargetNotFoundError(message, status=404)
    if status == 409:
        return ConflictError(message, status=409)
    if status == 410:
        return WatchExpiredError(message, status=410)
    if status is not None and (status == 429 or status >= 500):
        return ApiBusyError(message, status=status, retry_after=_retry_after(headers))
    return KubeError(message, status=status)


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Retry-After in seconds (the apiserver sends whole seconds), or None."""
    raw = None
    with contextlib.suppress(AttributeError, TypeError):
        raw = headers.get("Retry-After") if headers is not None else None
    try:
        seconds = float(raw) if raw is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and seconds >= 0 else None


class Kube:
    """The handful of API calls the operator makes."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self._resources: dict[tuple[str, str], TargetResource] = {}

    async def close(self) -> None:
        await self.api.close()

    # --- ScaledObjects -------------------------------------------------------------------

    async def list_scaled_objects(self, namespace: str | None) -> tuple[list[dict[str, Any]], str]:
        """All ScaledObjects (of one namespace, or all), and the list's resourceVersion."""
        try:
            if namespace:
                listing = await self.custom.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, SCALED_OBJECTS
                )
            else:
                listing = await self.custom.list_cluster_custom_object(
                    GROUP, VERSION, SCALED_OBJECTS
                )
        except ApiException as exc:
            raise _translate(exc, "listing ScaledObjects") from None
        except CONNECTION_ERRORS as exc:
            raise _unreachable(exc, "listing ScaledObjects") from None
        return list(listing.get("items", [])), str(listing["metadata"]["resourceVersion"])

    def watch_scaled_objects(
        self, namespace: str | None, resource_version: str, *, timeout_seconds: int = 300
    ) -> AsyncIterator[WatchEvent]:
        """Watch ScaledObjects (of one namespace, or all) after `resource_version`."""
        scope = f"/namespaces/{namespace}" if namespace else ""
        collection = f"/apis/{GROUP}/{VERSION}{scope}/{SCALED_OBJECTS}"
        return self.watch_path(collection, resource_version, timeout_seconds=timeout_seconds)

    async def watch_path(
        self,
        collection: str,
        resource_version: str,
        field_selector: str | None = None,
        *,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[WatchEvent]:
        """Watch events of a collection after `resource_version`, bookmarks included; the stream
        ends after `timeout_seconds`. Raises WatchExpiredError on 410 Gone (list again)."""
        query = [
            ("watch", "true"),
            ("resourceVersion", resource_version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(timeout_seconds)),
        ]
        if field_selector:
            query.append(("fieldSelector", field_selector))
        try:
            response = await self.api.call_api(
                collection,
                "GET",
                query_params=query,
                header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=timeout_seconds + 30,
            )
        except ApiException as exc:
            raise _translate(exc, f"watching {collection}") from None
        except CONNECTION_ERRORS as exc:
            raise _unreachable(exc, f"watching {collection}") from None
        async with response:
            if response.status != 200:  # not raised for us: the content was not preloaded
                body = b""
                with contextlib.suppress(*CONNECTION_ERRORS):
                    body = await response.read()
                what = f"watching {collection}"
                raise _http_error(response.status, response.reason, body, response.headers, what)
            while True:
                try:
                    line = await response.content.readline()
                except CONNECTION_ERRORS as exc:
                    raise _unreachable(exc, f"watching {collection}") from None
                if not line:
                    return
                event = json.loads(line)
                if not isinstance(event, dict) or "type" not in event or "object" not in event:
                    # Never quote the line: the collection may be Secrets.
                    raise KubeError(f"watching {collection}: a line that is not a watch event")
                if event.get("type") == "ERROR":
                    status = event.get("object", {})
                    code = status.get("code")
                    message = f"watching {collection}: {code} {status.get('message', '')}"
                    if code == 410:
                        raise WatchExpiredError(message, status=410)
                    raise KubeError(message, status=code)
                yield WatchEvent(type=event["type"], object=event["object"])

    async def patch_scaled_object_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{SCALED_OBJECTS}/{name}/status"
        try:
            return await self._send_json("PATCH", path, {"status": dict(status)})
        except ApiException as exc:
            raise _translate(exc, f"patching status of ScaledObject {namespace}/{name}") from None

    async def set_finalizers(
        self, namespace: str, name: str, finalizers: list[str], resource_version: str
    ) -> dict[str, Any]:
        """Replace metadata.finalizers, only if the object is still at `resource_version`."""
        body = {"metadata": {"finalizers": finalizers, "resourceVersion": resource_version}}
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{SCALED_OBJECTS}/{name}"
        try:
            return await self._send_json("PATCH", path, body)
        except ApiException as exc:
            what = f"updating finalizers of ScaledObject {namespace}/{name}"
            raise _translate(exc, what) from None

    # --- scale targets -------------------------------------------------------------------

    async def resolve_target(self, api_version: str, kind: str) -> TargetResource:
        """The resource behind `apiVersion`/`kind`, by discovery; checks it has /scale."""
        key = (api_version, kind)
        cached = self._resources.get(key)
        if cached is not None:
            return cached
        group, _, version = api_version.rpartition("/")
        path = f"/apis/{group}/{version}" if group else f"/api/{version}"
        try:
            discovery = await self._get_json(path)
        except ApiException as exc:
            if exc.status == 404:
                raise TargetNotFoundError(
                    f"scaleTargetRef: the API {api_version} is not served by this cluster",
                    status=404,
                ) from None
            raise _translate(exc, f"discovering {api_version}") from None
        resources = discovery.get("resources", [])
        names = {r["name"] for r in resources}
        for entry in resources:
            if entry.get("kind") == kind and "/" not in entry["name"]:
                if f"{entry['name']}/scale" not in names:
                    raise NoScaleSubresourceError(
                        f"scaleTargetRef: {kind}.{api_version} has no /scale subresource, "
                        "so it cannot be scaled"
                    )
                target = TargetResource(
                    group=group,
                    version=version,
                    kind=kind,
                    resource=entry["name"],
                    namespaced=bool(entry.get("namespaced", True)),
                )
                self._resources[key] = target
                return target
        raise TargetNotFoundError(
            f"scaleTargetRef: kind {kind} is not served by {api_version}", status=404
        )

    def forget_target(self, api_version: str, kind: str) -> None:
        """Drop a cached discovery result (e.g. after a CRD was removed)."""
        self._resources.pop((api_version, kind), None)

    async def get_scale(self, target: TargetResource, namespace: str, name: str) -> Scale:
        try:
            body = await self._get_json(target.path(namespace, name) + "/scale")
        except ApiException as exc:
            raise _translate(exc, f"reading /scale of {target.kind} {namespace}/{name}") from None
        return _scale(body)

    async def patch_scale(
        self, target: TargetResource, namespace: str, name: str, replicas: int
    ) -> Scale:
        """Set spec.replicas through /scale; the Scale the server answered with."""
        try:
            body = await self._send_json(
                "PATCH", target.path(namespace, name) + "/scale", {"spec": {"replicas": replicas}}
            )
        except ApiException as exc:
            raise _translate(exc, f"patching /scale of {target.kind} {namespace}/{name}") from None
        return _scale(body if isinstance(body, Mapping) else {})

    async def get_object(self, target: TargetResource, namespace: str, name: str) -> dict[str, Any]:
        try:
            return await self._get_json(target.path(namespace, name))
        except ApiException as exc:
            raise _translate(exc, f"reading {target.kind} {namespace}/{name}") from None

    async def server_version(self) -> str:
        """The API server's version (also a cheap reachability check)."""
        return str((await self._get_json("/version")).get("gitVersion", ""))

    async def _get_json(
        self, path: str, query: list[tuple[str, str]] | None = None
    ) -> dict[str, Any]:
        """GET a JSON object; ApiException for an error answer, ApiUnreachableError when no
        answer came."""
        try:
            result: dict[str, Any] = await self.api.call_api(
                path,
                "GET",
                query_params=query or [],
                header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"],
                response_types_map={200: "object"},
                _return_http_data_only=True,
                _request_timeout=REQUEST_TIMEOUT,
            )
        except CONNECTION_ERRORS as exc:
            raise _unreachable(exc, f"GET {path}") from None
        return result

    async def _send_json(self, method: str, path: str, body: Any) -> dict[str, Any]:
        """POST a JSON body, or PATCH it as a JSON merge patch."""
        content_type = MERGE_PATCH if method == "PATCH" else "application/json"
        try:
            result: dict[str, Any] = await self.api.call_api(
                path,
                method,
                header_params={"Content-Type": content_type, "Accept": "application/json"},
                body=body,
                auth_settings=["BearerToken"],
                response_types_map={200: "object", 201: "object"},
                _return_http_data_only=True,
                _request_timeout=REQUEST_TIMEOUT,
            )
        except CONNECTION_ERRORS as exc:
            raise _unreachable(exc, f"{method} {path}") from None
        return result

    # --- HPAs, secrets, events -----------------------------------------------------------

    async def list_hpas(self, namespace: str | None) -> list[dict[str, Any]]:
        path = (
            f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers"
            if namespace
            else "/apis/autoscaling/v2/horizontalpodautoscalers"
        )
        try:
            listing = await self._get_json(path)
        except ApiException as exc:
            raise _translate(exc, "listing HorizontalPodAutoscalers") from None
        return list(listing.get("items", []))

    async def emit_event(
        self,
        *,
        involved: Mapping[str, Any],
        event_type: str,
        reason: str,
        message: str,
    ) -> None:
        """A core/v1 Event on `involved` (an object dict); failures are logged, not raised."""
        metadata = involved.get("metadata", {})
        now = datetime.datetime.now(datetime.UTC)
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{metadata.get('name')}.{uuid.uuid4().hex[:16]}",
                "namespace": metadata.get("namespace"),
            },
            "involvedObject": {
                "apiVersion": involved.get("apiVersion"),
                "kind": involved.get("kind"),
                "name": metadata.get("name"),
                "namespace": metadata.get("namespace"),
                "uid": metadata.get("uid"),
                "resourceVersion": metadata.get("resourceVersion"),
            },
            "type": event_type,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": os.environ.get("HOSTNAME", COMPONENT),
            "firstTimestamp": now.isoformat(),
            "lastTimestamp": now.isoformat(),
            "count": 1,
        }
        try:
            path = f"/api/v1/namespaces/{metadata.get('namespace')}/events"
            await self._send_json("POST", path, body)
        except (KubeError, ApiException) as exc:
            log.warning("could not record event %s on %s: %s", reason, metadata.get("name"), exc)


@dataclass(frozen=True, slots=True)
class ObjectKey:
    """One object the cache can watch: its collection path and name."""

    collection: str  # e.g. /api/v1/namespaces/ns/secrets
    name: str

    @staticmethod
    def secret(namespace: str, name: str) -> ObjectKey:
        return ObjectKey(f"/api/v1/namespaces/{namespace}/secrets", name)

    @staticmethod
    def config_map(namespace: str, name: str) -> ObjectKey:
        return ObjectKey(f"/api/v1/namespaces/{namespace}/configmaps", name)

    @staticmethod
    def service_account(namespace: str, name: str) -> ObjectKey:
        return ObjectKey(f"/api/v1/namespaces/{namespace}/serviceaccounts", name)

    @staticmethod
    def trigger_authentication(namespace: str, name: str) -> ObjectKey:
        return ObjectKey(
            f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/triggerauthentications", name
        )

    @staticmethod
    def cluster_trigger_authentication(name: str) -> ObjectKey:
        return ObjectKey(f"/apis/{GROUP}/{VERSION}/clustertriggerauthentications", name)

    @staticmethod
    def workload(target: TargetResource, namespace: str, name: str) -> ObjectKey:
        return ObjectKey(target.path(namespace, name).rsplit("/", 1)[0], name)


class _Collection:
    """One watched collection: its objects by name, kept current by list + watch."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.error: KubeError | None = None
        self.ready = asyncio.Event()
        self.last_used = 0.0
        self.task: asyncio.Task[None] | None = None

    @property
    def synced(self) -> bool:
        """Listed, and the watch since then has not failed: `objects` is current."""
        return self.ready.is_set() and self.error is None


Projection = Callable[[dict[str, Any]], dict[str, Any]]


def _version_number(obj: Mapping[str, Any] | None) -> int | None:
    """metadata.resourceVersion as a number when it is one (etcd's are), else None."""
    raw = ((obj or {}).get("metadata") or {}).get("resourceVersion")
    return int(raw) if isinstance(raw, str) and raw.isdigit() else None


def is_older(new: Mapping[str, Any], old: Mapping[str, Any] | None) -> bool:
    """True when `new` is an older version of the object than `old` (both with numeric
    resourceVersions): the cache keeps `old`. Only a write we recorded ourselves can be ahead
    of the watch; this keeps a late watch event from undoing it."""
    new_version, old_version = _version_number(new), _version_number(old)
    return new_version is not None and old_version is not None and new_version < old_version


class ObjectCache:
    """Objects read through one list + watch per collection (kind and namespace).

    The first `get` of an object of a collection (the Secrets of a namespace, say) lists the
    collection and starts a watch on it, so later reads come from memory and a change (a
    rotated Secret, an edited TriggerAuthentication) is seen within moments, without polling
    the API: a handful of watches, however many ScaledObjects refer to them (one watch per
    object would exhaust the client's connections). A collection not read for
    `idle_seconds` is forgotten and its watch stopped. Values are handed to callers, never
    logged. With `project`, only what it returns of each object is kept (it must keep
    metadata.name and metadata.resourceVersion).
    """

    def __init__(
        self, kube: Kube, *, idle_seconds: float = 600.0, project: Projection | None = None
    ) -> None:
        self.kube = kube
        self.idle_seconds = idle_seconds
        self.project = project
        self._collections: dict[str, _Collection] = {}

    def _entry(self, collection: str) -> _Collection:
        entry = self._collections.get(collection)
        if entry is None or (entry.task is not None and entry.task.done()):
            entry = self._collections[collection] = _Collection()
            entry.task = asyncio.create_task(
                self._follow(collection, entry), name=f"watch {collection}"
            )
        entry.last_used = asyncio.get_running_loop().time()
        return entry

    async def get(self, key: ObjectKey) -> dict[str, Any] | None:
        """The object, or None if it does not exist; KubeError if it cannot be read."""
        entry = self._entry(key.collection)
        await entry.ready.wait()
        found = entry.objects.get(key.name)
        if found is None and entry.error is not None:
            raise entry.error
        return found

    def peek(self, key: ObjectKey) -> tuple[bool, dict[str, Any] | None]:
        """Without waiting: whether the object's collection is synced, and the object as the
        cache holds it (None when absent). Starts watching the collection if need be."""
        entry = self._entry(key.collection)
        return entry.synced, entry.objects.get(key.name)

    def put(self, key: ObjectKey, obj: dict[str, Any]) -> None:
        """Record a version of an object we wrote ourselves, ahead of its watch event; kept
        only while the collection is synced and the object there is not newer."""
        entry = self._collections.get(key.collection)
        if entry is None or not entry.synced:
            return
        if not is_older(obj, entry.objects.get(key.name)):
            entry.objects[key.name] = obj

    def sweep(self) -> None:
        """Stop watching collections nobody read for `idle_seconds`."""
        now = asyncio.get_running_loop().time()
        for collection, entry in list(self._collections.items()):
            if now - entry.last_used > self.idle_seconds:
                if entry.task is not None:
                    entry.task.cancel()
                del self._collections[collection]

    async def aclose(self) -> None:
        tasks = [e.task for e in self._collections.values() if e.task is not None]
        self._collections.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _list(self, collection: str, entry: _Collection) -> str:
        """List the collection page by page into `entry.objects`; the list's resourceVersion."""
        project = self.project
        objects: dict[str, dict[str, Any]] = {}
        token = ""
        while True:
            query = [("limit", str(LIST_PAGE_SIZE))]
            if token:
                query.append(("continue", token))
            listing = await self.kube._get_json(collection, query)
            for item in listing.get("items") or []:
                name = item["metadata"]["name"]
                kept = item if project is None else project(item)
                if not is_older(kept, entry.objects.get(name)):
                    objects[name] = kept
                else:
                    objects[name] = entry.objects[name]
            token = (listing.get("metadata") or {}).get("continue") or ""
            if not token:
                break
        entry.objects = objects
        return str(listing["metadata"]["resourceVersion"])

    async def _follow(self, collection: str, entry: _Collection) -> None:
        backoff = 1.0
        project = self.project
        while True:
            try:
                version = await self._list(collection, entry)
                entry.error = None
                entry.ready.set()
                while True:
                    async for event in self.kube.watch_path(collection, version):
                        obj = event.object
                        metadata = obj.get("metadata") or {}
                        version = metadata.get("resourceVersion", version)
                        name = metadata.get("name")
                        if event.type in ("ADDED", "MODIFIED") and name:
                            kept = obj if project is None else project(obj)
                            if not is_older(kept, entry.objects.get(name)):
                                entry.objects[name] = kept
                        elif event.type == "DELETED" and name:
                            entry.objects.pop(name, None)
                    backoff = 1.0
            except WatchExpiredError:
                continue  # list again
            except ApiException as exc:
                entry.error = _translate(exc, f"reading {collection}")
            except (KubeError, OSError, TimeoutError, ValueError) as exc:
                entry.error = (
                    exc
                    if isinstance(exc, KubeError)
                    else KubeError(f"reading {collection}: {type(exc).__name__}")
                )
            entry.ready.set()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)


# Kinds whose /scale is spec.replicas / status.replicas of the object itself, so their counts
# can be read from a watch of the kind instead of a GET of /scale per poll: those the
# operator's RBAC lets it list and watch (deploy/base/rbac.yaml). ReplicaSets qualify too, once
# that grants list and watch on them.
WATCHED_SCALE_KINDS = frozenset({("apps", "v1", "Deployment"), ("apps", "v1", "StatefulSet")})


def project_replicas(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What the replica cache keeps of a workload: its identity and its two replica counts."""
    metadata = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    return {
        "metadata": {
            "name": metadata.get("name"),
            "uid": metadata.get("uid"),
            "resourceVersion": metadata.get("resourceVersion"),
        },
        "spec": {"replicas": spec.get("replicas")},
        "status": {"replicas": status.get("replicas")},
    }


def scale_of(projected: Mapping[str, Any]) -> Scale:
    """The /scale of a workload the replica cache holds (spec.replicas defaults to 1, as the
    API server's defaulting does)."""
    spec_replicas = (projected.get("spec") or {}).get("replicas")
    return Scale(
        spec_replicas=1 if spec_replicas is None else int(spec_replicas),
        status_replicas=int((projected.get("status") or {}).get("replicas") or 0),
        resource_version=(projected.get("metadata") or {}).get("resourceVersion"),
    )


def with_spec_replicas(
    projected: Mapping[str, Any], replicas: int, resource_version: str | None
) -> dict[str, Any]:
    """The projection after our /scale patch set spec.replicas (at `resource_version`)."""
    metadata = dict(projected.get("metadata") or {})
    metadata["resourceVersion"] = resource_version
    return {
        "metadata": metadata,
        "spec": {"replicas": replicas},
        "status": dict(projected.get("status") or {}),
    }


class ReplicaCache:
    """Replica counts of scale targets, read from a watch where the kind allows it.

    Deployments and StatefulSets are followed with one list + watch per kind and namespace,
    keeping only `project_replicas` of each object (10,000 Deployments cost a few megabytes);
    other kinds, and those two while their watch is not synced or the object is not (yet) in
    it, are read with GET /scale, which also tells a missing target (404). After our own
    /scale patch the patched count is recorded at once, so the next tick never decides on the
    count from before it.
    """

    def __init__(self, kube: Kube, *, idle_seconds: float = 600.0) -> None:
        self.kube = kube
        self.cache = ObjectCache(kube, idle_seconds=idle_seconds, project=project_replicas)
        self._swept = 0.0

    @staticmethod
    def watched(target: TargetResource) -> bool:
        return (target.group, target.version, target.kind) in WATCHED_SCALE_KINDS

    async def get_scale(self, target: TargetResource, namespace: str, name: str) -> Scale:
        if self.watched(target):
            self._sweep()
            synced, found = self.cache.peek(ObjectKey.workload(target, namespace, name))
            if synced and found is not None:
                return scale_of(found)
        return await self.kube.get_scale(target, namespace, name)

    async def patch_scale(
        self, target: TargetResource, namespace: str, name: str, replicas: int
    ) -> Scale:
        scale = await self.kube.patch_scale(target, namespace, name, replicas)
        if self.watched(target):
            key = ObjectKey.workload(target, namespace, name)
            _, found = self.cache.peek(key)
            if found is not None:
                self.cache.put(key, with_spec_replicas(found, replicas, scale.resource_version))
        return scale

    def _sweep(self) -> None:
        now = asyncio.get_running_loop().time()
        if now - self._swept > 60.0:
            self._swept = now
            self.cache.sweep()

    async def aclose(self) -> None:
        await self.cache.aclose()
