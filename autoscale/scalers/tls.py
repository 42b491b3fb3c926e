"""Client TLS contexts from PEM text held in memory, never written to a lasting file.

Scalers take `ca`, `cert`, `key` (and sometimes `keyPassword`) as PEM text from auth params.
OpenSSL loads a certificate chain and key from files only, so `pem_file` hands it the text
through an anonymous in-memory file where the OS has one, else a private temporary file,
gone as soon as it is loaded. `material_problem` says why the material cannot be used
without ever quoting any of it.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

__all__ = [
    "Material",
    "client_context",
    "config_context",
    "material_fields",
    "material_problem",
    "pem_file",
]


class Material(Protocol):
    """A scaler config with KEDA's usual TLS parameters (kafka, redis-streams)."""

    @property
    def ca(self) -> str | None: ...
    @property
    def cert(self) -> str | None: ...
    @property
    def key(self) -> str | None: ...
    @property
    def key_password(self) -> str | None: ...
    @property
    def unsafe_ssl(self) -> bool: ...


def client_context(
    *,
    ca: str | None,
    cert: str | None,
    key: str | None,
    key_password: str | None = None,
    unsafe_ssl: bool,
    system_roots: bool = True,
    extra_roots_file: str | None = None,
) -> ssl.SSLContext:
    """KEDA's TLS client settings: TLS 1.2 or later, system roots (plus `extra_roots_file`)
    unless `system_roots` is false, plus `ca`; a client certificate when both `cert` and
    `key` are given; `unsafe_ssl` skips verification."""
    if unsafe_ssl or not system_roots:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    else:
        context = ssl.create_default_context()
        if extra_roots_file is not None:
            context.load_verify_locations(extra_roots_file)
    if unsafe_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca:
        context.load_verify_locations(cadata=ca)
    if cert and key:
        password = key_password or ""
        with pem_file(cert) as cert_path, pem_file(key) as key_path:
            # A callable, so that OpenSSL never prompts on a terminal for a missing password.
            context.load_cert_chain(cert_path, key_path, password=lambda: password)
    return context


def config_context(config: Material, *, system_roots: bool = True) -> ssl.SSLContext:
    """`client_context` from a config's `ca`, `cert`, `key`, `keyPassword` and `unsafeSsl`."""
    return client_context(
        ca=config.ca,
        cert=config.cert,
        key=config.key,
        key_password=config.key_password,
        unsafe_ssl=config.unsafe_ssl,
        system_roots=system_roots,
    )


def material_fields(cert: str | None) -> str:
    """The auth params a TLS-material error names: `ca` alone without a client certificate."""
    return '"ca"' if cert is None else '"ca", "cert", "key" or "keyPassword"'


def material_problem(build: Callable[[], object], fields: str) -> str | None:
    """Why `build` (which loads TLS material) fails, naming the auth params `fields`, or None;
    never any of the material's text."""
    try:
        build()
    except (ssl.SSLError, ValueError, TypeError, OSError) as exc:
        reason = exc.reason if isinstance(exc, ssl.SSLError) and exc.reason else "invalid"
        return f"auth param {fields} cannot be loaded as TLS material ({reason})"
    return None


@contextlib.contextmanager
def pem_file(text: str) -> Iterator[str]:
    """A path to `text` for OpenSSL, which loads keys from files only: an anonymous in-memory
    file where the OS has them (Linux memfd with /proc), else a private temporary file; either
    is gone on exit."""
    data = text.encode()
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is not None and os.path.isdir("/proc/self/fd"):
        fd = memfd_create("autoscale-pem", getattr(os, "MFD_CLOEXEC", 0))
        try:
            _write_all(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="autoscale-") as directory:
        path = Path(directory) / "material.pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        yield str(path)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
