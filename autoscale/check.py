"""`autoscale check FILE...`: validate manifests and, unless --offline, poll each trigger once.

For every ScaledObject, TriggerAuthentication and ClusterTriggerAuthentication in the files
(either API group), it reports what the operator would: every problem with the object, the
trigger index and the field; then each trigger's reading (value, target, activation, the
replicas it implies) and the decision the engine would take for the object now.

Exit status: 0 all valid (and polled), 1 a manifest is invalid, 2 a source could not be read.
Auth parameters come from `--auth NAME.PARAM=VALUE` (NAME is the authenticationRef name) and,
when a cluster is reachable, from the TriggerAuthentications and Secrets there. Values are
never printed.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from autoscale import formula, model, replicas
from autoscale.errors import ConfigError, KubeError, ScalerError
from autoscale.loop import COMPOSITE_METRIC, build_policy
from autoscale.scalers.base import MetricSample, Scaler
from autoscale.scalers.connections import SharedClients
from autoscale.scalers.registry import ScalerRegistry, default_registry
from autoscale.triggers import scaler_metric_type

KINDS = ("ScaledObject", "TriggerAuthentication", "ClusterTriggerAuthentication")
API_VERSIONS = (model.API_VERSION, model.KEDA_API_VERSION)
POLL_TIMEOUT = 15.0

EXIT_OK, EXIT_INVALID, EXIT_UNREACHABLE = 0, 1, 2


@dataclass
class TriggerReport:
    index: int
    name: str | None
    type: str
    metric: str | None = None
    value: float | None = None
    target: float | None = None
    activation: float | None = None
    active: bool | None = None
    replicas: int | None = None
    error: str | None = None


@dataclass
class ObjectReport:
    kind: str
    namespace: str | None
    name: str
    source: str
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    triggers: list[TriggerReport] = field(default_factory=list)
    current_replicas: int | None = None
    decision: str | None = None

    @property
    def label(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {where}"


@dataclass
class Options:
    offline: bool = False
    current_replicas: int | None = None
    auth: dict[str, dict[str, str]] = field(default_factory=dict)
    namespace: str = "default"
    kubeconfig: str | None = None
    use_cluster: bool = True


def parse_auth_options(values: Sequence[str]) -> dict[str, dict[str, str]]:
    """`NAME.PARAM=VALUE` options into {NAME: {PARAM: VALUE}}; ValueError on a bad one."""
    auth: dict[str, dict[str, str]] = {}
    for value in values:
        key, sep, item = value.partition("=")
        name, dot, param = key.partition(".")
        if not sep or not dot or not name or not param:
            raise ValueError(f"--auth takes NAME.PARAM=VALUE, got {key!r}=...")
        auth.setdefault(name, {})[param] = item
    return auth


def load_documents(paths: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    """(where, document) for every object of a known kind in the files; `-` is stdin."""
    found: list[tuple[str, dict[str, Any]]] = []
    for path in paths:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
        for number, doc in enumerate(yaml.safe_load_all(text), start=1):
            if isinstance(doc, dict) and doc.get("kind") in KINDS:
                found.append((f"{path}#{number}", doc))
    return found


async def check(
    documents: Sequence[tuple[str, dict[str, Any]]], options: Options
) -> tuple[list[ObjectReport], int]:
    """The reports and the exit status."""
    registry = default_registry()
    cluster = await _Cluster.connect(options) if options.use_cluster else None
    connections = SharedClients()
    reports: list[ObjectReport] = []
    unreachable = False
    try:
        for where, doc in documents:
            report = await _check_one(where, doc, options, registry, connections, cluster)
            reports.append(report)
            unreachable |= any(t.error for t in report.triggers)
    finally:
        await connections.aclose()
        if cluster is not None:
            await cluster.close()
    if any(report.problems for report in reports):
        return reports, EXIT_INVALID
    return reports, EXIT_UNREACHABLE if unreachable else EXIT_OK


async def _check_one(
    where: str,
    doc: dict[str, Any],
    options: Options,
    registry: ScalerRegistry,
    connections: SharedClients,
    cluster: _Cluster | None,
) -> ObjectReport:
    kind = str(doc.get("kind"))
    raw_meta = doc.get("metadata")
    meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
    namespace = meta.get("namespace") or (None if kind.startswith("Cluster") else options.namespace)
    report = ObjectReport(
        kind=kind, namespace=namespace, name=str(meta.get("name", "?")), source=where
    )
    if doc.get("apiVersion") not in API_VERSIONS:
        report.problems.append(
            f"apiVersion: must be {model.API_VERSION} or {model.KEDA_API_VERSION}"
        )
        return report
    body = {**doc, "metadata": {**meta, "namespace": namespace}} if namespace else doc
    if kind != "ScaledObject":
        try:
            model.parse_trigger_authentication(body)
        except ConfigError as exc:
            report.problems.extend(_lines(exc))
        return report
    try:
        so = model.parse_scaled_object(body)
        policy = build_policy(so)
    except ConfigError as exc:
        report.problems.extend(_lines(exc))
        return report
    modifiers = None
    if so.spec.advanced.scaling_modifiers is not None:
        try:
            modifiers = formula.validate_scaling_modifiers(
                so.spec.advanced.scaling_modifiers, [t.name for t in so.spec.triggers]
            )
        except ConfigError as exc:
            report.problems.extend(_lines(exc))
    scalers: list[Scaler | None] = []
    for trigger in so.spec.triggers:
        entry = TriggerReport(index=trigger.index, name=trigger.name, type=trigger.type)
        report.triggers.append(entry)
        try:
            auth = await _auth_params(so, trigger, options, cluster)
            warnings: list[str] = []
            scaler = registry.build_scaler(
                trigger.type,
                trigger_index=trigger.index,
                trigger_name=trigger.name,
                metadata=trigger.metadata,
                auth_params=auth,
                resolved_env={},
                connections=connections,
                metric_type=scaler_metric_type(trigger),
                warnings=warnings,
            )
            report.warnings.extend(warnings)
            entry.metric = getattr(scaler, "metric_name", None)
            scalers.append(scaler)
        except ConfigError as exc:
            report.problems.extend(
                f"spec.triggers[{trigger.index}]: {line}" for line in _lines(exc)
            )
            scalers.append(None)
    if report.problems or options.offline:
        for maybe in scalers:
            if maybe is not None:
                await maybe.aclose()
        return report

    current = options.current_replicas
    if current is None and cluster is not None:
        current = await cluster.current_replicas(so)
    report.current_replicas = current = current or 0
    samples: dict[str, MetricSample | None] = {}
    values: dict[str, float | None] = {}
    for entry, built in zip(report.triggers, scalers, strict=True):
        assert built is not None  # no problems: every trigger built
        scaler = built
        try:
            async with asyncio.timeout(POLL_TIMEOUT):
                sample = await scaler.sample()
        except (ScalerError, TimeoutError) as exc:
            entry.error = "timed out" if isinstance(exc, TimeoutError) else str(exc)
            samples[entry.metric or f"s{entry.index}"] = None
            continue
        finally:
            await scaler.aclose()
        entry.metric = sample.name
        entry.value, entry.target = sample.value, sample.target
        entry.activation = sample.activation_target
        entry.active = sample.value > sample.activation_target
        entry.replicas = replicas.replicas_for(sample, current)
        if sample.replica_cap is not None:
            entry.replicas = min(entry.replicas, sample.replica_cap)
        samples[sample.name] = sample
        if entry.name:
            values[entry.name] = sample.value
    engine_samples: Mapping[str, MetricSample | None] = samples
    if modifiers is not None:
        try:
            composite: MetricSample | None = MetricSample(
                name=COMPOSITE_METRIC,
                value=modifiers.formula.evaluate(values),
                target=modifiers.target,
                activation_target=modifiers.activation_target,
                metric_type=modifiers.metric_type,
            )
        except ScalerError:
            composite = None
        engine_samples = {COMPOSITE_METRIC: composite}
    now = time.time()
    decision, _ = replicas.decide(
        policy,
        replicas.EngineState(),
        replicas.Observation(
            samples=engine_samples,
            current_replicas=current,
            now=now,
            created_at=now - so.spec.initial_cooldown_period - 1,
        ),
    )
    why = f": {decision.message}" if decision.message else ""
    report.decision = f"{current} -> {decision.replicas} ({decision.reason.value}){why}"
    return report


async def _auth_params(
    so: model.ScaledObject, trigger: model.Trigger, options: Options, cluster: _Cluster | None
) -> dict[str, str]:
    params: dict[str, str] = {}
    ref = trigger.authentication_ref
    if ref is None:
        return params
    if cluster is not None:
        params.update(await cluster.auth_params(so, trigger))
    params.update(options.auth.get(ref.name, {}))
    return params


class _Cluster:
    """The cluster, when one is reachable: auth references and current replica counts."""

    def __init__(self, client: Any, resolver: Any, cache: Any) -> None:
        self.client = client
        self.resolver = resolver
        self.cache = cache

    @classmethod
    async def connect(cls, options: Options) -> _Cluster | None:
        from autoscale import kube
        from autoscale.auth import AuthResolver

        try:
            api = await kube.connect(options.kubeconfig)
            client = kube.Kube(api)
            await asyncio.wait_for(client.server_version(), timeout=5)
        except Exception:  # no cluster: auth must come from --auth
            return None
        cache = kube.ObjectCache(client)
        return cls(client, AuthResolver(client, cache, operator_namespace=options.namespace), cache)

    async def auth_params(self, so: model.ScaledObject, trigger: model.Trigger) -> dict[str, str]:
        try:
            return dict((await self.resolver.resolve(so, trigger)).auth_params)
        except ConfigError:
            return {}  # not in the cluster (yet): --auth may supply it

    async def current_replicas(self, so: model.ScaledObject) -> int | None:
        ref = so.spec.scale_target_ref
        try:
            target = await self.client.resolve_target(ref.api_version, ref.kind)
            scale = await self.client.get_scale(target, so.metadata.namespace or "", ref.name)
        except KubeError:
            return None
        return int(scale.spec_replicas)

    async def close(self) -> None:
        await self.cache.aclose()
        await self.client.close()


def _lines(exc: ConfigError) -> list[str]:
    problems = getattr(exc, "problems", None)
    if problems:
        return [str(p) for p in problems]
    return [line for line in str(exc).splitlines() if line.strip()] or [str(exc)]


# --- output ---------------------------------------------------------------------------------


def render_text(reports: Sequence[ObjectReport], out: TextIO) -> None:
    for report in reports:
        state = "invalid" if report.problems else "valid"
        print(f"{report.label} ({report.source}): {state}", file=out)
        for problem in report.problems:
            print(f"  error: {problem}", file=out)
        for warning in report.warnings:
            print(f"  warning: {warning}", file=out)
        if report.triggers and not report.problems:
            rows = [
                [
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
            ]
            for t in report.triggers:
                rows.append(
                    [
                        str(t.index),
                        t.name or "-",
                        t.type,
                        t.metric or "-",
                        _num(t.value) if t.error is None else "error",
                        _num(t.target),
                        _num(t.activation),
                        "-" if t.active is None else ("yes" if t.active else "no"),
                        "-" if t.replicas is None else str(t.replicas),
                    ]
                )
            widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
            for row in rows:
                print(
                    "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(),
                    file=out,
                )
            for t in report.triggers:
                if t.error:
                    print(f"  trigger[{t.index}] could not be read: {t.error}", file=out)
        if report.decision:
            print(f"  decision: {report.decision}", file=out)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def render_json(reports: Sequence[ObjectReport], out: TextIO) -> None:
    payload = [
        {
            "kind": r.kind,
            "namespace": r.namespace,
            "name": r.name,
            "source": r.source,
            "valid": not r.problems,
            "problems": r.problems,
            "warnings": r.warnings,
            "currentReplicas": r.current_replicas,
            "decision": r.decision,
            "triggers": [t.__dict__ for t in r.triggers],
        }
        for r in reports
    ]
    json.dump(payload, out, indent=2)
    out.write("\n")
