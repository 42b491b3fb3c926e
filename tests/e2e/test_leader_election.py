"""Leader election against the bench's real kube-apiserver: one leader at a time, fast hand-over
on release, and a leader that cannot renew stops before anyone else may start.

Faults are injected into the real client (`FaultyClient`), never by a fake apiserver. Timings
are short: lease 3 s, renew deadline 2 s, retry period 0.5 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client as k8s

from autoscale import leader
from autoscale.leader import LeaderElector

pytestmark = pytest.mark.testbed

LEASE = 3.0
RENEW = 2.0
RETRY = 0.5
NAME = "autoscale-leader"
STANDBY_POLL = RETRY * (1 + leader.STANDBY_JITTER)
SLACK = 0.5  # scheduling and request time on a loaded machine


class FaultyClient:
    """The real ApiClient, except that while `mode` is set every request fails ("error") or
    hangs until cancelled ("hang")."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.mode: str | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def call_api(self, *args: Any, **kwargs: Any) -> Any:
        if self.mode == "error":
            return self._fail()
        if self.mode == "hang":
            return self._hang()
        return self._real.call_api(*args, **kwargs)

    @staticmethod
    async def _fail() -> None:
        raise aiohttp.ClientConnectionError("injected fault: connection refused")

    @staticmethod
    async def _hang() -> None:
        await asyncio.Event().wait()


@dataclass
class Term:
    """One run of lead(): who, and when it started and ended (time.monotonic())."""

    identity: str
    start: float
    end: float | None = None


class Terms:
    """Records every lead() run of every candidate."""

    def __init__(self) -> None:
        self.all: list[Term] = []

    def lead(self, identity: str) -> Callable[[], Awaitable[None]]:
        async def lead() -> None:
            term = Term(identity, time.monotonic())
            self.all.append(term)
            try:
                await asyncio.Event().wait()
            finally:
                term.end = time.monotonic()

        return lead

    def running(self) -> list[Term]:
        return [term for term in self.all if term.end is None]

    def of(self, identity: str) -> list[Term]:
        return [term for term in self.all if term.identity == identity]

    def assert_never_overlap(self) -> None:
        ordered = sorted(self.all, key=lambda term: term.start)
        for before, after in itertools.pairwise(ordered):
            assert before.end is not None, f"{before} still runs while {after} started"
            assert before.end <= after.start, f"{before} overlaps {after}"


class Candidates:
    """Electors for one Lease, each running in a task; all cancelled at the end."""

    def __init__(self, namespace: str, terms: Terms) -> None:
        self.namespace = namespace
        self.terms = terms
        self.electors: dict[str, LeaderElector] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, identity: str, api: Any) -> LeaderElector:
        elector = LeaderElector(
            api_client=api,
            namespace=self.namespace,
            name=NAME,
            identity=identity,
            lease_duration=LEASE,
            renew_deadline=RENEW,
            retry_period=RETRY,
        )
        self.electors[identity] = elector
        self.tasks[identity] = asyncio.create_task(elector.run(self.terms.lead(identity)))
        return elector

    def leaders(self) -> list[LeaderElector]:
        return [e for e in self.electors.values() if e.is_leader]

    async def leader(self, within: float) -> LeaderElector:
        """The one leader, once its lead() has started."""

        def elected() -> bool:
            leaders = self.leaders()
            running = self.terms.running()
            return len(leaders) == 1 and [t.identity for t in running] == [leaders[0].identity]

        await _until(elected, within, "no leader elected")
        return self.leaders()[0]

    async def stop(self, identity: str) -> None:
        """Cancel one candidate's run(), as SIGTERM does, and wait for it to finish."""
        task = self.tasks.pop(identity)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def aclose(self) -> None:
        for identity in list(self.tasks):
            await self.stop(identity)


@pytest.fixture
async def candidates(namespace: str) -> AsyncIterator[Candidates]:
    group = Candidates(namespace, Terms())
    try:
        yield group
    finally:
        await group.aclose()


async def _until(predicate: Callable[[], bool], within: float, message: str) -> float:
    """Poll `predicate` every 10 ms; return time.monotonic() when it first held."""
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, f"{message} within {within}s"
        await asyncio.sleep(0.01)
    return time.monotonic()


async def _lease(api: Any, namespace: str) -> Any:
    return await k8s.CoordinationV1Api(api).read_namespaced_lease(NAME, namespace)


async def test_one_of_two_candidates_leads_and_keeps_renewing(
    kube: Any, kube_api: Any, namespace: str, candidates: Candidates
) -> None:
    """Exactly one of two candidates leads, keeps the Lease by renewing, and runs one lead()."""
    candidates.start("candidate-a", kube_api)
    candidates.start("candidate-b", kube_api)
    chosen = await candidates.leader(within=5)
    other = next(e for e in candidates.electors.values() if e is not chosen)
    first = await _lease(kube_api, namespace)

    for _ in range(int(LEASE * 1.5 / 0.1)):  # longer than a lease: renewals keep it
        assert candidates.leaders() == [chosen]
        assert chosen.leading.is_set()
        assert not other.leading.is_set()
        await asyncio.sleep(0.1)

    later = await _lease(kube_api, namespace)
    assert later.spec.holder_identity == chosen.identity
    assert later.spec.lease_duration_seconds == 3
    assert later.spec.lease_transitions == 0
    assert later.spec.acquire_time == first.spec.acquire_time
    assert later.spec.renew_time > first.spec.renew_time
    assert other.holder == chosen.identity
    assert [term.identity for term in candidates.terms.all] == [chosen.identity]
    raw = json.loads(kube.kubectl("get", "lease", NAME, "-n", namespace, "-o", "json").stdout)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", raw["spec"]["renewTime"])


async def test_cancelling_run_releases_the_lease(
    kube_api: Any, namespace: str, candidates: Candidates
) -> None:
    """On cancellation (SIGTERM) lead() is stopped first, then the Lease has no holder."""
    only = candidates.start("candidate-a", kube_api)
    await candidates.leader(within=5)
    await candidates.stop("candidate-a")
    (term,) = candidates.terms.all
    assert term.end is not None
    assert not only.is_leader
    lease = await _lease(kube_api, namespace)
    assert lease.spec.holder_identity is None
    assert lease.spec.lease_duration_seconds == 1
    assert lease.spec.lease_transitions == 0


async def test_a_released_lease_is_taken_over_within_a_retry_period(
    kube_api: Any, namespace: str, candidates: Candidates
) -> None:
    """The standby leads within about one retry period of the leader releasing the Lease."""
    candidates.start("candidate-a", kube_api)
    candidates.start("candidate-b", kube_api)
    first = await candidates.leader(within=5)
    await asyncio.sleep(1)  # the standby has seen the lease held
    await candidates.stop(first.identity)
    released_at = time.monotonic()
    second = await candidates.leader(within=STANDBY_POLL + SLACK + 2)
    took = time.monotonic() - released_at
    assert second is not first
    assert took <= STANDBY_POLL + SLACK, f"hand-over took {took:.2f}s"
    lease = await _lease(kube_api, namespace)
    assert lease.spec.holder_identity == second.identity
    assert lease.spec.lease_transitions == 1
    candidates.terms.assert_never_overlap()


@pytest.mark.parametrize("fault", ["error", "hang"])
async def test_a_leader_that_cannot_renew_stops_before_the_lease_can_be_taken(
    kube_api: Any, namespace: str, candidates: Candidates, fault: str
) -> None:
    """Cut off from the API, the leader stops lead() within renew_deadline of its last renewal;
    the standby takes over only a full lease_duration after it, and the cut-off one then stays
    standby when the API comes back."""
    faulty = FaultyClient(kube_api)
    cut_off = candidates.start("candidate-a", faulty)
    await candidates.leader(within=5)
    assert cut_off.leading.is_set()
    standby = candidates.start("candidate-b", kube_api)
    await asyncio.sleep(1)  # the standby has seen the lease held
    transitions_before = (await _lease(kube_api, namespace)).spec.lease_transitions

    faulty.mode = fault
    faulted_at = time.monotonic()
    (a_term,) = candidates.terms.of("candidate-a")
    await _until(lambda: a_term.end is not None, RENEW + SLACK + 1, "lead() not stopped")
    last_renewal = cut_off.renewed_at
    assert last_renewal is not None
    assert last_renewal <= faulted_at
    assert a_term.end is not None
    assert a_term.end - last_renewal <= RENEW + 0.1, "lead() outlived the renew deadline"
    assert not cut_off.is_leader

    await candidates.leader(within=LEASE + STANDBY_POLL + SLACK + 1)
    assert standby.is_leader
    (b_term,) = candidates.terms.of("candidate-b")
    assert b_term.start >= last_renewal + LEASE, "took over before the lease could expire"
    assert b_term.start - faulted_at <= LEASE + STANDBY_POLL + SLACK
    lease = await _lease(kube_api, namespace)
    assert lease.spec.holder_identity == "candidate-b"
    assert lease.spec.lease_transitions == transitions_before + 1

    faulty.mode = None
    await asyncio.sleep(RENEW + 2 * RETRY)  # long enough for the first to retry (and time out)
    assert candidates.leaders() == [standby]
    assert cut_off.holder == "candidate-b"
    assert [t.identity for t in candidates.terms.running()] == ["candidate-b"]
    candidates.terms.assert_never_overlap()


async def test_a_lone_leader_leads_again_when_the_api_comes_back(
    kube_api: Any, namespace: str, candidates: Candidates
) -> None:
    """Losing the Lease means standby, not exit: with nobody else there, the same candidate
    re-acquires its own Lease and calls lead() afresh."""
    faulty = FaultyClient(kube_api)
    elector = candidates.start("candidate-a", faulty)
    await candidates.leader(within=5)
    faulty.mode = "error"
    await _until(lambda: not elector.is_leader, RENEW + SLACK + 1, "leadership not lost")
    faulty.mode = None
    await candidates.leader(within=STANDBY_POLL + SLACK + 1)
    terms = candidates.terms.of("candidate-a")
    assert len(terms) == 2
    assert terms[0].end is not None
    assert terms[1].end is None
    lease = await _lease(kube_api, namespace)
    assert lease.spec.holder_identity == "candidate-a"
    assert lease.spec.lease_transitions == 0  # still the same holder: no transition
    candidates.terms.assert_never_overlap()


async def test_leadership_churn_never_runs_two_leads_at_once(
    kube_api: Any, namespace: str, candidates: Candidates
) -> None:
    """Three candidates; four times over the leader is stopped, a standby takes over and a new
    candidate joins. Terms never overlap, and each hand-over counts one transition."""
    for index in range(3):
        candidates.start(f"candidate-{index}", kube_api)
    current = await candidates.leader(within=5)
    handovers = 4
    for index in range(3, 3 + handovers):
        await asyncio.sleep(RETRY)  # the standbys have seen the lease held
        await candidates.stop(current.identity)
        successor = await candidates.leader(within=STANDBY_POLL + SLACK + 1)
        assert successor is not current
        current = successor
        candidates.start(f"candidate-{index}", kube_api)
    await asyncio.sleep(RETRY)
    assert candidates.leaders() == [current]
    assert len(candidates.terms.all) == handovers + 1
    assert candidates.terms.all[-1].identity == current.identity
    candidates.terms.assert_never_overlap()
    lease = await _lease(kube_api, namespace)
    assert lease.spec.lease_transitions == handovers


@pytest.mark.parametrize("outcome", ["return", "raise"])
async def test_when_lead_ends_the_lease_is_released(
    kube_api: Any, namespace: str, outcome: str
) -> None:
    """lead() returning makes run() return; lead() raising makes run() raise the same error;
    either way the Lease is released first."""

    async def lead() -> None:
        await asyncio.sleep(0.2)
        if outcome == "raise":
            raise RuntimeError("controller crashed")

    elector = LeaderElector(
        api_client=kube_api,
        namespace=namespace,
        name=NAME,
        identity="candidate-a",
        lease_duration=LEASE,
        renew_deadline=RENEW,
        retry_period=RETRY,
    )
    if outcome == "raise":
        with pytest.raises(RuntimeError, match="controller crashed"):
            await asyncio.wait_for(elector.run(lead), timeout=10)
    else:
        await asyncio.wait_for(elector.run(lead), timeout=10)
    assert not elector.is_leader
    lease = await _lease(kube_api, namespace)
    assert lease.spec.holder_identity is None


async def test_an_existing_lease_held_by_a_gone_holder_is_taken_after_a_lease_duration(
    kube: Any, kube_api: Any, namespace: str, candidates: Candidates
) -> None:
    """A Lease left behind by a crashed holder (whatever its renewTime says) is taken once the
    candidate has seen it unchanged for the holder's lease duration, and not before."""
    manifest = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {
            "holderIdentity": "crashed-pod",
            "leaseDurationSeconds": 3,
            "renewTime": "2000-01-01T00:00:00.000000Z",  # far past: must not matter
            "leaseTransitions": 7,
        },
    }
    kube.kubectl("create", "-f", "-", input=json.dumps(manifest))
    started = time.monotonic()
    candidates.start("candidate-a", kube_api)
    await candidates.leader(within=LEASE + STANDBY_POLL + SLACK + 1)
    (term,) = candidates.terms.all
    assert term.start - started >= LEASE
    lease = await _lease(kube_api, namespace)
    assert lease.spec.holder_identity == "candidate-a"
    assert lease.spec.lease_transitions == 8


async def test_a_standby_stops_at_once_even_when_the_api_hangs(
    kube_api: Any, namespace: str, candidates: Candidates
) -> None:
    """A standby that never held the Lease has nothing to release: cancelling it does not wait
    on an unreachable API, and the leader keeps the Lease."""
    faulty = FaultyClient(kube_api)
    chosen = candidates.start("candidate-a", kube_api)
    await candidates.leader(within=5)
    candidates.start("candidate-b", faulty)
    await asyncio.sleep(1)  # the standby has seen the lease held
    faulty.mode = "hang"
    started = time.monotonic()
    await candidates.stop("candidate-b")
    assert time.monotonic() - started < 0.5
    assert candidates.leaders() == [chosen]
    lease = await _lease(kube_api, namespace)
    assert lease.spec.holder_identity == "candidate-a"
