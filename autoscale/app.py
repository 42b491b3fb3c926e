"""Wiring: the Kubernetes client, the controller (under leader election if asked), the metrics
and health servers, and a clean shutdown on SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal

from autoscale import __version__, kube
from autoscale.auth import AuthResolver
from autoscale.controller import Controller
from autoscale.health import serve_health, serve_metrics
from autoscale.leader import LeaderElector
from autoscale.metrics import Metrics
from autoscale.scalers.connections import SharedClients
from autoscale.scalers.registry import default_registry
from autoscale.settings import Settings
from autoscale.sharding import ShardManager
from autoscale.triggers import TriggerScalers

log = logging.getLogger(__name__)


async def run(settings: Settings) -> int:
    """Run the operator until SIGTERM/SIGINT; the exit code is 0 unless it failed."""
    api = await kube.connect(settings.kubeconfig)
    client = kube.Kube(api)
    metrics = Metrics()
    connections = SharedClients()
    registry = default_registry()
    for problem in registry.problems():
        log.error("scaler plugin: %s", problem)
    references = kube.ObjectCache(client)
    replica_cache = kube.ReplicaCache(client)
    scalers = TriggerScalers(
        registry=registry,
        connections=connections,
        auth=AuthResolver(client, references, operator_namespace=settings.operator_namespace),
    )
    current: list[Controller] = []

    async def lead() -> None:
        """One leadership term (or the whole run without election): a fresh controller."""
        controller = Controller(
            kube=client,
            scalers=scalers,
            namespaces=settings.namespaces,
            observer=metrics,
            poll_timeout=settings.poll_timeout,
            replica_cache=replica_cache,
            shard_count=settings.shards,
        )
        current[:] = [controller]
        freezer = asyncio.create_task(_freeze_after_sync(controller), name="gc freeze")
        try:
            if settings.shards:
                await _run_sharded(controller, api, settings, metrics)
            else:
                await controller.run()
        finally:
            freezer.cancel()
            current.clear()

    elector: LeaderElector | None = None
    if settings.leader_elect:
        elector = LeaderElector(
            api_client=api,
            namespace=settings.lease_namespace,
            name=settings.lease_name,
            identity=settings.identity,
            lease_duration=settings.lease_duration,
            renew_deadline=settings.renew_deadline,
            retry_period=settings.retry_period,
        )
        metrics.track_leader(lambda: elector is not None and elector.is_leader)
    else:
        metrics.set_leader(True)

    def ready() -> bool:
        if current:
            return current[0].synced.is_set()
        return elector is not None  # a standby is ready to take over

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log.info(
        "autoscale %s starting (namespaces: %s, leader election: %s)",
        __version__,
        ", ".join(settings.namespaces) or "all",
        "on" if elector else "off",
    )
    exit_code = 0
    try:
        async with (
            serve_metrics(metrics, host=settings.metrics_host, port=settings.metrics_port),
            serve_health(
                host=settings.metrics_host,
                port=settings.health_port,
                live=lambda: True,
                ready=ready,
            ),
        ):
            work = asyncio.create_task(elector.run(lead) if elector else lead(), name="operator")
            sweeper = asyncio.create_task(_sweep(references), name="reference sweeper")
            counter = asyncio.create_task(_count_tasks(metrics), name="task counter")
            stopping = asyncio.create_task(stop.wait(), name="signals")
            done, _ = await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if work in done:
                stopping.cancel()
                if work.exception() is not None:
                    log.error("the operator stopped: %r", work.exception())
                    exit_code = 1
            else:
                log.info("stopping: signal received")
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
            sweeper.cancel()
            counter.cancel()
    finally:
        await references.aclose()
        await replica_cache.aclose()
        await connections.aclose()
        await client.close()
    log.info("stopped")
    return exit_code


async def _count_tasks(metrics: Metrics, every: float = 5.0) -> None:
    """Keep `autoscale_asyncio_tasks` current: one loop per ScaledObject plus a fixed few, so
    a count that only grows is a leak."""
    while True:
        metrics.set_tasks(len(asyncio.all_tasks()))
        await asyncio.sleep(every)


async def _sweep(references: kube.ObjectCache) -> None:
    """Forget watched Secrets, ConfigMaps and TriggerAuthentications nobody reads any more."""
    while True:
        await asyncio.sleep(60)
        references.sweep()


async def _run_sharded(
    controller: Controller, api: object, settings: Settings, metrics: Metrics
) -> None:
    """`--shards K`: the controller watches everything and polls the shards the manager holds."""
    manager = ShardManager(
        api_client=api,
        namespace=settings.lease_namespace,
        name=settings.lease_name,
        identity=settings.identity,
        shards=settings.shards,
        on_change=controller.set_shards,
        lease_duration=settings.lease_duration,
        renew_deadline=settings.renew_deadline,
        retry_period=settings.retry_period,
    )
    metrics.track_leader(lambda: bool(manager.held))
    log.info("sharded: %s takes its share of %d shards", settings.identity, settings.shards)
    async with asyncio.TaskGroup() as group:
        group.create_task(controller.run(), name="controller")
        group.create_task(manager.run(), name="shards")


async def _freeze_after_sync(controller: Controller, settle: float = 60.0) -> None:
    """Move what start-up built (objects, loops, caches, scalers) out of the garbage
    collector's sight once the controller has synced and the first polls are done: at 10,000
    ScaledObjects a full collection walks millions of long-lived objects and holds the GIL for
    a few hundred milliseconds, which a /metrics render on its thread triggers repeatedly."""
    await controller.synced.wait()
    await asyncio.sleep(settle)
    gc.freeze()
