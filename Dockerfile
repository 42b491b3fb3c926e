# syntax=docker/dockerfile:1
# The operator's image: `autoscale run` as a non-root user, on a read-only root filesystem.
#
#   docker build -t autoscale:dev .
#   docker run --rm autoscale:dev --version
#
# Two stages: the builder installs the project from this checkout with pip into a virtual
# environment (/opt/autoscale); the final stage copies only that environment onto the same
# slim Python base. Nothing is written outside /tmp at run time (bytecode is compiled at build
# time, PYTHONDONTWRITEBYTECODE stops any further writes). tests/unit/test_dockerfile.py runs
# the builder's ENV and RUN steps in a fresh virtual environment, since no Docker engine runs
# in CI. See docs/deployment.md ("The image").

# Python 3.11 on Debian 12, slim; pinned by digest, so a rebuild gets the same bytes.
# Refresh: `docker buildx imagetools inspect python:3.11.15-slim-bookworm`, then update both.
ARG PYTHON_IMAGE=python:3.11.15-slim-bookworm@sha256:b18992999dbe963a45a8a4da40ac2b1975be1a776d939d098c647482bcad5cba

FROM ${PYTHON_IMAGE} AS builder
ENV VIRTUAL_ENV=/opt/autoscale \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv "$VIRTUAL_ENV"
# Only what the package needs to build (see .dockerignore): the metadata, the code, the CRDs
# (autoscale/crds is a symlink to crds/).
COPY pyproject.toml README.md ./
COPY crds/ crds/
COPY autoscale/ autoscale/
# pip compiles the bytecode here, at build time; pip and setuptools are then removed
# from the environment (nothing needs them at run time).
RUN "$VIRTUAL_ENV/bin/pip" install . \
    && "$VIRTUAL_ENV/bin/pip" uninstall --yes pip setuptools \
    && "$VIRTUAL_ENV/bin/autoscale" --version \
    && "$VIRTUAL_ENV/bin/autoscale" crds > /dev/null \
    && "$VIRTUAL_ENV/bin/python" -c "import autoscale.app, autoscale.scalers.registry as r; r.default_registry()"

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0.dev0
LABEL org.opencontainers.image.title="autoscale" \
      org.opencontainers.image.description="Event-driven autoscaler for Kubernetes (KEDA-compatible ScaledObjects)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
ENV VIRTUAL_ENV=/opt/autoscale \
    PATH=/opt/autoscale/bin:/usr/local/bin:/usr/bin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONFAULTHANDLER=1 \
    HOME=/tmp \
    TMPDIR=/tmp
COPY --from=builder /opt/autoscale /opt/autoscale
# 65532: the conventional "nonroot" UID/GID; numeric, so runAsNonRoot can verify it.
USER 65532:65532
WORKDIR /tmp
# 8080: Prometheus metrics (/metrics); 8081: /healthz and /readyz.
EXPOSE 8080 8081
ENTRYPOINT ["autoscale"]
CMD ["run"]
