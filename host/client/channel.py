"""Channels to agents: one place where addresses, message limits, keepalive and credentials are decided.

TLS and the bearer token come from the device's inventory entry (`tls = {ca, cert, key}`, `token_file`).
When an agent refuses our client certificate, gRPC only reports a closed socket (UNAVAILABLE); `explain` then
re-runs the handshake with Python's `ssl` to tell a refused certificate (UNAUTHENTICATED) from an agent that is down.
"""
from __future__ import annotations

import datetime as _dt
import socket
import ssl
from pathlib import Path
from typing import Any, Callable, Optional

import grpc

from device_agent.errors import InvalidInput
from host.inventory import Device

from .errors import AgentError, from_rpc_error

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
MAX_TOKEN_BYTES = 4096
DIAGNOSE_TIMEOUT_S = 3.0
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def channel_options() -> list[tuple[str, Any]]:
    """Message limits match the agent's (64 MiB: Run's tensors; upload chunks are 1 MiB). Keepalive pings every
    30 s (10 s to answer) find a dead link during a long, quiet build stream. gRPC's own retries are off: ours
    (`host.client.retry`) know which calls are safe to repeat and resume uploads. Reconnect backoff is capped at
    2 s, so an agent back after a restart is found within about 2 s instead of gRPC's default of up to 120 s."""
    return [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),  # keep pinging through a build's quiet minutes
        ("grpc.enable_retries", 0),
        ("grpc.initial_reconnect_backoff_ms", 250),
        ("grpc.max_reconnect_backoff_ms", 2_000),
    ]


def _read(path: Path, what: str, device: Device, limit: int = 1024 * 1024) -> bytes:
    p = Path(path).expanduser()
    try:
        with open(p, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise InvalidInput(f"device {device.name!r}: cannot read {what} {p}: {exc.strerror}; "
                           "fix the inventory entry or run `deploy certs issue`") from None
    if len(data) > limit or not data.strip():
        raise InvalidInput(f"device {device.name!r}: {what} {p} is empty or too large")
    return data


def read_token(device: Device) -> Optional[bytes]:
    if device.token_file is None:
        return None
    data = _read(device.token_file, "token_file", device, MAX_TOKEN_BYTES).strip()
    token = data.splitlines()[0].strip()
    if not all(0x21 <= b <= 0x7E for b in token):
        raise InvalidInput(f"device {device.name!r}: the token in {device.token_file} must be printable ASCII "
                           "without spaces (as `deploy agent install --auth token` writes it)")
    return token


class _TokenInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                        grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds `authorization: Bearer <token>` to every call; works on plaintext and TLS channels alike."""

    def __init__(self, token: bytes) -> None:
        self._header = ("authorization", "Bearer " + token.decode("ascii", "strict"))

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = list(details.metadata or []) + [self._header]
        return _CallDetails(details.method, details.timeout, metadata, details.credentials,
                            getattr(details, "wait_for_ready", None), getattr(details, "compression", None))

    def intercept_unary_unary(self, continuation: Callable, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Callable, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Callable, details: Any, request_iterator: Any) -> Any:
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(self, continuation: Callable, details: Any, request_iterator: Any) -> Any:
        return continuation(self._details(details), request_iterator)


class _CallDetails(grpc.ClientCallDetails):
    def __init__(self, method: str, timeout: Optional[float], metadata: Any, credentials: Any,
                 wait_for_ready: Any, compression: Any) -> None:
        self.method = method
        self.timeout = timeout
        self.metadata = metadata
        self.credentials = credentials
        self.wait_for_ready = wait_for_ready
        self.compression = compression


def _server_name(device: Device) -> Optional[str]:
    """Verify the agent by its device name (a SAN of its certificate) rather than by whatever address reaches it."""
    from host.security.certs import CertError, check_name, host_of

    try:
        name = check_name(device.name)
    except CertError:
        return None
    return None if name == host_of(device.address) else name


def channel_credentials(device: Device) -> Optional[grpc.ChannelCredentials]:
    if device.tls is None:
        return None
    ca = _read(device.tls.ca, "tls.ca", device)
    if (device.tls.cert is None) != (device.tls.key is None):
        raise InvalidInput(f"device {device.name!r}: tls.cert and tls.key go together; set both or neither")
    cert = _read(device.tls.cert, "tls.cert", device) if device.tls.cert else None
    key = _read(device.tls.key, "tls.key", device) if device.tls.key else None
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def make_channel(device: Device) -> grpc.Channel:
    """Plaintext for devices without TLS settings, TLS (mutual when the entry names a client cert) otherwise."""
    options = channel_options()
    credentials = channel_credentials(device)
    if credentials is None:
        channel = grpc.insecure_channel(device.address, options=options)
    else:
        name = _server_name(device)
        if name:
            options.append(("grpc.ssl_target_name_override", name))
        channel = grpc.secure_channel(device.address, credentials, options=options)
    token = read_token(device)
    if token:
        channel = grpc.intercept_channel(channel, _TokenInterceptor(token))
    return channel


# ---------------------------------------------------------------- diagnosis of a refused handshake

def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _why_refused(device: Device) -> str:
    """Our side of the story: which property of our client certificate the agent probably disliked."""
    assert device.tls is not None
    if device.tls.cert is None:
        return "the inventory entry names no client certificate (tls.cert/tls.key); run `deploy certs issue`"
    try:
        from cryptography import x509

        cert = x509.load_pem_x509_certificate(Path(device.tls.cert).expanduser().read_bytes())
        now = _dt.datetime.now(_dt.timezone.utc)
        if cert.not_valid_after_utc < now:
            return (f"our client certificate {device.tls.cert} expired on {cert.not_valid_after_utc:%Y-%m-%d}; "
                    "reissue it with `deploy certs init`/`deploy certs issue`")
        if cert.not_valid_before_utc > now:
            return f"our client certificate {device.tls.cert} is not valid before {cert.not_valid_before_utc}"
    except Exception:  # noqa: BLE001 - only a hint; the refusal itself is certain
        pass
    return (f"our client certificate {device.tls.cert} is not signed by a CA the agent trusts (or is not a client "
            "certificate); issue one from the agent's CA with `deploy certs`")


def diagnose_tls(device: Device, timeout: float = DIAGNOSE_TIMEOUT_S) -> Optional[AgentError]:
    """Repeat the TLS handshake by hand; an AgentError when it shows an authentication failure, else None."""
    if device.tls is None:
        return None
    try:
        host, port = _split(device.address)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cadata=_read(device.tls.ca, "tls.ca", device).decode("ascii", "replace"))
        ctx.set_alpn_protocols(["h2"])
        if device.tls.cert and device.tls.key:
            ctx.load_cert_chain(str(Path(device.tls.cert).expanduser()), str(Path(device.tls.key).expanduser()),
                                password=lambda: b"")  # never prompt; an encrypted key just ends the diagnosis
    except (OSError, ValueError, InvalidInput):
        return None
    server_name = _server_name(device) or host
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError:
        return None  # nothing listens: really unreachable
    try:
        with ctx.wrap_socket(sock, server_hostname=server_name) as tls:
            tls.sendall(HTTP2_PREFACE)
            first = tls.recv(16)
    except ssl.SSLCertVerificationError as exc:
        return AgentError(grpc.StatusCode.UNAUTHENTICATED,
                          f"the agent at {device.address} is not the device we trust: its certificate failed "
                          f"verification ({exc.verify_message}); check the inventory's tls.ca and the agent's "
                          "--tls-cert", device.address)
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as exc:
        if isinstance(exc, ssl.SSLError) and "WRONG_VERSION_NUMBER" in str(exc):
            return AgentError(grpc.StatusCode.UNAVAILABLE,
                              f"the agent at {device.address} does not speak TLS; remove `tls` from its inventory "
                              "entry or start it with --tls-cert/--tls-key/--tls-ca", device.address)
        first = b""
    except OSError:
        return None
    finally:
        sock.close()
    if first:
        return None  # the handshake and HTTP/2 start fine: the failure was something else
    return AgentError(grpc.StatusCode.UNAUTHENTICATED,
                      f"the agent at {device.address} refused our TLS client certificate: {_why_refused(device)}",
                      device.address)


def explain(exc: grpc.RpcError, device: Device) -> AgentError:
    """`from_rpc_error`, plus: a closed TLS connection is diagnosed as the authentication failure it usually is."""
    err = from_rpc_error(exc, device.address)
    if err.code == grpc.StatusCode.UNAVAILABLE and device.tls is not None:
        better = diagnose_tls(device)
        if better is not None:
            return better
    return err
