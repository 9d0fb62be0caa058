"""A small private PKI for one fleet: a CA, one server certificate per agent, one client certificate.

Agents and the host trust only this CA, so a certificate from anywhere else is refused by both
sides. Keys are ECDSA P-256 (small, fast on a Jetson, accepted by gRPC's BoringSSL) and are
written with mode 0600 through a temporary file and a rename, so a half-written key never exists.
"""
from __future__ import annotations

import datetime as _dt
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from device_agent.errors import InvalidInput
from device_agent.fileio import atomic_write

CA_CERT = "ca.pem"
CA_KEY = "ca.key"
CLIENT_NAME = "client"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")

CA_DAYS = 3650
LEAF_DAYS = 825


class CertError(InvalidInput):
    """A certificate request cannot be satisfied; the message says what to change."""


@dataclass(frozen=True)
class CertPair:
    """Where one certificate and its key live on disk."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class CA:
    """A loaded certificate authority that can sign leaves."""

    directory: Path
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_path(self) -> Path:
        return self.directory / CA_CERT

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def check_name(name: str) -> str:
    """Names become file names; refuse anything that could escape the directory."""
    if not _NAME_RE.match(name or ""):
        raise CertError(
            f"invalid certificate name {name!r}: use letters, digits, '.', '_' or '-' (at most 63)"
        )
    return name


def init_ca(directory: Path, *, common_name: str = "deploy fleet CA", days: int = CA_DAYS) -> CA:
    """Create the CA in DIRECTORY, or load it if it is already there (never overwrite a CA)."""
    directory = Path(directory)
    if (directory / CA_CERT).exists() or (directory / CA_KEY).exists():
        return load_ca(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + _dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    atomic_write(directory / CA_KEY, _key_pem(key), 0o600)
    atomic_write(directory / CA_CERT, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return CA(directory, cert, key)


def load_ca(directory: Path) -> CA:
    directory = Path(directory)
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    if not cert_path.is_file() or not key_path.is_file():
        raise CertError(f"no CA in {directory}: run `deploy certs init --dir {directory}` first")
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertError(f"{key_path} is not an EC private key made by `deploy certs init`")
    return CA(directory, cert, key)


def _san_entries(sans: Iterable[str]) -> list:
    out: list = []
    seen: set = set()
    for raw in sans:
        s = (raw or "").strip()
        if not s or s in seen:
            continue
        seen.add(s)
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(s)))
        except ValueError:
            out.append(x509.DNSName(s))
    return out


def host_of(address: str) -> str:
    """The host part of "host:port", "[v6]:port", "user@host:port" or a bare host."""
    a = address.strip()
    if "@" in a:
        a = a.split("@", 1)[1]
    if a.startswith("["):
        return a[1:].split("]", 1)[0]
    if a.count(":") == 1:
        return a.split(":", 1)[0]
    return a


def issue_leaf(
    ca: CA,
    name: str,
    *,
    server: bool,
    sans: Sequence[str] = (),
    days: int = LEAF_DAYS,
    not_before: Optional[_dt.datetime] = None,
    not_after: Optional[_dt.datetime] = None,
) -> tuple:
    """Sign a new key for NAME. Returns (cert, key); nothing is written.

    `not_before`/`not_after` exist so tests can make an expired certificate.
    """
    check_name(name)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    nb = not_before or (now - _dt.timedelta(minutes=5))
    na = not_after or (now + _dt.timedelta(days=days))
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(nb)
        .not_valid_after(na)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    entries = _san_entries([name, *sans]) if server else _san_entries([name])
    if entries:
        builder = builder.add_extension(x509.SubjectAlternativeName(entries), critical=False)
    cert = builder.sign(ca.key, hashes.SHA256())
    return cert, key


def write_pair(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, cert_path: Path, key_path: Path) -> CertPair:
    atomic_write(key_path, _key_pem(key), 0o600)
    atomic_write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return CertPair(cert_path, key_path)


def agent_paths(directory: Path, name: str) -> CertPair:
    check_name(name)
    d = Path(directory) / "agents"
    return CertPair(d / f"{name}.pem", d / f"{name}.key")


def client_paths(directory: Path, name: str = CLIENT_NAME) -> CertPair:
    check_name(name)
    return CertPair(Path(directory) / f"{name}.pem", Path(directory) / f"{name}.key")


def issue_agent(directory: Path, name: str, sans: Sequence[str] = (), *, force: bool = True) -> CertPair:
    """Sign a server certificate for device NAME whose SANs cover NAME, SANS, and localhost."""
    ca = load_ca(directory)
    paths = agent_paths(directory, name)
    if not force and paths.cert.exists() and paths.key.exists():
        return paths
    all_sans = [host_of(s) for s in sans] + ["localhost", "127.0.0.1", "::1"]
    cert, key = issue_leaf(ca, name, server=True, sans=all_sans)
    return write_pair(cert, key, paths.cert, paths.key)


def issue_client(directory: Path, name: str = CLIENT_NAME, *, force: bool = True) -> CertPair:
    ca = load_ca(directory)
    paths = client_paths(directory, name)
    if not force and paths.cert.exists() and paths.key.exists():
        return paths
    cert, key = issue_leaf(ca, name, server=False)
    return write_pair(cert, key, paths.cert, paths.key)


@dataclass(frozen=True)
class DeviceNames:
    """What a certificate for one device must cover (plain data so this module needs no inventory)."""

    name: str
    addresses: Sequence[str] = ()


def init(directory: Path, devices: Sequence[DeviceNames] = ()) -> dict:
    """CA + client certificate + one agent certificate per device; existing ones are kept."""
    ca = init_ca(directory)
    out = {"ca": ca.cert_path, "client": issue_client(directory, force=False)}
    for d in devices:
        out[d.name] = issue_agent(directory, d.name, d.addresses, force=False)
    return out


def sans_of(cert_path: Path) -> list:
    """The SANs of a certificate, as strings; used by `certs issue` output and tests."""
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(v) for v in ext.get_values_for_type(x509.DNSName)] + [
        str(v) for v in ext.get_values_for_type(x509.IPAddress)
    ]
