#!/usr/bin/env bash
# Set up a fresh machine for development: system packages (when root), .venv/ with the project and every extra.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v aarch64-linux-gnu-g++ >/dev/null || need_apt+=(g++-aarch64-linux-gnu)
[ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v tc >/dev/null || need_apt+=(iproute2)
# The SSH install tests use the system Python as the "device" interpreter, and check units with systemd-analyze.
[ -x /usr/bin/python3 ] && /usr/bin/python3 -c "import venv, ensurepip" 2>/dev/null || need_apt+=(python3-venv)
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
command -v strace >/dev/null || need_apt+=(strace)  # tests/device_agent/test_commit_order.py
# An emulated Jetson (deploy agent emulate, tests/system/test_emulated_jetson.py): qemu user mode, Debian's arm64 key
command -v qemu-aarch64-static >/dev/null || need_apt+=(qemu-user-static)
command -v prometheus >/dev/null || need_apt+=(prometheus)  # tests/host/fleet/test_prometheus_targets.py
command -v docker-registry >/dev/null || need_apt+=(docker-registry)  # tests that pull through a registry (tests/device_agent/test_registry_pull.py)
command -v nft >/dev/null || need_apt+=(nftables)  # scripts/bench/faults.py --only netem, where the kernel has no netem
[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || need_apt+=(debian-archive-keyring)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing ${need_apt[*]} with apt-get" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "setup: missing ${need_apt[*]} (install them as root); tests that need them will skip" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip uv >/dev/null
.venv/bin/uv pip install -q --python .venv/bin/python -e ".[host,agent,trust,dev,jetson-cross,report,docs]"
# tritonclient (tests of the agent's Open Inference Protocol endpoint, tests/device_agent/test_oip.py) declares
# protobuf<7, which grpcio-health-checking's generated code (protobuf 7 gencode) cannot run under; its gRPC client
# itself runs on protobuf 7, so it goes in without its declared dependencies (the ones it uses are ours too).
.venv/bin/uv pip install -q --python .venv/bin/python --no-deps "tritonclient[grpc]==2.73.0" "python-rapidjson>=0.9.1"
echo "setup: .venv ready ($(.venv/bin/deploy --version 2>/dev/null || echo deploy installed))" >&2
