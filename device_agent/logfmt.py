"""The agent's log: one line per event, plain or JSON, each carrying the request id of the call it belongs to.

The host sends `x-request-id` with every call and prints it when a call fails, so `grep ID` in the device's
journal finds that call's lines. `configure` is called from `main()` only; importing this module configures nothing.
"""
from __future__ import annotations

import contextvars
import json
import logging
import time
from typing import Any, Callable, Iterator, Optional

import grpc

REQUEST_ID_KEY = "x-request-id"  # host/client/request_ids.py sends the same key
MAX_REQUEST_ID_CHARS = 64  # the id comes from the network: bounded and printable before it reaches a log line
FORMATS = ("plain", "json")
# calls logged at DEBUG: probes and tools that would drown the journal
QUIET_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
log = logging.getLogger("device_agent.rpc")


def clean_request_id(raw: Any) -> str:
    text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else str(raw)
    return "".join(c for c in text[:MAX_REQUEST_ID_CHARS] if c.isalnum() or c in "-_.")


def request_id_of(metadata: Any) -> str:
    for key, value in metadata or ():
        if key == REQUEST_ID_KEY:
            return clean_request_id(value)
    return ""


class RequestIdFilter(logging.Filter):
    """Gives every record the id of the call running in its thread (empty outside calls)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", ""):
            record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, request_id and the record's `fields`."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname, "logger": record.name, "msg": record.getMessage(),
        }
        if getattr(record, "request_id", ""):
            data["request_id"] = record.request_id
        data.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


class PlainFormatter(logging.Formatter):
    """`TIME LEVEL logger: message key=value ... request_id=ID`: one line, greppable."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = dict(getattr(record, "fields", None) or {})
        if getattr(record, "request_id", ""):
            extra["request_id"] = record.request_id
        tail = " ".join(f"{k}={_plain(v)}" for k, v in extra.items())
        if tail:
            head, sep, rest = line.partition("\n")  # a traceback stays below the event's line
            line = f"{head} {tail}{sep}{rest}"
        return line


def _plain(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if (not text or any(c.isspace() or c in '"=' for c in text)) else text


def configure(level: str = "INFO", fmt: str = "plain") -> None:
    """Set up the root logger once, from `main()`; `fmt` is "plain" or "json"."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else PlainFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


# ---------------------------------------------------------------- one line per call

def call_code(context: grpc.ServicerContext, failed: bool) -> str:
    """The status a call ended with; a failed call whose client had gone (cancelled, past its deadline) is named
    for that, since whatever the service then set never reached anyone."""
    if failed and hasattr(context, "is_active") and not context.is_active():
        remaining = context.time_remaining() if hasattr(context, "time_remaining") else None
        return "DEADLINE_EXCEEDED" if remaining is not None and remaining <= 0 else "CANCELLED"
    code = context.code() if hasattr(context, "code") else None
    if code is None:
        return "UNKNOWN" if failed else "OK"
    return code.name if isinstance(code, grpc.StatusCode) else str(code)


def timed(call: Callable[[], Any], on_end: Callable[[float, bool], None]) -> Any:
    """Run a unary call; ``on_end(started, failed)`` runs however it ends (the interceptors' shared bracket)."""
    started, failed = time.perf_counter(), True
    try:
        result = call()
        failed = False
        return result
    finally:
        on_end(started, failed)


def wrap_handler(handler: grpc.RpcMethodHandler,
                 around: Callable[[Callable[[], Any], Any, bool], Any]) -> grpc.RpcMethodHandler:
    """The same handler with its behaviour run through `around(call, context, streaming_response)`."""
    def unary(behavior: Callable) -> Callable:
        return lambda request, context: around(lambda: behavior(request, context), context, False)

    def streaming(behavior: Callable) -> Callable:
        return lambda request, context: around(lambda: behavior(request, context), context, True)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(streaming(handler.stream_stream), handler.request_deserializer,
                                                     handler.response_serializer)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary), handler.request_deserializer,
                                                    handler.response_serializer)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(streaming(handler.unary_stream), handler.request_deserializer,
                                                    handler.response_serializer)
    return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary), handler.request_deserializer,
                                               handler.response_serializer)


class RequestLogInterceptor(grpc.ServerInterceptor):
    """Outermost interceptor: binds the call's request id to its thread and logs one line when the call ends."""

    def intercept_service(self, continuation: Callable, details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        method = details.method
        request_id = request_id_of(details.invocation_metadata)
        level = logging.DEBUG if method.startswith(QUIET_PREFIXES) else logging.INFO

        def finish(context: Any, started: float, failed: bool) -> None:
            code = call_code(context, failed)
            fields: dict[str, Any] = {"event": "rpc", "method": method, "code": code,
                                      "seconds": round(time.perf_counter() - started, 6)}
            if code != "OK":
                details_text = context.details() if hasattr(context, "details") else ""
                if isinstance(details_text, bytes):
                    details_text = details_text.decode("utf-8", "replace")
                fields["error"] = (details_text or "")[:300]
            log.log(logging.WARNING if code not in ("OK", "CANCELLED", "NOT_FOUND") else level,
                    "%s %s", method.rsplit("/", 1)[-1], code, extra={"fields": fields, "request_id": request_id})

        def around(call: Callable[[], Any], context: Any, streaming: bool) -> Any:
            if streaming:
                return _logged_stream(call, context, request_id, finish)
            token = request_id_var.set(request_id)
            try:
                return timed(call, lambda started, failed: finish(context, started, failed))
            finally:
                request_id_var.reset(token)

        return wrap_handler(handler, around)


def _logged_stream(call: Callable[[], Any], context: Any, request_id: str,
                   finish: Callable[[Any, float, bool], None]) -> Iterator[Any]:
    token: Optional[contextvars.Token] = request_id_var.set(request_id)
    started, failed = time.perf_counter(), True
    try:
        yield from call()
        failed = False
    finally:
        finish(context, started, failed)
        try:
            request_id_var.reset(token)
        except ValueError:  # resumed in another context: nothing to restore there
            request_id_var.set("")
