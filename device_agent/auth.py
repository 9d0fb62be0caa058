"""Server credentials in one place: TLS, bearer-token interceptor, and the listen policy.

Decisions (see docs/security.md):
- Mutual TLS is enforced by the TLS handshake itself (`require_client_auth`): gRPC Python cannot request a client
  certificate without also requiring it, so a missing, foreign-CA, expired or wrong-purpose certificate never reaches
  a handler. The client sees the closed connection; `host.client.channel` diagnoses it and reports UNAUTHENTICATED.
- The bearer token is checked per call by an interceptor with `hmac.compare_digest`; a wrong or missing token gets
  UNAUTHENTICATED and the request body is never deserialized.
- The standard health check stays open without a token (it only says SERVING/NOT_SERVING, and load balancers and
  `deploy agent install` need it before they hold a token); under mutual TLS it is still behind the handshake.
"""
from __future__ import annotations

import hmac
import logging
import os
import stat
from pathlib import Path
from typing import Any, Callable, Optional

import grpc

from .config import AgentSettings
from .errors import InvalidInput

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
TOKEN_HEADER = "authorization"
TOKEN_SCHEME = "Bearer "
MAX_TOKEN_BYTES = 4096
MAX_PEM_BYTES = 1024 * 1024
# Callable without a token: only the standard health check.
OPEN_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})


def listen_host(listen: str) -> str:
    host, _, _port = listen.rpartition(":")
    return host


def is_loopback(listen: str) -> bool:
    if listen.startswith("unix:"):
        return True
    host = listen_host(listen)
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def mutual_tls(settings: AgentSettings) -> bool:
    return settings.tls_cert is not None and settings.tls_key is not None and settings.tls_ca is not None


def check_listen_policy(settings: AgentSettings) -> None:
    """Refuse to listen beyond loopback unless clients must authenticate (mTLS or token), or `--insecure`.

    Server-only TLS (no `--tls-ca`) encrypts but lets anyone in, so it does not count as authentication.
    """
    authenticated = mutual_tls(settings) or settings.token_file is not None
    if authenticated:
        return
    if is_loopback(settings.listen):
        if settings.insecure:
            log.warning("--insecure given: this agent serves without TLS client certificates or token")
        return
    if not settings.insecure:
        raise InvalidInput(
            f"refusing to listen on {settings.listen} without client authentication; pass --tls-cert, --tls-key "
            "and --tls-ca (mutual TLS) or --token-file, or --insecure to let anyone who reaches the port use it")
    log.warning("listening on %s without client authentication (--insecure): anyone who reaches the port controls "
                "this agent", settings.listen)


def _read_secret_file(path: Path, what: str, limit: int) -> bytes:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise InvalidInput(f"cannot read {what} {path}: {exc.strerror}; check --{what.replace(' ', '-')}") from None
    if not stat.S_ISREG(st.st_mode):
        raise InvalidInput(f"{what} {path} is not a regular file")
    if st.st_size > limit:
        raise InvalidInput(f"{what} {path} is {st.st_size} bytes, more than {limit}; is it the right file?")
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if not data.strip():
        raise InvalidInput(f"{what} {path} is empty")
    return data


def _warn_if_shared(path: Path, what: str) -> None:
    mode = os.stat(path).st_mode
    if mode & 0o077:
        log.warning("%s %s is readable by group or others (mode %o); run `chmod 600 %s`",
                    what, path, stat.S_IMODE(mode), path)


def read_token(path: Path) -> bytes:
    """The token is the file's first line without surrounding whitespace (never logged, never echoed)."""
    data = _read_secret_file(path, "token file", MAX_TOKEN_BYTES)
    token = data.strip().splitlines()[0].strip()
    if len(token) < 16:
        raise InvalidInput(f"token in {path} is shorter than 16 characters; generate one with "
                           "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`")
    _warn_if_shared(path, "token file")
    return token


def server_credentials(settings: AgentSettings) -> Optional[grpc.ServerCredentials]:
    """TLS when a certificate is configured (mutual when a CA is too); None means a plaintext port."""
    if settings.tls_cert is None and settings.tls_key is None:
        if settings.tls_ca is not None:
            raise InvalidInput("--tls-ca needs --tls-cert and --tls-key too (the agent's own certificate and key)")
        return None
    if settings.tls_cert is None or settings.tls_key is None:
        raise InvalidInput("--tls-cert and --tls-key go together; pass both (from `deploy certs issue DEVICE`)")
    cert = _read_secret_file(settings.tls_cert, "tls cert", MAX_PEM_BYTES)
    key = _read_secret_file(settings.tls_key, "tls key", MAX_PEM_BYTES)
    if b"PRIVATE KEY" not in key:
        raise InvalidInput(f"--tls-key {settings.tls_key} holds no PEM private key")
    if b"CERTIFICATE" not in cert:
        raise InvalidInput(f"--tls-cert {settings.tls_cert} holds no PEM certificate")
    _warn_if_shared(settings.tls_key, "tls key")
    ca = None
    if settings.tls_ca is not None:
        ca = _read_secret_file(settings.tls_ca, "tls ca", MAX_PEM_BYTES)
        if b"CERTIFICATE" not in ca:
            raise InvalidInput(f"--tls-ca {settings.tls_ca} holds no PEM certificate")
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)


def _deny_handler(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as HANDLER that refuses without reading the request."""

    def deny(_request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    def deny_stream(_request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # pragma: no cover - abort raises

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny_stream)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(deny)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(deny_stream)
    return grpc.unary_unary_rpc_method_handler(deny)


class TokenInterceptor(grpc.ServerInterceptor):
    """Every call but the health check must carry `authorization: Bearer <token>`."""

    def __init__(self, token: bytes) -> None:
        self._token = token

    def _ok(self, metadata: Any) -> bool:
        presented = b""
        for key, value in metadata or ():
            if key == TOKEN_HEADER:
                raw = value.encode("utf-8", "replace") if isinstance(value, str) else bytes(value)
                if raw[: len(TOKEN_SCHEME)].lower() == TOKEN_SCHEME.lower().encode():
                    presented = raw[len(TOKEN_SCHEME):].strip()
                break
        # compare_digest on equal-length inputs does not leak the token through timing.
        return hmac.compare_digest(presented, self._token)

    def intercept_service(self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method in OPEN_METHODS:
            return handler
        if self._ok(handler_call_details.invocation_metadata):
            return handler
        return _deny_handler(handler, "missing or wrong bearer token: give the client this agent's token "
                                      "(inventory `token_file`)")


def interceptors(settings: AgentSettings) -> list:
    if settings.token_file is None:
        return []
    return [TokenInterceptor(read_token(settings.token_file))]
