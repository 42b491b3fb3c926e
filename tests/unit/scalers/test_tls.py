"""tls: PEM material handed to OpenSSL from memory, and problems reported without it."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from autoscale.scalers import tls
from tests.testbed.pki import TinyCA

PEM = "-----BEGIN X-----\n"


def test_pem_file_in_memory_is_closed_after_loading() -> None:
    """Where the OS has memfd, the key never touches a file system, and the fd is closed."""
    if not hasattr(os, "memfd_create"):
        pytest.skip("no memfd_create on this platform")
    with tls.pem_file(PEM) as path:
        assert path.startswith("/proc/self/fd/")
        assert Path(path).read_text() == PEM
        fd = int(path.rsplit("/", 1)[1])
        assert "memfd:autoscale-pem" in os.readlink(path)
    after = f"/proc/self/fd/{fd}"  # closed: gone, or the number reused by something else
    assert not os.path.lexists(after) or "memfd:autoscale-pem" not in os.readlink(after)


def test_pem_file_fallback_is_private_and_removed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without memfd: a 0600 file in a private temporary directory, removed on exit."""
    monkeypatch.delattr(os, "memfd_create", raising=False)
    with tls.pem_file(PEM) as path:
        assert Path(path).read_text() == PEM
        assert Path(path).stat().st_mode & 0o777 == 0o600
        assert Path(path).parent.stat().st_mode & 0o777 == 0o700
    assert not Path(path).exists()
    assert not Path(path).parent.exists()


def test_pem_file_writes_large_material_whole() -> None:
    """Material longer than one write (a long chain) arrives complete."""
    text = PEM + "A" * (1 << 20) + "\n"
    with tls.pem_file(text) as path:
        assert Path(path).read_text() == text


def _encrypted(key_pem: bytes, password: bytes) -> str:
    key = serialization.load_pem_private_key(key_pem, password=None)
    pkcs8, encryption = serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption
    return key.private_bytes(serialization.Encoding.PEM, pkcs8, encryption(password)).decode()


def test_client_context_loads_material_and_enforces_tls12() -> None:
    """ca and a password-protected client key load; TLS 1.2 at least; unsafe skips checks."""
    ca = TinyCA("unit-ca")
    pair = ca.issue("client", client=True)
    ca_pem, cert = ca.cert_pem.decode(), pair.cert_pem.decode()
    key = _encrypted(pair.key_pem, b"secret")
    context = tls.client_context(
        ca=ca_pem, cert=cert, key=key, key_password="secret", unsafe_ssl=False, system_roots=False
    )
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert len(context.get_ca_certs()) == 1
    # A wrong or missing password fails at once, never prompting on a terminal.
    for password in ("wrong", None):
        with pytest.raises(ssl.SSLError):
            tls.client_context(
                ca=ca_pem, cert=cert, key=key, key_password=password, unsafe_ssl=False
            )
    unsafe = tls.client_context(ca=None, cert=None, key=None, unsafe_ssl=True)
    assert unsafe.verify_mode == ssl.CERT_NONE
    assert not unsafe.check_hostname


def test_material_problem_names_the_fields_and_never_the_material() -> None:
    pair = TinyCA("unit-ca").issue("client", client=True)
    other_key = TinyCA("other").issue("x").key_pem.decode()
    cert = pair.cert_pem.decode()
    fields = '"ca", "cert", "key" or "keyPassword"'

    def build() -> ssl.SSLContext:
        return tls.client_context(
            ca=None, cert=cert, key=other_key, key_password="hunter2", unsafe_ssl=False
        )

    message = tls.material_problem(build, fields)
    assert message is not None
    assert message.startswith(f"auth param {fields} cannot be loaded as TLS material (")
    for secret in (cert, other_key, "hunter2", "PRIVATE KEY", "CERTIFICATE"):
        assert secret not in message

    bad_ca = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    message = tls.material_problem(
        lambda: tls.client_context(ca=bad_ca, cert=None, key=None, unsafe_ssl=False), '"ca"'
    )
    assert message is not None
    assert message.startswith('auth param "ca" cannot be loaded as TLS material (')
    assert "AAAA" not in message
    assert tls.material_problem(lambda: None, '"ca"') is None
