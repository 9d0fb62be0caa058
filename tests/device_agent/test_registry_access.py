"""How agents reach a real registry: TLS with the fleet CA, a token service (distribution's `auth.token`), and a
pull-through cache near the devices. Real `docker-registry` processes on loopback, real agents, real certificates
from the project's own PKI code (host/security/certs.py), a real token server issuing signed JWTs."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qs, urlsplit

import grpc
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from device_agent.fileio import sha256_file
from device_agent.registry import Credentials, RegistryClient, RegistryRef
from host.client.errors import AgentError
from host.registry.credentials import registry_client
from host.registry.publish import publish_bundle
from host.security.certs import init_ca, issue_agent, issue_leaf
from protos import agent_pb2
from tests.device_agent.test_registry_pull import build_stages, client_for, published  # noqa: F401 - a fixture

Stage = agent_pb2.SegmentEvent


def a_blob(tmp_path: Path, size: int = 3 << 20) -> tuple[Path, str]:
    """A bundle-sized blob (Pull stores any blob under its digest; Build would refuse a non-bundle)."""
    path = tmp_path / "blob.tar"
    path.write_bytes(os.urandom(size))
    return path, sha256_file(path)


# ---------------------------------------------------------------- TLS with the fleet CA


def test_an_agent_given_the_fleet_ca_pulls_over_https_and_one_without_it_is_told_to_pass_registry_ca(
        agent_factory, registry_factory, tmp_path):
    pki = tmp_path / "pki"
    ca = init_ca(pki)
    pair = issue_agent(pki, "registry")  # SANs: registry, localhost, 127.0.0.1, ::1
    tls = registry_factory(tls=(pair.cert, pair.key), ca=ca.cert_path)
    ref = f"https://{tls.address}/fleet/tls"
    blob, digest = a_blob(tmp_path)
    host = registry_client(ref, {"DEPLOY_REGISTRY_CA": str(ca.cert_path)})  # the host side: $DEPLOY_REGISTRY_CA
    assert publish_bundle(host, blob, digest).bytes_sent >= blob.stat().st_size

    trusted = agent_factory(registry=ref, registry_ca=ca.cert_path)
    with client_for(trusted) as c:
        reply = c.pull(digest)
        assert reply.bytes_pulled == blob.stat().st_size and c.query_upload(digest).complete

    untrusted = agent_factory(registry=ref)  # the system CAs only
    with client_for(untrusted) as c:
        started = time.monotonic()
        with pytest.raises(AgentError) as err:
            c.pull(digest)
        assert time.monotonic() - started < 5  # refused at once, not retried as if the registry were down
    assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert "--registry-ca" in err.value.message and "\n" not in err.value.message
    assert "certificate" in err.value.message
    with client_for(untrusted) as c:
        assert not c.query_upload(digest).complete and c.query_upload(digest).committed_offset == 0

    other = init_ca(tmp_path / "other-pki")  # a CA, but not the one the registry's certificate chains to
    wrong = RegistryClient(RegistryRef.parse(ref), Credentials(ca_file=other.cert_path))
    with pytest.raises(Exception, match="not trusted.*--registry-ca"):
        wrong.manifest("bundle-" + digest[7:])


# ---------------------------------------------------------------- token auth


@dataclass
class TokenService:
    """A token server as distribution's `auth.token` expects one: basic auth in, an ES256 JWT out, its signing
    certificate in the header's x5c chain, signed by a CA the registry has in its rootcertbundle."""

    user: str
    password: str
    service: str = "jetson-deploy-test"
    issuer: str = "jetson-deploy-test-issuer"
    asked: list = field(default_factory=list)  # (scopes, granted) per request

    def start(self, pki: Path) -> "TokenService":
        ca = init_ca(pki)
        cert, self.key = issue_leaf(ca, "token-signer", server=False)
        self.x5c = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]
        self.rootcertbundle = ca.cert_path
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                query = parse_qs(urlsplit(self.path).query)
                scopes = query.get("scope", [])
                want = "Basic " + base64.b64encode(f"{service.user}:{service.password}".encode()).decode()
                ok = self.headers.get("Authorization", "") == want and query.get("service") == [service.service]
                service.asked.append((scopes, ok))
                body = json.dumps({"token": service.jwt(scopes), "expires_in": 300} if ok else
                                  {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}).encode()
                self.send_response(200 if ok else 401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/token"

    def registry_options(self) -> dict:
        return {"realm": self.realm, "service": self.service, "issuer": self.issuer,
                "rootcertbundle": self.rootcertbundle}

    def jwt(self, scopes: list) -> str:
        access = []
        for scope in scopes:  # repository:NAME:ACTIONS, every action granted to the right user
            kind, name, actions = scope.split(":")[0], ":".join(scope.split(":")[1:-1]), scope.split(":")[-1]
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": self.user, "aud": self.service, "exp": now + 300, "nbf": now - 10,
                  "iat": now, "jti": uuid.uuid4().hex, "access": access}
        header = {"typ": "JWT", "alg": "ES256", "x5c": self.x5c}
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture
def token_service(tmp_path: Path) -> Iterator[TokenService]:
    service = TokenService("fleet", "token-service-pass").start(tmp_path / "token-pki")
    yield service
    service.stop()


def test_a_registry_behind_a_token_service_serves_an_agent_that_follows_the_bearer_challenge(
        agent_factory, registry_factory, token_service, tmp_path):
    locked = registry_factory(token=token_service.registry_options())
    ref = f"{locked.address}/fleet/token"
    blob, digest = a_blob(tmp_path)
    host = RegistryClient(RegistryRef.parse(ref), Credentials(username="fleet", password=token_service.password))
    publish_bundle(host, blob, digest)  # HEAD (pull scope), then POST/PUT (pull,push): two tokens
    granted = [set(s[0].rsplit(":", 1)[1].split(",")) for s, ok in token_service.asked if ok and len(s) == 1]
    assert {"pull", "push"} in granted, token_service.asked

    pw = tmp_path / "registry-password"
    pw.write_text(token_service.password + "\n")
    good = agent_factory(registry=ref, registry_user="fleet", registry_password_file=pw)
    token_service.asked.clear()
    with client_for(good) as c:
        assert c.pull(digest).bytes_pulled == blob.stat().st_size and c.query_upload(digest).complete
    assert token_service.asked and all(ok and s == ["repository:fleet/token:pull"] for s, ok in token_service.asked)

    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-password\n")
    for settings in ({}, {"registry_user": "fleet", "registry_password_file": wrong}):
        refused = agent_factory(registry=ref, **settings)
        with client_for(refused) as c:
            with pytest.raises(AgentError) as err:
                c.pull(digest)
        assert err.value.code == grpc.StatusCode.UNAUTHENTICATED and "credentials" in err.value.message, settings
        assert token_service.password not in refused.log() and "not-the-password" not in refused.log()
    assert token_service.password not in good.log()


# ---------------------------------------------------------------- a mirror near the devices


def test_an_agent_whose_registry_is_a_pull_through_mirror_pulls_what_was_published_upstream(
        agent_factory, registry, registry_factory, published):
    _archive, digest, tag, entry, ref = published  # on `registry`, the upstream
    mirror = registry_factory(proxy_remote=registry.url)
    repo = ref.split("/", 1)[1]
    near = agent_factory(registry=f"{mirror.address}/{repo}")
    with client_for(near) as c:
        reply = c.pull(digest, tag)
        assert not reply.bundle_present and reply.engines_pulled == 1 and list(reply.engine_keys) == [entry.key]
        assert build_stages(c, digest)[-1] == Stage.CACHE_HIT  # digests verified, engine used, nothing built
    log = mirror.log_path.read_text(errors="replace")
    assert f"GET /v2/{repo}/blobs/{entry.digest}" in log and f"GET /v2/{repo}/blobs/{digest}" in log
    # the mirror now holds the blobs: with the upstream gone, the next device of the site still gets them.
    # distribution's proxy writes a blob into its own storage while it streams it on, so it may still be
    # finishing that write when the pull has ended: wait for the files before taking the upstream away
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not all(
            mirror.blob_path(d).is_file() and hashlib.sha256(mirror.blob_path(d).read_bytes()).hexdigest() == d[7:]
            for d in (entry.digest, digest)):
        time.sleep(0.05)
    registry.stop()
    later = agent_factory(registry=f"{mirror.address}/{repo}")
    with client_for(later) as c:
        again = c.pull(digest, tag)
        assert again.engines_pulled == 1 and c.query_upload(digest).complete
    assert hashlib.sha256(mirror.blob_path(entry.digest).read_bytes()).hexdigest() == entry.digest[7:]
