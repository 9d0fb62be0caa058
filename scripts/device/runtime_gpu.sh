#!/usr/bin/env bash
# On the device machine, after ../shared/device/stage-wheels.sh's parts are restored into /tmp/site: the device
# runtime's benchmark (scripts/bench/runtime.py) with the agent building onnxruntime-cuda engines on the GPU.
# Writes facts, the table and the JSON under $OUT (or ./gpu-out). usage: bash scripts/device/runtime_gpu.sh [RUNS]
set -u
cd "$(dirname "$0")/../.."
runs=${1:-5}
out=${OUT:-$PWD/gpu-out}; mkdir -p "$out"
source scripts/device/cuda_env.sh  # PYTHONPATH (staged wheels), LD_LIBRARY_PATH (CUDA 13 libraries)
{
  date -u; git log -1 --format='commit %h %s' 2>/dev/null || true
  nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv
  python3 -c "import onnxruntime as o, grpc, numpy; print('onnxruntime', o.__version__, o.get_available_providers()); print('grpc', grpc.__version__, 'numpy', numpy.__version__)"
} > "$out/facts.txt" 2>&1
python3 scripts/bench/runtime.py --runs "$runs" --backend onnxruntime-cuda > "$out/runtime.md" 2> "$out/runtime.err"
echo "exit $?" >> "$out/runtime.md"
cat "$out/facts.txt" "$out/runtime.md"; tail -5 "$out/runtime.err"
