"""The Open Inference Protocol endpoint sits behind the agent's mutual TLS and bearer token like every other call:
`tritonclient.grpc` from PyPI is served only with the fleet's client certificate and the token (issue 23)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from host.client.agent import AgentClient
from protos import agent_pb2
from tests.device_agent.onnx_models import conv_net, single_segment_bundle


def _triton(address: str, pki, with_cert: bool = True):
    import tritonclient.grpc as tc

    pair = pki.client
    return tc.InferenceServerClient(
        address, ssl=True, root_certificates=str(pki.ca), private_key=str(pair.key) if with_cert else None,
        certificate_chain=str(pair.cert) if with_cert else None,
        channel_args=[("grpc.ssl_target_name_override", pki.name)])


def _infer(client, x: np.ndarray, name: str, headers=None):
    import tritonclient.grpc as tc

    given = tc.InferInput(name, list(x.shape), "FP32")
    given.set_data_from_numpy(x)
    return client.infer("det", [given], headers=headers, client_timeout=10)


def _status(fn) -> str:
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException) as info:
        fn()
    return str(info.value.status())


def test_modelinfer_needs_the_fleets_client_certificate_and_the_token(serve, pki, token_file: Path,
                                                                      tmp_path: Path) -> None:
    agent = serve(tls_cert=pki.agent.cert, tls_key=pki.agent.key, tls_ca=pki.ca, token_file=token_file,
                  backend="onnxruntime")
    device = pki.device(agent.address, pki.client).model_copy(update={"token_file": token_file})
    archive, feeds, want = single_segment_bundle(tmp_path / "b", conv_net(seed=5), "det")
    with AgentClient(device) as client:
        digest = client.upload(archive).digest
        for _ in client.build(digest):
            pass
        client.register_version(agent_pb2.RegisterVersionRequest(name="det", bundle_digest=digest, tolerance=1e-3))
        client.activate("det")
    (name, x), = feeds.items()
    (out, ref), = want.items()
    token = {"authorization": f"Bearer {token_file.read_text().strip()}"}

    triton = _triton(agent.address, pki)
    try:
        assert triton.is_server_live(headers=token) and triton.is_model_ready("det", headers=token)
        result = _infer(triton, x, name, headers=token)
        assert result.get_response().model_version == "1"
        assert np.allclose(result.as_numpy(out), ref, rtol=1e-4, atol=1e-5)
        assert _status(lambda: _infer(triton, x, name)) == "StatusCode.UNAUTHENTICATED"
        assert _status(lambda: _infer(triton, x, name, headers={"authorization": "Bearer " + "x" * 43})) == \
            "StatusCode.UNAUTHENTICATED"
        assert _status(lambda: triton.is_server_live()) == "StatusCode.UNAUTHENTICATED"
    finally:
        triton.close()
    anonymous = _triton(agent.address, pki, with_cert=False)  # TLS, the token, but no client certificate
    try:
        assert _status(lambda: _infer(anonymous, x, name, headers=token)) == "StatusCode.UNAVAILABLE"
    finally:
        anonymous.close()
