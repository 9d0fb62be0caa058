#!/usr/bin/env bash
# On the device machine, after gpu_session.sh's set-up: `deploy push --json` of each model in MODELS to the
# local agent (verify against the host reference), in FP32 and, for ResNet-50, FP16; one JSON line per push.
set -u
cd "$(dirname "$0")/../.."
models=${1:-/root/gpumodels}
out=${OUT:-$PWD/gpu-out}; mkdir -p "$out"
export PYTHONPATH=/tmp/site:$PWD
export LD_LIBRARY_PATH=$(ls -d /opt/torch/.venv/lib/python3.12/site-packages/nvidia/*/lib 2>/dev/null | tr '\n' ':')${LD_LIBRARY_PATH:-}
export XDG_CACHE_HOME=${XDG_CACHE_HOME:-/tmp/deploy-home}
push() {  # NAME SOURCE [ARGS...]
  local name=$1 src=$2; shift 2
  python3 -m host.cli.app push "$src" --device local --json "$@" > "$out/push-$name.json" 2> "$out/push-$name.err"
  python3 - "$name" "$out/push-$name.json" "$out/push-$name.err" <<'PY'
import json, sys
name, path, err = sys.argv[1:]
try:
    d = json.load(open(path))
except Exception:
    print(name, "FAILED", open(err).read().strip()[-300:]); sys.exit()
v = d.get("verify") or {}
segs = [s.get("engine_bytes") for s in (d.get("build") or {}).get("segments", [])]
print(name, "backend", v.get("backend"), "max_rel_err", v.get("max_rel_err"), "passed", v.get("passed"),
      "profile", (d.get("target") or {}).get("profile"), "cc", (d.get("target") or {}).get("compute_capability"),
      "engine bytes", segs)
PY
}
for f in "$models"/*.onnx "$models"/*.tar; do
  name=$(basename "${f%.*}")
  [ "${f##*.}" = onnx ] && [ -f "${f%.*}.tar" ] && continue  # the offline-compiled bundle is pushed instead
  if [ "${f##*.}" = onnx ] && [ -f "${f%.*}.npz" ]; then push "$name" "$f" --inputs "${f%.*}.npz"; else push "$name" "$f"; fi
done
push resnet50-fp16 "$models/resnet50.onnx" --fp16
# the TVM part compiled here, on the device, for the GPU the agent reports (NVRTC of this machine)
push basic-pitch-onnx "$models/basic-pitch.onnx" --inputs "$models/basic-pitch.npz" --trt-version 8.0.1
python3 -m host.cli.app agent stop >/dev/null 2>&1
rm -f "$out"/push-*.json "$out"/push-*.err  # the summary lines are the record
