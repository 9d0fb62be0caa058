"""Engines signed by the agent that built them (with a trust root): a record beside each engine in the cache.

TensorRT's security guidance treats a serialized engine as executable code, so an agent with `--trust-root` loads
only engines whose record (`builder.json`, written in the same atomic commit as the plan) verifies:

- an engine built here is signed at write time with this agent's TLS key, whose certificate the fleet CA issued
  (`--tls-cert/--tls-key`); an agent without TLS files signs with a local key made on first start
  (`<data>/trust/engine-seal.key`, 0600), good for its own cache only;
- an engine from elsewhere (PutEngine from `deploy fleet warm`) must carry its builder's record: a certificate
  issued directly by this agent's fleet CA (`--tls-ca`), valid now, and its signature over the engine's key,
  digest and size. It is checked before a byte of the plan is read.

A plan placed into the cache by hand has no record, or one that does not match: it is never loaded (a Build
rebuilds it). The record names the builder (its certificate's common name), so a device knows who built it.
"""
from __future__ import annotations

import base64
import datetime as _dt
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any, Optional

from .bounded_json import loads_bounded
from .errors import PermissionDenied, PreconditionFailed
from .fileio import atomic_write

log = logging.getLogger(__name__)
RECORD = "builder.json"
MAX_RECORD_BYTES = 64 * 1024
LOCAL_KEY = "engine-seal.key"


def _payload(key: str, digest: str, size: int) -> bytes:
    return json.dumps({"key": key, "digest": digest, "size": int(size)}, sort_keys=True,
                      separators=(",", ":")).encode()


class EngineSeal:
    """Signs engines this agent writes and checks the records of engines it reads or is sent."""

    def __init__(self, private_key: Any, cert_pem: bytes, ca: Optional[Any], refusals: Counter) -> None:
        from cryptography import x509

        self.key = private_key
        self.cert_pem = cert_pem  # b"" for the local key
        self.cert = x509.load_pem_x509_certificate(cert_pem) if cert_pem else None
        self.ca = ca
        self.refusals = refusals

    @classmethod
    def from_settings(cls, settings: Any, state: Path, refusals: Counter) -> "EngineSeal":
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519

        ca = x509.load_pem_x509_certificate(Path(settings.tls_ca).read_bytes()) if settings.tls_ca else None
        if settings.tls_cert and settings.tls_key:
            key = serialization.load_pem_private_key(Path(settings.tls_key).read_bytes(), None)
            return cls(key, Path(settings.tls_cert).read_bytes(), ca, refusals)
        path = Path(state) / LOCAL_KEY
        if path.is_file():
            key = serialization.load_pem_private_key(path.read_bytes(), None)
        else:
            key = ed25519.Ed25519PrivateKey.generate()
            atomic_write(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()), mode=0o600)
        return cls(key, b"", ca, refusals)

    # ------------------------------------------------------------------ signing
    def _sign(self, data: bytes) -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        if isinstance(self.key, ec.EllipticCurvePrivateKey):
            return self.key.sign(data, ec.ECDSA(hashes.SHA256()))
        return self.key.sign(data)

    def record(self, key: str, digest: str, size: int) -> bytes:
        """The builder record of an engine this agent wrote."""
        return json.dumps({"builder": self.cert_pem.decode(), "local": not self.cert_pem,
                           "signature": base64.b64encode(self._sign(_payload(key, digest, size))).decode()},
                          sort_keys=True).encode()

    # ------------------------------------------------------------------ checking
    def builder(self, record: bytes, key: str, digest: str, size: int, *, foreign: bool) -> str:
        """The builder's name when `record` vouches for (key, digest, size); PERMISSION_DENIED otherwise."""
        from cryptography import x509
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        what = f"engine {key[:16]}..."
        if not record:
            raise PermissionDenied(f"{what} carries no builder signature; this agent takes only engines signed "
                                   "by the fleet agent that built them")
        malformed = lambda why: PermissionDenied(f"{what}: its builder record is malformed ({why})")
        doc = loads_bounded(record, MAX_RECORD_BYTES, malformed)
        try:
            signature = base64.b64decode(doc["signature"], validate=True)
            local, pem = bool(doc.get("local")), str(doc.get("builder", "")).encode()
        except (ValueError, KeyError, TypeError) as exc:
            raise malformed(exc) from None
        data = _payload(key, digest, size)
        if local:
            if foreign:
                raise PermissionDenied(f"{what} was built by an agent without a fleet-CA certificate; only this "
                                       "agent's own engines may be signed so")
            public, name = self.key.public_key(), "this agent (local key)"
        else:
            try:
                cert = x509.load_pem_x509_certificate(pem)
            except ValueError as exc:
                raise PermissionDenied(f"{what}: its builder certificate cannot be read ({exc})") from None
            name = _name(cert)
            if self.cert is None or cert != self.cert:  # another builder: the fleet CA must have issued it
                if self.ca is None:
                    raise PreconditionFailed(f"{what} was built by {name}, and this agent has no fleet CA "
                                             "(--tls-ca) to check builders against")
                try:
                    cert.verify_directly_issued_by(self.ca)
                except (ValueError, TypeError, InvalidSignature):
                    raise PermissionDenied(f"{what} was built by {name}, whose certificate the fleet CA did "
                                           "not issue") from None
                now = _dt.datetime.now(_dt.timezone.utc)
                if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
                    raise PermissionDenied(f"{what} was built by {name}, whose certificate is not valid now "
                                           f"(valid {cert.not_valid_before_utc:%Y-%m-%d} to "
                                           f"{cert.not_valid_after_utc:%Y-%m-%d})")
            public = cert.public_key()
        try:
            if isinstance(public, ec.EllipticCurvePublicKey):
                public.verify(signature, data, ec.ECDSA(hashes.SHA256()))
            else:
                public.verify(signature, data)
        except InvalidSignature:
            raise PermissionDenied(f"{what}: the signature of its builder {name} does not verify (the engine or "
                                   "its record was changed)") from None
        return name

    def check_foreign(self, record: bytes, key: str, digest: str, size: int) -> str:
        try:
            return self.builder(record, key, digest, size, foreign=True)
        except (PermissionDenied, PreconditionFailed) as exc:
            self.refusals[("engine", "bad_builder_signature")] += 1
            log.warning("refused engine from elsewhere: %s", exc)
            raise

    def accepts(self, entry_dir: Path, key: str, digest: str, size: int) -> bool:
        """Whether a cached engine may be loaded: its record verifies (else it was placed by hand, or changed)."""
        try:
            record = (entry_dir / RECORD).read_bytes()
        except OSError:
            record = b""
        try:
            self.builder(record, key, digest, size, foreign=False)
            return True
        except (PermissionDenied, PreconditionFailed) as exc:
            self.refusals[("engine", "unsealed_in_cache")] += 1
            log.warning("not loading engine %s from the cache: %s", key[:16], exc)
            return False


def _name(cert: Any) -> str:
    from cryptography.x509.oid import NameOID

    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string()
