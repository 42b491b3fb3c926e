"""Three `autoscale run --shards 6` processes share 30 ScaledObjects on Redis streams.

What really happened is taken from Redis itself: MONITOR records every command with the client's
TCP port, and each port is mapped to the operator process that owns the socket (from /proc), so
every poll of every object is attributed to a process. From that evidence: each replica polls a
disjoint, non-empty share and together all objects; after one replica is SIGKILLed its share is
polled by the survivors within the lease duration and a backlog there still scales; and over
the whole test no object is ever polled by two processes in turn-taking (an A, B, A sequence).
"""

from __future__ import annotations

import bisect
import json
import os
import re
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from autoscale.sharding import shard_key, shard_of
from tests.e2e.harness import Operator, make_pending, wait_for
from tests.e2e.workloads import apply, deployment, get, redis_trigger, replicas, scaled_object
from tests.testbed.kube import KubeAPIServer
from tests.testbed.services import Redis

pytestmark = [pytest.mark.testbed, pytest.mark.e2e]

SHARDS = 6
REPLICAS = 3
OBJECTS = 30
LEASE_DURATION = 5.0
TIMING = ("--lease-duration=5", "--renew-deadline=4", "--retry-period=1")
POLL_COMMANDS = {"XPENDING", "XINFO", "XLEN"}  # what the redis-streams scaler reads with


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        entries = list(fd_dir.iterdir())
    except OSError:
        return inodes
    for entry in entries:
        try:
            target = os.readlink(entry)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _tcp_ports_by_inode(remote_port: int) -> dict[str, int]:
    """inode -> local port of every TCP socket connected to `remote_port` (`ss` filters in the
    kernel, so this stays fast on a machine with thousands of sockets)."""
    done = subprocess.run(
        ["ss", "-tneH", f"dport = :{remote_port}"], capture_output=True, text=True, check=False
    )
    found = {}
    for line in done.stdout.splitlines():
        fields = line.split()
        inode = re.search(r"\bino:(\d+)", line)
        if len(fields) >= 4 and inode:
            found[inode.group(1)] = int(fields[3].rsplit(":", 1)[1])
    return found


class PollRecorder:
    """Every poll command Redis received, as (server time, operator pid or None, stream)."""

    def __init__(self, server: Redis, streams: set[str]) -> None:
        self._server = server
        self._streams = streams
        self.pids: list[int] = []
        self.port_owner: dict[int, int] = {}
        self.raw: list[tuple[float, int, str]] = []  # time, client port, stream
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._monitor, daemon=True),
            threading.Thread(target=self._map_ports, daemon=True),
        ]
        self._monitoring = threading.Event()
        self.unparsed = 0

    def start(self) -> None:
        for thread in self._threads:
            thread.start()
        assert self._monitoring.wait(10), "MONITOR did not start"

    def stop(self) -> None:
        self._stop.set()
        poke = redis.Redis.from_url(self._server.url)
        poke.ping()  # wakes the MONITOR reader up
        poke.close()
        for thread in self._threads:
            thread.join(timeout=10)

    def _monitor(self) -> None:
        client = redis.Redis.from_url(self._server.url, decode_responses=True, socket_timeout=None)
        with client.monitor() as monitor:
            self._monitoring.set()
            while not self._stop.is_set():
                try:
                    entry = monitor.next_command()
                except AttributeError:  # a line redis-py's MONITOR parser does not match
                    self.unparsed += 1
                    continue
                words = entry["command"].split()
                if len(words) < 2 or words[0].upper() not in POLL_COMMANDS:
                    continue
                stream = next((w for w in words[1:] if w in self._streams), None)
                if stream is not None and entry["client_port"]:
                    self.raw.append((entry["time"], int(entry["client_port"]), stream))
        client.close()

    def _map_ports(self) -> None:
        while not self._stop.is_set():
            by_inode = _tcp_ports_by_inode(self._server.port)
            for pid in list(self.pids):
                for inode in _socket_inodes(pid):
                    port = by_inode.get(inode)
                    if port is not None:
                        self.port_owner.setdefault(port, pid)
            time.sleep(0.01)

    def polls(self) -> list[tuple[float, int | None, str]]:
        return [(t, self.port_owner.get(port), s) for t, port, s in list(self.raw)]

    def polled_by(self, since: float = 0.0) -> dict[int, set[str]]:
        """pid -> the streams it polled at or after `since` (Redis server time)."""
        shares: dict[int, set[str]] = defaultdict(set)
        for moment, pid, stream in self.polls():
            if pid is not None and moment >= since:
                shares[pid].add(stream)
        return shares


def shard_writes(kube: KubeAPIServer, namespace: str) -> dict[str, list[tuple[float, str]]]:
    """Per shard Lease, (time received, user) of every successful write, from the audit log."""
    writes: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for line in kube.audit_log.read_text().splitlines():
        entry: dict[str, Any] = json.loads(line)
        ref = entry.get("objectRef", {})
        if (
            ref.get("resource") == "leases"
            and ref.get("namespace") == namespace
            and re.fullmatch(r"autoscale-operator-shard-\d+", ref.get("name", ""))
            and entry.get("verb") in ("create", "update")
            and entry.get("stage") == "ResponseComplete"
            and entry.get("responseStatus", {}).get("code") in (200, 201)
        ):
            moment = datetime.fromisoformat(entry["requestReceivedTimestamp"]).timestamp()
            writes[ref["name"]].append((moment, entry["user"]["username"]))
    return {name: sorted(entries) for name, entries in writes.items()}


def polls_outside_ownership(
    polls: list[tuple[float, int | None, str]],
    writes: dict[str, list[tuple[float, str]]],
    *,
    shard_of_stream: dict[str, str],
    identity_of: dict[int, str],
) -> list[str]:
    """Every poll that its process made while somebody else had written its shard's Lease last.

    Only the holder writes a Lease (renewals, a release after its loops stopped); whoever takes
    it writes it before its first poll. So a poll by P is in order exactly when P made the
    latest write to the shard's Lease before it: two processes polling one object at once, or
    one polling after giving its shard away, shows up here."""
    bad = []
    for moment, pid, stream in polls:
        assert pid is not None
        lease = shard_of_stream[stream]
        times = [t for t, _ in writes.get(lease, [])]
        index = bisect.bisect_right(times, moment) - 1
        last_writer = writes[lease][index][1] if index >= 0 else None
        if last_writer != identity_of[pid]:
            bad.append(
                f"{stream} polled by {identity_of[pid]} at {moment:.3f}: {lease} last "
                f"written by {last_writer}"
            )
    return bad


def shard_holders(kube: KubeAPIServer, namespace: str) -> dict[str, str | None]:
    done = kube.kubectl("get", "leases", "-n", namespace, "-o", "json")
    holders = {}
    for lease in json.loads(done.stdout)["items"]:
        name = lease["metadata"]["name"]
        if re.fullmatch(r"autoscale-operator-shard-\d+", name):
            holders[name] = lease["spec"].get("holderIdentity")
    return holders


def balanced(kube: KubeAPIServer, namespace: str, identities: list[str]) -> bool:
    holders = shard_holders(kube, namespace)
    counts = [list(holders.values()).count(identity) for identity in identities]
    per_replica = SHARDS // len(identities)
    return len(holders) == SHARDS and counts == [per_replica] * len(identities)


def redis_server_time(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return float(seconds) + micros / 1e6


def test_shards_spread_polling_and_move_off_a_killed_replica_without_double_polling(
    crds: KubeAPIServer,
    namespace: str,
    redis_server: Redis,
    operator: Callable[..., Operator],
) -> None:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    streams = {f"{namespace}-s{i:02d}": f"w{i:02d}" for i in range(OBJECTS)}
    for stream in streams:
        client.xgroup_create(stream, "workers", id="$", mkstream=True)
    manifests: list[dict[str, Any]] = []
    for stream, name in streams.items():
        manifests.append(deployment(name, replicas=0))
        manifests.append(
            scaled_object(
                name,
                name,
                [redis_trigger(f"127.0.0.1:{redis_server.port}", stream, pending=1)],
                maxReplicaCount=10,
            )
        )
    apply(crds, namespace, {"apiVersion": "v1", "kind": "List", "items": manifests})

    recorder = PollRecorder(redis_server, set(streams))
    recorder.start()
    identities = [f"replica-{i}" for i in range(REPLICAS)]
    processes: dict[str, Operator] = {}
    try:
        for identity in identities:
            config = crds.kubeconfig_for_user(identity, groups=("system:masters",))
            processes[identity] = operator(
                f"--shards={SHARDS}",
                f"--identity={identity}",
                *TIMING,
                kubeconfig=config,
                ready=False,  # start all three at once; wait below
            )
            recorder.pids.append(processes[identity].process.pid)
        for process in processes.values():
            process.wait_ready()
        pid_of = {identity: op.process.pid for identity, op in processes.items()}

        wait_for(
            lambda: balanced(crds, namespace, identities),
            timeout=40,
            what="each replica to hold 2 of the 6 shards",
        )
        settled = redis_server_time(client) + 2  # the last hand-over has started polling
        wait_for(
            lambda: redis_server_time(client) > settled + 3,
            timeout=20,
            what="3 s of polling after balance",
        )
        shares = recorder.polled_by(since=settled)
        assert set(shares) == set(pid_of.values()), (
            f"{len(recorder.raw)} polls seen, ports mapped: {recorder.port_owner}, "
            f"unparsed: {recorder.unparsed}, shares: {shares}"
        )
        for pid, share in shares.items():
            assert share, f"process {pid} polled nothing"
        everything = set(streams)
        assert set().union(*shares.values()) == everything, everything - set().union(
            *shares.values()
        )
        assert sum(len(share) for share in shares.values()) == OBJECTS, "shares overlap"

        victim = "replica-1"
        orphans = shares[pid_of[victim]]
        processes[victim].kill()  # SIGKILL: its Leases are never released
        killed_at = redis_server_time(client)
        survivors = {pid_of[i] for i in identities if i != victim}

        def taken_over() -> bool:
            after = recorder.polled_by(since=killed_at)
            return orphans <= set().union(*(after.get(pid, set()) for pid in survivors))

        wait_for(taken_over, timeout=20, what="the survivors to poll the dead replica's share")
        first_polls = {}
        for moment, pid, stream in recorder.polls():
            if stream in orphans and pid in survivors and moment >= killed_at:
                first_polls.setdefault(stream, moment)
        handover = max(first_polls.values()) - killed_at
        assert handover <= LEASE_DURATION + 3, f"hand-over took {handover:.1f}s"

        backlog_stream = sorted(orphans)[0]
        make_pending(client, backlog_stream, 3)
        wait_for(
            lambda: replicas(crds, namespace, "deployment", streams[backlog_stream]) == 3,
            timeout=20,
            what="a survivor to scale the dead replica's object to 3",
        )
    finally:
        recorder.stop()
        client.close()

    polls = recorder.polls()
    unmapped = [p for p in polls if p[1] is None]
    assert not unmapped, f"{len(unmapped)} polls from connections of no operator process"
    shard_of_stream = {
        stream: "autoscale-operator-shard-"
        f"{shard_of(shard_key(get(crds, namespace, 'scaledobject', name)), SHARDS)}"
        for stream, name in streams.items()
    }
    identity_of = {pid: identity for identity, pid in pid_of.items()}
    writes = shard_writes(crds, namespace)
    bad = polls_outside_ownership(
        polls, writes, shard_of_stream=shard_of_stream, identity_of=identity_of
    )
    assert not bad, f"{len(bad)} of {len(polls)} polls outside ownership: {bad[:10]}"
    # The evidence covers hand-overs: shards changed hands while objects were being polled.
    polled_by_several = {s for s in streams if len({p for _, p, x in polls if x == s}) > 1}
    assert polled_by_several, "no object changed hands"
    killed_pid = pid_of[victim]
    kill_seen = [m for m, pid, _ in polls if pid == killed_pid and m > killed_at + 0.5]
    assert not kill_seen, "the killed replica kept polling"
