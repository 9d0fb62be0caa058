"""Fixtures of the security tests: a throwaway PKI and agents served in-process on loopback with real gRPC."""
from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from device_agent.server import AgentServer
from host.inventory import Device, TlsFiles
from host.security import certs

AGENT = "agent-one"


@dataclass
class Pki:
    root: Path       # our CA, the agent's and the good client's certificates
    other: Path      # an unrelated CA with its own client and agent certificates
    agent: certs.CertPair
    client: certs.CertPair
    expired: certs.CertPair
    foreign_client: certs.CertPair
    foreign_agent: certs.CertPair

    name: str = AGENT

    @property
    def ca(self) -> Path:
        return self.root / certs.CA_CERT

    def device(self, address: str, pair: "certs.CertPair | None", name: str = AGENT,
               ca: "Path | None" = None) -> Device:
        """An inventory entry for the agent at ADDRESS, presenting PAIR as client certificate."""
        tls = TlsFiles(ca=ca or self.ca, cert=pair.cert if pair else None, key=pair.key if pair else None)
        return Device(name=name, address=address, tls=tls)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    other = tmp_path_factory.mktemp("other-pki")
    made = certs.init(root, [certs.DeviceNames(AGENT, ["127.0.0.1:7311"])])
    foreign = certs.init(other, [certs.DeviceNames(AGENT, ["127.0.0.1:7311"])])
    cert, key = certs.issue_leaf(
        certs.load_ca(root), "old-client", server=False,
        not_before=dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc),
        not_after=dt.datetime(2021, 1, 1, tzinfo=dt.timezone.utc))
    expired = certs.write_pair(cert, key, root / "old-client.pem", root / "old-client.key")
    return Pki(root, other, made[AGENT], made["client"], expired, foreign["client"], foreign[AGENT])


@pytest.fixture
def mtls_agent(serve: Callable[..., AgentServer], pki: Pki) -> AgentServer:
    return serve(tls_cert=pki.agent.cert, tls_key=pki.agent.key, tls_ca=pki.ca)


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(secrets.token_urlsafe(32) + "\n")
    path.chmod(0o600)
    return path
