"""The pure core of leader election: observe(), decide(), released(), and the Lease's JSON form."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from autoscale import leader
from autoscale.leader import Action, Decision, LeaseRecord, Observation

ME = "autoscale-0"
OTHER = "autoscale-1"
WALL = datetime(2026, 5, 4, 12, 0, 0, 123456, tzinfo=UTC)
EARLIER = datetime(2026, 5, 4, 11, 0, 0, tzinfo=UTC)


def _held_by(holder: str | None, **overrides: Any) -> LeaseRecord:
    fields: dict[str, Any] = {
        "holder": holder,
        "lease_duration_seconds": 15,
        "acquire_time": EARLIER,
        "renew_time": EARLIER,
        "lease_transitions": 4,
        "resource_version": "42",
    }
    fields.update(overrides)
    return LeaseRecord(**fields)


def _decide(
    record: LeaseRecord | None, *, changed_at: float = 100.0, now: float = 101.0
) -> Decision:
    observation = Observation(record=record, changed_at=changed_at)
    return leader.decide(observation, identity=ME, lease_duration=15.0, now=now, wall_now=WALL)


def _mine(**overrides: Any) -> LeaseRecord:
    fields: dict[str, Any] = {
        "holder": ME,
        "lease_duration_seconds": 15,
        "acquire_time": WALL,
        "renew_time": WALL,
        "lease_transitions": 5,
        "resource_version": "42",
    }
    fields.update(overrides)
    return LeaseRecord(**fields)


@pytest.mark.parametrize(
    ("record", "changed_at", "now", "expected"),
    [
        pytest.param(
            None,
            100.0,
            101.0,
            Decision(
                action=Action.CREATE, desired=_mine(lease_transitions=0, resource_version=None)
            ),
            id="no-lease-create",
        ),
        pytest.param(
            _held_by(None),
            100.0,
            100.0,
            Decision(action=Action.ACQUIRE, desired=_mine()),
            id="released-lease-acquired-at-once",
        ),
        pytest.param(
            _held_by(""),
            100.0,
            100.0,
            Decision(action=Action.ACQUIRE, desired=_mine()),
            id="empty-holder-is-free",
        ),
        pytest.param(
            _held_by(ME),
            100.0,
            101.0,
            Decision(action=Action.RENEW, desired=_mine(acquire_time=EARLIER, lease_transitions=4)),
            id="ours-renewed-keeping-acquire-time-and-transitions",
        ),
        pytest.param(
            _held_by(ME, acquire_time=None, lease_duration_seconds=60),
            100.0,
            101.0,
            Decision(action=Action.RENEW, desired=_mine(lease_transitions=4)),
            id="ours-renewed-with-our-duration-and-missing-acquire-time",
        ),
        pytest.param(
            _held_by(ME),
            100.0,
            10_000.0,
            Decision(action=Action.RENEW, desired=_mine(acquire_time=EARLIER, lease_transitions=4)),
            id="ours-renewed-even-when-long-unchanged",
        ),
        pytest.param(
            _held_by(OTHER),
            100.0,
            101.0,
            Decision(action=Action.STAND_BY, expires_at=115.0),
            id="other-live-stand-by",
        ),
        pytest.param(
            _held_by(OTHER),
            100.0,
            114.999,
            Decision(action=Action.STAND_BY, expires_at=115.0),
            id="other-just-before-expiry-stand-by",
        ),
        pytest.param(
            _held_by(OTHER),
            100.0,
            115.0,
            Decision(action=Action.TAKE_OVER, desired=_mine()),
            id="other-unchanged-for-lease-duration-take-over",
        ),
        pytest.param(
            _held_by(OTHER, lease_duration_seconds=3),
            100.0,
            103.0,
            Decision(action=Action.TAKE_OVER, desired=_mine()),
            id="holder-written-duration-counts",
        ),
        pytest.param(
            _held_by(OTHER, lease_duration_seconds=None),
            100.0,
            110.0,
            Decision(action=Action.STAND_BY, expires_at=115.0),
            id="missing-duration-uses-ours",
        ),
        pytest.param(
            _held_by(OTHER, lease_duration_seconds=0),
            100.0,
            115.0,
            Decision(action=Action.TAKE_OVER, desired=_mine()),
            id="zero-duration-uses-ours",
        ),
        pytest.param(
            _held_by(OTHER, renew_time=datetime(2000, 1, 1, tzinfo=UTC)),
            100.0,
            101.0,
            Decision(action=Action.STAND_BY, expires_at=115.0),
            id="old-renew-time-ignored-only-our-observation-counts",
        ),
        pytest.param(
            _held_by(OTHER, renew_time=datetime(2100, 1, 1, tzinfo=UTC)),
            100.0,
            115.0,
            Decision(action=Action.TAKE_OVER, desired=_mine()),
            id="future-renew-time-ignored",
        ),
    ],
)
def test_decide(
    record: LeaseRecord | None, changed_at: float, now: float, expected: Decision
) -> None:
    """One election try, from what we observed and when it last changed on our clock."""
    assert _decide(record, changed_at=changed_at, now=now) == expected


def test_decide_carries_the_resource_version_for_optimistic_concurrency() -> None:
    """The write is conditional on the version we read (equality ignores it, so check it)."""
    for record in (_held_by(ME), _held_by(OTHER), _held_by(None)):
        desired = _decide(record, now=1000.0).desired
        assert desired is not None
        assert desired.resource_version == "42"


@pytest.mark.parametrize(
    ("lease_duration", "seconds"),
    [
        pytest.param(15.0, 15, id="whole"),
        pytest.param(2.5, 3, id="rounded-up-never-shorter"),
        pytest.param(0.2, 1, id="at-least-one-second"),
    ],
)
def test_written_lease_duration(lease_duration: float, seconds: int) -> None:
    """leaseDurationSeconds is an integer no shorter than our lease duration."""
    observation = Observation(record=None, changed_at=0.0)
    decision = leader.decide(
        observation, identity=ME, lease_duration=lease_duration, now=0.0, wall_now=WALL
    )
    assert decision.desired is not None
    assert decision.desired.lease_duration_seconds == seconds


class TestObserve:
    def test_first_read_starts_the_clock(self) -> None:
        """The first observation of a record is stamped with our clock."""
        assert leader.observe(None, _held_by(OTHER), now=5.0) == Observation(
            record=_held_by(OTHER), changed_at=5.0
        )

    def test_unchanged_record_keeps_the_time_but_takes_the_new_version(self) -> None:
        """A metadata-only write (new resourceVersion, same spec) is not a renewal."""
        before = Observation(record=_held_by(OTHER), changed_at=5.0)
        after = leader.observe(before, _held_by(OTHER, resource_version="43"), now=9.0)
        assert after.changed_at == 5.0
        assert after.record is not None
        assert after.record.resource_version == "43"

    @pytest.mark.parametrize(
        "changed",
        [
            pytest.param(_held_by(OTHER, renew_time=WALL), id="renewed"),
            pytest.param(_held_by("autoscale-2"), id="new-holder"),
            pytest.param(_held_by(None), id="released"),
            pytest.param(_held_by(OTHER, lease_transitions=5), id="transitions"),
            pytest.param(None, id="deleted"),
        ],
    )
    def test_a_change_restarts_the_clock(self, changed: LeaseRecord | None) -> None:
        """Any change of the record counts as the holder being alive."""
        before = Observation(record=_held_by(OTHER), changed_at=5.0)
        assert leader.observe(before, changed, now=9.0).changed_at == 9.0

    def test_still_absent_keeps_the_time(self) -> None:
        """No Lease before and after is no change."""
        before = Observation(record=None, changed_at=5.0)
        assert leader.observe(before, None, now=9.0).changed_at == 5.0

    def test_a_standby_takes_over_a_full_duration_after_the_last_change_it_saw(self) -> None:
        """Polling a silent holder: stand by until lease_duration after the last change seen."""
        observation = None
        renewals = {0.0: _held_by(OTHER), 2.0: _held_by(OTHER, renew_time=WALL)}
        actions = []
        for tick in range(40):
            now = tick * 0.5
            record = renewals[max(t for t in renewals if t <= now)]
            observation = leader.observe(observation, record, now=now)
            decision = leader.decide(
                observation, identity=ME, lease_duration=15.0, now=now, wall_now=WALL
            )
            actions.append((now, decision.action))
        first_take_over = next(now for now, action in actions if action is Action.TAKE_OVER)
        assert first_take_over == 17.0


def test_released_clears_the_holder_and_keeps_the_count() -> None:
    """A released Lease has no holder, so a standby acquires it at its next try."""
    record = leader.released(_held_by(ME), wall_now=WALL)
    assert record == LeaseRecord(
        holder=None,
        lease_duration_seconds=1,
        acquire_time=None,
        renew_time=WALL,
        lease_transitions=4,
    )
    assert record.resource_version == "42"
    assert not record.held
    decision = _decide(record, changed_at=100.0, now=100.0)
    assert decision.action is Action.ACQUIRE


class TestJSON:
    @pytest.mark.parametrize(
        ("value", "text"),
        [
            pytest.param(WALL, "2026-05-04T12:00:00.123456Z", id="utc"),
            pytest.param(
                datetime(2026, 5, 4, 12, 0, 0, tzinfo=UTC),
                "2026-05-04T12:00:00.000000Z",
                id="whole-second-keeps-six-digits",
            ),
            pytest.param(
                datetime(2026, 5, 4, 14, 0, 0, 5, tzinfo=timezone(timedelta(hours=2))),
                "2026-05-04T12:00:00.000005Z",
                id="converted-to-utc",
            ),
            pytest.param(
                datetime(2026, 5, 4, 12, 0, 0), "2026-05-04T12:00:00.000000Z", id="naive-is-utc"
            ),
        ],
    )
    def test_format_micro_time(self, value: datetime, text: str) -> None:
        """MicroTime is RFC 3339 in UTC with exactly six fractional digits."""
        assert leader.format_micro_time(value) == text

    def test_parse_lease(self) -> None:
        """The JSON the API returns (as the client serialises it) becomes a LeaseRecord."""
        obj = {
            "metadata": {"name": "autoscale", "resourceVersion": "7"},
            "spec": {
                "holderIdentity": OTHER,
                "leaseDurationSeconds": 15,
                "acquireTime": "2026-05-04T11:00:00+00:00",
                "renewTime": "2026-05-04T12:00:00.123456Z",
                "leaseTransitions": 3,
            },
        }
        assert leader.parse_lease(obj) == LeaseRecord(
            holder=OTHER,
            lease_duration_seconds=15,
            acquire_time=EARLIER,
            renew_time=WALL,
            lease_transitions=3,
        )
        assert leader.parse_lease(obj).resource_version == "7"

    def test_parse_empty_lease(self) -> None:
        """A Lease with an empty spec is free, with no transitions yet."""
        assert leader.parse_lease({"metadata": {}, "spec": {}}) == LeaseRecord()
        assert leader.parse_lease({"metadata": {}}) == LeaseRecord()

    def test_body_round_trips(self) -> None:
        """What lease_body writes, parse_lease reads back unchanged."""
        record = _held_by(ME, renew_time=WALL)
        body = leader.lease_body(record, name="autoscale", namespace="ops")
        assert body["apiVersion"] == "coordination.k8s.io/v1"
        assert body["kind"] == "Lease"
        assert body["metadata"] == {
            "name": "autoscale",
            "namespace": "ops",
            "resourceVersion": "42",
        }
        assert leader.parse_lease(body) == record
        assert leader.parse_lease(body).resource_version == "42"

    def test_body_keeps_the_rest_of_the_object(self) -> None:
        """Labels and unknown spec fields survive; managedFields and the old version do not."""
        base = {
            "metadata": {
                "name": "autoscale",
                "namespace": "ops",
                "labels": {"app": "autoscale"},
                "resourceVersion": "41",
                "managedFields": [{"manager": "x"}],
            },
            "spec": {"holderIdentity": OTHER, "strategy": "OldestEmulationVersion"},
        }
        record = leader.released(_held_by(ME), wall_now=WALL)
        body = leader.lease_body(record, name="autoscale", namespace="ops", base=base)
        assert body["metadata"] == {
            "name": "autoscale",
            "namespace": "ops",
            "labels": {"app": "autoscale"},
            "resourceVersion": "42",
        }
        assert body["spec"] == {
            "strategy": "OldestEmulationVersion",
            "leaseDurationSeconds": 1,
            "renewTime": "2026-05-04T12:00:00.123456Z",
            "leaseTransitions": 4,
        }

    def test_create_body_has_no_resource_version(self) -> None:
        """A new Lease is created without a resourceVersion."""
        decision = _decide(None)
        assert decision.desired is not None
        body = leader.lease_body(decision.desired, name="autoscale", namespace="ops")
        assert "resourceVersion" not in body["metadata"]
        assert body["spec"]["holderIdentity"] == ME


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"identity": ""}, "must not be empty", id="empty-identity"),
        pytest.param({"name": ""}, "must not be empty", id="empty-name"),
        pytest.param({"renew_deadline": 15.0}, "renew_deadline < lease_duration", id="deadline"),
        pytest.param({"retry_period": 10.0}, "retry_period < renew_deadline", id="retry"),
        pytest.param({"retry_period": 0.0}, "0 < retry_period", id="zero-retry"),
    ],
)
def test_elector_rejects_unsafe_settings(kwargs: dict[str, Any], message: str) -> None:
    """Settings that would let lead() outlive the Lease are refused up front."""
    settings: dict[str, Any] = {
        "api_client": None,
        "namespace": "ops",
        "name": "autoscale",
        "identity": ME,
        **kwargs,
    }
    with pytest.raises(ValueError, match=message):
        leader.LeaderElector(**settings)
