"""The event sources the bench runs for real: Kafka, RabbitMQ, Redis, SQS (moto) and Prometheus.

Each class starts its server on free loopback ports in its own working directory, returns only
once the server answers a real request, and stops its whole process group on `stop()`.
`endpoint()` is the service's entry in the JSON that `python -m tests.testbed up` prints.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import socket
import threading
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Protocol

from tests.testbed import versions
from tests.testbed.install import Paths
from tests.testbed.pki import ServerTLS
from tests.testbed.procs import LOOPBACK, ManagedProcess, free_port, http_ok, port_open, wait_until


class Service(Protocol):
    @property
    def processes(self) -> list[ManagedProcess]: ...

    def endpoint(self) -> dict[str, str]: ...

    def stop(self) -> None: ...


def _run_coroutine(coroutine: Any) -> Any:
    """Run a readiness probe written with an asyncio client, from sync code, in any context."""
    result: list[Any] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coroutine))
        except BaseException as exc:  # re-raised in the caller's thread
            error.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


# --- Apache Kafka ------------------------------------------------------------------------------

KAFKA_LOG4J2 = """Configuration:
  status: warn
  Appenders:
    Console:
      name: STDOUT
      target: SYSTEM_OUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: info
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka
        level: info
      - name: org.apache.kafka
        level: warn
      - name: state.change.logger
        level: warn
"""

KAFKA_JVM_FLAGS = [
    "-Xms512m",
    "-Xmx1g",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:+DisableExplicitGC",
    "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true",
]


class Kafka:
    """A single-node Apache Kafka 4.x in KRaft mode (broker and controller in one JVM).

    `bootstrap` is a PLAINTEXT listener; `sasl_bootstrap` a SASL_PLAINTEXT one accepting the
    USERS by PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512. With `tls` (opt-in), `sasl_ssl_bootstrap`
    is a SASL_SSL listener too: the same users and mechanisms over TLS, the server certificate
    from `tls`, no client certificate asked for.
    """

    USERS = {"alice": "alice-secret", "bob": "bob-secret"}

    def __init__(self, where: Paths, workdir: Path, *, tls: ServerTLS | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.sasl_port = free_port()
        controller_port = free_port()
        self.bootstrap = f"{LOOPBACK}:{self.port}"
        self.sasl_bootstrap = f"{LOOPBACK}:{self.sasl_port}"
        self.sasl_ssl_bootstrap: str | None = None
        tls_listener: list[str] = []
        tls_settings: list[str] = []
        if tls is not None:
            self.sasl_ssl_bootstrap = f"{LOOPBACK}:{free_port()}"
            tls_listener = [f"SASL_SSL://{self.sasl_ssl_bootstrap}"]
            keystore = workdir / "server.pem"  # Kafka's PEM keystore: the key, then the chain
            keystore.write_bytes(tls.key_file.read_bytes() + tls.cert_file.read_bytes())
            tls_settings = [
                "ssl.keystore.type=PEM",
                f"ssl.keystore.location={keystore}",
                "ssl.truststore.type=PEM",
                f"ssl.truststore.location={tls.ca_file}",
                "listener.name.sasl_ssl.ssl.client.auth=none",
                "listener.name.sasl_ssl.plain.sasl.jaas.config="
                "org.apache.kafka.common.security.plain.PlainLoginModule required "
                + " ".join(f'user_{u}="{p}"' for u, p in self.USERS.items())
                + ";",
                "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config="
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
                "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            ]
        listeners = [
            f"PLAINTEXT://{LOOPBACK}:{self.port}",
            f"SASL_PLAINTEXT://{LOOPBACK}:{self.sasl_port}",
            *tls_listener,
        ]
        properties = workdir / "server.properties"
        properties.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@{LOOPBACK}:{controller_port}",
                    "listeners="
                    + ",".join([*listeners, f"CONTROLLER://{LOOPBACK}:{controller_port}"]),
                    "advertised.listeners=" + ",".join(listeners),
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=PLAINTEXT",
                    "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,"
                    "SASL_PLAINTEXT:SASL_PLAINTEXT" + (",SASL_SSL:SASL_SSL" if tls else ""),
                    *tls_settings,
                    # SASL users for tests of credentials: PLAIN and SCRAM-SHA-512.
                    "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
                    "listener.name.sasl_plaintext.plain.sasl.jaas.config="
                    "org.apache.kafka.common.security.plain.PlainLoginModule required "
                    + " ".join(f'user_{u}="{p}"' for u, p in self.USERS.items())
                    + ";",
                    "listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config="
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;",
                    "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config="
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;",
                    f"log.dirs={workdir / 'data'}",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=1",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "num.partitions=1",
                    "num.network.threads=2",
                    "num.io.threads=2",
                    "num.recovery.threads.per.data.dir=1",
                    "auto.create.topics.enable=true",
                    "",
                ]
            )
        )
        (workdir / "log4j2.yaml").write_text(KAFKA_LOG4J2)
        java = [
            "java",
            *KAFKA_JVM_FLAGS,
            f"-Dlog4j2.configurationFile={workdir / 'log4j2.yaml'}",
            "-cp",
            f"{where.kafka_libs}/*",
        ]
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        scram = [
            argument
            for user, password in self.USERS.items()
            for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512")
            for argument in ("--add-scram", f"{mechanism}=[name={user},password={password}]")
        ]
        formatter = ManagedProcess(
            "kafka-storage-format",
            [
                *java,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(properties),
                *scram,
            ],
            log_path=workdir / "format.log",
        )
        if formatter.popen.wait(timeout=120) != 0:
            raise formatter.fail("storage format failed")
        formatter.stop()
        self.process = ManagedProcess(
            "kafka", [*java, "kafka.Kafka", str(properties)], log_path=workdir / "kafka.log"
        )
        self.processes = [self.process]
        wait_until(self.process, lambda: port_open(self.port), timeout=90, what="listening")
        if self.sasl_ssl_bootstrap is not None:
            tls_port = int(self.sasl_ssl_bootstrap.rsplit(":", 1)[1])
            wait_until(self.process, lambda: port_open(tls_port), timeout=30, what="on TLS")
        wait_until(
            self.process,
            lambda: bool(_run_coroutine(self._probe())),
            timeout=90,
            what="accepting produce requests",
            interval=1.0,
        )

    async def _probe(self) -> bool:
        from aiokafka import AIOKafkaProducer

        # The first send creates the topic; aiokafka warns about it missing until then.
        logging.getLogger("aiokafka.cluster").setLevel(logging.ERROR)

        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
        try:
            await producer.start()
            await producer.send_and_wait("testbed-ready", b"ready")
            return True
        finally:
            await producer.stop()

    def endpoint(self) -> dict[str, str]:
        found = {"bootstrap": self.bootstrap, "sasl_bootstrap": self.sasl_bootstrap}
        if self.sasl_ssl_bootstrap is not None:
            found["sasl_ssl_bootstrap"] = self.sasl_ssl_bootstrap
        return found

    def stop(self) -> None:
        self.process.stop()


# --- RabbitMQ ----------------------------------------------------------------------------------


class RabbitMQ:
    """Debian's rabbitmq-server with the management plugin, on its own epmd and ports.

    With `tls` (opt-in) it speaks TLS only, on the same two ports: AMQPS and the management API
    over HTTPS, both requiring a client certificate signed by `tls`'s CA; `amqp` and
    `management` are then amqps:// and https:// URLs.
    """

    USER = "guest"  # the default user; allowed from loopback only, which is all we use
    PASSWORD = "guest"

    def __init__(self, where: Paths, workdir: Path, *, tls: ServerTLS | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.amqp_port = free_port()
        self.management_port = free_port()
        epmd_port = free_port()
        node = f"bench{self.amqp_port}"
        self.client_context = tls.client_context() if tls is not None else None
        listeners = [
            f"listeners.tcp.default = {LOOPBACK}:{self.amqp_port}",
            f"management.tcp.port = {self.management_port}",
            f"management.tcp.ip = {LOOPBACK}",
        ]
        if tls is not None:
            files = [
                f"cacertfile = {tls.ca_file}",
                f"certfile = {tls.cert_file}",
                f"keyfile = {tls.key_file}",
                "verify = verify_peer",
                "fail_if_no_peer_cert = true",
            ]
            listeners = [
                "listeners.tcp = none",
                f"listeners.ssl.default = {LOOPBACK}:{self.amqp_port}",
                *(f"ssl_options.{line}" for line in files),
                f"management.ssl.port = {self.management_port}",
                f"management.ssl.ip = {LOOPBACK}",
                *(f"management.ssl.{line}" for line in files),
            ]
        (workdir / "rabbitmq.conf").write_text(
            "\n".join(
                [
                    *listeners,
                    # Refresh queue statistics every second so tests read fresh depths.
                    "collect_statistics_interval = 1000",
                    "log.console = true",
                    "log.console.level = warning",
                    "log.file = false",
                    "",
                ]
            )
        )
        (workdir / "enabled_plugins").write_text("[rabbitmq_management].\n")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(workdir),  # the Erlang cookie lands here
            "LANG": "C.UTF-8",
            "ERL_EPMD_PORT": str(epmd_port),
            "ERL_EPMD_ADDRESS": LOOPBACK,
            "RABBITMQ_NODENAME": f"{node}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": LOOPBACK,
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_CONFIG_FILE": str(workdir / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(workdir / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(workdir / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(workdir / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(workdir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(workdir / "log"),
            "RABBITMQ_PID_FILE": str(workdir / "rabbitmq.pid"),
        }
        (workdir / "rabbitmq-env.conf").write_text("")
        # Our own epmd in the foreground, so it belongs to a process group we stop.
        self.epmd = ManagedProcess(
            "epmd",
            ["epmd", "-port", str(epmd_port), "-address", LOOPBACK],
            log_path=workdir / "epmd.log",
        )
        wait_until(self.epmd, lambda: port_open(epmd_port), timeout=10, what="listening")
        self.process = ManagedProcess(
            "rabbitmq-server",
            [versions.DEBIAN["rabbitmq"][0]],
            log_path=workdir / "rabbitmq.log",
            env=env,
            cwd=workdir,
        )
        self.processes = [self.process, self.epmd]
        amqp, http = ("amqps", "https") if tls is not None else ("amqp", "http")
        self.amqp = f"{amqp}://{self.USER}:{self.PASSWORD}@{LOOPBACK}:{self.amqp_port}/"
        self.management = f"{http}://{self.USER}:{self.PASSWORD}@{LOOPBACK}:{self.management_port}"
        auth = base64.b64encode(f"{self.USER}:{self.PASSWORD}".encode()).decode()
        wait_until(
            self.process,
            lambda: (
                port_open(self.amqp_port)
                and http_ok(
                    self.management_url("/api/overview"),
                    headers={"Authorization": f"Basic {auth}"},
                    context=self.client_context,
                )
            ),
            timeout=120,
            what="serving AMQP and the management API",
            interval=0.5,
        )

    def endpoint(self) -> dict[str, str]:
        return {"amqp": self.amqp, "management": self.management}

    def management_url(self, path: str) -> str:
        """An absolute management-API URL without credentials in it (pass them as auth)."""
        scheme = "https" if self.client_context is not None else "http"
        return f"{scheme}://{LOOPBACK}:{self.management_port}{path}"

    def stop(self) -> None:
        self.process.stop(timeout=30)
        self.epmd.stop()


# --- Redis -------------------------------------------------------------------------------------


class Redis:
    """Debian's redis-server, in-memory only.

    With `tls` (opt-in) it speaks TLS only, on `port`, and requires a client certificate signed
    by `tls`'s CA; `url` is then a rediss:// URL.
    """

    def __init__(self, where: Paths, workdir: Path, *, tls: ServerTLS | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.client_context = tls.client_context() if tls is not None else None
        self.url = f"{'rediss' if tls else 'redis'}://{LOOPBACK}:{self.port}/0"
        listen = ["--port", str(self.port)]
        if tls is not None:
            listen = [
                "--port",
                "0",
                "--tls-port",
                str(self.port),
                "--tls-cert-file",
                str(tls.cert_file),
                "--tls-key-file",
                str(tls.key_file),
                "--tls-ca-cert-file",
                str(tls.ca_file),
                "--tls-auth-clients",
                "yes",
            ]
        self.process = ManagedProcess(
            "redis-server",
            [
                versions.DEBIAN["redis"][0],
                *listen,
                "--bind",
                LOOPBACK,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
                "--daemonize",
                "no",
            ],
            log_path=workdir / "redis.log",
        )
        self.processes = [self.process]
        wait_until(self.process, self._pong, timeout=30, what="answering PING")

    def _pong(self) -> bool:
        with socket.create_connection((LOOPBACK, self.port), timeout=1) as raw:
            sock = (
                self.client_context.wrap_socket(raw, server_hostname=LOOPBACK)
                if self.client_context is not None
                else raw
            )
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")

    def endpoint(self) -> dict[str, str]:
        return {"url": self.url}

    def stop(self) -> None:
        self.process.stop()


# --- SQS (moto's server) -----------------------------------------------------------------------


class SQS:
    """moto's server as a separate process: a real HTTP endpoint speaking the SQS API."""

    def __init__(self, where: Paths, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.process = ManagedProcess(
            "moto_server",
            [str(where.moto_server), "-H", LOOPBACK, "-p", str(self.port)],
            log_path=workdir / "moto.log",
        )
        self.processes = [self.process]
        wait_until(
            self.process,
            lambda: http_ok(f"{self.url}/moto-api/"),
            timeout=60,
            what="answering HTTP",
            interval=0.3,
        )

    def endpoint(self) -> dict[str, str]:
        return {"endpoint": self.url}

    def stop(self) -> None:
        self.process.stop()


# --- Prometheus --------------------------------------------------------------------------------


class Prometheus:
    """Debian's Prometheus scraping every second the targets tests register.

    `add_target(name, "127.0.0.1:P")` writes a file-based service-discovery entry, which
    Prometheus picks up within a second or two. The remote-write receiver is on as well, so a
    benchmark can push series without running exporters.

    With `tls` (opt-in) its web endpoints speak HTTPS only and require a client certificate
    signed by `tls`'s CA; `url` is then an https:// URL (scraping stays plain HTTP).
    """

    def __init__(self, where: Paths, workdir: Path, *, tls: ServerTLS | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.targets_dir = workdir / "targets"
        self.targets_dir.mkdir(exist_ok=True)
        self.port = free_port()
        self.url = f"{'https' if tls else 'http'}://{LOOPBACK}:{self.port}"
        self.client_context = tls.client_context() if tls is not None else None
        web_config: list[str] = []
        if tls is not None:
            (workdir / "web.yml").write_text(
                "\n".join(
                    [
                        "tls_server_config:",
                        f"  cert_file: {tls.cert_file}",
                        f"  key_file: {tls.key_file}",
                        f"  client_ca_file: {tls.ca_file}",
                        "  client_auth_type: RequireAndVerifyClientCert",
                        "",
                    ]
                )
            )
            web_config = [f"--web.config.file={workdir / 'web.yml'}"]
        (workdir / "prometheus.yml").write_text(
            "\n".join(
                [
                    "global:",
                    "  scrape_interval: 1s",
                    "  evaluation_interval: 1s",
                    "scrape_configs:",
                    "  - job_name: testbed",
                    "    file_sd_configs:",
                    f"      - files: ['{self.targets_dir}/*.json']",
                    "        refresh_interval: 1s",
                    "",
                ]
            )
        )
        self.process = ManagedProcess(
            "prometheus",
            [
                versions.DEBIAN["prometheus"][0],
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--web.listen-address={LOOPBACK}:{self.port}",
                f"--storage.tsdb.path={workdir / 'data'}",
                "--web.enable-remote-write-receiver",
                "--web.enable-lifecycle",
                "--log.level=warn",
                *web_config,
            ],
            log_path=workdir / "prometheus.log",
        )
        self.processes = [self.process]
        wait_until(
            self.process,
            lambda: http_ok(f"{self.url}/-/ready", context=self.client_context),
            timeout=60,
            what="ready",
        )

    def add_target(self, name: str, address: str, labels: dict[str, str] | None = None) -> None:
        entry = [{"targets": [address], "labels": {"job": name, **(labels or {})}}]
        staging = self.targets_dir / f".{name}.json.tmp"
        staging.write_text(json.dumps(entry))
        staging.replace(self.targets_dir / f"{name}.json")

    def remove_target(self, name: str) -> None:
        (self.targets_dir / f"{name}.json").unlink(missing_ok=True)

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query through the HTTP API (for the bench's own waits)."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5, context=self.client_context) as response:
            body = json.load(response)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def endpoint(self) -> dict[str, str]:
        return {"url": self.url}

    def stop(self) -> None:
        self.process.stop()
