"""Bearer tokens checked by the agent's interceptor, and the rule that only loopback may go unauthenticated."""
from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from device_agent import auth
from device_agent.config import AgentSettings
from device_agent.errors import InvalidInput
from host.client.agent import AgentClient
from host.client.errors import AgentError
from host.inventory import Device
from protos import agent_pb2, agent_pb2_grpc


def _wrong_token(tmp_path: Path, token_file: Path) -> Path:
    good = token_file.read_text().strip()
    bad = tmp_path / "wrong-token"
    bad.write_text(good[:-1] + ("A" if good[-1] != "A" else "B"))
    return bad


def test_client_with_the_agents_token_is_served(serve, token_file: Path) -> None:
    agent = serve(token_file=token_file)
    with AgentClient(Device(name="t", address=agent.address, token_file=token_file)) as client:
        assert client.info().hostname


@pytest.mark.parametrize("which", ["wrong token", "no token"])
def test_wrong_or_missing_token_is_refused_unauthenticated_without_echoing_it(
        serve, token_file: Path, tmp_path: Path, which: str) -> None:
    agent = serve(token_file=token_file)
    bad = _wrong_token(tmp_path, token_file) if which == "wrong token" else None
    device = Device(name="t", address=agent.address, token_file=bad)
    with AgentClient(device) as client:
        for call in (client.info, lambda: client.query_upload("sha256:" + "0" * 64),
                     lambda: list(client.build("sha256:" + "0" * 64, timeout=5))):
            with pytest.raises(AgentError) as err:
                call()
            assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
            assert "bearer token" in err.value.message
            assert token_file.read_text().strip() not in str(err.value)
            if bad is not None:
                assert bad.read_text().strip() not in str(err.value)
    with AgentClient(Device(name="t", address=agent.address, token_file=token_file)) as client:
        assert client.info().hostname  # still serving the good client


def test_upload_with_wrong_token_stores_nothing(serve, token_file: Path, tmp_path: Path) -> None:
    agent = serve(token_file=token_file)
    payload = tmp_path / "blob"
    payload.write_bytes(b"x" * 100_000)
    data = payload.read_bytes()
    import hashlib

    messages = [agent_pb2.UploadRequest(header=agent_pb2.UploadHeader(
        digest="sha256:" + hashlib.sha256(data).hexdigest(), size=len(data)))]
    messages += [agent_pb2.UploadRequest(chunk=data[i:i + 10_000]) for i in range(0, len(data), 10_000)]
    with AgentClient(Device(name="t", address=agent.address, token_file=_wrong_token(tmp_path, token_file))) as c:
        with pytest.raises(AgentError) as err:
            c.upload(payload)
        assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as raw:  # the streaming call itself, past the client's QueryUpload
            c.stub.Upload(iter(messages), timeout=5)
        assert raw.value.code() == grpc.StatusCode.UNAUTHENTICATED
    store = Path(agent.settings.store)
    written = [p for p in store.rglob("*") if p.is_file()] if store.exists() else []
    assert sum(p.stat().st_size for p in written) == 0


def test_health_check_is_open_without_token_but_reflection_is_not(serve, token_file: Path) -> None:
    agent = serve(token_file=token_file)
    with grpc.insecure_channel(agent.address) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as err:
            agent_pb2_grpc.DeviceAgentStub(channel).GetInfo(agent_pb2.GetInfoRequest(), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

        replies = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        with pytest.raises(grpc.RpcError) as err:
            list(replies)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_token_and_mutual_tls_together_need_both(serve, pki, token_file: Path) -> None:
    agent = serve(tls_cert=pki.agent.cert, tls_key=pki.agent.key, tls_ca=pki.ca, token_file=token_file)
    both = pki.device(agent.address, pki.client).model_copy(update={"token_file": token_file})
    with AgentClient(both) as client:
        assert client.info().hostname
    with AgentClient(pki.device(agent.address, pki.client)) as client, pytest.raises(AgentError) as err:
        client.info()
    assert err.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_short_or_empty_token_file_is_refused_at_start(serve, tmp_path: Path) -> None:
    for text, match in (("", "is empty"), ("short\n", "shorter than 16")):
        path = tmp_path / "tok"
        path.write_text(text)
        with pytest.raises(InvalidInput, match=match):
            serve(token_file=path)


@pytest.mark.parametrize("listen", ["0.0.0.0:0", "[::]:0"])
def test_listening_beyond_loopback_without_authentication_is_refused(listen: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="without client authentication.*--insecure"):
        auth.check_listen_policy(AgentSettings(listen=listen, store=tmp_path))


def test_server_only_tls_does_not_count_as_authentication(pki, tmp_path: Path) -> None:
    settings = AgentSettings(listen="0.0.0.0:0", store=tmp_path, tls_cert=pki.agent.cert, tls_key=pki.agent.key)
    with pytest.raises(InvalidInput, match="without client authentication"):
        auth.check_listen_policy(settings)


def test_mutual_tls_or_token_allows_listening_beyond_loopback(pki, token_file: Path, tmp_path: Path) -> None:
    auth.check_listen_policy(AgentSettings(listen="0.0.0.0:0", store=tmp_path, tls_cert=pki.agent.cert,
                                           tls_key=pki.agent.key, tls_ca=pki.ca))
    auth.check_listen_policy(AgentSettings(listen="0.0.0.0:0", store=tmp_path, token_file=token_file))


def test_insecure_flag_allows_it_and_warns_at_every_start(serve, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="device_agent.auth")
    for _ in range(2):
        serve(listen="0.0.0.0:0", insecure=True)
    warnings = [r for r in caplog.records if "without client authentication (--insecure)" in r.getMessage()]
    assert len(warnings) == 2


def test_deploy_agent_refuses_to_start_on_all_interfaces_with_one_line(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "device_agent", "--listen", "0.0.0.0:0", "--store",
                           str(tmp_path / "store")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and "--insecure" in lines[0]


@pytest.mark.parametrize("flags, match", [
    ({"tls_cert": "c"}, "--tls-cert and --tls-key go together"),
    ({"tls_ca": "ca"}, "--tls-ca needs --tls-cert and --tls-key"),
])
def test_incomplete_tls_flags_are_one_clear_error(flags: dict, match: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=match):
        auth.server_credentials(AgentSettings(store=tmp_path, **{k: tmp_path / v for k, v in flags.items()}))


def test_key_file_that_is_not_a_key_is_refused(pki, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="holds no PEM private key"):
        auth.server_credentials(AgentSettings(store=tmp_path, tls_cert=pki.agent.cert, tls_key=pki.agent.cert))
