"""rabbitmq against the bench's real RabbitMQ 3.10 (management statistics refresh every second).

Both protocols on real queues: AMQP's passive declare (ready messages only) and the management
API (ready + unacknowledged, or ready only), every mode including real publish and delivery
rates, useRegex with each operation over several queues and several pages, vhostName on a vhost
of the test's own, activation, a missing queue, an unreachable or silent endpoint, a wrong
password, and one AMQP connection shared by every scaler of a broker. A second broker of this
module's own speaks TLS only: amqps:// and https:// with a client certificate, SASL EXTERNAL,
server verification and unsafeSsl.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import ssl
import time
import traceback
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import aio_pika.abc
import aiohttp
import pytest

from autoscale.errors import ScalerError, ScalerQueryError, ScalerUnavailableError
from autoscale.scalers.base import MetricSample
from autoscale.scalers.connections import SharedClients
from autoscale.scalers.rabbitmq import (
    CLIENT_NAME,
    POLL_TIMEOUT,
    AmqpBroker,
    RabbitMQScaler,
)
from tests.testbed import versions
from tests.testbed.pki import TinyCA
from tests.testbed.procs import LOOPBACK, ManagedProcess, free_port, http_ok, port_open, wait_until
from tests.testbed.services import RabbitMQ

pytestmark = pytest.mark.testbed

PASSWORD = "s3cret:Pässw@rd/for-the-test"
QUOTED = urllib.parse.quote(PASSWORD, safe="")
SETTLE = 20.0  # seconds for the management API's statistics to show a change


# ---------------------------------------------------------------------------------------------
# Fixtures and helpers


class Admin:
    """The management API as the bench's administrator (guest), for setting tests up."""

    def __init__(self, rabbitmq: RabbitMQ, session: aiohttp.ClientSession) -> None:
        self.rabbitmq = rabbitmq
        self.session = session

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        url = self.rabbitmq.management_url(path)
        async with self.session.request(method, url, json=body) as response:
            text = await response.text()
            assert response.status < 300, f"{method} {path}: {response.status} {text}"
            return await response.json() if text else None

    async def connections_of(self, user: str) -> list[dict[str, Any]]:
        listed = await self.request("GET", "/api/connections?columns=name,user,client_properties")
        return [c for c in listed if c.get("user") == user]

    async def add_user(self, name: str, password: str) -> None:
        await self.request(
            "PUT", f"/api/users/{name}", {"password": password, "tags": "management"}
        )
        await self.permit(name, "/")

    async def permit(self, user: str, vhost: str) -> None:
        everything = {"configure": ".*", "write": ".*", "read": ".*"}
        await self.request("PUT", f"/api/permissions/{_q(vhost)}/{user}", everything)


def _q(text: str) -> str:
    return urllib.parse.quote(text, safe="")


@pytest.fixture
async def admin(rabbitmq: RabbitMQ) -> AsyncIterator[Admin]:
    token = base64.b64encode(f"{RabbitMQ.USER}:{RabbitMQ.PASSWORD}".encode()).decode()
    headers = {"Authorization": f"Basic {token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        yield Admin(rabbitmq, session)


@pytest.fixture
async def connections() -> AsyncIterator[SharedClients]:
    pool = SharedClients()
    yield pool
    await pool.aclose()


@pytest.fixture
async def channel(rabbitmq: RabbitMQ) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    """A channel of a plain connection of the test's own, for declaring and publishing."""
    connection = await aio_pika.connect(rabbitmq.amqp)
    async with connection:
        yield await connection.channel()


@pytest.fixture
async def queue(
    channel: aio_pika.abc.AbstractChannel, unique_name: str
) -> AsyncIterator[aio_pika.abc.AbstractQueue]:
    """This test's queue, deleted afterwards."""
    declared = await channel.declare_queue(unique_name, auto_delete=False)
    yield declared
    await declared.delete(if_unused=False, if_empty=False)


@pytest.fixture
async def user(admin: Admin, unique_name: str) -> AsyncIterator[str]:
    """A RabbitMQ user of the test's own, with PASSWORD, on vhost "/"; removed afterwards."""
    await admin.add_user(unique_name, PASSWORD)
    yield unique_name
    await admin.request("DELETE", f"/api/users/{unique_name}")


def hosts(rabbitmq: RabbitMQ, *, user: str | None = None, vhost: str = "/") -> dict[str, str]:
    """The bench's broker as `host` values: amqp:// and http:// (guest, or `user`)."""
    userinfo = f"{user}:{QUOTED}" if user else f"{RabbitMQ.USER}:{RabbitMQ.PASSWORD}"
    path = _q(vhost)
    return {
        "amqp": f"amqp://{userinfo}@{LOOPBACK}:{rabbitmq.amqp_port}/{path}",
        "http": f"http://{userinfo}@{LOOPBACK}:{rabbitmq.management_port}/{path}",
    }


def make(
    host: str,
    connections: SharedClients,
    metadata: dict[str, str],
    auth: dict[str, str] | None = None,
    *,
    index: int = 0,
    timeout: float | None = None,
) -> RabbitMQScaler:
    """A scaler with `host` in its auth params, where KEDA users keep it."""
    built = RabbitMQScaler.from_trigger(
        trigger_index=index,
        trigger_name=None,
        metadata=metadata,
        auth_params={"host": host, **(auth or {})},
        resolved_env={},
        connections=connections,
    )
    if timeout is None:
        return built
    return RabbitMQScaler(
        built.config, trigger_index=index, connections=connections, timeout=timeout
    )


async def publish(channel: aio_pika.abc.AbstractChannel, queue: str, count: int) -> None:
    for i in range(count):
        await channel.default_exchange.publish(
            aio_pika.Message(body=f"job {i}".encode()), routing_key=queue
        )


async def hold_unacked(
    channel: aio_pika.abc.AbstractChannel, queue: str, count: int
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Take `count` messages without acknowledging them: they stay unacknowledged until the
    consumer's channel acknowledges or closes."""
    source = await channel.get_queue(queue)
    held = []
    for _ in range(count):
        message = await source.get(no_ack=False, timeout=5)
        assert message is not None
        held.append(message)
    return held


async def sample_once(scaler: RabbitMQScaler) -> MetricSample:
    try:
        return await scaler.sample()
    finally:
        await scaler.aclose()


async def settled(
    scaler: RabbitMQScaler,
    accept: Callable[[MetricSample], bool],
    *,
    within: float = SETTLE,
) -> MetricSample:
    """Sample until `accept` holds: the management API's statistics lag up to a second or two
    (and a queue has none at all for a moment after it is created)."""
    deadline = time.monotonic() + within
    last: MetricSample | ScalerUnavailableError | None = None
    while time.monotonic() < deadline:
        try:
            last = await scaler.sample()
        except ScalerUnavailableError as exc:  # statistics not there yet
            last = exc
        else:
            if accept(last):
                return last
        await asyncio.sleep(0.25)
    raise AssertionError(f"not reached within {within}s; last: {last!r}")


def value_is(expected: float) -> Callable[[MetricSample], bool]:
    return lambda sample: sample.value == pytest.approx(expected)


async def eventually(check: Callable[[], Awaitable[bool]], within: float = SETTLE) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.2)


def active(sample: MetricSample) -> bool:
    return sample.value > sample.activation_target


def all_text(exc: BaseException) -> str:
    """Everything an exception can put in a log: messages and reprs of the whole chain."""
    return "".join(traceback.format_exception(exc)) + repr(exc) + repr(exc.__cause__)


# ---------------------------------------------------------------------------------------------
# QueueLength over both protocols; what each counts


async def test_amqp_counts_ready_messages_only(
    rabbitmq: RabbitMQ,
    connections: SharedClients,
    channel: aio_pika.abc.AbstractChannel,
    queue: aio_pika.abc.AbstractQueue,
) -> None:
    """10 published, 4 held unacknowledged: the passive declare reports 6, at once."""
    await publish(channel, queue.name, 10)
    held = await hold_unacked(channel, queue.name, 4)
    scaler = make(hosts(rabbitmq)["amqp"], connections, {"queueName": queue.name}, index=2)
    try:
        first = await scaler.sample()
        assert first == MetricSample(name=f"s2-rabbitmq-{queue.name}", value=6.0, target=20.0)
        for message in held:
            await message.ack()
        await publish(channel, queue.name, 1)
        second = await scaler.sample()  # a fresh channel per poll: no cached count
        assert second.value == 7.0
    finally:
        await scaler.aclose()


async def test_http_counts_unacknowledged_unless_excluded(
    rabbitmq: RabbitMQ,
    connections: SharedClients,
    channel: aio_pika.abc.AbstractChannel,
    queue: aio_pika.abc.AbstractQueue,
) -> None:
    """Same queue over the management API: 10 (ready + unacknowledged) by default, 6 with
    excludeUnacknowledged; the target is `value` in QueueLength mode."""
    await publish(channel, queue.name, 10)
    held = await hold_unacked(channel, queue.name, 4)
    http = hosts(rabbitmq)["http"]
    both = make(http, connections, {"queueName": queue.name, "mode": "QueueLength", "value": "3"})
    ready = make(http, connections, {"queueName": queue.name, "excludeUnacknowledged": "true"})
    try:
        sample = await settled(both, value_is(10))
        assert (sample.target, sample.activation_target) == (3.0, 0.0)
        assert (await settled(ready, value_is(6))).target == 20.0
    finally:
        await both.aclose()
        await ready.aclose()
        for message in held:
            await message.ack()


async def test_activation_value(
    rabbitmq: RabbitMQ,
    connections: SharedClients,
    channel: aio_pika.abc.AbstractChannel,
    queue: aio_pika.abc.AbstractQueue,
) -> None:
    """Active only when the count exceeds activationValue: 5 of 5 is not, 6 is."""
    await publish(channel, queue.name, 5)
    for protocol in ("amqp", "http"):
        scaler = make(
            hosts(rabbitmq)[protocol],
            connections,
            {"queueName": queue.name, "mode": "QueueLength", "value": "10", "activationValue": "5"},
        )
        try:
            first = await settled(scaler, value_is(5))
            assert not active(first)
            await publish(channel, queue.name, 1)
            second = await settled(scaler, value_is(6))
            assert active(second)
        finally:
            await scaler.aclose()
        await queue.purge()
        await publish(channel, queue.name, 5)


# ---------------------------------------------------------------------------------------------
# Rates: real measurements, so sane ranges


async def publish_steadily(
    channel: aio_pika.abc.AbstractChannel, queue: str, *, per_second: float, seconds: float
) -> int:
    sent, started = 0, time.monotonic()
    while time.monotonic() - started < seconds:
        await channel.default_exchange.publish(aio_pika.Message(body=b"x"), routing_key=queue)
        sent += 1
        await asyncio.sleep(max(0.0, started + sent / per_second - time.monotonic()))
    return sent


async def test_message_rate_is_the_publish_rate(
    rabbitmq: RabbitMQ,
    connections: SharedClients,
    channel: aio_pika.abc.AbstractChannel,
    queue: aio_pika.abc.AbstractQueue,
) -> None:
    """Publishing 20/s for a few seconds: MessageRate reads a rate near 20; with the publisher
    stopped and the queue purged, the rate falls to 0 and the trigger goes inactive."""
    scaler = make(
        hosts(rabbitmq)["http"],
        connections,
        {"queueName": queue.name, "mode": "MessageRate", "value": "5", "activationValue": "1"},
    )
    publisher = asyncio.create_task(publish_steadily(channel, queue.name, per_second=20, seconds=8))
    try:
        sample = await settled(scaler, lambda s: s.value > 0)
        sample = await settled(scaler, lambda s: 10 <= s.value <= 30)
        assert sample.target == 5.0
        assert active(sample)
        await publisher
        await queue.purge()
        idle = await settled(scaler, lambda s: s.value == 0 and not active(s), within=30)
        assert idle.activation_target == 1.0
    finally:
        publisher.cancel()
        await scaler.aclose()


async def test_message_rate_backlog_keeps_the_trigger_active(
    rabbitmq: RabbitMQ,
    connections: SharedClients,
    channel: aio_pika.abc.AbstractChannel,
    queue: aio_pika.abc.AbstractQueue,
) -> None:
    """No publishing at all, but messages waiting: active, as in KEDA (rate 0 > -inf)."""
    await publish(channel, queue.name, 3)
    scaler = make(
        hosts(rabbitmq)["http"],
        connections,
        {"queueName": queue.name, "mode": "MessageRate", "value": "5"},
    )
    try:
        sample = await settled(scaler, active)
        assert sample.value <= 30  # whatever rate the 3 publishes left, the backlog decides
    finally:
        await scaler.aclose()


async def test_delivery_modes_with_a_consumer_keeping_up(
    rabbitmq: RabbitMQ,
    connections: SharedClients,
    channel: aio_pika.abc.AbstractChannel,
    queue: aio_pika.abc.AbstractQueue,
) -> None:
    """20/s published and consumed at once: DeliverGetRate near 20, PublishedToDeliveredRatio
    near 1, ExpectedQueueConsumptionTime near 0 (an empty queue)."""

    async def discard(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        pass

    consumer_connection = await aio_pika.connect(rabbitmq.amqp)
    consumer = await consumer_connection.channel()
    await (await consumer.get_queue(queue.name)).consume(discard, no_ack=True)
    http = hosts(rabbitmq)["http"]
    metadata = {"queueName": queue.name, "value": "1"}
    deliver = make(http, connections, {**metadata, "mode": "DeliverGetRate"})
    ratio = make(http, connections, {**metadata, "mode": "PublishedToDeliveredRatio"})
    eta = make(http, connections, {**metadata, "mode": "ExpectedQueueConsumptionTime"})
    publisher = asyncio.create_task(
        publish_steadily(channel, queue.name, per_second=20, seconds=12)
    )
    try:
        assert 10 <= (await settled(deliver, lambda s: 10 <= s.value <= 30)).value <= 30
        assert 0.5 <= (await settled(ratio, lambda s: 0.5 <= s.value <= 2)).value <= 2
        seconds = await settled(eta, lambda s: s.activation_target == 0 and -1 <= s.value <= 1)
        assert -1 <= seconds.value <= 1
    finally:
        publisher.cancel()
        for scaler in (deliver, ratio, eta):
            await scaler.aclose()
        await consumer_connection.close()


# ---------------------------------------------------------------------------------------------
# useRegex and operation


@pytest.fixture
async def three_queues(
    channel: aio_pika.abc.AbstractChannel, unique_name: str
) -> AsyncIterator[str]:
    """Queues <name>-a, -b, -c holding 1, 2 and 4 messages (and an unrelated <name>x with
    9); yields the regex matching the three."""
    names = {f"{unique_name}-a": 1, f"{unique_name}-b": 2, f"{unique_name}-c": 4}
    names[f"{unique_name}x"] = 9
    for name, depth in names.items():
        await channel.declare_queue(name, auto_delete=False)
        await publish(channel, name, depth)
    yield f"^{unique_name}-[abc]$"
    for name in names:
        await channel.queue_delete(name)


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        pytest.param({"operation": "sum"}, 7.0, id="sum"),
        pytest.param({"operation": "max"}, 4.0, id="max"),
        pytest.param({"operation": "avg"}, 7 / 3, id="avg"),
        pytest.param({}, 7.0, id="sum-by-default"),
        pytest.param({"operation": "sum", "pageSize": "2"}, 7.0, id="sum-over-two-pages"),
        pytest.param({"operation": "max", "pageSize": "1"}, 4.0, id="max-over-three-pages"),
    ],
)
async def test_regex_operations_over_matching_queues(
    rabbitmq: RabbitMQ,
    connections: SharedClients,
    three_queues: str,
    metadata: dict[str, str],
    expected: float,
) -> None:
    """1, 2 and 4 messages: sum 7, max 4, avg 7/3 (KEDA: 2); every page is read."""
    scaler = make(
        hosts(rabbitmq)["http"],
        connections,
        {"queueName": three_queues, "useRegex": "true", **metadata},
    )
    try:
        await settled(scaler, value_is(expected))
    finally:
        await scaler.aclose()


async def test_regex_matching_nothing_is_zero(
    rabbitmq: RabbitMQ, connections: SharedClients, unique_name: str
) -> None:
    """No queue matches: no work (KEDA's 0), not an error."""
    scaler = make(
        hosts(rabbitmq)["http"],
        connections,
        {"queueName": f"^{unique_name}-none$", "useRegex": "true"},
    )
    assert (await sample_once(scaler)).value == 0.0


async def test_invalid_regex_is_a_query_error(
    rabbitmq: RabbitMQ, connections: SharedClients, queue: aio_pika.abc.AbstractQueue
) -> None:
    """The management API refuses a pattern it cannot compile (once there is a queue to match
    it against): said so, not 0."""
    scaler = make(hosts(rabbitmq)["http"], connections, {"queueName": "(", "useRegex": "true"})
    with pytest.raises(ScalerQueryError, match="valid regular expression"):
        await sample_once(scaler)


# ---------------------------------------------------------------------------------------------
# vhosts


@pytest.fixture
async def vhost(admin: Admin, unique_name: str) -> AsyncIterator[str]:
    """A vhost of the test's own (with a "/" in its name), guest allowed; deleted afterwards."""
    name = f"{unique_name}/v"
    await admin.request("PUT", f"/api/vhosts/{_q(name)}")
    await admin.permit(RabbitMQ.USER, name)
    yield name
    await admin.request("DELETE", f"/api/vhosts/{_q(name)}")


async def test_vhost_name_and_vhost_in_the_url(
    rabbitmq: RabbitMQ, connections: SharedClients, vhost: str
) -> None:
    """A queue in another vhost: reached with vhostName, or with the vhost in the URL path, by
    both protocols; the default vhost has no such queue."""
    root, inside = hosts(rabbitmq), hosts(rabbitmq, vhost=vhost)
    own = await aio_pika.connect(inside["amqp"])
    async with own:
        channel = await own.channel()
        declared = await channel.declare_queue("orders", auto_delete=False)
        await publish(channel, "orders", 3)
        for protocol in ("amqp", "http"):
            by_name = make(root[protocol], connections, {"queueName": "orders", "vhostName": vhost})
            by_url = make(inside[protocol], connections, {"queueName": "orders"})
            for scaler in (by_name, by_url):
                try:
                    assert scaler.vhost == vhost
                    await settled(scaler, value_is(3))
                finally:
                    await scaler.aclose()
            elsewhere = make(root[protocol], connections, {"queueName": "orders"})
            with pytest.raises(ScalerQueryError, match='no queue "orders" in vhost "/"'):
                await sample_once(elsewhere)
        await declared.delete(if_unused=False, if_empty=False)


async def test_missing_vhost_is_a_query_error(
    rabbitmq: RabbitMQ, connections: SharedClients, unique_name: str
) -> None:
    """A vhost that does not exist: the broker refuses it (AMQP) or the API answers 404."""
    for protocol, message in (
        ("amqp", f'the broker refused to open vhost "{unique_name}"'),
        ("http", f'no queue "q" in vhost "{unique_name}" \\(or no such vhost; HTTP 404'),
    ):
        scaler = make(
            hosts(rabbitmq)[protocol],
            connections,
            {"queueName": "q", "vhostName": unique_name},
        )
        with pytest.raises(ScalerQueryError, match=message):
            await sample_once(scaler)


# ---------------------------------------------------------------------------------------------
# A missing queue is an error, never 0


async def test_missing_queue_is_a_query_error_and_the_connection_survives(
    rabbitmq: RabbitMQ,
    connections: SharedClients,
    channel: aio_pika.abc.AbstractChannel,
    queue: aio_pika.abc.AbstractQueue,
    unique_name: str,
) -> None:
    """AMQP: 404 NOT_FOUND closes that poll's channel only; a scaler sharing the connection
    keeps reading on the same connection. HTTP: 404. Neither reads as 0."""
    await publish(channel, queue.name, 2)
    amqp, http = hosts(rabbitmq)["amqp"], hosts(rabbitmq)["http"]
    good = make(amqp, connections, {"queueName": queue.name})
    missing = make(amqp, connections, {"queueName": unique_name + "-missing"})
    try:
        assert (await good.sample()).value == 2.0
        for _ in range(2):
            with pytest.raises(ScalerQueryError) as info:
                await missing.sample()
            assert str(info.value) == (
                f"trigger[0] (rabbitmq): amqp://guest@{LOOPBACK}:{rabbitmq.amqp_port}/%2F: "
                f'no queue "{unique_name}-missing" in vhost "/" '
                f"(NOT_FOUND - no queue '{unique_name}-missing' in vhost '/')"
            )
            assert not info.value.transient
            assert (await good.sample()).value == 2.0
        broker = connections._entries[good.endpoint].client
        assert isinstance(broker, AmqpBroker)
        assert (broker.connects, broker.connected) == (1, True)
    finally:
        await good.aclose()
        await missing.aclose()

    scaler = make(http, connections, {"queueName": unique_name + "-missing"})
    with pytest.raises(ScalerQueryError) as info:
        await sample_once(scaler)
    assert str(info.value) == (
        f"trigger[0] (rabbitmq): http://guest@{LOOPBACK}:{rabbitmq.management_port}: "
        f'no queue "{unique_name}-missing" in vhost "/" (or no such vhost; HTTP 404: Not Found)'
    )


# ---------------------------------------------------------------------------------------------
# One AMQP connection per broker and credentials


async def test_scalers_of_one_broker_share_one_connection(
    rabbitmq: RabbitMQ,
    connections: SharedClients,
    admin: Admin,
    channel: aio_pika.abc.AbstractChannel,
    queue: aio_pika.abc.AbstractQueue,
    user: str,
) -> None:
    """Two ScaledObjects' triggers (two queues, one of them missing) on one broker and user:
    one AMQP connection, named "autoscale"; closed with the last scaler. Another
    SharedClients (another operator process) has its own."""
    await publish(channel, queue.name, 3)
    amqp = hosts(rabbitmq, user=user)["amqp"]
    first = make(amqp, connections, {"queueName": queue.name})
    second = make(amqp, connections, {"queueName": queue.name, "mode": "QueueLength", "value": "2"})
    third = make(amqp, connections, {"queueName": queue.name + "-missing"})
    assert first.endpoint == second.endpoint == third.endpoint
    try:
        assert [(await s.sample()).value for s in (first, second)] == [3.0, 3.0]
        with pytest.raises(ScalerQueryError):
            await third.sample()
        assert (await first.sample()).value == 3.0
        assert len(connections) == 1
        assert connections.leases(first.endpoint) == 3

        async def one_named_connection() -> bool:
            listed = await admin.connections_of(user)
            names = [c["client_properties"].get("connection_name") for c in listed]
            return names == [CLIENT_NAME]

        await eventually(one_named_connection)

        elsewhere = SharedClients()
        other = make(amqp, elsewhere, {"queueName": queue.name})
        await other.sample()
        await eventually(lambda: _count(admin, user, 2))
        await other.aclose()
        assert len(elsewhere) == 0
    finally:
        for scaler in (first, second, third):
            await scaler.aclose()
    assert len(connections) == 0
    await eventually(lambda: _count(admin, user, 0))


async def _count(admin: Admin, user: str, expected: int) -> bool:
    return len(await admin.connections_of(user)) == expected


async def test_http_scalers_share_one_session(
    rabbitmq: RabbitMQ,
    connections: SharedClients,
    channel: aio_pika.abc.AbstractChannel,
    queue: aio_pika.abc.AbstractQueue,
    vhost: str,
) -> None:
    """One management endpoint and user: one HTTP session, whatever the queue or vhost."""
    http = hosts(rabbitmq)["http"]
    scalers = [
        make(http, connections, {"queueName": queue.name}),
        make(http, connections, {"queueName": queue.name, "excludeUnacknowledged": "true"}),
        make(http, connections, {"queueName": "^x", "useRegex": "true", "vhostName": vhost}),
    ]
    try:
        for scaler in scalers:
            await settled(scaler, lambda s: s.value == 0)
        assert len(connections) == 1
        assert connections.leases(scalers[0].endpoint) == 3
    finally:
        for scaler in scalers:
            await scaler.aclose()
    assert len(connections) == 0


async def test_a_connection_the_broker_closes_is_replaced(
    rabbitmq: RabbitMQ,
    connections: SharedClients,
    admin: Admin,
    channel: aio_pika.abc.AbstractChannel,
    queue: aio_pika.abc.AbstractQueue,
    user: str,
) -> None:
    """An administrator closes the shared connection: the next poll opens a new one."""
    await publish(channel, queue.name, 1)
    scaler = make(hosts(rabbitmq, user=user)["amqp"], connections, {"queueName": queue.name})
    try:
        assert (await scaler.sample()).value == 1.0
        await eventually(lambda: _count(admin, user, 1))
        [listed] = await admin.connections_of(user)
        await admin.request("DELETE", f"/api/connections/{_q(listed['name'])}")
        broker = connections._entries[scaler.endpoint].client
        assert isinstance(broker, AmqpBroker)

        async def dropped() -> bool:
            return not broker.connected

        await eventually(dropped, within=5)
        assert (await scaler.sample()).value == 1.0
        assert broker.connects == 2
    finally:
        await scaler.aclose()


# ---------------------------------------------------------------------------------------------
# Unreachable, silent, wrong password


@pytest.mark.parametrize("protocol", ["amqp", "http"])
async def test_unreachable_host_is_unavailable_within_the_timeout(
    connections: SharedClients, protocol: str
) -> None:
    """Nobody listens on the port: ScalerUnavailableError (transient), quickly."""
    port = free_port()
    host = f"{protocol}://guest:guest@{LOOPBACK}:{port}/"
    scaler = make(host, connections, {"queueName": "q"})
    started = time.monotonic()
    with pytest.raises(ScalerUnavailableError) as info:
        await sample_once(scaler)
    assert time.monotonic() - started < POLL_TIMEOUT
    assert info.value.transient
    assert str(info.value).startswith(
        f"trigger[0] (rabbitmq): {protocol}://guest@{LOOPBACK}:{port}"
    )
    assert ": unavailable: " in str(info.value)


@pytest.mark.parametrize("protocol", ["amqp", "http"])
async def test_silent_server_times_out(connections: SharedClients, protocol: str) -> None:
    """A server that accepts connections but never answers: the timeouts bound the poll."""
    with socket.create_server((LOOPBACK, 0)) as silent:
        port = silent.getsockname()[1]
        host = f"{protocol}://guest:guest@{LOOPBACK}:{port}/"
        metadata = {"queueName": "q"} | ({"timeout": "500"} if protocol == "http" else {})
        scaler = make(host, connections, metadata, timeout=1.0)
        started = time.monotonic()
        with pytest.raises(ScalerUnavailableError) as info:
            await sample_once(scaler)
        elapsed = time.monotonic() - started
    assert elapsed < 2.0
    assert "no answer within" in str(info.value)


@pytest.mark.parametrize("protocol", ["amqp", "http"])
async def test_wrong_password_is_a_query_error_without_the_password(
    rabbitmq: RabbitMQ,
    connections: SharedClients,
    channel: aio_pika.abc.AbstractChannel,
    queue: aio_pika.abc.AbstractQueue,
    user: str,
    protocol: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The right password (in the URL, or as auth params) reads; a wrong one is a
    non-transient ScalerQueryError; no password appears in any exception, repr or log line."""
    caplog.set_level("DEBUG")
    await publish(channel, queue.name, 2)
    good_url = hosts(rabbitmq, user=user)[protocol]
    bare = hosts(rabbitmq)[protocol].replace(f"{RabbitMQ.USER}:{RabbitMQ.PASSWORD}@", "")
    in_url = make(good_url, connections, {"queueName": queue.name})
    as_params = make(
        bare, connections, {"queueName": queue.name}, {"username": user, "password": PASSWORD}
    )
    texts = []
    for scaler in (in_url, as_params):
        try:
            await settled(scaler, value_is(2))
        finally:
            await scaler.aclose()
        texts += [repr(scaler), repr(scaler.config), str(scaler.endpoint)]

    wrong = PASSWORD + "-wrong"
    for bad in (
        make(good_url.replace(QUOTED, _q(wrong)), connections, {"queueName": queue.name}),
        make(bare, connections, {"queueName": queue.name}, {"username": user, "password": wrong}),
    ):
        with pytest.raises(ScalerError) as info:
            await sample_once(bad)
        assert isinstance(info.value, ScalerQueryError)
        assert not info.value.transient
        assert "authentication failed" in str(info.value)
        texts += [all_text(info.value), repr(bad), repr(bad.config)]
    text = "".join(texts) + caplog.text
    assert "s3cret" not in text  # neither the right password nor the wrong one, in any form
    assert QUOTED not in text
    assert base64.b64encode(f"{user}:{PASSWORD}".encode()).decode() not in text


async def test_closing_is_idempotent_and_releases_the_connection(
    rabbitmq: RabbitMQ,
    connections: SharedClients,
    queue: aio_pika.abc.AbstractQueue,
) -> None:
    """aclose() twice is harmless; a closed scaler leases again on its next poll."""
    scaler = make(hosts(rabbitmq)["amqp"], connections, {"queueName": queue.name})
    await scaler.sample()
    await scaler.aclose()
    await scaler.aclose()
    assert len(connections) == 0
    assert (await scaler.sample()).value == 0.0
    assert len(connections) == 1
    await scaler.aclose()


# ---------------------------------------------------------------------------------------------
# TLS: amqps:// and https:// with a client certificate, and SASL EXTERNAL


class TLSBroker:
    """A RabbitMQ of this module's own that speaks TLS only: AMQPS and the management API over
    HTTPS, client certificates verified when sent, SASL EXTERNAL offered (the user name is the
    certificate's common name)."""

    CLIENT = "scaler-client"  # the client certificate's common name, and a broker user

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        ca = TinyCA("rabbitmq-test-ca")
        ca_file, _ = ca.write(workdir, "ca")
        server = ca.issue(LOOPBACK, hosts=(LOOPBACK,), server=True)
        cert_file, key_file = server.write(workdir, "server")
        client = ca.issue(self.CLIENT, client=True)
        self.material = {
            "ca": ca.cert_pem.decode(),
            "cert": client.cert_pem.decode(),
            "key": client.key_pem.decode(),
        }
        self.amqps_port, self.https_port, epmd_port = free_port(), free_port(), free_port()
        tls_files = [
            f"cacertfile = {ca_file}",
            f"certfile = {cert_file}",
            f"keyfile = {key_file}",
        ]
        (workdir / "rabbitmq.conf").write_text(
            "\n".join(
                [
                    "listeners.tcp = none",
                    f"listeners.ssl.default = {LOOPBACK}:{self.amqps_port}",
                    *(f"ssl_options.{line}" for line in tls_files),
                    "ssl_options.verify = verify_peer",
                    "ssl_options.fail_if_no_peer_cert = false",
                    "auth_mechanisms.1 = PLAIN",
                    "auth_mechanisms.2 = EXTERNAL",
                    "ssl_cert_login_from = common_name",
                    f"management.ssl.port = {self.https_port}",
                    f"management.ssl.ip = {LOOPBACK}",
                    *(f"management.ssl.{line}" for line in tls_files),
                    "collect_statistics_interval = 1000",
                    "log.console = true",
                    "log.console.level = warning",
                    "log.file = false",
                    "",
                ]
            )
        )
        (workdir / "enabled_plugins").write_text(
            "[rabbitmq_management,rabbitmq_auth_mechanism_ssl].\n"
        )
        (workdir / "rabbitmq-env.conf").write_text("")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(workdir),
            "LANG": "C.UTF-8",
            "ERL_EPMD_PORT": str(epmd_port),
            "ERL_EPMD_ADDRESS": LOOPBACK,
            "RABBITMQ_NODENAME": f"tls{self.amqps_port}@localhost",
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_CONFIG_FILE": str(workdir / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(workdir / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(workdir / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(workdir / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(workdir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(workdir / "log"),
            "RABBITMQ_PID_FILE": str(workdir / "rabbitmq.pid"),
        }
        self.epmd = ManagedProcess(
            "epmd",
            ["epmd", "-port", str(epmd_port), "-address", LOOPBACK],
            log_path=workdir / "epmd.log",
        )
        self.process = ManagedProcess(
            "rabbitmq-server",
            [versions.DEBIAN["rabbitmq"][0]],
            log_path=workdir / "rabbitmq.log",
            env=env,
            cwd=workdir,
        )
        self.trust = ssl.create_default_context(cadata=self.material["ca"])
        token = base64.b64encode(f"{RabbitMQ.USER}:{RabbitMQ.PASSWORD}".encode()).decode()
        self.admin_headers = {"Authorization": f"Basic {token}"}
        wait_until(
            self.process,
            lambda: (
                port_open(self.amqps_port)
                and http_ok(
                    f"https://{LOOPBACK}:{self.https_port}/api/overview",
                    context=self.trust,
                    headers=self.admin_headers,
                )
            ),
            timeout=120,
            what="serving AMQPS and the management API over HTTPS",
            interval=0.5,
        )

    def stop(self) -> None:
        self.process.stop(timeout=30)
        self.epmd.stop()


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory, rabbitmq: RabbitMQ) -> Iterator[TLSBroker]:
    """Started after the bench's RabbitMQ (which checks that RabbitMQ is installed)."""
    broker = TLSBroker(tmp_path_factory.mktemp("tls-rabbitmq"))
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="module")
async def tls_queue(tls_broker: TLSBroker) -> str:
    """A queue holding 4 messages on the TLS broker, and a user for the client certificate's
    common name (SASL EXTERNAL logs in as it)."""
    base = f"https://{LOOPBACK}:{tls_broker.https_port}"
    async with aiohttp.ClientSession(headers=tls_broker.admin_headers) as session:
        user = {"password": "unused-by-external", "tags": "management"}
        everything = {"configure": ".*", "write": ".*", "read": ".*"}
        for path, body in (
            (f"/api/users/{TLSBroker.CLIENT}", user),
            (f"/api/permissions/%2F/{TLSBroker.CLIENT}", everything),
        ):
            async with session.put(base + path, json=body, ssl=tls_broker.trust) as response:
                assert response.status < 300, await response.text()
    connection = await aio_pika.connect(
        f"amqps://guest:guest@{LOOPBACK}:{tls_broker.amqps_port}/", ssl_context=tls_broker.trust
    )
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue("tls-jobs", auto_delete=False)
        await publish(channel, "tls-jobs", 4)
    return "tls-jobs"


async def test_tls_with_ca_and_client_certificate(
    tls_broker: TLSBroker, tls_queue: str, connections: SharedClients
) -> None:
    """amqps:// and https:// with `tls: enable` and ca, cert and key: both read the queue;
    the AMQP connection logs in with the password in the URL."""
    amqps = f"amqps://guest:guest@{LOOPBACK}:{tls_broker.amqps_port}/"
    https = f"https://guest:guest@{LOOPBACK}:{tls_broker.https_port}/"
    for host in (amqps, https):
        scaler = make(
            host, connections, {"queueName": tls_queue}, {"tls": "enable", **tls_broker.material}
        )
        try:
            await settled(scaler, value_is(4))
        finally:
            await scaler.aclose()


async def test_tls_sasl_external_logs_in_with_the_certificate(
    tls_broker: TLSBroker, tls_queue: str, connections: SharedClients
) -> None:
    """No user name or password anywhere, a client certificate: SASL EXTERNAL, as KEDA 2.20;
    the broker sees the certificate's common name as the user."""
    amqps = f"amqps://{LOOPBACK}:{tls_broker.amqps_port}/"
    scaler = make(
        amqps, connections, {"queueName": tls_queue}, {"tls": "enable", **tls_broker.material}
    )

    async def external_login() -> bool:
        url = f"https://{LOOPBACK}:{tls_broker.https_port}/api/connections"
        async with (
            aiohttp.ClientSession(headers=tls_broker.admin_headers) as session,
            session.get(url, ssl=tls_broker.trust) as response,
        ):
            listed = await response.json()
        return any(
            (c.get("user"), c.get("auth_mechanism")) == (TLSBroker.CLIENT, "EXTERNAL")
            for c in listed
        )

    try:
        assert (await scaler.sample()).value == 4.0
        assert scaler.endpoint.username is None
        await eventually(external_login)
    finally:
        await scaler.aclose()


@pytest.mark.parametrize("scheme", ["amqps", "https"])
async def test_tls_server_verification(
    tls_broker: TLSBroker, tls_queue: str, connections: SharedClients, scheme: str
) -> None:
    """Without the CA the server is not trusted (unavailable, never a hang); unsafeSsl skips
    the check."""
    port = tls_broker.amqps_port if scheme == "amqps" else tls_broker.https_port
    host = f"{scheme}://guest:guest@{LOOPBACK}:{port}/"
    untrusted = make(host, connections, {"queueName": tls_queue})
    with pytest.raises(
        ScalerUnavailableError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify"
    ):
        await sample_once(untrusted)
    unsafe = make(host, connections, {"queueName": tls_queue, "unsafeSsl": "true"})
    try:
        await settled(unsafe, value_is(4))
    finally:
        await unsafe.aclose()
