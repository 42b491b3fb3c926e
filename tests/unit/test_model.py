"""model.py: KEDA manifests parse, defaults apply, and every bad spec names its field."""

from __future__ import annotations

import ast
import copy
import pickle
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from autoscale import model
from autoscale.errors import ConfigError
from autoscale.model import (
    AuthenticationKind,
    FallbackBehavior,
    FrozenMap,
    IdentityOwner,
    InvalidSpecError,
    MetricTargetType,
    PodIdentityProvider,
    parse_scaled_object,
    parse_trigger_authentication,
)

# --------------------------------------------------------------------------------------------
# KEDA example manifests (keda-parity §1, §3, §4 and the KEDA ScaledObject reference), as dicts
# --------------------------------------------------------------------------------------------


def _so(spec: dict[str, Any], api_version: str = "keda.sh/v1alpha1", **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": api_version,
        "kind": "ScaledObject",
        "metadata": {"name": "orders", "namespace": "shop", **meta},
        "spec": spec,
    }


KAFKA_MINIMAL = _so(
    {
        "scaleTargetRef": {"name": "consumer"},
        "triggers": [
            {
                "type": "kafka",
                "metadata": {
                    "bootstrapServers": "kafka.svc:9092",
                    "consumerGroup": "orders",
                    "topic": "orders",
                    "lagThreshold": "50",
                },
            }
        ],
    }
)

FULL_REFERENCE = _so(
    {
        "scaleTargetRef": {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "name": "worker",
            "envSourceContainerName": "main",
        },
        "pollingInterval": 15,
        "cooldownPeriod": 120,
        "initialCooldownPeriod": 60,
        "idleReplicaCount": 0,
        "minReplicaCount": 1,
        "maxReplicaCount": 20,
        "fallback": {"failureThreshold": 3, "replicas": 6, "behavior": "currentReplicasIfHigher"},
        "advanced": {
            "restoreToOriginalReplicaCount": True,
            "horizontalPodAutoscalerConfig": {
                "name": "keda-hpa-worker",
                "behavior": {
                    "scaleDown": {
                        "stabilizationWindowSeconds": 300,
                        "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
                    },
                    "scaleUp": {
                        "stabilizationWindowSeconds": 0,
                        "selectPolicy": "Max",
                        "policies": [
                            {"type": "Pods", "value": 4, "periodSeconds": 15},
                            {"type": "Percent", "value": 100, "periodSeconds": 15},
                        ],
                        "tolerance": "0.05",
                    },
                },
            },
        },
        "triggers": [
            {
                "type": "rabbitmq",
                "name": "jobs",
                "metadata": {"queueName": "jobs", "mode": "QueueLength", "value": "20"},
                "authenticationRef": {"name": "rabbitmq-auth"},
                "metricType": "AverageValue",
                "useCachedMetrics": True,
            },
            {
                "type": "aws-sqs-queue",
                "metadata": {"queueURL": "orders", "awsRegion": "eu-west-1", "queueLength": "5"},
                "authenticationRef": {"name": "aws", "kind": "ClusterTriggerAuthentication"},
            },
        ],
    },
    uid="0b7e5f5c-7a4e-4d0b-9d55-1c1f6b8a0001",
    generation=3,
    resourceVersion="4242",
    creationTimestamp="2026-01-02T03:04:05Z",
    annotations={"autoscaling.keda.sh/paused-replicas": "2"},
    labels={"app": "worker"},
    finalizers=["finalizer.autoscale.dev"],
)

SCALING_MODIFIERS = _so(
    {
        "scaleTargetRef": {"name": "api"},
        "minReplicaCount": 1,
        "maxReplicaCount": 30,
        "advanced": {
            "scalingModifiers": {
                "formula": "(kafka + sqs) / 2",
                "target": "50",
                "activationTarget": "10",
                "metricType": "AverageValue",
            }
        },
        "triggers": [
            {"type": "kafka", "name": "kafka", "metadata": {"topic": "a"}},
            {"type": "aws-sqs-queue", "name": "sqs", "metadata": {"queueURL": "b"}},
            {"type": "cpu", "metricType": "Utilization", "metadata": {"value": "60"}},
        ],
    }
)

FALLBACK_VIA_FORMULA = _so(
    {
        "scaleTargetRef": {"name": "api"},
        "advanced": {
            "scalingModifiers": {"formula": "best ?? backup ?? 8", "target": "2"},
        },
        "fallback": {"failureThreshold": 3, "replicas": 10, "behavior": "scalingModifiers"},
        "triggers": [
            {"type": "prometheus", "name": "best", "metadata": {"query": "up"}},
            {"type": "prometheus", "name": "backup", "metadata": {"query": "up"}},
        ],
    }
)

PROMETHEUS_VALUE_FALLBACK = _so(
    {
        "scaleTargetRef": {"name": "web"},
        "minReplicaCount": 2,
        "fallback": {"failureThreshold": 4, "replicas": 2},
        "triggers": [
            {"type": "cpu", "metricType": "Utilization", "metadata": {"value": "70"}},
            {
                "type": "prometheus",
                "metricType": "Value",
                "metadata": {
                    "serverAddress": "http://prometheus:9090",
                    "query": "sum(rate(http_requests_total[2m]))",
                    "threshold": "100",
                    "ignoreNullValues": "false",
                },
            },
        ],
    }
)

CPU_ONLY = _so(
    {
        "scaleTargetRef": {"name": "web"},
        "minReplicaCount": 1,
        "triggers": [{"type": "cpu", "metadata": {"type": "Utilization", "value": "60"}}],
    }
)

REDIS_STREAMS_OURS = _so(
    {
        "scaleTargetRef": {"name": "events", "kind": "Deployment"},
        "triggers": [
            {
                "type": "redis-streams",
                "metadata": {"address": "redis:6379", "stream": "events", "consumerGroup": "g"},
            }
        ],
    },
    api_version="autoscale.dev/v1alpha1",
)


@pytest.mark.parametrize(
    "manifest",
    [
        pytest.param(KAFKA_MINIMAL, id="kafka-minimal"),
        pytest.param(FULL_REFERENCE, id="full-reference"),
        pytest.param(SCALING_MODIFIERS, id="scaling-modifiers"),
        pytest.param(FALLBACK_VIA_FORMULA, id="fallback-scalingModifiers"),
        pytest.param(PROMETHEUS_VALUE_FALLBACK, id="prometheus-value-fallback"),
        pytest.param(CPU_ONLY, id="cpu-only-min-1"),
        pytest.param(REDIS_STREAMS_OURS, id="autoscale-dev-group"),
    ],
)
def test_keda_examples_parse(manifest: dict[str, Any]) -> None:
    """Every KEDA example manifest parses, under either API group, and hashes."""
    for api_version in ("keda.sh/v1alpha1", "autoscale.dev/v1alpha1"):
        obj = parse_scaled_object({**manifest, "apiVersion": api_version})
        assert obj.api_version == api_version
        assert obj.is_keda == (api_version == "keda.sh/v1alpha1")
        assert hash(obj) == hash(parse_scaled_object({**manifest, "apiVersion": api_version}))


def test_full_reference_fields() -> None:
    """Every field of the full example lands in its snake_case attribute."""
    obj = parse_scaled_object(FULL_REFERENCE)
    meta = obj.metadata
    assert (meta.name, meta.namespace, obj.key) == ("orders", "shop", "shop/orders")
    assert meta.uid == "0b7e5f5c-7a4e-4d0b-9d55-1c1f6b8a0001"
    assert meta.generation == 3
    assert meta.resource_version == "4242"
    assert meta.creation_timestamp == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert meta.deletion_timestamp is None
    assert meta.annotations == {"autoscaling.keda.sh/paused-replicas": "2"}
    assert meta.labels == {"app": "worker"}
    assert meta.finalizers == ("finalizer.autoscale.dev",)

    spec = obj.spec
    target = spec.scale_target_ref
    assert (target.api_version, target.kind, target.name) == ("apps/v1", "StatefulSet", "worker")
    assert (target.group, target.version) == ("apps", "v1")
    assert target.env_source_container_name == "main"
    assert (spec.polling_interval, spec.cooldown_period, spec.initial_cooldown_period) == (
        15,
        120,
        60,
    )
    assert (spec.idle_replica_count, spec.min_replica_count, spec.max_replica_count) == (0, 1, 20)
    assert spec.fallback == model.Fallback(
        failure_threshold=3, replicas=6, behavior=FallbackBehavior.CURRENT_REPLICAS_IF_HIGHER
    )
    assert spec.advanced.restore_to_original_replica_count is True
    hpa = spec.advanced.horizontal_pod_autoscaler_config
    assert hpa is not None
    assert hpa.name == "keda-hpa-worker"
    assert spec.advanced.behavior is hpa.behavior
    assert spec.advanced.behavior is not None
    assert spec.advanced.behavior["scaleUp"]["policies"][1] == {
        "type": "Percent",
        "value": 100,
        "periodSeconds": 15,
    }
    assert not spec.uses_scaling_modifiers

    jobs, sqs = spec.triggers
    assert (jobs.index, jobs.type, jobs.name) == (0, "rabbitmq", "jobs")
    assert jobs.metadata == {"queueName": "jobs", "mode": "QueueLength", "value": "20"}
    assert jobs.authentication_ref == model.AuthenticationRef(name="rabbitmq-auth")
    assert jobs.metric_type is MetricTargetType.AVERAGE_VALUE
    assert jobs.use_cached_metrics is True
    assert (sqs.index, sqs.name, sqs.metric_type) == (1, None, None)
    assert sqs.effective_metric_type is MetricTargetType.AVERAGE_VALUE
    assert sqs.authentication_ref is not None
    assert sqs.authentication_ref.kind is AuthenticationKind.CLUSTER_TRIGGER_AUTHENTICATION


def test_scaling_modifiers_are_kept_raw() -> None:
    """scalingModifiers reach formula.py as written, frozen."""
    spec = parse_scaled_object(SCALING_MODIFIERS).spec
    assert spec.uses_scaling_modifiers
    assert spec.advanced.scaling_modifiers == {
        "formula": "(kafka + sqs) / 2",
        "target": "50",
        "activationTarget": "10",
        "metricType": "AverageValue",
    }
    cpu = spec.triggers[2]
    assert cpu.is_resource_metric
    assert cpu.effective_metric_type is MetricTargetType.UTILIZATION


def test_empty_scaling_modifiers_mean_not_in_use() -> None:
    """An empty scalingModifiers object is not in use, as in KEDA."""
    manifest = copy.deepcopy(KAFKA_MINIMAL)
    manifest["spec"]["advanced"] = {"scalingModifiers": {"formula": "", "target": ""}}
    assert not parse_scaled_object(manifest).spec.uses_scaling_modifiers


def test_resource_trigger_legacy_metadata_type() -> None:
    """A cpu trigger without metricType takes its type from metadata.type."""
    trigger = parse_scaled_object(CPU_ONLY).spec.triggers[0]
    assert trigger.metric_type is None
    assert trigger.effective_metric_type is MetricTargetType.UTILIZATION


def test_status_is_kept_frozen() -> None:
    """status (engine state included) is carried along, frozen and hashable."""
    manifest = {
        **KAFKA_MINIMAL,
        "status": {"lastActiveTime": "2026-01-01T00:00:00Z", "engine": {"windows": [[1, 2]]}},
    }
    obj = parse_scaled_object(manifest)
    assert obj.status["engine"] == {"windows": ((1, 2),)}
    assert isinstance(obj.status["engine"], FrozenMap)
    hash(obj)


# --------------------------------------------------------------------------------------------
# Defaults
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attribute", "expected"),
    [
        pytest.param(lambda s: s.polling_interval, 30, id="pollingInterval"),
        pytest.param(lambda s: s.cooldown_period, 300, id="cooldownPeriod"),
        pytest.param(lambda s: s.initial_cooldown_period, 0, id="initialCooldownPeriod"),
        pytest.param(lambda s: s.idle_replica_count, None, id="idleReplicaCount"),
        pytest.param(lambda s: s.min_replica_count, 0, id="minReplicaCount"),
        pytest.param(lambda s: s.max_replica_count, 100, id="maxReplicaCount"),
        pytest.param(lambda s: s.scale_target_ref.api_version, "apps/v1", id="target-apiVersion"),
        pytest.param(lambda s: s.scale_target_ref.kind, "Deployment", id="target-kind"),
        pytest.param(lambda s: s.scale_target_ref.env_source_container_name, None, id="envSource"),
        pytest.param(lambda s: s.fallback, None, id="fallback"),
        pytest.param(lambda s: s.advanced, model.Advanced(), id="advanced"),
        pytest.param(lambda s: s.triggers[0].name, None, id="trigger-name"),
        pytest.param(lambda s: s.triggers[0].authentication_ref, None, id="authenticationRef"),
        pytest.param(lambda s: s.triggers[0].use_cached_metrics, False, id="useCachedMetrics"),
        pytest.param(
            lambda s: s.triggers[0].effective_metric_type,
            MetricTargetType.AVERAGE_VALUE,
            id="metricType",
        ),
    ],
)
def test_defaults(attribute: Any, expected: object) -> None:
    """A minimal manifest gets KEDA's defaults."""
    assert attribute(parse_scaled_object(KAFKA_MINIMAL).spec) == expected


@pytest.mark.parametrize(
    ("patch", "attribute", "expected"),
    [
        pytest.param(
            {"fallback": {"failureThreshold": 1, "replicas": 2}},
            lambda s: s.fallback.behavior,
            FallbackBehavior.STATIC,
            id="fallback-behavior",
        ),
        pytest.param(
            {"triggers": [{"type": "kafka", "metadata": {}, "authenticationRef": {"name": "a"}}]},
            lambda s: s.triggers[0].authentication_ref.kind,
            AuthenticationKind.TRIGGER_AUTHENTICATION,
            id="authenticationRef-kind",
        ),
        pytest.param(
            {"scaleTargetRef": {"name": "x", "apiVersion": "", "kind": ""}},
            lambda s: (s.scale_target_ref.api_version, s.scale_target_ref.kind),
            ("apps/v1", "Deployment"),
            id="empty-strings-are-unset",
        ),
        pytest.param(
            {"triggers": [{"type": "kafka", "name": "", "metricType": "", "metadata": {}}]},
            lambda s: (s.triggers[0].name, s.triggers[0].metric_type),
            (None, None),
            id="empty-trigger-fields",
        ),
        pytest.param(
            {"scaleTargetRef": {"name": "x", "apiVersion": "v1", "kind": "ReplicationController"}},
            lambda s: (s.scale_target_ref.group, s.scale_target_ref.version),
            ("", "v1"),
            id="core-group",
        ),
    ],
)
def test_nested_defaults(patch: dict[str, Any], attribute: Any, expected: object) -> None:
    """Defaults inside optional objects apply too, and "" counts as unset."""
    manifest = copy.deepcopy(KAFKA_MINIMAL)
    manifest["spec"].update(patch)
    assert attribute(parse_scaled_object(manifest).spec) == expected


def test_metadata_timestamps() -> None:
    """Timestamps parse from strings or YAML datetimes and are UTC-aware."""
    manifest = copy.deepcopy(KAFKA_MINIMAL)
    manifest["metadata"]["creationTimestamp"] = datetime(2026, 5, 1, 12, 0)  # what PyYAML yields
    manifest["metadata"]["deletionTimestamp"] = "2026-05-02T00:00:00+02:00"
    meta = parse_scaled_object(manifest).metadata
    assert meta.creation_timestamp == datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    assert meta.deletion_timestamp == datetime(2026, 5, 1, 22, 0, tzinfo=UTC)


# --------------------------------------------------------------------------------------------
# Errors: one table row per check, with the exact text the user sees
# --------------------------------------------------------------------------------------------


def _bad(patch: dict[str, Any]) -> dict[str, Any]:
    manifest = copy.deepcopy(KAFKA_MINIMAL)
    manifest["spec"].update(patch)
    return manifest


def _kafka(**fields: Any) -> dict[str, Any]:
    return {"type": "kafka", "metadata": {"topic": "t"}, **fields}


BAD_SPECS = [
    pytest.param(
        {**KAFKA_MINIMAL, "apiVersion": "keda.sh/v1beta9"},
        "apiVersion: 'keda.sh/v1beta9' is not autoscale.dev/v1alpha1 or keda.sh/v1alpha1",
        id="apiVersion",
    ),
    pytest.param(
        {**KAFKA_MINIMAL, "kind": "ScaledJob"}, "kind: 'ScaledJob' is not ScaledObject", id="kind"
    ),
    pytest.param(
        {**KAFKA_MINIMAL, "metadata": {"namespace": "shop"}}, "metadata.name: required", id="name"
    ),
    pytest.param(
        {**KAFKA_MINIMAL, "metadata": {"name": "x"}}, "metadata.namespace: required", id="ns"
    ),
    pytest.param(
        {**KAFKA_MINIMAL, "metadata": {"name": "x" * 64, "namespace": "shop"}},
        "metadata.name: must be at most 63 characters",
        id="name-too-long",
    ),
    pytest.param(
        {**KAFKA_MINIMAL, "metadata": {"name": "x", "namespace": "s", "annotations": {"a": 1}}},
        "metadata.annotations.a: must be a string, not an integer",
        id="annotation-not-string",
    ),
    pytest.param({**KAFKA_MINIMAL, "spec": None}, "spec: required", id="spec"),
    pytest.param(
        {**KAFKA_MINIMAL, "spec": []}, "spec: must be an object, not a list", id="spec-list"
    ),
    pytest.param(_bad({"scaleTargetRef": None}), "spec.scaleTargetRef: required", id="target"),
    pytest.param(
        _bad({"scaleTargetRef": {"kind": "Deployment"}}),
        "spec.scaleTargetRef.name: required",
        id="target-name",
    ),
    pytest.param(
        _bad({"scaleTargetRef": {"name": 7}}),
        "spec.scaleTargetRef.name: must be a string, not an integer",
        id="target-name-type",
    ),
    pytest.param(
        _bad({"pollingInterval": 0}),
        "spec.pollingInterval: must be at least 1, not 0",
        id="pollingInterval-min",
    ),
    pytest.param(
        _bad({"pollingInterval": "30"}),
        "spec.pollingInterval: must be an integer, not a string",
        id="pollingInterval-type",
    ),
    pytest.param(
        _bad({"cooldownPeriod": True}),
        "spec.cooldownPeriod: must be an integer, not a boolean",
        id="cooldownPeriod-bool",
    ),
    pytest.param(
        _bad({"cooldownPeriod": -1}),
        "spec.cooldownPeriod: must be at least 0, not -1",
        id="cooldownPeriod-min",
    ),
    pytest.param(
        _bad({"initialCooldownPeriod": -5}),
        "spec.initialCooldownPeriod: must be at least 0, not -5",
        id="initialCooldownPeriod-min",
    ),
    pytest.param(
        _bad({"maxReplicaCount": 2**31}),
        "spec.maxReplicaCount: must be at most 2147483647, not 2147483648",
        id="int32",
    ),
    pytest.param(
        _bad({"maxReplicaCount": 0}),
        "spec.maxReplicaCount: must be at least 1, not 0",
        id="max-min",
    ),
    pytest.param(
        _bad({"minReplicaCount": -1}),
        "spec.minReplicaCount: must be at least 0, not -1",
        id="min-negative",
    ),
    pytest.param(
        _bad({"minReplicaCount": 5, "maxReplicaCount": 3}),
        "spec.minReplicaCount: minReplicaCount (5) must be less than or equal to "
        "maxReplicaCount (3)",
        id="min-above-max",
    ),
    pytest.param(
        _bad({"minReplicaCount": 101}),
        "spec.minReplicaCount: minReplicaCount (101) must be less than or equal to "
        "maxReplicaCount (100)",
        id="min-above-default-max",
    ),
    pytest.param(
        _bad({"idleReplicaCount": 0}),
        "spec.idleReplicaCount: idleReplicaCount (0) must be less than minReplicaCount (0)",
        id="idle-equals-default-min",
    ),
    pytest.param(
        _bad({"idleReplicaCount": 3, "minReplicaCount": 2}),
        "spec.idleReplicaCount: idleReplicaCount (3) must be less than minReplicaCount (2): "
        "raise minReplicaCount above it or remove idleReplicaCount",
        id="idle-above-min",
    ),
    pytest.param(_bad({"triggers": None}), "spec.triggers: required", id="triggers"),
    pytest.param(
        _bad({"triggers": []}),
        "spec.triggers: at least one trigger is required",
        id="triggers-empty",
    ),
    pytest.param(
        _bad({"triggers": [_kafka() for _ in range(101)]}),
        "spec.triggers: at most 100 triggers are allowed, not 101",
        id="triggers-max",
    ),
    pytest.param(
        _bad({"triggers": ["kafka"]}),
        "spec.triggers[0]: must be an object, not a string",
        id="trigger-not-object",
    ),
    pytest.param(
        _bad({"triggers": [{"metadata": {}}]}), "spec.triggers[0].type: required", id="type"
    ),
    pytest.param(
        _bad({"triggers": [_kafka(), {"type": "kafka"}]}),
        "spec.triggers[1].metadata: required",
        id="metadata",
    ),
    pytest.param(
        _bad({"triggers": [{"type": "kafka", "metadata": {"lagThreshold": 10}}]}),
        "spec.triggers[0].metadata.lagThreshold: must be a string, not an integer "
        "(quote numbers and booleans in YAML)",
        id="metadata-value-type",
    ),
    pytest.param(
        _bad({"triggers": [_kafka(metricType="Average")]}),
        'spec.triggers[0].metricType: "Average" is not one of AverageValue, Value, Utilization',
        id="metricType-enum",
    ),
    pytest.param(
        _bad({"triggers": [_kafka(metricType="Utilization")]}),
        "spec.triggers[0].metricType: metricType Utilization is only valid for cpu and memory "
        "triggers",
        id="utilization-external",
    ),
    pytest.param(
        _bad({"triggers": [_kafka(useCachedMetrics="yes")]}),
        "spec.triggers[0].useCachedMetrics: must be a boolean, not a string",
        id="useCachedMetrics-type",
    ),
    pytest.param(
        _bad(
            {
                "minReplicaCount": 1,
                "triggers": [_kafka(), {"type": "cron", "useCachedMetrics": True, "metadata": {}}],
            }
        ),
        "spec.triggers[1].useCachedMetrics: useCachedMetrics is not supported for cpu, memory "
        "and cron triggers",
        id="useCachedMetrics-cron",
    ),
    pytest.param(
        _bad({"triggers": [_kafka(name="a"), _kafka(name="b"), _kafka(name="a")]}),
        'spec.triggers[2].name: trigger name "a" is also used by spec.triggers[0]; '
        "trigger names must be unique",
        id="duplicate-names",
    ),
    pytest.param(
        _bad({"triggers": [_kafka(authenticationRef={"kind": "TriggerAuthentication"})]}),
        "spec.triggers[0].authenticationRef.name: required",
        id="authRef-name",
    ),
    pytest.param(
        _bad({"triggers": [_kafka(authenticationRef={"name": "a", "kind": "Secret"})]}),
        'spec.triggers[0].authenticationRef.kind: "Secret" is not one of TriggerAuthentication, '
        "ClusterTriggerAuthentication",
        id="authRef-kind",
    ),
    pytest.param(
        _bad({"triggers": [{"type": "memory", "metadata": {"value": "1Gi"}}]}),
        "spec.minReplicaCount: minReplicaCount must be at least 1 when every trigger is cpu or "
        "memory",
        id="resource-only-min-0",
    ),
    pytest.param(
        _bad({"fallback": {"replicas": 2}}),
        "spec.fallback.failureThreshold: required",
        id="fallback-threshold-required",
    ),
    pytest.param(
        _bad({"fallback": {"failureThreshold": -1, "replicas": 2}}),
        "spec.fallback.failureThreshold: must be at least 0, not -1",
        id="fallback-threshold-negative",
    ),
    pytest.param(
        _bad({"fallback": {"failureThreshold": 3, "replicas": -2}}),
        "spec.fallback.replicas: must be at least 0, not -2",
        id="fallback-replicas-negative",
    ),
    pytest.param(
        _bad({"fallback": {"failureThreshold": 3, "replicas": 2, "behavior": "Static"}}),
        'spec.fallback.behavior: "Static" is not one of static, currentReplicas, '
        "currentReplicasIfHigher, currentReplicasIfLower, scalingModifiers",
        id="fallback-behavior-enum",
    ),
    pytest.param(
        _bad(
            {
                "minReplicaCount": 1,
                "fallback": {"failureThreshold": 3, "replicas": 2},
                "triggers": [{"type": "cpu", "metricType": "Utilization", "metadata": {}}],
            }
        ),
        "spec.fallback: fallback needs at least one trigger that is neither cpu nor memory and "
        "whose metricType is AverageValue or Value",
        id="fallback-resource-only",
    ),
    pytest.param(
        _bad({"fallback": {"failureThreshold": 3, "replicas": 2, "behavior": "scalingModifiers"}}),
        "spec.fallback.behavior: fallback.behavior scalingModifiers needs "
        "advanced.scalingModifiers.formula",
        id="fallback-scalingModifiers-without-formula",
    ),
    pytest.param(
        _bad({"advanced": {"scalingModifiers": {"target": "2"}}}),
        "spec.advanced.scalingModifiers.formula: scalingModifiers.formula is required when any "
        "other scalingModifiers field is set",
        id="modifiers-without-formula",
    ),
    pytest.param(
        _bad({"triggers": [_kafka(name="k")], "advanced": {"scalingModifiers": {"formula": "k"}}}),
        "spec.advanced.scalingModifiers.target: scalingModifiers.target is required when formula "
        "is set",
        id="formula-without-target",
    ),
    pytest.param(
        _bad(
            {
                "triggers": [_kafka(name="k")],
                "advanced": {"scalingModifiers": {"formula": "k", "target": "-1"}},
            }
        ),
        "spec.advanced.scalingModifiers.target: scalingModifiers.target must be a number greater "
        "than 0",
        id="target-negative",
    ),
    pytest.param(
        _bad(
            {
                "triggers": [_kafka(name="k")],
                "advanced": {"scalingModifiers": {"formula": "k", "target": "ten"}},
            }
        ),
        "spec.advanced.scalingModifiers.target: scalingModifiers.target must be a number greater "
        "than 0",
        id="target-not-number",
    ),
    pytest.param(
        _bad(
            {
                "triggers": [_kafka(name="k")],
                "advanced": {
                    "scalingModifiers": {"formula": "k", "target": "1", "activationTarget": "x"}
                },
            }
        ),
        "spec.advanced.scalingModifiers.activationTarget: scalingModifiers.activationTarget must "
        "be a number",
        id="activationTarget",
    ),
    pytest.param(
        _bad(
            {
                "triggers": [_kafka(name="k")],
                "advanced": {
                    "scalingModifiers": {"formula": "k", "target": "1", "metricType": "Utilization"}
                },
            }
        ),
        'spec.advanced.scalingModifiers.metricType: "Utilization" is not one of AverageValue, '
        "Value",
        id="modifiers-metricType",
    ),
    pytest.param(
        _bad({"advanced": {"scalingModifiers": {"formula": "a + b", "target": "1"}}}),
        "spec.advanced.scalingModifiers.formula: advanced.scalingModifiers.formula refers to "
        "triggers by name, but no trigger other than cpu or memory has a name",
        id="formula-without-named-trigger",
    ),
    pytest.param(
        _bad({"advanced": {"horizontalPodAutoscalerConfig": {"name": "h" * 64}}}),
        "spec.advanced.horizontalPodAutoscalerConfig.name: must be at most 63 characters, not 64",
        id="hpa-name",
    ),
    pytest.param(
        _bad({"advanced": {"restoreToOriginalReplicaCount": "true"}}),
        "spec.advanced.restoreToOriginalReplicaCount: must be a boolean, not a string",
        id="restore-type",
    ),
]


@pytest.mark.parametrize(("manifest", "message"), BAD_SPECS)
def test_bad_spec_names_the_field(manifest: dict[str, Any], message: str) -> None:
    """Each bad spec raises a ConfigError whose problems include the exact message."""
    with pytest.raises(ConfigError) as caught:
        parse_scaled_object(manifest)
    assert isinstance(caught.value, InvalidSpecError)
    assert any(problem.startswith(message) for problem in caught.value.problems), (
        caught.value.problems
    )
    assert message in str(caught.value)


def _behavior(**rules: Any) -> dict[str, Any]:
    return _bad({"advanced": {"horizontalPodAutoscalerConfig": {"behavior": rules}}})


BAD_BEHAVIORS = [
    pytest.param(
        _behavior(scaleUp={"stabilizationWindowSeconds": 3601}),
        "scaleUp.stabilizationWindowSeconds: must be at most 3600, not 3601",
        id="window-max",
    ),
    pytest.param(
        _behavior(scaleDown={"stabilizationWindowSeconds": -1}),
        "scaleDown.stabilizationWindowSeconds: must be at least 0, not -1",
        id="window-min",
    ),
    pytest.param(
        _behavior(scaleDown={"selectPolicy": "Maximum"}),
        'scaleDown.selectPolicy: "Maximum" is not one of Max, Min, Disabled',
        id="selectPolicy",
    ),
    pytest.param(
        _behavior(scaleUp={"policies": []}),
        "scaleUp.policies: must hold at least one policy when set",
        id="policies-empty",
    ),
    pytest.param(
        _behavior(scaleUp={"policies": [{"type": "Replicas", "value": 1, "periodSeconds": 1}]}),
        'scaleUp.policies[0].type: "Replicas" is not one of Pods, Percent',
        id="policy-type",
    ),
    pytest.param(
        _behavior(scaleUp={"policies": [{"type": "Pods", "value": 0, "periodSeconds": 1}]}),
        "scaleUp.policies[0].value: must be at least 1, not 0",
        id="policy-value",
    ),
    pytest.param(
        _behavior(scaleUp={"policies": [{"type": "Pods", "value": 1, "periodSeconds": 1801}]}),
        "scaleUp.policies[0].periodSeconds: must be at most 1800, not 1801",
        id="policy-period",
    ),
    pytest.param(
        _behavior(scaleUp={"policies": [{"type": "Pods", "value": 1}]}),
        "scaleUp.policies[0].periodSeconds: required",
        id="policy-period-required",
    ),
    pytest.param(
        _behavior(scaleDown={"tolerance": "ten percent"}),
        'scaleDown.tolerance: "ten percent" is not a quantity such as 0.05 or 50m',
        id="tolerance-format",
    ),
    pytest.param(
        _behavior(scaleDown={"tolerance": "-0.1"}),
        "scaleDown.tolerance: must not be negative",
        id="tolerance-negative",
    ),
]


@pytest.mark.parametrize(("manifest", "message"), BAD_BEHAVIORS)
def test_bad_behavior_names_the_field(manifest: dict[str, Any], message: str) -> None:
    """HPA behavior is checked as autoscaling/v2 checks it, then kept raw."""
    prefix = "spec.advanced.horizontalPodAutoscalerConfig.behavior."
    with pytest.raises(InvalidSpecError) as caught:
        parse_scaled_object(manifest)
    assert prefix + message in caught.value.problems


def test_every_problem_is_reported_at_once() -> None:
    """One ConfigError lists all problems, each with its field path."""
    manifest = _bad(
        {
            "pollingInterval": 0,
            "minReplicaCount": 4,
            "maxReplicaCount": 2,
            "triggers": [_kafka(name="x"), {"type": "kafka", "name": "x"}],
        }
    )
    with pytest.raises(InvalidSpecError) as caught:
        parse_scaled_object(manifest)
    error = caught.value
    assert [problem.split(":")[0] for problem in error.problems] == [
        "spec.pollingInterval",
        "spec.triggers[1].metadata",
        "spec.triggers[1].name",
        "spec.minReplicaCount",
    ]
    assert str(error).startswith("ScaledObject shop/orders is invalid (4 problems): ")


def test_accepts_what_kubernetes_stores() -> None:
    """An object as the apiserver returns it (defaults filled, status set) parses."""
    stored = copy.deepcopy(KAFKA_MINIMAL)
    stored["apiVersion"] = "autoscale.dev/v1alpha1"
    stored["spec"].update(
        pollingInterval=30,
        cooldownPeriod=300,
        initialCooldownPeriod=0,
        minReplicaCount=0,
        maxReplicaCount=100,
    )
    stored["spec"]["scaleTargetRef"].update(apiVersion="apps/v1", kind="Deployment")
    stored["metadata"].update(managedFields=[{"manager": "kubectl"}], generation=1)
    assert parse_scaled_object(stored).spec == parse_scaled_object(KAFKA_MINIMAL).spec


# --------------------------------------------------------------------------------------------
# (Cluster)TriggerAuthentication
# --------------------------------------------------------------------------------------------


def _ta(spec: dict[str, Any], kind: str = "TriggerAuthentication") -> dict[str, Any]:
    metadata = (
        {"name": "auth"} if kind.startswith("Cluster") else {"name": "auth", "namespace": "s"}
    )
    return {"apiVersion": "keda.sh/v1alpha1", "kind": kind, "metadata": metadata, "spec": spec}


TA_FULL = _ta(
    {
        "podIdentity": {"provider": "aws", "roleArn": "arn:aws:iam::1:role/r", "externalID": "x"},
        "secretTargetRef": [{"parameter": "password", "name": "kafka-secrets", "key": "pw"}],
        "configMapTargetRef": [{"parameter": "ca", "name": "kafka-ca", "key": "ca.crt"}],
        "env": [{"parameter": "username", "name": "KAFKA_USER", "containerName": "app"}],
        "hashiCorpVault": {"address": "https://vault:8200", "authentication": "token"},
        "awsSecretManager": {"secrets": [{"parameter": "p", "name": "n"}]},
        "boundServiceAccountToken": [{"parameter": "token", "serviceAccountName": "reader"}],
    }
)


def test_trigger_authentication_parses() -> None:
    """A KEDA TriggerAuthentication with every source parses; unresolved sources stay raw."""
    auth = parse_trigger_authentication(TA_FULL)
    assert auth.kind is AuthenticationKind.TRIGGER_AUTHENTICATION
    assert not auth.is_cluster_scoped
    assert (auth.metadata.name, auth.metadata.namespace) == ("auth", "s")
    spec = auth.spec
    assert spec.pod_identity == model.PodIdentity(
        provider=PodIdentityProvider.AWS, role_arn="arn:aws:iam::1:role/r", external_id="x"
    )
    assert spec.secret_target_refs == (
        model.SecretTargetRef(parameter="password", name="kafka-secrets", key="pw"),
    )
    assert spec.config_map_target_refs == (
        model.ConfigMapTargetRef(parameter="ca", name="kafka-ca", key="ca.crt"),
    )
    assert spec.env == (
        model.EnvTargetRef(parameter="username", name="KAFKA_USER", container_name="app"),
    )
    assert spec.bound_service_account_tokens == (
        model.BoundServiceAccountToken(parameter="token", service_account_name="reader"),
    )
    assert set(spec.unresolved_sources) == {"hashiCorpVault", "awsSecretManager"}
    assert spec.unresolved_sources["awsSecretManager"]["secrets"][0]["name"] == "n"
    hash(auth)


def test_cluster_trigger_authentication_parses() -> None:
    """A ClusterTriggerAuthentication has no namespace and may use filePath."""
    auth = parse_trigger_authentication(
        _ta(
            {"filePath": "kafka/creds.json", "podIdentity": {"provider": "azure-workload"}},
            kind="ClusterTriggerAuthentication",
        )
    )
    assert auth.is_cluster_scoped
    assert auth.metadata.namespace is None
    assert auth.spec.file_path == "kafka/creds.json"
    assert auth.spec.pod_identity is not None
    assert auth.spec.pod_identity.provider is PodIdentityProvider.AZURE_WORKLOAD


def test_pod_identity_owner() -> None:
    """identityOwner parses to its enum."""
    auth = parse_trigger_authentication(
        _ta({"podIdentity": {"provider": "aws", "identityOwner": "workload"}})
    )
    assert auth.spec.pod_identity is not None
    assert auth.spec.pod_identity.identity_owner is IdentityOwner.WORKLOAD


BAD_AUTHS = [
    pytest.param(
        {**_ta({}), "kind": "Secret"},
        "kind: 'Secret' is not TriggerAuthentication or ClusterTriggerAuthentication",
        id="kind",
    ),
    pytest.param({**_ta({}), "spec": None}, "spec: required", id="spec"),
    pytest.param(
        _ta({"filePath": "creds.json"}),
        "spec.filePath: only a ClusterTriggerAuthentication may read parameters from a file",
        id="filePath-namespaced",
    ),
    pytest.param(
        _ta({"secretTargetRef": [{"parameter": "p", "name": "s"}]}),
        "spec.secretTargetRef[0].key: required",
        id="secret-key",
    ),
    pytest.param(
        _ta({"secretTargetRef": {"parameter": "p"}}),
        "spec.secretTargetRef: must be a list, not an object",
        id="secret-not-list",
    ),
    pytest.param(
        _ta({"configMapTargetRef": [{"name": "c", "key": "k"}]}),
        "spec.configMapTargetRef[0].parameter: required",
        id="configmap-parameter",
    ),
    pytest.param(_ta({"env": [{"parameter": "p"}]}), "spec.env[0].name: required", id="env-name"),
    pytest.param(
        _ta({"boundServiceAccountToken": [{"parameter": "p"}]}),
        "spec.boundServiceAccountToken[0].serviceAccountName: required",
        id="bound-token",
    ),
    pytest.param(
        _ta({"podIdentity": {}}), "spec.podIdentity.provider: required", id="provider-required"
    ),
    pytest.param(
        _ta({"podIdentity": {"provider": "azure"}}),
        'spec.podIdentity.provider: "azure" is not one of none, azure-workload, gcp, aws, aws-eks',
        id="provider-enum",
    ),
    pytest.param(
        _ta({"podIdentity": {"provider": "azure-workload", "identityId": ""}}),
        "spec.podIdentity.identityId: podIdentity.identityId must not be empty when set",
        id="azure-empty-identityId",
    ),
    pytest.param(
        _ta({"podIdentity": {"provider": "azure-workload", "identityTenantId": ""}}),
        "spec.podIdentity.identityTenantId: podIdentity.identityTenantId must not be empty "
        "when set",
        id="azure-empty-tenant",
    ),
    pytest.param(
        _ta({"podIdentity": {"provider": "azure-workload", "identityAuthorityHost": "h"}}),
        "spec.podIdentity.identityTenantId: podIdentity.identityAuthorityHost needs "
        "podIdentity.identityTenantId",
        id="azure-authority-without-tenant",
    ),
    pytest.param(
        _ta({"podIdentity": {"provider": "aws", "roleArn": "r", "identityOwner": "workload"}}),
        "spec.podIdentity.roleArn: podIdentity.roleArn cannot be combined with identityOwner "
        "workload",
        id="aws-roleArn-workload",
    ),
    pytest.param(
        _ta({"podIdentity": {"provider": "aws", "externalID": "e"}}),
        "spec.podIdentity.externalID: podIdentity.externalID needs podIdentity.roleArn",
        id="aws-externalID-without-role",
    ),
    pytest.param(
        _ta({"podIdentity": {"provider": "aws", "identityOwner": "operator"}}),
        'spec.podIdentity.identityOwner: "operator" is not one of keda, workload',
        id="identityOwner-enum",
    ),
    pytest.param(
        _ta({"hashiCorpVault": "vault:8200"}),
        "spec.hashiCorpVault: must be an object, not a string",
        id="vault-not-object",
    ),
]


@pytest.mark.parametrize(("manifest", "message"), BAD_AUTHS)
def test_bad_authentication_names_the_field(manifest: dict[str, Any], message: str) -> None:
    """Each bad (Cluster)TriggerAuthentication raises a ConfigError with the exact message."""
    with pytest.raises(InvalidSpecError) as caught:
        parse_trigger_authentication(manifest)
    assert message in caught.value.problems, caught.value.problems


# --------------------------------------------------------------------------------------------
# Values: immutable, hashable, comparable
# --------------------------------------------------------------------------------------------


def test_frozen_map_behaves_like_a_read_only_dict() -> None:
    """FrozenMap compares equal to dicts, hashes by content and cannot be changed."""
    frozen = FrozenMap({"a": "1", "b": "2"})
    assert frozen == {"a": "1", "b": "2"}
    assert frozen == FrozenMap([("b", "2"), ("a", "1")])
    assert hash(frozen) == hash(FrozenMap({"b": "2", "a": "1"}))
    assert list(frozen) == ["a", "b"]
    assert frozen.get("c") is None
    assert frozen.to_dict() == {"a": "1", "b": "2"}
    with pytest.raises(TypeError):
        frozen["a"] = "3"  # type: ignore[index]
    assert frozen != ["a", "b"]


def test_frozen_map_pickles_without_its_cached_hash() -> None:
    """A FrozenMap survives pickling and copying, and hashes afresh afterwards."""
    frozen = FrozenMap({"a": FrozenMap({"b": "1"})})
    hash(frozen)
    for clone in (pickle.loads(pickle.dumps(frozen)), copy.deepcopy(frozen)):
        assert clone == frozen
        assert hash(clone) == hash(frozen)
    assert pickle.loads(pickle.dumps(parse_scaled_object(FULL_REFERENCE))) == (
        parse_scaled_object(FULL_REFERENCE)
    )


def test_freeze_is_deep() -> None:
    """freeze turns nested mappings and lists into FrozenMap and tuples."""
    frozen = model.freeze({"a": [{"b": [1, 2]}], "c": None})
    assert frozen == {"a": ({"b": (1, 2)},), "c": None}
    assert isinstance(frozen["a"][0], FrozenMap)
    hash(frozen)


def test_parsed_values_are_immutable_and_independent_of_the_input() -> None:
    """Changing the input mapping afterwards does not change the parsed object."""
    manifest = copy.deepcopy(FULL_REFERENCE)
    obj = parse_scaled_object(manifest)
    before = hash(obj)
    manifest["spec"]["triggers"][0]["metadata"]["queueName"] = "other"
    manifest["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"].clear()
    assert obj.spec.triggers[0].metadata["queueName"] == "jobs"
    assert hash(obj) == before
    with pytest.raises(AttributeError):
        obj.spec.min_replica_count = 3  # type: ignore[misc]


def test_equal_specs_compare_equal() -> None:
    """Two parses of the same spec are equal, so a loop can tell a real change from a resync."""
    first = parse_scaled_object(FULL_REFERENCE)
    second = parse_scaled_object(copy.deepcopy(FULL_REFERENCE))
    assert first == second
    assert {first, second} == {first}


def test_model_imports_no_io_library() -> None:
    """model.py stays pure: stdlib and autoscale.errors only (house style 5.1)."""
    tree = ast.parse(Path(model.__file__).read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    allowed = {"__future__", "enum", "re", "collections.abc", "dataclasses", "datetime", "typing"}
    assert imported <= allowed | {"autoscale.errors"}, imported - allowed
