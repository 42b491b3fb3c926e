"""The operator's settings, from command-line flags or their AUTOSCALE_* environment variables."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    kubeconfig: str | None = None
    namespaces: tuple[str, ...] = ()  # empty: all namespaces
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 8080
    health_port: int = 8081
    leader_elect: bool = False
    shards: int = 0  # 0: not sharded; K: poll the ScaledObjects of the shard Leases held
    lease_name: str = "autoscale-operator"
    lease_namespace: str = "autoscale-system"
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    identity: str = ""
    operator_namespace: str = "autoscale-system"
    poll_timeout: float = 10.0
    log_format: str = "text"
    log_level: str = "info"


def default_identity() -> str:
    return f"{socket.gethostname()}_{os.getpid()}"


def operator_namespace() -> str:
    """The namespace the operator runs in: POD_NAMESPACE, the service account's, or a default."""
    configured = os.environ.get("POD_NAMESPACE")
    if configured:
        return configured
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as handle:
            return handle.read().strip()
    except OSError:
        return "autoscale-system"
