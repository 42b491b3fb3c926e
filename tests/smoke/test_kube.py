"""The bench's kube-apiserver is the real thing: CRDs with a scale subresource, Deployments'
/scale, watches, RBAC and authentication, through kubernetes_asyncio as the product uses it."""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client, watch

from tests.testbed import versions
from tests.testbed.kube import KubeAPIServer

pytestmark = pytest.mark.testbed

WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.smoke.autoscale.dev"},
    "spec": {
        "group": "smoke.autoscale.dev",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {"replicas": {"type": "integer", "minimum": 0}},
                            },
                            "status": {
                                "type": "object",
                                "properties": {
                                    "replicas": {"type": "integer"},
                                    "selector": {"type": "string"},
                                },
                            },
                        },
                    }
                },
                "subresources": {
                    "status": {},
                    "scale": {
                        "specReplicasPath": ".spec.replicas",
                        "statusReplicasPath": ".status.replicas",
                        "labelSelectorPath": ".status.selector",
                    },
                },
            }
        ],
    },
}


def deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "worker", "image": "busybox:1.36"}]},
            },
        },
    }


def test_kubectl_reports_the_pinned_release(kube: KubeAPIServer) -> None:
    """kubectl and the server are the pinned release, and the built-in groups are served."""
    version = json.loads(kube.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == f"v{versions.KUBERNETES}"
    assert version["clientVersion"]["gitVersion"] == f"v{versions.KUBERNETES}"
    resources = kube.kubectl("api-resources", "-o", "name").stdout.split()
    for name in (
        "deployments.apps",
        "statefulsets.apps",
        "leases.coordination.k8s.io",
        "horizontalpodautoscalers.autoscaling",
        "events.events.k8s.io",
        "customresourcedefinitions.apiextensions.k8s.io",
    ):
        assert name in resources


async def test_custom_resource_with_scale_subresource(
    kube_api: client.ApiClient, namespace: str
) -> None:
    """A CRD with a scale subresource: create an object, then scale it through /scale."""
    extensions = client.ApiextensionsV1Api(kube_api)
    try:
        await extensions.create_custom_resource_definition(WIDGET_CRD)
    except client.ApiException as exc:
        if exc.status != 409:  # the session may already have it
            raise
    for _ in range(100):
        crd = await extensions.read_custom_resource_definition(WIDGET_CRD["metadata"]["name"])
        conditions = {c.type: c.status for c in (crd.status.conditions or [])}
        if conditions.get("Established") == "True":
            break
        await asyncio.sleep(0.1)
    custom = client.CustomObjectsApi(kube_api)
    widget = {
        "apiVersion": "smoke.autoscale.dev/v1",
        "kind": "Widget",
        "metadata": {"name": "w1"},
        "spec": {"replicas": 1},
    }
    for _ in range(50):  # discovery of a fresh CRD takes a moment
        try:
            await custom.create_namespaced_custom_object(
                "smoke.autoscale.dev", "v1", namespace, "widgets", widget
            )
            break
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            await asyncio.sleep(0.1)
    await custom.patch_namespaced_custom_object_scale(
        "smoke.autoscale.dev",
        "v1",
        namespace,
        "widgets",
        "w1",
        {"spec": {"replicas": 4}},
        _content_type="application/merge-patch+json",
    )
    scale = await custom.get_namespaced_custom_object_scale(
        "smoke.autoscale.dev", "v1", namespace, "widgets", "w1"
    )
    assert scale["spec"]["replicas"] == 4
    stored = await custom.get_namespaced_custom_object(
        "smoke.autoscale.dev", "v1", namespace, "widgets", "w1"
    )
    assert stored["spec"]["replicas"] == 4


async def test_deployment_scale_subresource_and_watch(
    kube_api: client.ApiClient, namespace: str
) -> None:
    """Patch a Deployment's /scale, read it back, and see the change arrive on a watch."""
    apps = client.AppsV1Api(kube_api)
    created = await apps.create_namespaced_deployment(namespace, deployment("worker", 0))
    events: list[tuple[str, int]] = []

    async def watch_replicas() -> None:
        stream = watch.Watch()
        async with stream:
            async for event in stream.stream(
                apps.list_namespaced_deployment,
                namespace,
                resource_version=created.metadata.resource_version,
                timeout_seconds=20,
            ):
                events.append((event["type"], event["object"].spec.replicas))
                if event["object"].spec.replicas == 3:
                    return

    watcher = asyncio.create_task(watch_replicas())
    await asyncio.sleep(0.2)
    await apps.patch_namespaced_deployment_scale("worker", namespace, {"spec": {"replicas": 3}})
    scale = await apps.read_namespaced_deployment_scale("worker", namespace)
    assert scale.spec.replicas == 3
    await asyncio.wait_for(watcher, timeout=20)
    assert events[-1] == ("MODIFIED", 3)


async def test_rbac_and_authentication(kube: KubeAPIServer, namespace: str) -> None:
    """No credentials: refused. A user without roles: forbidden. A granted role: allowed."""
    context = ssl.create_default_context(cafile=str(kube.ca_file))
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{kube.server}/api/v1/namespaces/{namespace}/configmaps", ssl=context
        ) as response,
    ):
        assert response.status in (401, 403)
        body = await response.json()
        assert body["reason"] in ("Unauthorized", "Forbidden")
    alice = kube.kubeconfig_for_user(f"alice-{namespace}", groups=("devs",))
    denied = kube.kubectl("get", "configmaps", "-n", namespace, kubeconfig=alice, check=False)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()
    # (the aggregated `view` role is empty here: no controller-manager aggregates it)
    kube.kubectl(
        "create",
        "role",
        "configmap-reader",
        "--verb=get,list",
        "--resource=configmaps",
        "-n",
        namespace,
    )
    kube.kubectl(
        "create",
        "rolebinding",
        "alice-reads",
        "--role=configmap-reader",
        f"--user=alice-{namespace}",
        "-n",
        namespace,
    )
    for _ in range(100):  # the authorizer sees the new binding through its informer
        allowed = kube.kubectl("get", "configmaps", "-n", namespace, kubeconfig=alice, check=False)
        if allowed.returncode == 0:
            break
        await asyncio.sleep(0.1)
    assert allowed.returncode == 0, allowed.stderr
    sa = kube.kubeconfig_for_service_account(namespace, "operator")
    who = json.loads(kube.kubectl("auth", "whoami", "-o", "json", kubeconfig=sa).stdout)
    assert who["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:operator"
