#!/usr/bin/env bash
# Create .venv and install what QuantQA needs. Usage: scripts/setup.sh [app|dev|peers]
#   app   : runtime (torch 2.13.0 first, then requirements.txt)
#   dev   : + test tools, and Debian's chromium for the browser test (apt-get, as root)
#   peers : + ONNX Runtime and torchao for the benchmark's peer rows
# VENV=dir picks the environment (default .venv; `make bench` uses .venv-peers, because
# transformers imports torchao at start-up, with warnings, wherever torchao is installed).
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-app}"
PY="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
fi
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }
stamp="$VENV/.quantqa-$what-$(cat requirements*.txt scripts/setup.sh | sha1sum | cut -c1-12)"
if [ -f "$stamp" ]; then exit 0; fi
# torch first, pinned: a plain `torch` requirement could pull a multi-GB CUDA build
# where a CPU wheel is what this machine has.
"$VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null \
  || { echo "[setup] installing torch 2.13.0"; pip install torch==2.13.0; }
case "$what" in
  app)   pip install -r requirements.txt ;;
  dev)   pip install -r requirements-dev.txt
         if ! command -v chromium >/dev/null 2>&1 && [ ! -x /usr/bin/chromium ]; then
           if [ "$(id -u)" = 0 ]; then
             echo "[setup] installing Debian's chromium for the browser test"
             (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core) >/dev/null
           else
             echo "[setup] chromium missing: run 'sudo apt-get install chromium' for the browser test" >&2
           fi
         fi ;;
  peers) pip install -r requirements.txt -r requirements-peers.txt ;;
  *) echo "usage: scripts/setup.sh [app|dev|peers]" >&2; exit 2 ;;
esac
touch "$stamp"
