"""Mutual TLS between a real agent and real clients on loopback."""
from __future__ import annotations

import threading
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from host.client.agent import AgentClient
from host.client.channel import make_channel
from host.client.errors import AgentError
from protos import agent_pb2, agent_pb2_grpc


REFUSED = {
    "no client certificate": lambda p: None,
    "certificate from another CA": lambda p: p.foreign_client,
    "expired certificate": lambda p: p.expired,
    "agent certificate used as client": lambda p: p.agent,
}
REASON = {
    "no client certificate": "names no client certificate",
    "certificate from another CA": "not signed by a CA the agent trusts",
    "expired certificate": "expired on 2021-01-01",
    "agent certificate used as client": "not signed by a CA the agent trusts (or is not a client certificate)",
}


def test_client_with_certificate_from_fleet_ca_is_served(mtls_agent, pki) -> None:
    with AgentClient(pki.device(mtls_agent.address, pki.client)) as client:
        info = client.info()
    assert info.store_dir.endswith("store")


def test_client_verifies_agent_by_device_name_even_through_an_ip_address(mtls_agent, pki) -> None:
    # the address is 127.0.0.1:PORT, the certificate's SANs include the device name: the name is what is checked
    device = pki.device(mtls_agent.address, pki.client, name=pki.name)
    with AgentClient(device) as client:
        assert client.info().hostname


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_bad_client_certificate_is_refused_as_unauthenticated(mtls_agent, pki, case: str) -> None:
    pair = REFUSED[case](pki)
    device = pki.device(mtls_agent.address, pair)
    # What gRPC itself reports: the agent's TLS stack closes the connection during the handshake.
    channel = make_channel(device)
    with pytest.raises(grpc.RpcError) as raw:
        agent_pb2_grpc.DeviceAgentStub(channel).GetInfo(agent_pb2.GetInfoRequest(), timeout=5)
    channel.close()
    assert raw.value.code() == grpc.StatusCode.UNAVAILABLE
    # What our client edge reports after re-running the handshake by hand.
    with AgentClient(device) as client, pytest.raises(AgentError) as err:
        client.info(timeout=5)
    assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert "refused our TLS client certificate" in err.value.message
    assert REASON[case] in err.value.message


def test_agent_keeps_serving_good_client_during_and_after_refusals(mtls_agent, pki) -> None:
    good = pki.device(mtls_agent.address, pki.client)
    stop = threading.Event()
    ready = threading.Event()
    served: list[int] = []
    failures: list[BaseException] = []

    def good_client() -> None:
        with AgentClient(good) as client:
            client.info(timeout=120)  # the first GetInfo waits for the agent's start-up backend probe
            ready.set()
            while not stop.is_set():
                try:
                    client.info(timeout=5)
                    served.append(1)
                except BaseException as exc:  # noqa: BLE001 - recorded and asserted below
                    failures.append(exc)

    worker = threading.Thread(target=good_client)
    worker.start()
    try:
        assert ready.wait(150), "the good client was never served"
        for _round in range(3):
            for case in REFUSED:
                pair = REFUSED[case](pki)
                with AgentClient(pki.device(mtls_agent.address, pair)) as bad, pytest.raises(AgentError) as err:
                    bad.info(timeout=5)
                assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
    finally:
        stop.set()
        worker.join(10)
    assert not failures
    assert len(served) > 10
    with AgentClient(good) as client:
        assert client.info().hostname


def test_plaintext_client_gets_nothing_from_a_tls_agent(mtls_agent) -> None:
    channel = grpc.insecure_channel(mtls_agent.address)
    with pytest.raises(grpc.RpcError) as raw:
        agent_pb2_grpc.DeviceAgentStub(channel).GetInfo(agent_pb2.GetInfoRequest(), timeout=5)
    channel.close()
    assert raw.value.code() == grpc.StatusCode.UNAVAILABLE


def test_client_refuses_an_agent_with_a_certificate_from_another_ca(serve, pki) -> None:
    impostor = serve(tls_cert=pki.foreign_agent.cert, tls_key=pki.foreign_agent.key, tls_ca=pki.ca)
    with AgentClient(pki.device(impostor.address, pki.client)) as client, pytest.raises(AgentError) as err:
        client.info(timeout=5)
    assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert "is not the device we trust" in err.value.message


def test_tls_client_to_a_plaintext_agent_says_the_agent_does_not_speak_tls(serve, pki) -> None:
    plain = serve()
    with AgentClient(pki.device(plain.address, pki.client)) as client, pytest.raises(AgentError) as err:
        client.info(timeout=5)
    assert err.value.code == grpc.StatusCode.UNAVAILABLE
    assert "does not speak TLS" in err.value.message


def test_agent_that_is_down_is_reported_unreachable_not_unauthenticated(pki) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with AgentClient(pki.device(f"127.0.0.1:{port}", pki.client)) as client, \
            pytest.raises(AgentError) as err:
        client.info(timeout=3)
    assert err.value.code == grpc.StatusCode.UNAVAILABLE


def test_health_check_over_mutual_tls_needs_the_client_certificate(mtls_agent, pki) -> None:
    for pair, ok in ((pki.client, True), (None, False)):
        channel = make_channel(pki.device(mtls_agent.address, pair))
        stub = health_pb2_grpc.HealthStub(channel)
        if ok:
            assert stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status == \
                health_pb2.HealthCheckResponse.SERVING
        else:
            with pytest.raises(grpc.RpcError):
                stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
        channel.close()


def test_missing_client_key_file_is_one_clear_error(pki, tmp_path: Path) -> None:
    from device_agent.errors import InvalidInput
    from host.inventory import Device, TlsFiles

    device = Device(name=pki.name, address="127.0.0.1:1",
                    tls=TlsFiles(ca=pki.ca, cert=pki.client.cert, key=tmp_path / "nope.key"))
    with pytest.raises(InvalidInput, match="cannot read tls.key .*nope.key"):
        make_channel(device)
