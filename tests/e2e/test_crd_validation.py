"""The CRDs on a real kube-apiserver: KEDA manifests are accepted with defaults filled, and each
invalid spec is rejected at admission with the schema's or the CEL rule's message."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from autoscale import crd_manifests, model

pytestmark = pytest.mark.testbed

CRD_NAMES = [crd["metadata"]["name"] for crd in crd_manifests.load_crds()]


def _dump(manifest: dict[str, Any]) -> str:
    # JSON, not YAML: kubectl reads YAML 1.1, where an unquoted n or y is a boolean.
    return json.dumps(manifest, indent=1)


def _apply(kube: Any, namespace: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """Server-side apply in `namespace` and return the object as stored."""
    kube.kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=_dump(manifest))
    kind = manifest["kind"].lower() + "s.autoscale.dev"
    name = manifest["metadata"]["name"]
    args = ["get", kind, name, "-o", "json"]
    if not manifest["kind"].startswith("Cluster"):
        args += ["-n", namespace]
    stored: dict[str, Any] = json.loads(kube.kubectl(*args).stdout)
    return stored


def _rejection(kube: Any, namespace: str, manifest: dict[str, Any]) -> str:
    """Server-side dry-run create; return the apiserver's error text (the create must fail)."""
    done = kube.kubectl(
        "create", "--dry-run=server", "-n", namespace, "-f", "-", input=_dump(manifest), check=False
    )
    assert done.returncode != 0, f"accepted, expected a rejection:\n{_dump(manifest)}"
    return str(done.stderr)


# --------------------------------------------------------------------------------------------
# The CRDs themselves
# --------------------------------------------------------------------------------------------


def test_crds_are_established(crds: Any) -> None:
    """The apiserver accepts all three CRDs (structural schema, CEL within cost) and serves them."""
    for name in CRD_NAMES:
        crd = json.loads(crds.kubectl("get", "crd", name, "-o", "json").stdout)
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions.get("Established") == "True", (name, crd["status"]["conditions"])
        assert conditions.get("NamesAccepted") == "True", (name, crd["status"]["conditions"])
        assert conditions.get("NonStructuralSchema") in (None, "False"), name
    resources = crds.kubectl("api-resources", "--api-group=autoscale.dev", "-o", "name").stdout
    assert set(resources.split()) == {
        "scaledobjects.autoscale.dev",
        "triggerauthentications.autoscale.dev",
        "clustertriggerauthentications.autoscale.dev",
    }
    category = crds.kubectl("get", "autoscale", "-A", check=False)
    assert category.returncode == 0, category.stderr
    again = crds.kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "--force-conflicts",
        "--field-manager=autoscale-crd-tests",
        "-f",
        "-",
        input=crd_manifests.render_crds(),
    )
    assert "Warning" not in again.stderr, again.stderr


# --------------------------------------------------------------------------------------------
# Valid KEDA manifests, only apiVersion changed
# --------------------------------------------------------------------------------------------

API = model.API_VERSION


def _so(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "ScaledObject", "metadata": {"name": name}, "spec": spec}


KAFKA_MINIMAL = _so(
    "kafka-minimal",
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
    },
)

FULL_REFERENCE = _so(
    "full-reference",
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
)

SCALING_MODIFIERS = _so(
    "scaling-modifiers",
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
    },
)

FALLBACK_VIA_FORMULA = _so(
    "fallback-formula",
    {
        "scaleTargetRef": {"name": "api"},
        "advanced": {"scalingModifiers": {"formula": "best ?? backup ?? 8", "target": "2"}},
        "fallback": {"failureThreshold": 3, "replicas": 10, "behavior": "scalingModifiers"},
        "triggers": [
            {"type": "prometheus", "name": "best", "metadata": {"query": "up"}},
            {"type": "prometheus", "name": "backup", "metadata": {"query": "up"}},
        ],
    },
)

PROMETHEUS_VALUE_FALLBACK = _so(
    "prometheus-value",
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
                },
            },
        ],
    },
)

CPU_ONLY = _so(
    "cpu-only",
    {
        "scaleTargetRef": {"name": "web"},
        "minReplicaCount": 1,
        "triggers": [{"type": "cpu", "metadata": {"type": "Utilization", "value": "60"}}],
    },
)

VALID_SCALED_OBJECTS = [
    pytest.param(KAFKA_MINIMAL, id="kafka-minimal"),
    pytest.param(FULL_REFERENCE, id="full-reference"),
    pytest.param(SCALING_MODIFIERS, id="scaling-modifiers"),
    pytest.param(FALLBACK_VIA_FORMULA, id="fallback-scalingModifiers"),
    pytest.param(PROMETHEUS_VALUE_FALLBACK, id="prometheus-value-fallback"),
    pytest.param(CPU_ONLY, id="cpu-only-min-1"),
]


def _contains(stored: Any, written: Any) -> bool:
    """True when `stored` is `written` plus, at most, fields the apiserver added (defaults)."""
    if isinstance(written, dict):
        return isinstance(stored, dict) and all(
            key in stored and _contains(stored[key], value) for key, value in written.items()
        )
    if isinstance(written, list):
        return (
            isinstance(stored, list)
            and len(stored) == len(written)
            and all(_contains(a, b) for a, b in zip(stored, written, strict=True))
        )
    return bool(stored == written)


@pytest.mark.parametrize("manifest", VALID_SCALED_OBJECTS)
def test_valid_scaled_object_is_accepted(crds: Any, namespace: str, manifest: Any) -> None:
    """A KEDA manifest is stored unchanged but for defaults, and model.py parses what is stored."""
    stored = _apply(crds, namespace, manifest)
    assert _contains(stored["spec"], manifest["spec"]), stored["spec"]
    parsed = model.parse_scaled_object(stored)
    written = model.parse_scaled_object({**manifest, "metadata": stored["metadata"]})
    assert parsed.spec == written.spec
    assert parsed.api_version == model.API_VERSION


def test_defaults_are_filled(crds: Any, namespace: str) -> None:
    """The apiserver fills KEDA's defaults into a minimal manifest."""
    manifest = copy.deepcopy(KAFKA_MINIMAL)
    manifest["spec"]["fallback"] = {"failureThreshold": 2, "replicas": 1}
    manifest["spec"]["triggers"][0]["authenticationRef"] = {"name": "kafka-auth"}
    spec = _apply(crds, namespace, manifest)["spec"]
    assert spec["pollingInterval"] == 30
    assert spec["cooldownPeriod"] == 300
    assert spec["initialCooldownPeriod"] == 0
    assert spec["minReplicaCount"] == 0
    assert spec["maxReplicaCount"] == 100
    assert "idleReplicaCount" not in spec
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "consumer",
    }
    assert spec["fallback"] == {"failureThreshold": 2, "replicas": 1, "behavior": "static"}
    trigger = spec["triggers"][0]
    assert trigger["authenticationRef"] == {"name": "kafka-auth", "kind": "TriggerAuthentication"}
    assert "metricType" not in trigger
    assert "useCachedMetrics" not in trigger


def test_status_keeps_engine_state(crds: Any, namespace: str) -> None:
    """The status subresource stores KEDA's status fields and our free-form engine object."""
    _apply(crds, namespace, KAFKA_MINIMAL)
    status = {
        "status": {
            "scaleTargetKind": "apps/v1.Deployment",
            "scaleTargetGVKR": {
                "group": "apps",
                "version": "v1",
                "kind": "Deployment",
                "resource": "deployments",
            },
            "lastActiveTime": "2026-01-01T00:00:00Z",
            "externalMetricNames": ["s0-kafka-orders"],
            "health": {"s0-kafka-orders": {"numberOfFailures": 0, "status": "Happy"}},
            "triggersTypes": "kafka",
            "authenticationsTypes": "kafka-auth",
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "ScaledObjectReady", "message": ""},
                {"type": "Active", "status": "False", "reason": "ScalerNotActive"},
                {"type": "Fallback", "status": "False", "reason": "NoFallbackFound"},
                {"type": "Paused", "status": "False", "reason": "ScaledObjectUnpaused"},
            ],
            "engine": {"version": 1, "scaleDown": [[1767225600, 3]], "nested": {"a": None}},
        }
    }
    crds.kubectl(
        "patch",
        "scaledobjects.autoscale.dev",
        "kafka-minimal",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status),
    )
    stored = json.loads(
        crds.kubectl(
            "get", "so.autoscale.dev", "kafka-minimal", "-n", namespace, "-o", "json"
        ).stdout
    )
    assert stored["status"]["engine"]["scaleDown"] == [[1767225600, 3]]
    assert stored["status"]["health"]["s0-kafka-orders"]["status"] == "Happy"
    table = crds.kubectl("get", "scaledobjects.autoscale.dev", "-n", namespace).stdout
    header = table.splitlines()[0].split()
    assert header == [
        "NAME",
        "SCALETARGETKIND",
        "SCALETARGETNAME",
        "MIN",
        "MAX",
        "TRIGGERS",
        "AUTHENTICATIONS",
        "READY",
        "ACTIVE",
        "FALLBACK",
        "PAUSED",
        "AGE",
    ]
    row = table.splitlines()[1].split()
    assert row[:11] == [
        "kafka-minimal",
        "apps/v1.Deployment",
        "consumer",
        "0",
        "100",
        "kafka",
        "kafka-auth",
        "True",
        "False",
        "False",
        "False",
    ]


# --------------------------------------------------------------------------------------------
# Invalid ScaledObjects: rejected with the message of the schema or of the CEL rule
# --------------------------------------------------------------------------------------------


def _bad(name: str, **spec: Any) -> dict[str, Any]:
    manifest = copy.deepcopy(KAFKA_MINIMAL)
    manifest["metadata"]["name"] = name
    for key, value in spec.items():
        if value is None:
            manifest["spec"].pop(key, None)
        else:
            manifest["spec"][key] = value
    return manifest


def _kafka(**fields: Any) -> dict[str, Any]:
    return {"type": "kafka", "metadata": {"topic": "t"}, **fields}


def _modifiers(**modifiers: Any) -> dict[str, Any]:
    return {"scalingModifiers": modifiers}


def _behavior(**rules: Any) -> dict[str, Any]:
    return {"horizontalPodAutoscalerConfig": {"behavior": rules}}


BEHAVIOR = "spec.advanced.horizontalPodAutoscalerConfig.behavior"

INVALID_SCALED_OBJECTS = [
    # CEL rules
    pytest.param(
        _bad("min-above-max", minReplicaCount=5, maxReplicaCount=3),
        "spec.minReplicaCount",
        "minReplicaCount must be less than or equal to maxReplicaCount",
        id="cel-min-above-max",
    ),
    pytest.param(
        _bad("min-above-default-max", minReplicaCount=101),
        "spec.minReplicaCount",
        "minReplicaCount must be less than or equal to maxReplicaCount (100 when unset)",
        id="cel-min-above-default-max",
    ),
    pytest.param(
        _bad("idle-not-below-min", idleReplicaCount=0),
        "spec.idleReplicaCount",
        "idleReplicaCount must be less than minReplicaCount (0 when unset)",
        id="cel-idle",
    ),
    pytest.param(
        _bad("resource-only", triggers=[{"type": "memory", "metadata": {"value": "1Gi"}}]),
        "spec.minReplicaCount",
        "minReplicaCount must be at least 1 when every trigger is cpu or memory",
        id="cel-resource-only-min-0",
    ),
    pytest.param(
        _bad(
            "fallback-cpu",
            minReplicaCount=1,
            fallback={"failureThreshold": 3, "replicas": 2},
            triggers=[{"type": "cpu", "metricType": "Utilization", "metadata": {"value": "50"}}],
        ),
        "spec.fallback",
        "fallback needs at least one trigger that is neither cpu nor memory",
        id="cel-fallback-resource-only",
    ),
    pytest.param(
        _bad(
            "fallback-behavior",
            fallback={"failureThreshold": 3, "replicas": 2, "behavior": "scalingModifiers"},
        ),
        "spec.fallback.behavior",
        "fallback.behavior scalingModifiers needs advanced.scalingModifiers.formula",
        id="cel-fallback-scalingModifiers",
    ),
    pytest.param(
        _bad("dup-names", triggers=[_kafka(name="a"), _kafka(name="b"), _kafka(name="a")]),
        "spec.triggers",
        "trigger names must be unique within a ScaledObject",
        id="cel-duplicate-names",
    ),
    pytest.param(
        _bad("utilization", triggers=[_kafka(metricType="Utilization")]),
        "spec.triggers[0].metricType",
        "metricType Utilization is only valid for cpu and memory triggers",
        id="cel-utilization",
    ),
    pytest.param(
        _bad(
            "cached-cron",
            triggers=[_kafka(), {"type": "cron", "useCachedMetrics": True, "metadata": {}}],
        ),
        "spec.triggers[1].useCachedMetrics",
        "useCachedMetrics is not supported for cpu, memory and cron triggers",
        id="cel-useCachedMetrics",
    ),
    pytest.param(
        _bad("modifiers-no-formula", advanced=_modifiers(target="2")),
        "spec.advanced.scalingModifiers.formula",
        "scalingModifiers.formula is required when any other scalingModifiers field is set",
        id="cel-modifiers-without-formula",
    ),
    pytest.param(
        _bad("formula-no-target", triggers=[_kafka(name="k")], advanced=_modifiers(formula="k")),
        "spec.advanced.scalingModifiers.target",
        "scalingModifiers.target is required when formula is set",
        id="cel-formula-without-target",
    ),
    pytest.param(
        _bad(
            "target-zero",
            triggers=[_kafka(name="k")],
            advanced=_modifiers(formula="k", target="0"),
        ),
        "spec.advanced.scalingModifiers.target",
        "scalingModifiers.target must be a number greater than 0",
        id="cel-target-zero",
    ),
    pytest.param(
        _bad(
            "target-text",
            triggers=[_kafka(name="k")],
            advanced=_modifiers(formula="k", target="ten"),
        ),
        "spec.advanced.scalingModifiers.target",
        "scalingModifiers.target must be a number greater than 0",
        id="cel-target-text",
    ),
    pytest.param(
        _bad(
            "activation-text",
            triggers=[_kafka(name="k")],
            advanced=_modifiers(formula="k", target="1", activationTarget="x"),
        ),
        "spec.advanced.scalingModifiers.activationTarget",
        "scalingModifiers.activationTarget must be a number",
        id="cel-activationTarget",
    ),
    pytest.param(
        _bad("formula-unnamed", advanced=_modifiers(formula="a + b", target="1")),
        "spec.advanced.scalingModifiers.formula",
        "advanced.scalingModifiers.formula refers to triggers by name",
        id="cel-formula-without-named-trigger",
    ),
    pytest.param(
        {**_bad("x"), "metadata": {"name": "n" * 64}},
        "",
        "metadata.name of a ScaledObject must be at most 63 characters",
        id="cel-name-too-long",
    ),
    # Schema: types, required fields, enums and bounds
    pytest.param(
        _bad("no-triggers", triggers=None), "spec.triggers", "Required value", id="triggers"
    ),
    pytest.param(
        _bad("zero-triggers", triggers=[]),
        "spec.triggers",
        "should have at least 1 items",
        id="triggers-empty",
    ),
    pytest.param(
        _bad("many-triggers", triggers=[_kafka() for _ in range(101)]),
        "spec.triggers",
        "must have at most 100 items",
        id="triggers-max",
    ),
    pytest.param(
        _bad("no-target", scaleTargetRef=None),
        "spec.scaleTargetRef",
        "Required value",
        id="scaleTargetRef",
    ),
    pytest.param(
        _bad("empty-target-name", scaleTargetRef={"name": ""}),
        "spec.scaleTargetRef.name",
        "should be at least 1 chars long",
        id="scaleTargetRef-name",
    ),
    pytest.param(
        _bad("no-metadata", triggers=[{"type": "kafka"}]),
        "spec.triggers[0].metadata",
        "Required value",
        id="trigger-metadata",
    ),
    pytest.param(
        _bad("int-metadata", triggers=[{"type": "kafka", "metadata": {"lagThreshold": 10}}]),
        "spec.triggers[0].metadata.lagThreshold",
        "must be of type string",
        id="metadata-value-type",
    ),
    pytest.param(
        _bad("polling-zero", pollingInterval=0),
        "spec.pollingInterval",
        "should be greater than or equal to 1",
        id="pollingInterval",
    ),
    pytest.param(
        _bad("cooldown-negative", cooldownPeriod=-1),
        "spec.cooldownPeriod",
        "should be greater than or equal to 0",
        id="cooldownPeriod",
    ),
    pytest.param(
        _bad("max-zero", maxReplicaCount=0),
        "spec.maxReplicaCount",
        "should be greater than or equal to 1",
        id="maxReplicaCount",
    ),
    pytest.param(
        _bad("fallback-negative", fallback={"failureThreshold": -1, "replicas": -2}),
        "spec.fallback.replicas",
        "should be greater than or equal to 0",
        id="fallback-replicas",
    ),
    pytest.param(
        _bad("fallback-threshold", fallback={"failureThreshold": -1, "replicas": 1}),
        "spec.fallback.failureThreshold",
        "should be greater than or equal to 0",
        id="fallback-failureThreshold",
    ),
    pytest.param(
        _bad("fallback-required", fallback={"replicas": 1}),
        "spec.fallback.failureThreshold",
        "Required value",
        id="fallback-required",
    ),
    pytest.param(
        _bad("fallback-enum", fallback={"failureThreshold": 1, "replicas": 1, "behavior": "x"}),
        "spec.fallback.behavior",
        'Unsupported value: "x"',
        id="fallback-behavior-enum",
    ),
    pytest.param(
        _bad("metric-enum", triggers=[_kafka(metricType="Average")]),
        "spec.triggers[0].metricType",
        'Unsupported value: "Average"',
        id="metricType-enum",
    ),
    pytest.param(
        _bad("auth-kind", triggers=[_kafka(authenticationRef={"name": "a", "kind": "Secret"})]),
        "spec.triggers[0].authenticationRef.kind",
        'Unsupported value: "Secret"',
        id="authenticationRef-kind",
    ),
    pytest.param(
        _bad("auth-name", triggers=[_kafka(authenticationRef={"kind": "TriggerAuthentication"})]),
        "spec.triggers[0].authenticationRef.name",
        "Required value",
        id="authenticationRef-name",
    ),
    pytest.param(
        _bad(
            "modifiers-type",
            triggers=[_kafka(name="k")],
            advanced=_modifiers(formula="k", target="1", metricType="Utilization"),
        ),
        "spec.advanced.scalingModifiers.metricType",
        'Unsupported value: "Utilization"',
        id="scalingModifiers-metricType",
    ),
    pytest.param(
        _bad("window", advanced=_behavior(scaleUp={"stabilizationWindowSeconds": 3601})),
        f"{BEHAVIOR}.scaleUp.stabilizationWindowSeconds",
        "should be less than or equal to 3600",
        id="behavior-window",
    ),
    pytest.param(
        _bad("select", advanced=_behavior(scaleDown={"selectPolicy": "Maximum"})),
        f"{BEHAVIOR}.scaleDown.selectPolicy",
        'Unsupported value: "Maximum"',
        id="behavior-selectPolicy",
    ),
    pytest.param(
        _bad(
            "policy-type",
            advanced=_behavior(
                scaleDown={"policies": [{"type": "Replicas", "value": 1, "periodSeconds": 15}]}
            ),
        ),
        f"{BEHAVIOR}.scaleDown.policies[0].type",
        'Unsupported value: "Replicas"',
        id="behavior-policy-type",
    ),
    pytest.param(
        _bad(
            "policy-period",
            advanced=_behavior(
                scaleUp={"policies": [{"type": "Pods", "value": 1, "periodSeconds": 1801}]}
            ),
        ),
        f"{BEHAVIOR}.scaleUp.policies[0].periodSeconds",
        "should be less than or equal to 1800",
        id="behavior-policy-period",
    ),
    pytest.param(
        _bad(
            "policy-value",
            advanced=_behavior(
                scaleUp={"policies": [{"type": "Pods", "value": 0, "periodSeconds": 60}]}
            ),
        ),
        f"{BEHAVIOR}.scaleUp.policies[0].value",
        "should be greater than or equal to 1",
        id="behavior-policy-value",
    ),
    pytest.param(
        _bad("tolerance", advanced=_behavior(scaleDown={"tolerance": "ten percent"})),
        f"{BEHAVIOR}.scaleDown.tolerance",
        "should match",
        id="behavior-tolerance",
    ),
]


@pytest.mark.parametrize(("manifest", "field", "message"), INVALID_SCALED_OBJECTS)
def test_invalid_scaled_object_is_rejected(
    crds: Any, namespace: str, manifest: dict[str, Any], field: str, message: str
) -> None:
    """The apiserver refuses the object and names the field; model.py refuses it too."""
    error = _rejection(crds, namespace, manifest)
    lines = [line for line in error.splitlines() if message in line]
    assert lines, error
    if field:
        assert any(f"{field}: " in line for line in lines), error
    with pytest.raises(model.InvalidSpecError):
        model.parse_scaled_object(
            {**manifest, "metadata": {"namespace": namespace, **manifest["metadata"]}}
        )


# --------------------------------------------------------------------------------------------
# (Cluster)TriggerAuthentication
# --------------------------------------------------------------------------------------------


def _ta(name: str, spec: dict[str, Any], kind: str = "TriggerAuthentication") -> dict[str, Any]:
    return {"apiVersion": API, "kind": kind, "metadata": {"name": name}, "spec": spec}


KEDA_TA = _ta(
    "kafka-auth",
    {
        "podIdentity": {"provider": "aws", "roleArn": "arn:aws:iam::1:role/r", "externalID": "e"},
        "secretTargetRef": [{"parameter": "password", "name": "kafka-secrets", "key": "pw"}],
        "configMapTargetRef": [{"parameter": "ca", "name": "kafka-ca", "key": "ca.crt"}],
        "env": [{"parameter": "username", "name": "KAFKA_USER", "containerName": "app"}],
        "boundServiceAccountToken": [{"parameter": "token", "serviceAccountName": "reader"}],
        "hashiCorpVault": {
            "address": "https://vault:8200",
            "authentication": "token",
            "credential": {"token": "s.abc"},
            "secrets": [{"parameter": "pw", "key": "password", "path": "secret/data/kafka"}],
        },
        "azureKeyVault": {
            "vaultUri": "https://kv.vault.azure.net",
            "podIdentity": {"provider": "azure-workload"},
            "secrets": [{"parameter": "conn", "name": "connection", "version": "1"}],
        },
        "gcpSecretManager": {"secrets": [{"parameter": "k", "id": "key", "version": "latest"}]},
        "awsSecretManager": {
            "podIdentity": {"provider": "aws"},
            "region": "eu-west-1",
            "secrets": [{"parameter": "p", "name": "n", "versionStage": "AWSCURRENT"}],
        },
    },
)


def test_keda_trigger_authentication_is_accepted(crds: Any, namespace: str) -> None:
    """Every KEDA source is accepted; the ones we do not resolve are kept as written."""
    stored = _apply(crds, namespace, KEDA_TA)
    assert stored["spec"] == KEDA_TA["spec"]
    parsed = model.parse_trigger_authentication(stored)
    assert set(parsed.spec.unresolved_sources) == {
        "hashiCorpVault",
        "azureKeyVault",
        "gcpSecretManager",
        "awsSecretManager",
    }


def test_cluster_trigger_authentication_is_accepted(
    crds: Any, namespace: str, unique_name: str
) -> None:
    """A ClusterTriggerAuthentication is cluster-scoped and may use filePath."""
    manifest = _ta(
        unique_name,
        {"filePath": "kafka/creds.json", "podIdentity": {"provider": "azure-workload"}},
        kind="ClusterTriggerAuthentication",
    )
    try:
        stored = _apply(crds, namespace, manifest)
        assert "namespace" not in stored["metadata"]
        assert model.parse_trigger_authentication(stored).spec.file_path == "kafka/creds.json"
    finally:
        crds.kubectl(
            "delete", "clustertriggerauthentications.autoscale.dev", unique_name, check=False
        )


INVALID_AUTHS = [
    pytest.param(
        _ta("provider", {"podIdentity": {"provider": "azure"}}),
        "spec.podIdentity.provider",
        'Unsupported value: "azure"',
        id="provider-enum",
    ),
    pytest.param(
        _ta("no-provider", {"podIdentity": {"identityId": "x"}}),
        "spec.podIdentity.provider",
        "Required value",
        id="provider-required",
    ),
    pytest.param(
        _ta("empty-id", {"podIdentity": {"provider": "azure-workload", "identityId": ""}}),
        "spec.podIdentity.identityId",
        "podIdentity.identityId must not be empty when set",
        id="azure-empty-identityId",
    ),
    pytest.param(
        _ta(
            "authority",
            {"podIdentity": {"provider": "azure-workload", "identityAuthorityHost": "h"}},
        ),
        "spec.podIdentity.identityTenantId",
        "podIdentity.identityAuthorityHost needs podIdentity.identityTenantId",
        id="azure-authority-without-tenant",
    ),
    pytest.param(
        _ta(
            "role-workload",
            {"podIdentity": {"provider": "aws", "roleArn": "r", "identityOwner": "workload"}},
        ),
        "spec.podIdentity.roleArn",
        "podIdentity.roleArn cannot be combined with identityOwner workload",
        id="aws-roleArn-workload",
    ),
    pytest.param(
        _ta("external-id", {"podIdentity": {"provider": "aws", "externalID": "e"}}),
        "spec.podIdentity.externalID",
        "podIdentity.externalID needs podIdentity.roleArn",
        id="aws-externalID-without-roleArn",
    ),
    pytest.param(
        _ta("secret-key", {"secretTargetRef": [{"parameter": "p", "name": "s"}]}),
        "spec.secretTargetRef[0].key",
        "Required value",
        id="secretTargetRef-key",
    ),
    pytest.param(
        _ta("env-name", {"env": [{"parameter": "p"}]}),
        "spec.env[0].name",
        "Required value",
        id="env-name",
    ),
    pytest.param(
        _ta("vault-type", {"hashiCorpVault": "vault:8200"}),
        "spec.hashiCorpVault",
        "must be of type object",
        id="vault-not-object",
    ),
]


@pytest.mark.parametrize(("manifest", "field", "message"), INVALID_AUTHS)
def test_invalid_trigger_authentication_is_rejected(
    crds: Any, namespace: str, manifest: dict[str, Any], field: str, message: str
) -> None:
    """The apiserver refuses the object and names the field; model.py refuses it too."""
    error = _rejection(crds, namespace, manifest)
    assert any(f"{field}: " in line and message in line for line in error.splitlines()), error
    with pytest.raises(model.InvalidSpecError):
        model.parse_trigger_authentication(
            {**manifest, "metadata": {"namespace": namespace, **manifest["metadata"]}}
        )


@pytest.mark.parametrize("kind", ["TriggerAuthentication", "ClusterTriggerAuthentication"])
def test_authentication_pod_identity_rule_applies_to_both_kinds(
    crds: Any, namespace: str, kind: str, unique_name: str
) -> None:
    """The CEL rules of podIdentity are on both authentication kinds."""
    manifest = _ta(unique_name, {"podIdentity": {"provider": "aws", "externalID": "e"}}, kind=kind)
    error = _rejection(crds, namespace, manifest)
    assert "podIdentity.externalID needs podIdentity.roleArn" in error
