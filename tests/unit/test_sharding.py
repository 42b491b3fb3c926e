"""The pure part of sharding: which shard an object is in, how many shards a replica holds,
who counts as live, and what one round gives away or takes."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest

from autoscale import cli, sharding
from autoscale.leader import LeaseRecord, Observation

WALL = datetime(2026, 1, 1, tzinfo=UTC)


def _so(namespace: str, name: str, target: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"namespace": namespace, "name": name},
        "spec": {"scaleTargetRef": target},
    }


class TestShardKey:
    def test_rivals_on_one_target_share_a_key(self) -> None:
        first = _so("team", "a", {"name": "worker"})
        second = _so("team", "b", {"name": "worker", "kind": "Deployment"})
        third = _so("team", "c", {"name": "worker", "apiVersion": "apps/v1"})
        assert sharding.shard_key(first) == sharding.shard_key(second)
        assert sharding.shard_key(first) == sharding.shard_key(third)
        assert sharding.shard_key(first) == "team/apps/Deployment/worker"

    @pytest.mark.parametrize(
        "other",
        [
            _so("other", "a", {"name": "worker"}),
            _so("team", "a", {"name": "worker", "kind": "StatefulSet"}),
            _so("team", "a", {"name": "worker", "apiVersion": "argoproj.io/v1alpha1"}),
            _so("team", "a", {"name": "other"}),
        ],
    )
    def test_other_targets_have_other_keys(self, other: dict[str, Any]) -> None:
        assert sharding.shard_key(other) != sharding.shard_key(_so("team", "a", {"name": "worker"}))

    @pytest.mark.parametrize(
        "raw",
        [{}, {"metadata": {"name": "x"}}, {"spec": None}, {"spec": {"scaleTargetRef": "nope"}}],
    )
    def test_malformed_objects_still_have_a_key(self, raw: dict[str, Any]) -> None:
        assert sharding.shard_key(raw) == "/apps/Deployment/"


class TestShardOf:
    def test_known_values(self) -> None:
        # Pinned: a change would move every object of a running fleet to another shard.
        got = [sharding.shard_of(f"ns/apps/Deployment/w{i}", 6) for i in range(8)]
        assert got == [4, 1, 2, 3, 3, 0, 5, 4]
        assert sharding.shard_of("anything", 1) == 0

    def test_stable_across_processes(self) -> None:
        keys = [f"ns/apps/Deployment/w{i}" for i in range(20)]
        here = [sharding.shard_of(key, 7) for key in keys]
        code = f"from autoscale import sharding;print([sharding.shard_of(k, 7) for k in {keys!r}])"
        for seed in ("1", "2"):
            done = subprocess.run(
                [sys.executable, "-c", code],
                capture_output=True,
                text=True,
                check=True,
                env={"PYTHONHASHSEED": seed},
            )
            assert done.stdout.strip() == str(here)

    def test_spreads_objects_over_all_shards(self) -> None:
        counts = Counter(sharding.shard_of(f"ns/apps/Deployment/w{i}", 8) for i in range(4000))
        assert set(counts) == set(range(8))
        assert min(counts.values()) > 400  # 500 each when even

    @pytest.mark.parametrize("shards", [0, -1])
    def test_needs_a_shard(self, shards: int) -> None:
        with pytest.raises(ValueError, match="at least one shard"):
            sharding.shard_of("x", shards)


@pytest.mark.parametrize(
    ("shards", "live", "quota"),
    [(6, 1, 6), (6, 2, 3), (6, 3, 2), (6, 4, 2), (6, 6, 1), (3, 2, 2), (1, 5, 1), (4, 0, 4)],
)
def test_quota(shards: int, live: int, quota: int) -> None:
    assert sharding.shard_quota(shards, live) == quota


def _member(holder: str | None, changed_at: float, duration: int | None = 4) -> Observation:
    return Observation(
        record=LeaseRecord(holder=holder, lease_duration_seconds=duration, renew_time=WALL),
        changed_at=changed_at,
    )


@pytest.mark.parametrize(
    ("observations", "now", "live"),
    [
        ([], 10.0, 0),
        ([None, Observation(record=None, changed_at=0.0)], 10.0, 0),
        ([_member("me", 0.0)], 100.0, 1),  # ours counts even when stale: we are alive
        ([_member("me", 9.0), _member("b", 9.0), _member("c", 9.0)], 10.0, 3),
        ([_member("me", 9.0), _member("b", 9.0), _member("c", 5.0)], 10.0, 2),  # c ran out
        ([_member("me", 9.0), _member("b", 6.5)], 10.0, 2),  # 3.5 s of a 4 s lease
        ([_member("me", 9.0), _member("b", 6.0)], 10.0, 1),  # exactly run out
        ([_member("me", 9.0), _member(None, 9.0)], 10.0, 1),  # released
        ([_member("me", 9.0), _member("b", 1.0, duration=None)], 10.0, 2),  # default 15 s
    ],
)
def test_live_members(observations: list[Observation | None], now: float, live: int) -> None:
    assert (
        sharding.live_members(observations, identity="me", now=now, default_duration=15.0) == live
    )


def test_preference_covers_every_shard_once_from_an_identity_dependent_start() -> None:
    orders = {identity: sharding.preference(identity, 6) for identity in ("a", "b", "c", "d")}
    for order in orders.values():
        assert sorted(order) == list(range(6))
        assert order == [(order[0] + i) % 6 for i in range(6)]
    assert len({order[0] for order in orders.values()}) > 1
    assert sharding.preference("a", 0) == []


@pytest.mark.parametrize(
    ("held", "quota", "takeable", "expected"),
    [
        ((), 2, [3, 4, 5], sharding.Plan(acquire=(3, 4))),
        ((1,), 2, [3, 4, 5], sharding.Plan(acquire=(3,))),
        ((1, 2), 2, [3, 4, 5], sharding.Plan()),
        ((0, 1, 2, 3, 4, 5), 2, [], sharding.Plan(release=(5, 4, 3, 2))),
        ((0, 4, 2), 2, [1], sharding.Plan(release=(4,))),
        ((), 6, [2], sharding.Plan(acquire=(2,))),  # only what is free
        ((2,), 3, [2, 3], sharding.Plan(acquire=(3,))),  # never what we already hold
        ((0, 1), 0, [2], sharding.Plan(release=(1, 0))),  # no member slot: give everything
    ],
)
def test_plan(
    held: tuple[int, ...], quota: int, takeable: list[int], expected: sharding.Plan
) -> None:
    assert sharding.plan(held, quota=quota, takeable=takeable) == expected


def test_lease_names() -> None:
    assert sharding.shard_lease_name("autoscale-operator", 3) == "autoscale-operator-shard-3"
    assert sharding.member_lease_name("autoscale-operator", 0) == "autoscale-operator-member-0"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"shards": 0}, "shards"),
        ({"shards": sharding.MAX_SHARDS + 1}, "shards"),
        ({"identity": ""}, "must not be empty"),
        ({"renew_deadline": 20.0}, "retry_period < renew_deadline < lease_duration"),
    ],
)
def test_manager_rejects_bad_settings(kwargs: dict[str, Any], message: str) -> None:
    async def on_change(held: frozenset[int]) -> None:
        pass

    settings: dict[str, Any] = {
        "api_client": object(),
        "namespace": "ns",
        "name": "lease",
        "identity": "me",
        "shards": 3,
        "on_change": on_change,
        **kwargs,
    }
    with pytest.raises(ValueError, match=message):
        sharding.ShardManager(**settings)


class TestFlags:
    def test_off_by_default(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("AUTOSCALE_SHARDS", raising=False)
        monkeypatch.delenv("AUTOSCALE_IDENTITY", raising=False)
        args = cli.build_parser().parse_args(["run"])
        assert (args.shards, args.identity) == (0, None)

    def test_flags(self) -> None:
        args = cli.build_parser().parse_args(["run", "--shards", "6", "--identity", "replica-1"])
        assert (args.shards, args.identity) == (6, "replica-1")

    def test_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AUTOSCALE_SHARDS", "4")
        monkeypatch.setenv("AUTOSCALE_IDENTITY", "replica-2")
        args = cli.build_parser().parse_args(["run"])
        assert (args.shards, args.identity) == (4, "replica-2")
        assert cli.build_parser().parse_args(["run", "--shards=2"]).shards == 2  # flag wins

    @pytest.mark.parametrize("value", ["-1", "257", "two", "1.5"])
    def test_bad_counts(self, value: str, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit):
            cli.build_parser().parse_args(["run", f"--shards={value}"])
        assert "--shards" in capsys.readouterr().err

    def test_excludes_leader_election(self, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit):
            cli.main(["run", "--shards=3", "--leader-elect"])
        assert "--shards and --leader-elect exclude each other" in capsys.readouterr().err
