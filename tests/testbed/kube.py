"""A real kube-apiserver with etcd behind it, started the way controller-runtime's envtest does.

TLS serving certificate, RBAC authorization, service-account token signing, and an admin user
authenticated by a client certificate in `system:masters`. No controller-manager, scheduler or
kubelet runs: Deployments keep the replica count they are given and no Pods appear, which is
all an autoscaler that patches `/scale` needs.
"""

from __future__ import annotations

import base64
import ssl
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.testbed.install import Paths
from tests.testbed.pki import TinyCA, signing_key_pair
from tests.testbed.procs import LOOPBACK, ManagedProcess, free_port, http_ok, wait_until

AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  # Every write, with who made it: lets tests prove which process patched a target.
  - level: Metadata
    verbs: ["create", "update", "patch", "delete", "deletecollection"]
  - level: None
"""


class Etcd:
    def __init__(self, binary: Path, workdir: Path) -> None:
        self.port = free_port()
        peer_port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        peer_url = f"http://{LOOPBACK}:{peer_port}"
        self.process = ManagedProcess(
            "etcd",
            [
                str(binary),
                "--name=bench",
                f"--data-dir={workdir / 'etcd-data'}",
                f"--listen-client-urls={self.url}",
                f"--advertise-client-urls={self.url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=bench={peer_url}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
            log_path=workdir / "etcd.log",
        )
        wait_until(self.process, lambda: http_ok(f"{self.url}/health"), timeout=30, what="healthy")

    def stop(self) -> None:
        self.process.stop()


class KubeAPIServer:
    """etcd + kube-apiserver; `kubeconfig` is an admin kubeconfig for kubectl and clients."""

    def __init__(
        self,
        where: Paths,
        workdir: Path,
        *,
        etcd: Etcd | None,
        serving_ca: TinyCA,
        client_ca: TinyCA,
        server: str,
    ) -> None:
        self.paths = where
        self.workdir = workdir
        self.etcd = etcd
        self.serving_ca = serving_ca
        self.client_ca = client_ca
        self.server = server
        self.port = int(server.rsplit(":", 1)[1])
        self.ca_file = workdir / "pki" / "serving-ca.crt"
        self.audit_log = workdir / "audit.log"
        self.kubeconfig = workdir / "admin.kubeconfig"
        self.process: ManagedProcess | None = None

    @classmethod
    def start(cls, where: Paths, workdir: Path) -> KubeAPIServer:
        """Start etcd, make the certificates, start the apiserver, write admin.kubeconfig."""
        workdir.mkdir(parents=True, exist_ok=True)
        certs = workdir / "pki"
        certs.mkdir(exist_ok=True)
        etcd = Etcd(where.etcd, workdir)
        serving_ca = TinyCA("autoscale-testbed-serving-ca")
        client_ca = TinyCA("autoscale-testbed-client-ca")
        serving_ca.write(certs, "serving-ca")
        client_ca.write(certs, "client-ca")
        serving_ca.issue("kube-apiserver", hosts=("localhost", LOOPBACK), server=True).write(
            certs, "apiserver"
        )
        signing_key_pair().write(certs, "sa-signer")
        (workdir / "audit-policy.yaml").write_text(AUDIT_POLICY)
        kube = cls(
            where,
            workdir,
            etcd=etcd,
            serving_ca=serving_ca,
            client_ca=client_ca,
            server=f"https://{LOOPBACK}:{free_port()}",
        )
        try:
            kube.start_apiserver()
        except BaseException:
            etcd.stop()
            raise
        kube.kubeconfig_for_user("admin", groups=("system:masters",), path=kube.kubeconfig)
        return kube

    @classmethod
    def attach(cls, where: Paths, workdir: Path) -> KubeAPIServer:
        """The apiserver another process (`up`) runs in `workdir`, to mint credentials for it."""
        certs = workdir / "pki"
        config = yaml.safe_load((workdir / "admin.kubeconfig").read_text())
        return cls(
            where,
            workdir,
            etcd=None,
            serving_ca=TinyCA.load(
                (certs / "serving-ca.crt").read_bytes(), (certs / "serving-ca.key").read_bytes()
            ),
            client_ca=TinyCA.load(
                (certs / "client-ca.crt").read_bytes(), (certs / "client-ca.key").read_bytes()
            ),
            server=config["clusters"][0]["cluster"]["server"],
        )

    def start_apiserver(self) -> None:
        """Start (or restart, on the same port and etcd) the apiserver and wait for /readyz."""
        certs = self.workdir / "pki"
        assert self.etcd is not None, "an attached apiserver is not ours to start"
        self.process = ManagedProcess(
            "kube-apiserver",
            [
                str(self.paths.kube_apiserver),
                f"--etcd-servers={self.etcd.url}",
                f"--tls-cert-file={certs / 'apiserver.crt'}",
                f"--tls-private-key-file={certs / 'apiserver.key'}",
                f"--cert-dir={certs}",
                f"--secure-port={self.port}",
                f"--bind-address={LOOPBACK}",
                f"--advertise-address={LOOPBACK}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
                "--disable-admission-plugins=ServiceAccount",
                "--authorization-mode=RBAC",
                f"--service-account-issuer={self.server}",
                f"--service-account-key-file={certs / 'sa-signer.crt'}",
                f"--service-account-signing-key-file={certs / 'sa-signer.key'}",
                f"--client-ca-file={certs / 'client-ca.crt'}",
                f"--audit-policy-file={self.workdir / 'audit-policy.yaml'}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                "--profiling=false",
                "-v=0",
            ],
            log_path=self.workdir / "kube-apiserver.log",
        )
        context = ssl.create_default_context(cafile=str(self.ca_file))
        wait_until(
            self.process,
            lambda: http_ok(f"{self.server}/readyz", context=context),
            timeout=120,
            what="ready (/readyz)",
            interval=0.5,
        )

    def stop_apiserver(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def stop(self) -> None:
        self.stop_apiserver()
        if self.etcd is not None:
            self.etcd.stop()

    @property
    def processes(self) -> list[ManagedProcess]:
        etcd = self.etcd.process if self.etcd is not None else None
        return [p for p in (etcd, self.process) if p is not None]

    def endpoint(self) -> dict[str, str]:
        return {"kubeconfig": str(self.kubeconfig), "server": self.server}

    # --- credentials ---------------------------------------------------------------------

    def kubeconfig_for_user(
        self, user: str, *, groups: tuple[str, ...] = (), path: Path | None = None
    ) -> Path:
        """A kubeconfig authenticating as `user` in `groups` by a client certificate."""
        pair = self.client_ca.issue(user, organizations=groups, client=True)
        credentials = {
            "client-certificate-data": base64.b64encode(pair.cert_pem).decode(),
            "client-key-data": base64.b64encode(pair.key_pem).decode(),
        }
        return self._write_kubeconfig(path or self.workdir / f"user-{user}.kubeconfig", credentials)

    def kubeconfig_for_service_account(
        self, namespace: str, name: str, *, path: Path | None = None, duration: str = "24h"
    ) -> Path:
        """A kubeconfig with a token for ServiceAccount `namespace/name` (created if absent)."""
        self.kubectl("create", "serviceaccount", name, "-n", namespace, check=False)
        token = self.kubectl(
            "create", "token", name, "-n", namespace, f"--duration={duration}"
        ).stdout.strip()
        target = path or self.workdir / f"sa-{namespace}-{name}.kubeconfig"
        return self._write_kubeconfig(target, {"token": token})

    def _write_kubeconfig(self, path: Path, credentials: dict[str, str]) -> Path:
        config: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "testbed",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": base64.b64encode(
                            self.serving_ca.cert_pem
                        ).decode(),
                    },
                }
            ],
            "users": [{"name": "testbed-user", "user": credentials}],
            "contexts": [
                {"name": "testbed", "context": {"cluster": "testbed", "user": "testbed-user"}}
            ],
            "current-context": "testbed",
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)
        return path

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run the bench's kubectl (same release as the server) against this apiserver."""
        result = subprocess.run(
            [str(self.paths.kubectl), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}"
            )
        return result
