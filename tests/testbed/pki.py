"""Small self-signed CAs and certificates for the bench, made with `cryptography`.

kube-apiserver needs three, as controller-runtime's envtest makes them: one CA for its serving
certificate, one key pair for signing service-account tokens, and one CA for client
certificates (a client certificate's CN is the user name, its O entries the groups). The same
CA code serves the TLS tests of the sources.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=7)


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True)
class KeyPair:
    cert_pem: bytes
    key_pem: bytes

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        cert, key = directory / f"{stem}.crt", directory / f"{stem}.key"
        cert.write_bytes(self.cert_pem)
        key.write_bytes(self.key_pem)
        key.chmod(0o600)
        return cert, key


class TinyCA:
    """A throwaway certificate authority."""

    def __init__(self, common_name: str) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        self._set(cert, key)

    def _set(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self._cert, self._key = cert, key
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        self.key_pem = _pem_key(key)

    @classmethod
    def load(cls, cert_pem: bytes, key_pem: bytes) -> TinyCA:
        """The CA written by an earlier `KeyPair.write` (e.g. by a running `up`)."""
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TypeError("expected an EC CA key")
        ca = cls.__new__(cls)
        ca._set(x509.load_pem_x509_certificate(cert_pem), key)
        return ca

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        return KeyPair(self.cert_pem, self.key_pem).write(directory, stem)

    def issue(
        self,
        common_name: str,
        *,
        organizations: tuple[str, ...] = (),
        hosts: tuple[str, ...] = (),
        client: bool = False,
        server: bool = False,
        rsa_key: bool = False,
    ) -> KeyPair:
        """A leaf certificate; `hosts` become DNS or IP subject alternative names."""
        key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            if rsa_key
            else ec.generate_private_key(ec.SECP256R1())
        )
        attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        attributes += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        now = datetime.datetime.now(datetime.UTC)
        usages = ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else []) + (
            [ExtendedKeyUsageOID.SERVER_AUTH] if server else []
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attributes))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        if usages:  # an empty extension is invalid; cryptography 51 refuses it
            builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        if hosts:
            names: list[x509.GeneralName] = []
            for host in hosts:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    names.append(x509.DNSName(host))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))


def signing_key_pair() -> KeyPair:
    """An RSA key pair for service-account tokens: (public key PEM, private key PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return KeyPair(public, _pem_key(key))


@dataclass(frozen=True)
class ServerTLS:
    """The TLS files of one TLS-only bench service, and what its clients are given.

    A CA of its own, the server's key pair for 127.0.0.1 and localhost, and a client key pair
    signed by the same CA, all written under one directory (the services read files).
    """

    ca_pem: bytes
    client: KeyPair
    ca_file: Path
    cert_file: Path
    key_file: Path
    client_cert_file: Path
    client_key_file: Path

    @classmethod
    def create(cls, directory: Path, name: str, *, client_name: str = "scaler") -> ServerTLS:
        directory.mkdir(parents=True, exist_ok=True)
        ca = TinyCA(f"{name}-ca")
        ca_file, _ = ca.write(directory, "ca")
        server = ca.issue(name, hosts=("127.0.0.1", "localhost"), server=True)
        cert_file, key_file = server.write(directory, "server")
        client = ca.issue(client_name, client=True)
        client_cert_file, client_key_file = client.write(directory, "client")
        return cls(
            ca_pem=ca.cert_pem,
            client=client,
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
            client_cert_file=client_cert_file,
            client_key_file=client_key_file,
        )

    def client_context(self) -> ssl.SSLContext:
        """Trusts only this CA and presents the client certificate."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.load_cert_chain(self.client_cert_file, self.client_key_file)
        return context
