"""`autoscale check` against a real Redis: each exit status, the table and the JSON output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from tests.testbed.procs import free_port
from tests.testbed.services import Redis

pytestmark = pytest.mark.testbed

MANIFEST = """\
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: worker
  namespace: shop
spec:
  scaleTargetRef:
    name: worker
  maxReplicaCount: 8
  triggers:
    - type: redis-streams
      name: orders
      metadata:
        address: {address}
        stream: {stream}
        streamLength: "{length}"
      authenticationRef:
        name: redis-auth
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: not-checked
---
apiVersion: autoscale.dev/v1alpha1
kind: TriggerAuthentication
metadata:
  name: redis-auth
  namespace: shop
spec:
  secretTargetRef:
    - parameter: username
      name: redis
      key: username
"""


def run_check(tmp_path: Path, text: str, *args: str) -> subprocess.CompletedProcess[str]:
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(text)
    return subprocess.run(
        [sys.executable, "-m", "autoscale", "check", str(manifest), "--no-cluster", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def backlog(redis_server: Redis, unique_name: str) -> str:
    client = redis.Redis.from_url(redis_server.url)
    for i in range(7):
        client.xadd(unique_name, {"n": i})
    client.close()
    return unique_name


def test_valid_and_polled_exits_0_with_the_table(
    tmp_path: Path, redis_server: Redis, backlog: str
) -> None:
    text = MANIFEST.format(address=f"127.0.0.1:{redis_server.port}", stream=backlog, length=3)
    done = run_check(
        tmp_path, text, "--auth", "redis-auth.username=default", "--current-replicas", "1"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "ScaledObject shop/worker (" + str(tmp_path / "manifest.yaml") + "#1): valid"
    header, row = lines[1].split(), lines[2].split()
    assert header == [
        "#",
        "NAME",
        "TYPE",
        "METRIC",
        "VALUE",
        "TARGET",
        "ACTIVATION",
        "ACTIVE",
        "REPLICAS",
    ]
    assert row == [
        "0",
        "orders",
        "redis-streams",
        f"s0-redis-streams-{backlog}",
        "7",
        "3",
        "0",
        "yes",
        "3",
    ]
    assert lines[3].startswith("  decision: 1 -> 3 (Scaled)")
    assert "TriggerAuthentication shop/redis-auth" in lines[4]
    assert "not-checked" not in done.stdout


def test_json_output(tmp_path: Path, redis_server: Redis, backlog: str) -> None:
    text = MANIFEST.format(address=f"127.0.0.1:{redis_server.port}", stream=backlog, length=2)
    done = run_check(tmp_path, text, "--output", "json")
    assert done.returncode == 0, done.stderr
    [so, ta] = json.loads(done.stdout)
    assert so["valid"] is True
    assert so["currentReplicas"] == 0
    assert so["triggers"][0]["value"] == 7
    assert so["triggers"][0]["replicas"] == 4
    assert so["decision"].startswith("0 -> 4 (Activated)")
    assert ta["kind"] == "TriggerAuthentication"


def test_invalid_manifest_exits_1_naming_object_trigger_and_field(tmp_path: Path) -> None:
    text = MANIFEST.format(address="127.0.0.1:1", stream="s", length="three")
    done = run_check(tmp_path, text)
    assert done.returncode == 1
    assert "ScaledObject shop/worker" in done.stdout
    assert (
        'trigger[0] "orders" (redis-streams): parameter "streamLength" value "three" is not '
        "an integer" in done.stdout
    )


def test_invalid_spec_caught_before_triggers_exits_1(tmp_path: Path) -> None:
    text = MANIFEST.format(address="127.0.0.1:1", stream="s", length=3).replace(
        "maxReplicaCount: 8", "maxReplicaCount: 8\n  minReplicaCount: 9"
    )
    done = run_check(tmp_path, text, "--offline")
    assert done.returncode == 1
    assert "minReplicaCount" in done.stdout


def test_unreachable_source_exits_2(tmp_path: Path) -> None:
    text = MANIFEST.format(address=f"127.0.0.1:{free_port()}", stream="s", length=3)
    done = run_check(tmp_path, text)
    assert done.returncode == 2, done.stdout
    assert "trigger[0] could not be read" in done.stdout


def test_offline_polls_nothing_and_exits_0(tmp_path: Path) -> None:
    text = MANIFEST.format(address=f"127.0.0.1:{free_port()}", stream="s", length=3)
    done = run_check(tmp_path, text, "--offline")
    assert done.returncode == 0, done.stdout
    assert "could not be read" not in done.stdout


def test_unparseable_yaml_exits_1(tmp_path: Path) -> None:
    done = run_check(tmp_path, "a: [")
    assert done.returncode == 1
    assert done.stderr.startswith("autoscale check:")
