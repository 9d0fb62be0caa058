"""The fleet PKI: what `deploy certs` writes, and that the certificates chain and carry the right names."""
from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from host.security import certs


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_init_makes_ca_client_and_agent_certificates_that_chain_to_the_ca(tmp_path: Path) -> None:
    made = certs.init(tmp_path / "pki", [certs.DeviceNames("nano-1", ["10.0.0.7:7311", "nano1.lan"])])
    ca = _load(made["ca"])
    for pair, usage in ((made["client"], ExtendedKeyUsageOID.CLIENT_AUTH),
                        (made["nano-1"], ExtendedKeyUsageOID.SERVER_AUTH)):
        leaf = _load(pair.cert)
        leaf.verify_directly_issued_by(ca)
        assert usage in leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(certs.sans_of(made["nano-1"].cert)) >= {"nano-1", "10.0.0.7", "nano1.lan", "localhost", "127.0.0.1"}


def test_private_keys_are_written_0600_and_the_ca_dir_0700(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    made = certs.init(d, [certs.DeviceNames("a", ["127.0.0.1:1"])])
    for key in (d / certs.CA_KEY, made["client"].key, made["a"].key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert not [p for p in d.rglob(".*") if p.is_file()]  # no temporary files left behind


def test_init_twice_keeps_the_ca_and_existing_certificates(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    first = certs.init(d, [certs.DeviceNames("a")])
    before = {p: p.read_bytes() for p in d.rglob("*") if p.is_file()}
    second = certs.init(d, [certs.DeviceNames("a"), certs.DeviceNames("b")])
    assert first["ca"] == second["ca"]
    for path, data in before.items():
        assert path.read_bytes() == data
    _load(second["b"].cert).verify_directly_issued_by(_load(first["ca"]))


def test_issue_replaces_the_agent_certificate_with_new_names(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    certs.init(d, [certs.DeviceNames("a", ["10.0.0.1:7311"])])
    old = certs.agent_paths(d, "a").cert.read_bytes()
    pair = certs.issue_agent(d, "a", ["10.0.0.2:7311"])
    assert pair.cert.read_bytes() != old
    assert "10.0.0.2" in certs.sans_of(pair.cert) and "10.0.0.1" not in certs.sans_of(pair.cert)


@pytest.mark.parametrize("name", ["../evil", "a/b", "", ".hidden", "x" * 64])
def test_device_names_that_could_escape_the_directory_are_refused(tmp_path: Path, name: str) -> None:
    certs.init_ca(tmp_path)
    with pytest.raises(certs.CertError, match="invalid certificate name"):
        certs.issue_agent(tmp_path, name)


def test_issue_without_a_ca_says_to_run_init(tmp_path: Path) -> None:
    with pytest.raises(certs.CertError, match="deploy certs init"):
        certs.issue_agent(tmp_path / "none", "a")


@pytest.mark.parametrize("address, host", [("10.0.0.1:7311", "10.0.0.1"), ("[fe80::1]:7311", "fe80::1"),
                                           ("root@jetson:2222", "jetson"), ("jetson", "jetson")])
def test_host_of_strips_user_and_port(address: str, host: str) -> None:
    assert certs.host_of(address) == host


def test_cli_init_then_issue_from_inventory(tmp_path: Path, deploy) -> None:
    inventory = tmp_path / "deploy.toml"
    inventory.write_text('[devices.orin]\naddress = "192.168.1.50:7311"\nssh = "ubuntu@orin.local"\n')
    pki = tmp_path / "pki"
    proc = deploy("certs", "init", "--dir", str(pki), "--inventory", str(inventory), "--json", check=True)
    data = json.loads(proc.stdout)
    assert Path(data["agents"]["orin"]["cert"]).is_file()
    assert {"orin", "192.168.1.50", "orin.local"} <= set(certs.sans_of(Path(data["agents"]["orin"]["cert"])))
    proc = deploy("certs", "issue", "orin", "--san", "10.1.1.1", "--dir", str(pki), "--inventory", str(inventory),
                  "--json", check=True)
    assert "10.1.1.1" in json.loads(proc.stdout)["sans"]
    proc = deploy("certs", "issue", "ghost", "--dir", str(pki), "--inventory", str(inventory))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "not in the inventory" in proc.stderr
