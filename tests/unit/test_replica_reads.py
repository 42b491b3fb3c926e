"""Pure parts of the poll loop and the replica cache: phases spread over the interval, the next
due time, when a failed scaler is rebuilt, and what the cache keeps of a workload."""

from __future__ import annotations

import itertools
import random
import uuid
from collections import Counter

import pytest

from autoscale.errors import ConfigError, ScalerQueryError, ScalerUnavailableError
from autoscale.kube import (
    ReplicaCache,
    TargetResource,
    is_older,
    project_replicas,
    scale_of,
    with_spec_replicas,
)
from autoscale.loop import due_after_tick, next_due, phase_of, rebuilds_after


def uids(count: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(count)]


# --- phases ---------------------------------------------------------------------------------


def test_phase_is_stable_and_a_fraction() -> None:
    for uid in uids(200):
        phase = phase_of(uid)
        assert 0.0 <= phase < 1.0
        assert phase_of(uid) == phase
    # A known value: the same in every process and on every run (not Python's salted hash()),
    # so a restarted operator keeps each object's place in the interval.
    assert phase_of("6f1e3c2a-0000-4000-8000-000000000000") == pytest.approx(0.24769794084915964)
    assert phase_of("a") != phase_of("b")


def test_phases_of_many_objects_are_uniform() -> None:
    buckets = Counter(int(phase_of(uid) * 10) for uid in uids(10_000))
    assert set(buckets) == set(range(10))
    for count in buckets.values():
        assert 800 < count < 1200  # 1,000 expected per tenth of the interval


# --- next due time --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "interval", "phase", "expected"),
    [
        (0.0, 30.0, 0.5, 15.0),  # the first slot at the phase
        (15.0, 30.0, 0.5, 45.0),  # on the slot itself: the next one, never the same
        (15.2, 30.0, 0.5, 45.0),  # a tick that ran 0.2 s: one interval after its due time
        (100.0, 30.0, 0.0, 120.0),
        (119.999, 30.0, 0.0, 120.0),
        (1000.0, 30.0, 0.25, 1027.5),  # slots at 7.5 + 30k
        (47.0, 30.0, 0.5, 75.0),  # after an overrun past 45: the next slot, no burst
        (3.0, 1.0, 0.9, 3.9),
        (-5.0, 10.0, 0.3, 3.0),
    ],
)
def test_next_due(now: float, interval: float, phase: float, expected: float) -> None:
    assert next_due(now, interval, phase) == pytest.approx(expected)


def test_next_due_is_within_one_interval_and_on_the_phase() -> None:
    rng = random.Random(7)
    for _ in range(5_000):
        interval = rng.choice([1.0, 5.0, 30.0, 300.0, 0.7])
        phase = rng.random()
        now = rng.uniform(0, 1e7)
        due = next_due(now, interval, phase)
        assert now < due <= now + interval + 1e-6
        slots = (due - phase * interval) / interval
        assert slots == pytest.approx(round(slots), abs=1e-6)


def simulate(
    phases: list[float], interval: float, duration: float, tick_cost: float
) -> list[list[float]]:
    """Each object's tick start times: a prompt first tick (within the first second), then the
    loop's rule: the next slot at its phase after the tick ended."""
    rng = random.Random(3)
    starts: list[list[float]] = []
    for phase in phases:
        due = rng.uniform(0, min(1.0, interval / 10))
        times = []
        while due < duration:
            times.append(due)
            due = due_after_tick(due, due + tick_cost, interval, phase)
        starts.append(times)
    return starts


def test_objects_started_together_poll_spread_over_the_interval() -> None:
    interval = 30.0
    starts = simulate([phase_of(u) for u in uids(3_000)], interval, 10 * interval, 0.05)
    # Every object polls within the first second, then never waits more than an interval.
    for times in starts:
        assert times[0] < 1.0
        assert all(b - a <= interval + 1e-6 for a, b in itertools.pairwise(times))
        assert all(b - a > 0 for a, b in itertools.pairwise(times))
    # After the first interval, the polls of any 3-second window are about a tenth of all.
    per_window = Counter(int(t // 3) for times in starts for t in times if t >= interval)
    windows = [per_window[w] for w in range(10, 100)]
    assert min(windows) > 0.8 * 300
    assert max(windows) < 1.2 * 300


def test_a_tick_that_ran_past_its_slot_is_followed_at_once() -> None:
    # Started at 44.9 with the slot at 45: the next tick is due at 45 if it ended before...
    assert due_after_tick(44.9, 44.95, 30.0, 0.5) == pytest.approx(45.0)
    # ...and at once (not 30 s later) if it ended after: one late tick, not a missed interval.
    assert due_after_tick(44.9, 46.0, 30.0, 0.5) == pytest.approx(46.0)
    # A tick longer than the interval (a hung source) is followed at once, once.
    assert due_after_tick(15.0, 57.0, 30.0, 0.5) == pytest.approx(57.0)


# --- the replica cache's projection ----------------------------------------------------------


DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {
        "name": "worker",
        "namespace": "jobs",
        "uid": "u-1",
        "resourceVersion": "120",
        "labels": {"app": "worker"},
        "annotations": {"big": "x" * 1000},
        "managedFields": [{"manager": "kubectl"}],
    },
    "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "w"}]}}},
    "status": {"replicas": 2, "readyReplicas": 2},
}


def test_projection_keeps_only_identity_and_counts() -> None:
    assert project_replicas(DEPLOYMENT) == {
        "metadata": {"name": "worker", "uid": "u-1", "resourceVersion": "120"},
        "spec": {"replicas": 3},
        "status": {"replicas": 2},
    }


def test_scale_of_a_projection() -> None:
    scale = scale_of(project_replicas(DEPLOYMENT))
    assert (scale.spec_replicas, scale.status_replicas, scale.resource_version) == (3, 2, "120")
    # spec.replicas absent is the API server's default of 1; status not yet written is 0.
    bare = scale_of(project_replicas({"metadata": {"name": "w"}}))
    assert (bare.spec_replicas, bare.status_replicas) == (1, 0)
    assert scale_of(project_replicas({"spec": {"replicas": 0}})).spec_replicas == 0


def test_a_recorded_patch_wins_over_late_watch_events() -> None:
    cached = project_replicas(DEPLOYMENT)
    patched = with_spec_replicas(cached, 7, "130")
    assert scale_of(patched).spec_replicas == 7
    assert patched["metadata"]["uid"] == "u-1"
    assert cached["spec"]["replicas"] == 3  # the cached projection is not mutated
    # A watch event from before the patch (rv 125) does not undo it; the patch's own event
    # (rv 130) and later ones replace it.
    assert is_older({"metadata": {"resourceVersion": "125"}}, patched)
    assert not is_older({"metadata": {"resourceVersion": "130"}}, patched)
    assert not is_older({"metadata": {"resourceVersion": "131"}}, patched)
    # Versions that are not numbers are never compared: the newer event wins.
    assert not is_older({"metadata": {"resourceVersion": "abc"}}, patched)
    assert not is_older({"metadata": {}}, patched)
    assert not is_older({"metadata": {"resourceVersion": "1"}}, None)


@pytest.mark.parametrize(
    ("group", "kind", "watched"),
    [
        ("apps", "Deployment", True),
        ("apps", "StatefulSet", True),
        ("apps", "ReplicaSet", False),  # not until RBAC grants list + watch on them
        ("argoproj.io", "Rollout", False),
        ("apps", "DaemonSet", False),
    ],
)
def test_which_kinds_are_watched(group: str, kind: str, watched: bool) -> None:
    target = TargetResource(group=group, version="v1", kind=kind, resource=kind.lower() + "s")
    assert ReplicaCache.watched(target) is watched


@pytest.mark.parametrize(
    ("exc", "rebuilds"),
    [
        (ScalerUnavailableError("connection refused"), True),
        (TimeoutError(), True),
        (RuntimeError("a library surprise"), True),
        (ScalerQueryError("no such queue"), False),
        (ConfigError("spec.triggers[0].metadata.stream: required"), False),
    ],
)
def test_a_scaler_is_rebuilt_after_transient_failures_only(
    exc: BaseException, rebuilds: bool
) -> None:
    assert rebuilds_after(exc) is rebuilds
