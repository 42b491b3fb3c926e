"""TriggerAuthentication end to end: credentials from a Secret reach the scaler, a rotated
Secret takes effect without restarting the operator, and no secret value shows up anywhere the
operator writes (logs, events, status, metrics)."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis

from tests.e2e.harness import Operator, make_pending, remember_secret, wait_for
from tests.e2e.workloads import apply, condition, deployment, get, replicas, scaled_object
from tests.testbed.kube import KubeAPIServer
from tests.testbed.services import Redis

pytestmark = [pytest.mark.testbed, pytest.mark.e2e]


@pytest.fixture
def acl_user(redis_server: Redis, unique_name: str) -> Iterator[tuple[redis.Redis, str, str]]:
    """A Redis ACL user with a random password; yields (admin client, user, password)."""
    admin = redis.Redis.from_url(redis_server.url, decode_responses=True)
    user, password = f"u-{unique_name}", remember_secret(f"first-{uuid.uuid4().hex}")
    admin.acl_setuser(
        user, enabled=True, passwords=[f"+{password}"], keys=["*"], commands=["+@all"]
    )
    yield admin, user, password
    admin.acl_deluser(user)
    admin.close()


def secret(name: str, password: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": "Opaque",
        "data": {"password": base64.b64encode(password.encode()).decode()},
    }


def test_secret_rotation_without_restart_and_no_secret_anywhere(
    crds: KubeAPIServer,
    namespace: str,
    redis_server: Redis,
    unique_name: str,
    acl_user: tuple[redis.Redis, str, str],
    operator: Callable[..., Operator],
) -> None:
    admin, user, first_password = acl_user
    stream = unique_name
    admin.xgroup_create(stream, "workers", id="$", mkstream=True)
    apply(crds, namespace, secret("redis-credentials", first_password))
    apply(
        crds,
        namespace,
        {
            "apiVersion": "autoscale.dev/v1alpha1",
            "kind": "TriggerAuthentication",
            "metadata": {"name": "redis-auth"},
            "spec": {
                "secretTargetRef": [
                    {"parameter": "password", "name": "redis-credentials", "key": "password"}
                ]
            },
        },
    )
    apply(crds, namespace, deployment("worker", replicas=0))
    apply(
        crds,
        namespace,
        scaled_object(
            "worker",
            "worker",
            [
                {
                    "type": "redis-streams",
                    "metadata": {
                        "address": f"127.0.0.1:{redis_server.port}",
                        "stream": stream,
                        "consumerGroup": "workers",
                        "pendingEntriesCount": "1",
                        "username": user,
                    },
                    "authenticationRef": {"name": "redis-auth"},
                }
            ],
            maxReplicaCount=10,
        ),
    )
    op = operator()
    make_pending(admin, stream, 2)
    wait_for(
        lambda: replicas(crds, namespace, "deployment", "worker") == 2,
        timeout=20,
        what="scaling with the Secret's password",
    )

    # Rotate: the server takes only the new password and drops the old sessions...
    second_password = remember_secret(f"second-{uuid.uuid4().hex}")
    admin.acl_setuser(
        user,
        enabled=True,
        reset_passwords=True,
        passwords=[f"+{second_password}"],
        keys=["*"],
        commands=["+@all"],
    )
    admin.execute_command("CLIENT", "KILL", "USER", user)
    metric = f"s0-redis-streams-{stream}"
    wait_for(
        lambda: (
            get(crds, namespace, "so", "worker")["status"]["health"][metric]["status"] == "Failing"
        ),
        timeout=20,
        what="the old password to fail",
    )
    # ...then the Secret is updated, and the running operator picks it up.
    apply(crds, namespace, secret("redis-credentials", second_password))
    wait_for(
        lambda: (
            get(crds, namespace, "so", "worker")["status"]["health"][metric]["status"] == "Happy"
        ),
        timeout=30,
        what="the rotated password to be used",
    )
    make_pending(admin, stream, 2)
    wait_for(
        lambda: replicas(crds, namespace, "deployment", "worker") == 4,
        timeout=20,
        what="scaling again after rotation",
    )
    assert op.process.running()
    assert condition(get(crds, namespace, "so", "worker"), "Ready")["status"] == "True"

    # Nothing the operator produced carries either password.
    produced = {
        "log": op.log_path.read_text(errors="replace"),
        "events": crds.kubectl("get", "events", "-n", namespace, "-o", "json").stdout,
        "status": json.dumps(get(crds, namespace, "so", "worker")),
        "metrics": op.metrics(),
    }
    for where, text in produced.items():
        for value in (first_password, second_password):
            assert value not in text, f"a secret value leaked into the {where}"
