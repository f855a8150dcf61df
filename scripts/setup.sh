#!/usr/bin/env bash
# Create .venv and install what QuantQA needs. Usage: scripts/setup.sh [app|dev|peers]
#   app   : runtime (torch 2.13.0 first, then requirements.txt)
#   dev   : + test tools, and Debian's chromium for the browser test (apt-get, when run as root)
#   peers : + ONNX Runtime for the benchmark's peer rows (`make bench` uses VENV=.venv-peers)
# torch: on a machine without an NVIDIA GPU, PyTorch's CPU-only wheel index is tried first (the
# registry's Linux wheel of 2.13.0 is the CUDA build, several GB of NVIDIA libraries); where that
# index cannot be reached, the plain registry (which serves a CPU wheel on some machines, as on
# this project's CI). With a GPU, the registry's CUDA build. TORCH_INDEX=url overrides the index.
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-app}"
PY="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
TORCH_VERSION=2.13.0
CPU_INDEX="${TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
fi
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }
stamp="$VENV/.quantqa-$what-$(cat requirements*.txt scripts/setup.sh | sha1sum | cut -c1-12)"
if [ -f "$stamp" ]; then exit 0; fi

has_nvidia_gpu() {
  { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; } || [ -e /proc/driver/nvidia/version ]
}
index_reachable() {  # a quick look (5 s), instead of pip's minutes of retries
  "$VENV/bin/python" - "$1" <<'PYEOF' 2>/dev/null
import sys, urllib.request
try:
    urllib.request.urlopen(sys.argv[1].rstrip("/") + "/torch/", timeout=5)
except Exception:
    sys.exit(1)
PYEOF
}
if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  if ! has_nvidia_gpu && [ "$(uname -s)" = Linux ] && index_reachable "$CPU_INDEX"; then
    echo "[setup] installing torch $TORCH_VERSION, CPU build (no NVIDIA GPU here), from $CPU_INDEX"
    pip install "torch==$TORCH_VERSION" --index-url "$CPU_INDEX" \
      || { echo "[setup] the CPU index failed; trying the plain registry"; pip install "torch==$TORCH_VERSION"; }
  else
    has_nvidia_gpu && echo "[setup] installing torch $TORCH_VERSION (NVIDIA GPU found: the registry's CUDA build)" \
      || echo "[setup] installing torch $TORCH_VERSION from the registry ($CPU_INDEX not reachable)"
    pip install "torch==$TORCH_VERSION"
  fi
fi
case "$what" in
  app)   pip install -r requirements.txt ;;
  dev)   pip install -r requirements-dev.txt
         if ! command -v chromium >/dev/null 2>&1 && [ ! -x /usr/bin/chromium ]; then
           if [ "$(id -u)" = 0 ]; then
             echo "[setup] installing Debian's chromium for the browser test (apt-get)"
             (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core) >/dev/null
           else
             echo "[setup] chromium missing: run 'sudo apt-get install chromium' for the browser test" >&2
           fi
         fi ;;
  peers) pip install -r requirements.txt -r requirements-peers.txt ;;
  *) echo "usage: scripts/setup.sh [app|dev|peers]" >&2; exit 2 ;;
esac
touch "$stamp"
