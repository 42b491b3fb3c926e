"""The test bench: real kube-apiserver, Kafka, RabbitMQ, Redis, SQS and Prometheus on loopback.

`python -m tests.testbed install` builds what is missing into a cache outside the repository;
`python -m tests.testbed up` starts services and prints their endpoints; the pytest fixtures in
tests/conftest.py start the same services through `start_service`.
"""

from tests.testbed.bench import SERVICES, Bench, NotInstalledError, down, start_service
from tests.testbed.install import install, paths

__all__ = ["SERVICES", "Bench", "NotInstalledError", "down", "install", "paths", "start_service"]
