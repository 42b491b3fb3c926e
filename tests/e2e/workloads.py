"""Manifests and reads the end-to-end tests share: workloads, ScaledObjects, replica counts."""

from __future__ import annotations

import json
from typing import Any

from tests.testbed.kube import KubeAPIServer


def deployment(
    name: str, replicas: int = 0, env: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    labels = {"app": name}
    container: dict[str, Any] = {"name": "worker", "image": "registry.example/worker:1"}
    if env:
        container["env"] = env
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
        },
    }


def statefulset(name: str, replicas: int = 0) -> dict[str, Any]:
    manifest = deployment(name, replicas)
    manifest["kind"] = "StatefulSet"
    manifest["spec"]["serviceName"] = name
    return manifest


def redis_trigger(
    address: str,
    stream: str,
    *,
    group: str = "workers",
    pending: int = 2,
    name: str | None = None,
    **extra: str,
) -> dict[str, Any]:
    trigger: dict[str, Any] = {
        "type": "redis-streams",
        "metadata": {
            "address": address,
            "stream": stream,
            "consumerGroup": group,
            "pendingEntriesCount": str(pending),
            **extra,
        },
    }
    if name:
        trigger["name"] = name
    return trigger


def scaled_object(
    name: str,
    target: str,
    triggers: list[dict[str, Any]],
    *,
    kind: str = "Deployment",
    api_version: str = "apps/v1",
    annotations: dict[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "autoscale.dev/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {
            "scaleTargetRef": {"apiVersion": api_version, "kind": kind, "name": target},
            "pollingInterval": 1,
            "cooldownPeriod": 3,
            "triggers": triggers,
            **spec,
        },
    }
    return body


def apply(kube: KubeAPIServer, namespace: str, manifest: dict[str, Any]) -> None:
    kube.kubectl(
        "apply",
        "--server-side",
        "--field-manager=e2e",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps(manifest),
    )


def get(kube: KubeAPIServer, namespace: str, resource: str, name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(
        kube.kubectl("get", resource, name, "-n", namespace, "-o", "json").stdout
    )
    return result


def replicas(kube: KubeAPIServer, namespace: str, resource: str, name: str) -> int:
    return int(get(kube, namespace, resource, name)["spec"].get("replicas") or 0)


def condition(so: dict[str, Any], kind: str) -> dict[str, Any]:
    for entry in so.get("status", {}).get("conditions", []):
        if entry.get("type") == kind:
            return dict(entry)
    return {}


def events(kube: KubeAPIServer, namespace: str, name: str) -> list[dict[str, Any]]:
    listing = json.loads(
        kube.kubectl(
            "get",
            "events",
            "-n",
            namespace,
            "-o",
            "json",
            f"--field-selector=involvedObject.name={name}",
        ).stdout
    )
    return list(listing.get("items", []))
