"""Agent settings: one dataclass, filled from flags, `DEPLOY_AGENT_*` environment variables and defaults.

Each setting has a flag and an environment variable so an agent under systemd and one started by hand agree.
The seed's runtime variables (TVM's TensorRT integration: `TVM_TENSORRT_USE_FP16`, `TVM_TENSORRT_CACHE_DIR`,
`TVM_TENSORRT_MAX_WORKSPACE_SIZE`, `TVM_TENSORRT_MULTI_ENGINE`) keep their meaning as aliases of our own settings.
Precedence: flag > `DEPLOY_AGENT_*` > `TVM_TENSORRT_*` > default; each setting remembers where its value came from
(`AgentSettings.source`), and `GetInfo` reports it.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import MISSING, dataclass, field, fields
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
    store_max_bytes: int = 0  # store + unpacked bundles; pruned LRU after each completed upload; 0: no bound
    build_heartbeat_s: float = 5.0  # a PROGRESS heartbeat per this many seconds of a build with no other news
    memory_limit_bytes: int = 0  # builds refused above min(this, MemAvailable, cgroup memory.max); 0: no cap
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
    log_format: str = "plain"  # or "json": one JSON object per line (device_agent/logfmt.py)
    metrics_listen: str = ""  # HOST:PORT or PORT of /metrics (Prometheus); empty: no metrics
    registry: str = ""  # [https://]HOST[:PORT]/REPO that Pull reads (device_agent/registry_pull.py); empty: none
    registry_token_file: Optional[Path] = None
    registry_user: str = ""
    registry_password_file: Optional[Path] = None
    registry_ca: Optional[Path] = None
    cudnn_conv_algo_search: str = "EXHAUSTIVE"  # onnxruntime-cuda: how cuDNN picks convolution algorithms
    onnxruntime_spin: bool = False  # onnxruntime's intra-op threads busy-wait after each run (its own default: on)
    registry_poll_s: float = 0.0  # > 0: poll the registry for this class's artifact (device_agent/registry_poll.py)
    keep_versions: int = 3  # model versions kept (with their bundles and engines) per name (device_agent/models.py)
    health_cmd: str = ""  # run after each activation; a failure or a hang rolls back (Mender's commit script)
    health_timeout_s: float = 30.0
    trust_root: Optional[Path] = None  # the fleet's TUF root.json: bundles must be signed (device_agent/trust.py)
    require_signed: bool = False  # refuse to start without a trust root
    # setting name -> where its value came from: "flag", "DEPLOY_AGENT_<NAME>", "TVM_TENSORRT_<NAME>", "default"
    sources: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def source(self, name: str) -> str:
        """Where the value of setting `name` came from; one given in code (not from_namespace) counts as "flag"."""
        if name in self.sources:
            return self.sources[name]
        default = next(f for f in fields(self) if f.name == name)
        if name == "cache_dir" or default.default_factory is not MISSING:  # type: ignore[misc]
            return "default"
        return "default" if getattr(self, name) == default.default else "flag"

    def __post_init__(self) -> None:
        self.store = Path(self.store).expanduser()
        if self.cache_dir is None:
            self.cache_dir = self.store.parent / "engines"
        self.cache_dir = Path(self.cache_dir).expanduser()
        for name in ("tls_cert", "tls_key", "tls_ca", "token_file", "registry_token_file", "registry_password_file",
                     "registry_ca", "trust_root"):
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
    "store": ("directory of the content-addressed artifact store; its parent holds the agent's other state "
              "(engines, unpacked bundles, model versions), so give each agent a parent of its own", Path),
    "cache_dir": ("engine cache directory (default: beside the store)", Path),
    "max_upload_bytes": ("largest artifact accepted, in bytes", int),
    "backend": ("default engine backend: auto, tensorrt, trtexec, onnxruntime", str),
    "fp16": ("build FP16 engines by default", bool),
    "max_workspace_bytes": ("builder workspace / memory-pool limit, in bytes", int),
    "multi_engine_mode": ("dynamic batch: 0 one engine rebuilt for a larger batch, 1 one engine per batch size", int),
    "cache_max_bytes": ("engine cache size bound; least recently used entries are pruned", int),
    "store_max_bytes": ("bound on the store and its unpacked bundles; after each completed upload the least "
                        "recently used other entries are removed (0: no bound; deploy store prune by hand)", int),
    "build_heartbeat_s": ("seconds between heartbeat events of a running build (0: none)", float),
    "memory_limit_bytes": ("cap on the memory a build may assume free (the guard also reads MemAvailable and "
                           "cgroup v2 memory.max, lowest wins); 0: no cap", int),
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
    "log_format": ("log lines: plain or json (one object per line, with the request id)", str),
    "metrics_listen": ("serve Prometheus metrics on HOST:PORT (PORT alone: loopback); beyond loopback only with "
                       "--tls-cert/--tls-key (HTTPS) or --insecure; needs prometheus_client", str),
    "registry": ("OCI registry [https://]HOST[:PORT]/REPO that Pull fetches bundles and engines from", str),
    "registry_token_file": ("file holding the registry's bearer token", Path),
    "registry_user": ("registry user name (basic auth, or for its token service)", str),
    "registry_password_file": ("file holding the registry password", Path),
    "registry_ca": ("CA (PEM) the registry's TLS certificate must chain to (the fleet CA)", Path),
    "cudnn_conv_algo_search": ("onnxruntime-cuda: EXHAUSTIVE (benchmark cuDNN's algorithms when a session "
                               "loads; onnxruntime's default), HEURISTIC (cuDNN's pick: the same every load) "
                               "or DEFAULT", str),
    "onnxruntime_spin": ("onnxruntime: let its intra-op threads busy-wait for the next run (onnxruntime's own "
                         "default; about 30 ms of a core after every run, e.g. each verify): lower latency for "
                         "back-to-back runs of small models; off, the agent leaves the CPU to the device's "
                         "application", bool),
    "registry_poll_s": ("every this many seconds, pull what the registry says this device's class should hold "
                        "(for devices the host cannot reach); 0: only when told (Pull)", float),
    "keep_versions": ("model versions kept per name, with their bundles and engines (pruning and the size bounds "
                      "never remove them); the active and previous versions are always kept", int),
    "health_cmd": ("shell command run after each activation (DEPLOY_MODEL_NAME, DEPLOY_MODEL_VERSION set); a "
                   "non-zero exit or a hang past --health-timeout-s rolls the activation back", str),
    "health_timeout_s": ("seconds --health-cmd may take before it counts as failed", float),
    "trust_root": ("the fleet's TUF trust root (trust_root.json from `deploy keys ls`): bundles and engines must "
                   "be signed by the fleet's keys, verified before anything parses them; needs the tuf library "
                   "(the [trust] extra)", Path),
    "require_signed": ("refuse to start without --trust-root", bool),
}


#: onnxruntime's values of the CUDA provider's cudnn_conv_algo_search option
CUDNN_ALGO_SEARCH = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")

# setting -> the seed's environment variable read as its alias, below DEPLOY_AGENT_<NAME>.
SEED_ALIASES: dict[str, str] = {
    "fp16": "TVM_TENSORRT_USE_FP16",
    "cache_dir": "TVM_TENSORRT_CACHE_DIR",
    "max_workspace_bytes": "TVM_TENSORRT_MAX_WORKSPACE_SIZE",
    "multi_engine_mode": "TVM_TENSORRT_MULTI_ENGINE",
}
REPORTED_SETTINGS = ("fp16", "cache_dir", "max_workspace_bytes", "multi_engine_mode")  # GetInfo's `settings`


def env_name(name: str) -> str:
    return "DEPLOY_AGENT_" + name.upper()


def _parse_bool(text: str) -> bool:
    return text.strip().lower() in ("1", "true", "yes", "on")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for name, (help_text, kind) in _FLAGS.items():
        flag = "--" + name.replace("_", "-")
        env = env_name(name)
        if name in SEED_ALIASES:
            env = f"{env}, {SEED_ALIASES[name]}"
        if kind is bool:
            parser.add_argument(flag, action="store_true", default=None, help=f"{help_text} [{env}]")
        else:
            parser.add_argument(flag, type=kind, default=None, help=f"{help_text} [{env}]")


def from_namespace(ns: argparse.Namespace, environ: Optional[dict[str, str]] = None) -> AgentSettings:
    """Flags win over `DEPLOY_AGENT_*` variables, which win over the seed's `TVM_TENSORRT_*` ones, then defaults."""
    environ = dict(os.environ) if environ is None else environ
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    known = {f.name for f in fields(AgentSettings)}
    for name, (_help, kind) in _FLAGS.items():
        value, source = getattr(ns, name, None), "flag"
        if value is None:
            for var in (env_name(name), SEED_ALIASES.get(name)):
                if var is None or var not in environ or (var != env_name(name) and not environ[var].strip()):
                    continue
                value, source = _convert(var, environ[var], kind), var
                break
        if value is not None and name in known:
            values[name] = value
            sources[name] = source
    settings = AgentSettings(**values)
    algo = settings.cudnn_conv_algo_search.strip().upper()
    if algo not in CUDNN_ALGO_SEARCH:
        raise SystemExit(f"deploy-agent: cudnn_conv_algo_search {settings.cudnn_conv_algo_search!r} "
                         f"({sources.get('cudnn_conv_algo_search')}) is not one of {', '.join(CUDNN_ALGO_SEARCH)}")
    settings.cudnn_conv_algo_search = algo
    settings.sources = {name: sources.get(name, "default") for name in _FLAGS if name in known}
    return settings


def _convert(var: str, raw: str, kind: Any) -> Any:
    try:
        return _parse_bool(raw) if kind is bool else kind(raw.strip() if kind in (int, float) else raw)
    except ValueError:
        raise SystemExit(f"deploy-agent: {var}={raw!r} is not a valid {kind.__name__}") from None


def build_parser() -> argparse.ArgumentParser:
    """`deploy-agent`'s parser; also what docs/reference/agent.md is generated from (scripts/gen_docs.py)."""
    parser = argparse.ArgumentParser(prog="deploy-agent", description="Device agent of jetson-deploy.")
    add_arguments(parser)
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> AgentSettings:
    return from_namespace(build_parser().parse_args(argv))
