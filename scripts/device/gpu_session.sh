#!/usr/bin/env bash
# On the device machine (H200), after ../shared/device/stage-wheels.sh's parts are restored into /tmp/site:
# facts, the agent's GetInfo, then scripts/bench/gpu.py over the models in MODELS (default /root/gpumodels).
# Writes everything under $OUT (or ./gpu-out). Each step runs even when an earlier one failed.
# usage: bash scripts/device/gpu_session.sh [MODELS] [ITERATIONS] [RUNS]
set -u
cd "$(dirname "$0")/../.."
models=${1:-/root/gpumodels}; iters=${2:-300}; runs=${3:-3}
out=${OUT:-$PWD/gpu-out}; mkdir -p "$out"
source scripts/device/cuda_env.sh  # PYTHONPATH (staged wheels), LD_LIBRARY_PATH (CUDA 13 libraries)
export XDG_CACHE_HOME=${XDG_CACHE_HOME:-/tmp/deploy-home}  # a fresh local agent and host cache per session
{
  date -u; git log -1 --format='commit %h %s' 2>/dev/null || true
  nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv
  python3 -c "import onnxruntime as o, grpc, numpy; print('onnxruntime', o.__version__, o.get_available_providers()); print('grpc', grpc.__version__, 'numpy', numpy.__version__)"
  python3 -c "import tvm; print('tvm', tvm.__version__, 'cuda', tvm.cuda(0).exist, tvm.cuda(0).compute_version)"
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
} > "$out/facts.txt" 2>&1
python3 -m host.cli.app info --device local --json > "$out/info.json" 2> "$out/info.err"
python3 scripts/bench/gpu.py --models-dir "$models" --iterations "$iters" --runs "$runs" --json "$out/gpu.json" \
  > "$out/gpu.md" 2> "$out/gpu.err"
python3 -m host.cli.app agent stop >/dev/null 2>&1
cp -r "$XDG_CACHE_HOME" "$out/deploy-home-logs" 2>/dev/null; find "$out/deploy-home-logs" -type f -size +2M -delete 2>/dev/null
cat "$out/facts.txt" "$out/gpu.md"; tail -5 "$out/gpu.err"
