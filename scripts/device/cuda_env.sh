# Sourced by the device-machine scripts: the staged wheels on PYTHONPATH, and the machine's CUDA 13 libraries on
# LD_LIBRARY_PATH. onnxruntime-gpu 1.31 links CUDA 13 (libcudart.so.13, libcublas.so.13) and dlopens cuDNN 9: the
# machine has them as pip packages (torch's nvidia-* wheels), found here rather than in the loader's default paths.
export PYTHONPATH=/tmp/site:$PWD
libs=$(python3 - <<'PY'
import glob, os, site
dirs = []
for base in site.getsitepackages():
    dirs += sorted(glob.glob(os.path.join(base, "nvidia", "*", "lib")) + glob.glob(os.path.join(base, "nvidia", "cu*", "lib")))
print(":".join(dict.fromkeys(dirs)))
PY
)
export LD_LIBRARY_PATH=${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
