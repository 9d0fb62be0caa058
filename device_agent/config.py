"""Agent settings: one dataclass, filled from flags, `DEPLOY_AGENT_*` environment variables and defaults.

Each setting has a flag and an environment variable so an agent under systemd and one started by hand agree.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, Sequence

DEFAULT_PORT = 7311
MiB = 1024 * 1024
GiB = 1024 * MiB


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "deploy-agent"


@dataclass
class AgentSettings:
    """Everything an agent process needs to know; the CLI, tests and systemd all build one of these."""

    listen: str = f"127.0.0.1:{DEFAULT_PORT}"
    store: Path = field(default_factory=lambda: _default_data_dir() / "store")
    cache_dir: Optional[Path] = None  # engine cache; default <store>/../engines
    max_upload_bytes: int = 8 * GiB
    chunk_bytes: int = MiB  # largest accepted upload chunk is 4x this
    backend: str = "auto"
    fp16: bool = False
    max_workspace_bytes: int = 1 * GiB
    multi_engine_mode: int = 0
    cache_max_bytes: int = 10 * GiB
    profile: str = ""
    idle_exit_s: float = 0.0  # 0: never exit when idle
    tls_cert: Optional[Path] = None
    tls_key: Optional[Path] = None
    tls_ca: Optional[Path] = None
    token_file: Optional[Path] = None
    insecure: bool = False
    max_workers: int = 16
    max_concurrent_rpcs: int = 16  # calls in flight past this are answered RESOURCE_EXHAUSTED at once
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        self.store = Path(self.store).expanduser()
        if self.cache_dir is None:
            self.cache_dir = self.store.parent / "engines"
        self.cache_dir = Path(self.cache_dir).expanduser()
        for name in ("tls_cert", "tls_key", "tls_ca", "token_file"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, Path(value).expanduser())

    @property
    def data_dir(self) -> Path:
        """Where the agent keeps unpacked bundles and other state beside the store."""
        return self.store.parent


# flag name -> (help, type); the environment variable is DEPLOY_AGENT_<NAME>.
_FLAGS: dict[str, tuple[str, Any]] = {
    "listen": ("address to listen on, HOST:PORT", str),
    "store": ("directory of the content-addressed artifact store", Path),
    "cache_dir": ("engine cache directory (default: beside the store)", Path),
    "max_upload_bytes": ("largest artifact accepted, in bytes", int),
    "backend": ("default engine backend: auto, tensorrt, trtexec, onnxruntime", str),
    "fp16": ("build FP16 engines by default", bool),
    "max_workspace_bytes": ("builder workspace / memory-pool limit, in bytes", int),
    "multi_engine_mode": ("dynamic batch: 0 one engine rebuilt for a larger batch, 1 one engine per batch size", int),
    "cache_max_bytes": ("engine cache size bound; least recently used entries are pruned", int),
    "profile": ("device profile this agent reports (e.g. jetson-nano)", str),
    "idle_exit_s": ("exit after this many idle seconds (0: never)", float),
    "tls_cert": ("server certificate (PEM) for TLS", Path),
    "tls_key": ("server private key (PEM) for TLS", Path),
    "tls_ca": ("CA (PEM) that client certificates must chain to (mutual TLS)", Path),
    "token_file": ("file holding the bearer token clients must present", Path),
    "insecure": ("allow listening beyond loopback without TLS or token", bool),
    "max_concurrent_rpcs": ("calls served at once; more are answered RESOURCE_EXHAUSTED at once (clients back "
                            "off and retry)", int),
    "log_level": ("log level", str),
}


def env_name(name: str) -> str:
    return "DEPLOY_AGENT_" + name.upper()


def _parse_bool(text: str) -> bool:
    return text.strip().lower() in ("1", "true", "yes", "on")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for name, (help_text, kind) in _FLAGS.items():
        flag = "--" + name.replace("_", "-")
        env = env_name(name)
        if kind is bool:
            parser.add_argument(flag, action="store_true", default=None, help=f"{help_text} [{env}]")
        else:
            parser.add_argument(flag, type=kind, default=None, help=f"{help_text} [{env}]")


def from_namespace(ns: argparse.Namespace, environ: Optional[dict[str, str]] = None) -> AgentSettings:
    """Flags win over environment variables, which win over defaults."""
    environ = dict(os.environ) if environ is None else environ
    values: dict[str, Any] = {}
    known = {f.name for f in fields(AgentSettings)}
    for name, (_help, kind) in _FLAGS.items():
        value = getattr(ns, name, None)
        if value is None and env_name(name) in environ:
            raw = environ[env_name(name)]
            value = _parse_bool(raw) if kind is bool else kind(raw)
        if value is not None and name in known:
            values[name] = value
    return AgentSettings(**values)


def parse_args(argv: Optional[Sequence[str]] = None) -> AgentSettings:
    parser = argparse.ArgumentParser(prog="deploy-agent", description="Device agent of jetson-deploy.")
    add_arguments(parser)
    return from_namespace(parser.parse_args(argv))
