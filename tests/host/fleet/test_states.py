"""Short device states (`host.fleet.states`) from real failures: real sockets, real agents, real gRPC on loopback."""
from __future__ import annotations

import secrets
import socket
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2_grpc

from host.client.agent import AgentClient
from host.client.errors import AgentError
from host.fleet.states import device_state, failure_state, short_state, summary_line
from host.inventory import Device, TlsFiles
from host.security import certs


def _failure(device: Device, timeout: float = 2.0) -> AgentError:
    with AgentClient(device) as client, pytest.raises(AgentError) as caught:
        client.info(timeout=timeout)
    return caught.value


def test_a_closed_port_is_down_refused_with_the_whole_reason_kept():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    err = _failure(Device(name="gone", address=f"127.0.0.1:{port}"))
    state = device_state(err)
    assert state.short == "down: refused" and not state.up
    assert "Connection refused" in state.reason and state.request_id == err.request_id and len(err.request_id) == 12


def test_a_port_that_never_answers_is_down_timeout():
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen(4)
        err = _failure(Device(name="mute", address=f"127.0.0.1:{mute.getsockname()[1]}"), timeout=1.0)
    assert short_state(err) == "down: timeout"


def test_a_missing_token_is_down_auth(serve, tmp_path):
    token = tmp_path / "token"
    token.write_text(secrets.token_urlsafe(32))
    token.chmod(0o600)
    agent = serve(token_file=token)
    assert short_state(_failure(Device(name="locked", address=agent.address))) == "down: auth"


def test_tls_to_an_agent_that_speaks_none_is_down_tls(serve, tmp_path):
    made = certs.init(tmp_path / "pki", [certs.DeviceNames("board", ["127.0.0.1:7311"])])
    agent = serve()  # plaintext
    device = Device(name="board", address=agent.address,
                    tls=TlsFiles(ca=tmp_path / "pki" / certs.CA_CERT, cert=made["client"].cert,
                                 key=made["client"].key))
    assert short_state(_failure(device)) == "down: TLS"


def test_a_server_without_our_service_is_down_version():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        assert short_state(_failure(Device(name="old", address=f"127.0.0.1:{port}"))) == "down: version"
    finally:
        server.stop(0)


def test_an_answered_error_during_fleet_work_is_a_failed_stage_not_down(serve):
    agent = serve()
    from protos import agent_pb2

    with AgentClient(Device(name="up", address=agent.address)) as client, pytest.raises(AgentError) as caught:
        client.prune(agent_pb2.PruneRequest(keys=["no-such-key"]))
    assert caught.value.answered
    assert failure_state(caught.value, "prune") == "failed: prune"
    assert short_state(None) == "up" and device_state(None).reason is None


def test_summary_line_counts_up_and_down_by_class():
    assert summary_line(["up", "down: refused", "down: timeout", "down: refused"]) == \
        "4 devices: 1 up, 3 down (refused 2, timeout 1)"
    assert summary_line(["up"]) == "1 device: 1 up, 0 down"


def test_a_credential_file_the_inventory_names_but_we_cannot_read_is_down_config(tmp_path):
    from device_agent.errors import InvalidInput

    with pytest.raises(InvalidInput) as caught:
        AgentClient(Device(name="board", address="127.0.0.1:7311", token_file=tmp_path / "missing.token"))
    state = device_state(caught.value)
    assert state.short == "down: config" and "missing.token" in state.reason and state.request_id is None
