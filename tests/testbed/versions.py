"""Pinned versions of everything the test bench runs.

Changing a version here changes the cache directory it is built into, so an old build is
never mistaken for a new one.
"""

KUBERNETES = "1.36.3"
# etcd: the line kube-apiserver 1.36 vendors its client from (go.etcd.io/etcd/client/v3).
ETCD = "3.6.8"
KAFKA = "4.3.1"
SCALA = "2.13"
# Kafka's runtime jars bring log4j-api/core 2.x and slf4j-api 1.7: bind slf4j to log4j2.
LOG4J = "2.25.4"
# Helm v3, to render deploy/helm/autoscale in tests (`helm template`); built from the Go module
# proxy. Its go.mod has no replace directives, so a wrapper module builds exactly its release.
HELM = "3.22.0"
# Bumped when a build recipe below changes, so caches made by an older recipe are rebuilt.
RECIPE = 1

# Services that come from Debian's packages: (binary that must exist, Debian package).
DEBIAN = {
    "redis": ("/usr/bin/redis-server", "redis-server"),
    "rabbitmq": ("/usr/lib/rabbitmq/bin/rabbitmq-server", "rabbitmq-server"),
    "prometheus": ("/usr/bin/prometheus", "prometheus"),
}
