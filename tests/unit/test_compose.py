"""docker-compose.yml: valid against the Compose Specification, and the bench's twin.

No Docker engine runs here, so the stack is never started in tests. Instead:

- the file validates against the Compose Specification's JSON schema, `compose-spec.json` as
  shipped by the PyPI package check-jsonschema (its `vendor` schemas, with the spec's licence
  beside it): imported if installed, else pip-installed (without dependencies) into a
  temporary directory;
- each event source matches what the test bench runs and the tests exercise: Kafka's release
  (tests/testbed/versions.py) and its KRaft single-node settings (read from the bench's own
  code), RabbitMQ's minor release with the management plugin, Redis's and Prometheus's
  releases (Debian's packages, where installed), moto's major release, k3s of the bench's
  Kubernetes release;
- the operator runs as in the Deployment (read-only root filesystem, /tmp writable) with a
  kubeconfig the setup service writes; the sample's pieces fit together (topic, consumer
  group, listener, CRDs, mounted files); `autoscale check --offline` accepts the sample
  ScaledObject; and the producer really produces a burst into the bench's Kafka.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from autoscale import cli, crd_manifests
from tests.testbed import versions
from tests.testbed.services import Kafka, Prometheus, RabbitMQ, Redis

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
SAMPLE = REPO / "deploy" / "compose"
CHECK_JSONSCHEMA = "check-jsonschema==0.39.0"


# --- the Compose Specification's schema ------------------------------------------------------


@pytest.fixture(scope="module")
def compose_spec_schema(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """compose-spec.json from check-jsonschema's vendored schemas."""
    vendor = _vendor_dir()
    if vendor is None:
        target = tmp_path_factory.mktemp("check-jsonschema")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
                "--target",
                str(target),
                CHECK_JSONSCHEMA,
            ],
            check=True,
            timeout=300,
        )
        vendor = target / "check_jsonschema" / "builtin_schemas" / "vendor"
    schema_file = vendor / "compose-spec.json"
    assert schema_file.is_file(), f"{CHECK_JSONSCHEMA} ships no compose-spec.json"
    assert (vendor / "licenses" / "LICENSE.compose-spec").is_file()
    schema: dict[str, Any] = yaml.safe_load(schema_file.read_text())
    return schema


def _vendor_dir() -> Path | None:
    spec = importlib.util.find_spec("check_jsonschema")
    if spec is None or spec.origin is None:
        return None
    vendor = Path(spec.origin).parent / "builtin_schemas" / "vendor"
    return vendor if (vendor / "compose-spec.json").is_file() else None


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose["services"]
    return result


def test_docker_compose_yml_validates_against_the_compose_specification(
    compose: dict[str, Any], compose_spec_schema: dict[str, Any]
) -> None:
    validator_class = jsonschema.validators.validator_for(compose_spec_schema)
    validator_class.check_schema(compose_spec_schema)
    validator = validator_class(compose_spec_schema, format_checker=validator_class.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
    )


def test_the_schema_catches_a_broken_file(
    compose: dict[str, Any], compose_spec_schema: dict[str, Any]
) -> None:
    """The validation above is not vacuous: a misspelt key fails it."""
    broken = yaml.safe_load(yaml.safe_dump(compose))
    broken["services"]["kafka"]["healthcheck"]["intervall"] = "5s"
    broken["services"]["redis"]["ports"] = "6379:6379"
    validator = jsonschema.validators.validator_for(compose_spec_schema)(compose_spec_schema)
    assert len(list(validator.iter_errors(broken))) >= 2


# --- the bench's twin ------------------------------------------------------------------------


def image_tag(service: dict[str, Any]) -> str:
    return str(service["image"]).rsplit(":", 1)[1]


def debian_version(package: str) -> str | None:
    """The upstream version of an installed Debian package (epoch and revision dropped)."""
    if shutil.which("dpkg-query") is None:
        return None
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", package],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not result.stdout:
        return None
    version = result.stdout.split(":", 1)[-1]
    return re.split(r"[-+~]", version)[0]


def minor(version: str) -> str:
    return ".".join(version.lstrip("v").split(".")[:2])


def bench_kafka_properties() -> dict[str, str]:
    """The static `key=value` settings the bench writes into Kafka's server.properties."""
    source = inspect.getsource(Kafka.__init__)
    return dict(re.findall(r'^\s*"([a-z][a-z0-9.]*)=([^"{}]*)",?$', source, re.M))


def kafka_env_name(key: str) -> str:
    """The apache/kafka image's mapping: KAFKA_ + upper case, `_` for `.`, `__` for `_`."""
    return "KAFKA_" + key.replace("_", "__").replace("-", "___").replace(".", "_").upper()


KRAFT_SETTINGS = (
    "process.roles",
    "node.id",
    "controller.listener.names",
    "inter.broker.listener.name",
    "offsets.topic.replication.factor",
    "offsets.topic.num.partitions",
    "transaction.state.log.replication.factor",
    "transaction.state.log.min.isr",
    "share.coordinator.state.topic.replication.factor",
    "share.coordinator.state.topic.min.isr",
    "group.initial.rebalance.delay.ms",
    "auto.create.topics.enable",
)


def test_kafka_is_the_benchs_release_as_a_single_kraft_node(
    services: dict[str, dict[str, Any]],
) -> None:
    kafka = services["kafka"]
    assert kafka["image"] == f"apache/kafka:{versions.KAFKA}"
    env = kafka["environment"]
    bench = bench_kafka_properties()
    assert bench["process.roles"] == "broker,controller"
    for key in KRAFT_SETTINGS:
        assert env.get(kafka_env_name(key)) == bench[key], key
    voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    assert len(voters) == 1, "a single-node quorum"
    assert voters[0].startswith(f"{env['KAFKA_NODE_ID']}@")
    assert "CONTROLLER://" in env["KAFKA_LISTENERS"]


def test_kafka_has_the_benchs_sasl_plain_users(services: dict[str, dict[str, Any]]) -> None:
    env = services["kafka"]["environment"]
    assert "PLAIN" in env["KAFKA_SASL_ENABLED_MECHANISMS"].split(",")
    jaas = env[kafka_env_name("listener.name.sasl_plaintext.plain.sasl.jaas.config")]
    users = dict(re.findall(r'user_(\w+)="([^"]*)"', jaas))
    assert users == Kafka.USERS
    assert "SASL_PLAINTEXT://localhost:9094" in env["KAFKA_ADVERTISED_LISTENERS"]


def test_rabbitmq_is_the_benchs_minor_release_with_the_management_plugin(
    services: dict[str, dict[str, Any]],
) -> None:
    rabbitmq = services["rabbitmq"]
    tag = image_tag(rabbitmq)
    assert tag.endswith("-management"), "the management plugin (the bench enables it)"
    assert "rabbitmq_management" in inspect.getsource(RabbitMQ)
    assert "15672:15672" in rabbitmq["ports"]
    debian = debian_version(versions.DEBIAN["rabbitmq"][1])
    if debian is None:
        pytest.skip("rabbitmq-server is not installed here: its version cannot be compared")
    assert minor(tag.removesuffix("-management")) == minor(debian)


def test_redis_is_the_benchs_release_and_keeps_no_data(
    services: dict[str, dict[str, Any]],
) -> None:
    redis = services["redis"]
    assert redis["command"][:1] == ["redis-server"]
    assert redis["command"][1:] == ["--save", "", "--appendonly", "no"]
    bench = inspect.getsource(Redis)
    assert '"--save"' in bench
    assert '"--appendonly"' in bench
    debian = debian_version(versions.DEBIAN["redis"][1])
    if debian is None:
        pytest.skip("redis-server is not installed here: its version cannot be compared")
    assert minor(image_tag(redis)) == minor(debian)


def test_prometheus_is_the_benchs_release_with_its_flags(
    services: dict[str, dict[str, Any]],
) -> None:
    prometheus = services["prometheus"]
    flags = set(prometheus["command"])
    bench = inspect.getsource(Prometheus)
    for flag in ("--web.enable-remote-write-receiver", "--web.enable-lifecycle"):
        assert f'"{flag}"' in bench
        assert flag in flags
    debian = debian_version(versions.DEBIAN["prometheus"][1])
    if debian is None:
        pytest.skip("prometheus is not installed here: its version cannot be compared")
    assert image_tag(prometheus) == f"v{debian}"


def test_sqs_is_motos_server_of_the_benchs_major_release(
    services: dict[str, dict[str, Any]],
) -> None:
    sqs = services["sqs"]
    assert sqs["image"].startswith("motoserver/moto:")
    assert image_tag(sqs).split(".")[0] == metadata.version("moto").split(".")[0]


def test_k3s_is_the_benchs_kubernetes_release(services: dict[str, dict[str, Any]]) -> None:
    for name in ("k3s", "setup"):
        assert services[name]["image"] == f"rancher/k3s:v{versions.KUBERNETES}-k3s1", name
    k3s = services["k3s"]
    assert k3s["privileged"] is True
    assert "--tls-san=k3s" in k3s["command"]  # the other containers reach it as k3s:6443
    assert "--write-kubeconfig=/output/kubeconfig.yaml" in k3s["command"]
    assert "k3s-output:/output" in k3s["volumes"]


# --- the operator and the sample ---------------------------------------------------------------


def test_the_operator_runs_from_the_dockerfile_as_in_a_cluster(
    services: dict[str, dict[str, Any]],
) -> None:
    operator = services["operator"]
    assert operator["build"] == {"context": ".", "dockerfile": "Dockerfile"}
    assert operator["read_only"] is True
    assert operator["tmpfs"] == ["/tmp"]
    assert operator["cap_drop"] == ["ALL"]
    assert "user" not in operator, "the image's own non-root USER"
    env = operator["environment"]
    assert env["AUTOSCALE_KUBECONFIG"] == "/shared/kubeconfig"
    assert "shared:/shared:ro" in operator["volumes"]
    assert operator["depends_on"]["setup"]["condition"] == "service_completed_successfully"
    run = cli.build_parser().parse_args(["run"])
    assert f"{run.metrics_port}:{run.metrics_port}" in operator["ports"]
    assert f"{run.health_port}:{run.health_port}" in operator["ports"]


def test_setup_writes_the_kubeconfig_and_installs_the_crds_and_the_sample(
    services: dict[str, dict[str, Any]],
) -> None:
    setup = services["setup"]
    assert "shared:/shared" in setup["volumes"]
    assert "./crds:/crds:ro" in setup["volumes"]
    script = (SAMPLE / "setup.sh").read_text()
    assert "/shared/kubeconfig" in script
    assert "--server=https://k3s:6443" in script
    assert "apply --server-side --field-manager=autoscale-compose -f /crds/" in script
    assert "/compose/worker.yaml" in script
    # /crds is exactly what `autoscale crds` prints.
    texts = [(REPO / "crds" / name).read_text() for name in crd_manifests.CRD_FILES]
    assert texts == crd_manifests.crd_texts()
    assert sorted(p.name for p in (REPO / "crds").glob("*.yaml")) == sorted(crd_manifests.CRD_FILES)
    result = subprocess.run(["sh", "-n", str(SAMPLE / "setup.sh")], check=False)
    assert result.returncode == 0, "setup.sh has a syntax error"


def test_every_bind_mount_names_a_file_of_the_repository(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name}: {source} does not exist"


def test_prometheus_scrapes_the_operators_metrics(services: dict[str, dict[str, Any]]) -> None:
    config = yaml.safe_load((SAMPLE / "prometheus.yml").read_text())
    targets = {
        target
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    }
    run = cli.build_parser().parse_args(["run"])
    assert f"operator:{run.metrics_port}" in targets


def sample_objects() -> dict[str, dict[str, Any]]:
    return {o["kind"]: o for o in yaml.safe_load_all((SAMPLE / "worker.yaml").read_text()) if o}


def test_the_worker_and_its_scaled_object_fit_the_producer_and_the_broker(
    services: dict[str, dict[str, Any]],
) -> None:
    objects = sample_objects()
    deployment, scaled_object = objects["Deployment"], objects["ScaledObject"]
    assert deployment["spec"]["replicas"] == 0
    assert scaled_object["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    (trigger,) = scaled_object["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    env = services["kafka"]["environment"]
    assert f"DOCKER://{meta['bootstrapServers']}" in env["KAFKA_ADVERTISED_LISTENERS"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    command = " ".join(container["args"])
    assert f"--bootstrap-server {meta['bootstrapServers']}" in command
    assert f"--topic {meta['topic']}" in command
    assert f"--group {meta['consumerGroup']}" in command
    assert container["image"] == services["kafka"]["image"]
    # The pods reach `kafka` through Docker's resolver: the node's network and resolv.conf.
    pod = deployment["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "Default"
    assert "--resolv-conf=/etc/resolv.conf" in services["k3s"]["command"]
    producer_env = services["producer"]["environment"]
    assert producer_env["PRODUCER_TOPIC"] == meta["topic"]
    assert producer_env["PRODUCER_BOOTSTRAP"] == meta["bootstrapServers"]
    # The topic the producer creates has as many partitions as the most replicas.
    producer = _load_producer()
    assert producer.parse_args([]).partitions == scaled_object["spec"]["maxReplicaCount"]


def test_autoscale_check_accepts_the_sample_scaled_object() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "autoscale", "check", "--offline", str(SAMPLE / "worker.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _load_producer() -> Any:
    spec = importlib.util.spec_from_file_location("compose_producer", SAMPLE / "producer.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.testbed
def test_the_producer_creates_the_topic_and_produces_a_burst(
    kafka: Kafka, unique_name: str
) -> None:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    producer = _load_producer()
    argv = ["--bootstrap", kafka.bootstrap, "--topic", unique_name, "--partitions", "3"]
    argv += ["--burst", "25", "--size", "200", "--once"]
    assert asyncio.run(producer.main(argv)) == 0

    async def end_offsets() -> dict[int, int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap)
        await consumer.start()
        try:
            partitions = consumer.partitions_for_topic(unique_name) or set()
            if not partitions:
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(unique_name) or set()
            ends = await consumer.end_offsets([TopicPartition(unique_name, p) for p in partitions])
            return {tp.partition: offset for tp, offset in ends.items()}
        finally:
            await consumer.stop()

    offsets = asyncio.run(end_offsets())
    assert sorted(offsets) == [0, 1, 2]
    assert sum(offsets.values()) == 25
