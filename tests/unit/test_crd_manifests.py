"""The CRDs: load from the package, are structural, and agree with model.py and `autoscale crds`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import autoscale
from autoscale import crd_manifests, model

REPO = Path(__file__).resolve().parents[2]
CRD_DIR = REPO / "crds"

Schema = dict[str, Any]

# Keywords a structural schema may use here (apiextensions.k8s.io/v1 JSONSchemaProps subset).
ALLOWED_KEYWORDS = {
    "description",
    "type",
    "format",
    "properties",
    "required",
    "items",
    "additionalProperties",
    "enum",
    "default",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "maxProperties",
    "pattern",
    "anyOf",
    "nullable",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-validations",
}


def _crds() -> dict[str, dict[str, Any]]:
    return {crd["spec"]["names"]["kind"]: crd for crd in crd_manifests.load_crds()}


def _schema(kind: str) -> Schema:
    versions = _crds()[kind]["spec"]["versions"]
    schema: Schema = versions[0]["schema"]["openAPIV3Schema"]
    return schema


def _walk(schema: Schema, path: str = "") -> Iterator[tuple[str, Schema]]:
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], f"{path}{{}}")


def _at(schema: Schema, dotted: str) -> Schema:
    node = schema
    for part in dotted.strip(".").split("."):
        node = node["properties"][part]
    return node


ALL_KINDS = ["ScaledObject", "TriggerAuthentication", "ClusterTriggerAuthentication"]


def test_package_reads_the_repository_files() -> None:
    """autoscale/crds is a symlink to crds/, and every CRD file there is loaded."""
    link = Path(autoscale.__file__).parent / "crds"
    assert link.is_symlink()
    assert link.resolve() == CRD_DIR.resolve()
    on_disk = sorted(path.name for path in CRD_DIR.glob("*.yaml"))
    assert sorted(crd_manifests.CRD_FILES) == on_disk
    from_files = [yaml.safe_load((CRD_DIR / name).read_text()) for name in crd_manifests.CRD_FILES]
    assert crd_manifests.load_crds() == from_files


def test_render_is_the_same_documents() -> None:
    """render_crds() is one multi-document stream holding exactly load_crds()."""
    rendered = crd_manifests.render_crds()
    assert rendered.startswith("---\n")
    assert list(yaml.safe_load_all(rendered)) == crd_manifests.load_crds()


def test_cli_prints_the_crds() -> None:
    """`autoscale crds` prints the same documents as the files in crds/."""
    done = subprocess.run(
        [sys.executable, "-m", "autoscale", "crds"],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    docs = [doc for doc in yaml.safe_load_all(done.stdout) if doc is not None]
    assert docs == crd_manifests.load_crds()


@pytest.mark.parametrize(
    ("kind", "plural", "short_names", "scope"),
    [
        ("ScaledObject", "scaledobjects", ["so"], "Namespaced"),
        ("TriggerAuthentication", "triggerauthentications", ["ta", "triggerauth"], "Namespaced"),
        (
            "ClusterTriggerAuthentication",
            "clustertriggerauthentications",
            ["cta", "clustertriggerauth"],
            "Cluster",
        ),
    ],
)
def test_names_and_scope(kind: str, plural: str, short_names: list[str], scope: str) -> None:
    """Group, names, short names, categories and scope are as KEDA's, in our group."""
    crd = _crds()[kind]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == f"{plural}.autoscale.dev"
    spec = crd["spec"]
    assert spec["group"] == model.GROUP
    assert spec["scope"] == scope
    names = spec["names"]
    assert names["plural"] == plural
    assert names["singular"] == kind.lower()
    assert names["listKind"] == f"{kind}List"
    assert names["shortNames"] == short_names
    assert "autoscale" in names["categories"]
    [version] = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == (model.VERSION, True, True)
    assert version["subresources"] == {"status": {}}


def test_scaled_object_printer_columns() -> None:
    """kubectl get so shows KEDA's columns, in KEDA's order."""
    [version] = _crds()["ScaledObject"]["spec"]["versions"]
    columns = [(c["name"], c["jsonPath"]) for c in version["additionalPrinterColumns"]]
    assert columns == [
        ("ScaleTargetKind", ".status.scaleTargetKind"),
        ("ScaleTargetName", ".spec.scaleTargetRef.name"),
        ("Min", ".spec.minReplicaCount"),
        ("Max", ".spec.maxReplicaCount"),
        ("Triggers", ".status.triggersTypes"),
        ("Authentications", ".status.authenticationsTypes"),
        ("Ready", '.status.conditions[?(@.type=="Ready")].status'),
        ("Active", '.status.conditions[?(@.type=="Active")].status'),
        ("Fallback", '.status.conditions[?(@.type=="Fallback")].status'),
        ("Paused", '.status.conditions[?(@.type=="Paused")].status'),
        ("Age", ".metadata.creationTimestamp"),
    ]


@pytest.mark.parametrize("kind", ["TriggerAuthentication", "ClusterTriggerAuthentication"])
def test_authentication_printer_columns(kind: str) -> None:
    """kubectl get ta/cta shows where the credentials come from."""
    [version] = _crds()[kind]["spec"]["versions"]
    names = [column["name"] for column in version["additionalPrinterColumns"]]
    assert names == ["PodIdentity", "Secret", "Env", "VaultAddress", "ScaledObjects", "Age"]


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_schema_is_structural(kind: str) -> None:
    """Every node has a type (or is int-or-string), uses known keywords, and is consistent."""
    root = _schema(kind)
    assert root["properties"]["metadata"] == {"type": "object"}
    for path, node in _walk(root):
        where = f"{kind}{path or '.'}"
        assert set(node) <= ALLOWED_KEYWORDS, f"{where}: {set(node) - ALLOWED_KEYWORDS}"
        if node.get("x-kubernetes-int-or-string"):
            assert "type" not in node, where
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], where
        else:
            assert node.get("type") in {"object", "array", "string", "integer", "boolean"}, where
            assert "anyOf" not in node, where
        if node.get("type") == "object":
            assert not ("properties" in node and "additionalProperties" in node), where
            for name in node.get("required", []):
                assert name in node.get("properties", {}), f"{where}: required {name}"
        if node.get("type") == "array":
            assert isinstance(node.get("items"), dict), where
        if node.get("x-kubernetes-list-type") == "map":
            keys = node["x-kubernetes-list-map-keys"]
            assert set(keys) <= set(node["items"].get("required", [])), where
        if "enum" in node and "default" in node:
            assert node["default"] in node["enum"], where
        if "default" in node:
            expected = {"string": str, "integer": int, "boolean": bool}[node["type"]]
            assert isinstance(node["default"], expected), where


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_validation_rules_are_well_formed(kind: str) -> None:
    """Every CEL rule has a message naming a field, and fieldPath points into the schema."""
    count = 0
    field_names = {name for _, node in _walk(_schema(kind)) for name in node.get("properties", {})}
    for path, node in _walk(_schema(kind)):
        for rule in node.get("x-kubernetes-validations", []):
            count += 1
            assert set(rule) <= {"rule", "message", "messageExpression", "fieldPath", "reason"}
            assert rule["rule"].strip(), path
            assert rule["message"].strip(), path
            assert rule.get("reason", "FieldValueInvalid") in {
                "FieldValueInvalid",
                "FieldValueForbidden",
                "FieldValueRequired",
                "FieldValueDuplicate",
            }
            if "fieldPath" in rule:
                _at(node, rule["fieldPath"])  # raises KeyError when the path does not exist
            first_word = rule["message"].split()[0].rstrip(":")
            named = first_word.split(".")[-1]
            assert named in field_names or first_word == "trigger", rule["message"]
    assert count > 0


def test_scaled_object_rules_cover_keda_webhook_checks() -> None:
    """The ScaledObject CRD carries one CEL rule per in-object check of KEDA's webhook."""
    schema = _schema("ScaledObject")
    rules = [
        rule["rule"]
        for _, node in _walk(schema)
        for rule in node.get("x-kubernetes-validations", [])
    ]
    expected_fragments = [
        "size(self.metadata.name) <= 63",  # name is a label value
        "self.minReplicaCount : 0) <=",  # min <= max
        "self.idleReplicaCount <",  # idle < min
        "self.minReplicaCount >= 1",  # cpu/memory only cannot scale to zero
        "!has(self.fallback) || self.triggers.exists",  # fallback needs an eligible trigger
        "self.fallback.behavior != 'scalingModifiers'",  # that behavior needs a formula
        "self.filter(u, has(u.name) && u.name == t.name).size() == 1",  # unique trigger names
        "self.type == 'cpu' || self.type == 'memory'",  # Utilization only for cpu/memory
        "['cpu', 'memory', 'cron']",  # useCachedMetrics
        "double(self.target) > 0.0",  # scalingModifiers target
    ]
    for fragment in expected_fragments:
        assert any(fragment in " ".join(rule.split()) for rule in rules), fragment


def test_rule_cost_bounds() -> None:
    """What the CEL rules iterate or compare is bounded, so the apiserver accepts their cost."""
    spec = _at(_schema("ScaledObject"), "spec")
    triggers = spec["properties"]["triggers"]
    assert (triggers["minItems"], triggers["maxItems"]) == (1, 100)
    assert triggers["items"]["properties"]["name"]["maxLength"] == 253
    assert triggers["items"]["properties"]["type"]["maxLength"] == 253
    modifiers = _at(spec, "advanced.scalingModifiers")
    assert modifiers["properties"]["target"]["maxLength"] == 64


def test_defaults_match_the_model() -> None:
    """Schema defaults and model.py defaults are the same numbers (KEDA's)."""
    spec = _at(_schema("ScaledObject"), "spec")
    props = spec["properties"]
    assert props["pollingInterval"]["default"] == model.DEFAULT_POLLING_INTERVAL == 30
    assert props["cooldownPeriod"]["default"] == model.DEFAULT_COOLDOWN_PERIOD == 300
    assert props["initialCooldownPeriod"]["default"] == model.DEFAULT_INITIAL_COOLDOWN_PERIOD == 0
    assert props["minReplicaCount"]["default"] == model.DEFAULT_MIN_REPLICA_COUNT == 0
    assert props["maxReplicaCount"]["default"] == model.DEFAULT_MAX_REPLICA_COUNT == 100
    target = props["scaleTargetRef"]["properties"]
    assert target["apiVersion"]["default"] == model.DEFAULT_SCALE_TARGET_API_VERSION
    assert target["kind"]["default"] == model.DEFAULT_SCALE_TARGET_KIND
    assert _at(spec, "fallback.behavior")["default"] == model.FallbackBehavior.STATIC
    ref = _at(spec, "triggers")["items"]["properties"]["authenticationRef"]
    assert ref["properties"]["kind"]["default"] == model.AuthenticationKind.TRIGGER_AUTHENTICATION
    assert "default" not in spec["properties"]["idleReplicaCount"]
    # Left unset on purpose: a default would change KEDA's meaning of an empty value.
    trigger = _at(spec, "triggers")["items"]["properties"]
    assert "default" not in trigger["metricType"]
    assert "default" not in _at(spec, "advanced.scalingModifiers.metricType")


def test_minimums_match_the_model() -> None:
    """Lower bounds in the schema are the ones model.py enforces."""
    props = _at(_schema("ScaledObject"), "spec")["properties"]
    minimums = {
        name: props[name]["minimum"]
        for name in (
            "pollingInterval",
            "cooldownPeriod",
            "initialCooldownPeriod",
            "idleReplicaCount",
            "minReplicaCount",
            "maxReplicaCount",
        )
    }
    assert minimums == {
        "pollingInterval": 1,
        "cooldownPeriod": 0,
        "initialCooldownPeriod": 0,
        "idleReplicaCount": 0,
        "minReplicaCount": 0,
        "maxReplicaCount": 1,
    }
    fallback = props["fallback"]["properties"]
    assert fallback["failureThreshold"]["minimum"] == fallback["replicas"]["minimum"] == 0


@pytest.mark.parametrize(
    ("kind", "dotted", "enum_type"),
    [
        ("ScaledObject", "spec.fallback.behavior", model.FallbackBehavior),
        ("ScaledObject", "spec.triggers[].metricType", model.MetricTargetType),
        ("ScaledObject", "spec.triggers[].authenticationRef.kind", model.AuthenticationKind),
        ("TriggerAuthentication", "spec.podIdentity.provider", model.PodIdentityProvider),
        ("TriggerAuthentication", "spec.podIdentity.identityOwner", model.IdentityOwner),
        ("ClusterTriggerAuthentication", "spec.podIdentity.provider", model.PodIdentityProvider),
    ],
)
def test_enums_match_the_model(kind: str, dotted: str, enum_type: type[Any]) -> None:
    """Each schema enum lists exactly the values of the model's enum."""
    nodes = dict(_walk(_schema(kind)))
    assert sorted(nodes["." + dotted]["enum"]) == sorted(member.value for member in enum_type)


def test_behavior_schema_is_the_hpa_one() -> None:
    """scaleUp and scaleDown carry the autoscaling/v2 HPAScalingRules bounds and enums."""
    behavior = _at(_schema("ScaledObject"), "spec.advanced.horizontalPodAutoscalerConfig.behavior")
    for direction in ("scaleUp", "scaleDown"):
        rules = behavior["properties"][direction]["properties"]
        window = rules["stabilizationWindowSeconds"]
        assert (window["minimum"], window["maximum"]) == (0, 3600)
        assert rules["selectPolicy"]["enum"] == ["Max", "Min", "Disabled"]
        policy = rules["policies"]["items"]
        assert policy["required"] == ["type", "value", "periodSeconds"]
        assert policy["properties"]["type"]["enum"] == ["Pods", "Percent"]
        assert policy["properties"]["value"]["minimum"] == 1
        period = policy["properties"]["periodSeconds"]
        assert (period["minimum"], period["maximum"]) == (1, 1800)
        assert rules["tolerance"]["x-kubernetes-int-or-string"] is True
    assert (
        behavior["properties"]["scaleUp"]["properties"]
        == (behavior["properties"]["scaleDown"]["properties"])
    )


def test_status_schema() -> None:
    """Status mirrors KEDA's and adds the engine object our controller resumes from."""
    status = _at(_schema("ScaledObject"), "status")["properties"]
    assert {
        "scaleTargetKind",
        "scaleTargetGVKR",
        "originalReplicaCount",
        "lastActiveTime",
        "externalMetricNames",
        "resourceMetricNames",
        "compositeScalerName",
        "health",
        "triggersActivity",
        "pausedReplicaCount",
        "hpaName",
        "triggersTypes",
        "authenticationsTypes",
        "conditions",
        "engine",
    } == set(status)
    assert status["engine"] == {
        "description": status["engine"]["description"],
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    health = status["health"]["additionalProperties"]["properties"]
    assert set(health) == {"numberOfFailures", "status"}
    condition = status["conditions"]["items"]
    assert {"type", "status", "reason", "message"} <= set(condition["properties"])


def test_authentication_schemas_agree() -> None:
    """TriggerAuthentication and ClusterTriggerAuthentication share one spec schema."""

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k != "description"}
        if isinstance(node, list):
            return [strip(item) for item in node]
        return node

    namespaced = _schema("TriggerAuthentication")
    cluster = _schema("ClusterTriggerAuthentication")
    assert strip(namespaced) == strip(cluster)
    spec = namespaced["properties"]["spec"]["properties"]
    for source in model.UNRESOLVED_AUTH_SOURCES:
        assert spec[source]["x-kubernetes-preserve-unknown-fields"] is True
        assert "does not resolve" in spec[source]["description"]
    assert "does not resolve" in spec["boundServiceAccountToken"]["description"]
