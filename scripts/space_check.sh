#!/usr/bin/env bash
# Install and start QuantQA the way a Hugging Face Space does, then use it as a visitor would.
#
#   scripts/space_check.sh            # prints the console and "[space] OK", or what failed (exit 1)
#
# A Space: the README front matter's python_version, a fresh environment with what the platform installs for a
# Gradio Space (gradio at the front matter's sdk_version, and the `spaces` package: Gradio's reloader on a Space
# needs it), then `pip install -r requirements.txt` (no scripts/setup.sh), then `python app.py` with
# GRADIO_SERVER_NAME=0.0.0.0, SYSTEM=spaces and SPACE_ID set,
# and a home directory of its own (so static INT8 is built on this first start, as after a Space restart without
# persistent storage). The model: a Space downloads one from the hub; here a tiny one is made offline with the
# Space's own packages (tests/tinymodels.py). Then: the page answers, /compare answers through gradio_client, and
# the console has no traceback and no deprecation or future warning. SPACE_CHECK_DIR=dir keeps the work there.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
WORK="${SPACE_CHECK_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/quantqa-space-XXXXXX")}"
mkdir -p "$WORK/home"
say() { echo "[space] $*"; }

PYV="$(sed -n 's/^python_version: *"\{0,1\}\([0-9][0-9.]*\)"\{0,1\} *$/\1/p' README.md | head -1)"
[ -n "$PYV" ] || { say "README front matter names no python_version"; exit 1; }
PY="$(command -v "python$PYV" || true)"
if [ -z "$PY" ] && python3 -c "import sys; sys.exit(f'{sys.version_info[0]}.{sys.version_info[1]}' != '$PYV')"; then
  PY="$(command -v python3)"
fi
[ -n "$PY" ] || { say "Python $PYV (the front matter's python_version) is not installed here"; exit 1; }
say "Python $PYV ($PY); a fresh environment in $WORK/venv"
"$PY" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
SDK="$(sed -n 's/^sdk_version: *\([0-9][0-9.]*\) *$/\1/p' README.md | head -1)"
t0=$(date +%s)
"$VPY" -m pip install -q --disable-pip-version-check --progress-bar off "gradio==$SDK" "spaces==${SPACES_VERSION:-0.51.3}"
"$VPY" -m pip install -q --disable-pip-version-check --progress-bar off -r requirements.txt 2>&1 \
  | grep -v "is ignored: it is neither a file nor a directory" || true
say "the platform's gradio $SDK + spaces, then pip install -r requirements.txt: $(( $(date +%s) - t0 )) s"
"$VPY" -m pip freeze | grep -iE '^(torch|torchao|transformers|gradio|tokenizers|spaces)==' | sed 's/^/[space]   /'
"$VPY" tests/tinymodels.py trained "$WORK/model" >/dev/null 2>&1
PORT="$("$VPY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"

say "python app.py, as a Space starts it (port $PORT)"
env -i PATH="$PATH" HOME="$WORK/home" LANG=C.UTF-8 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 \
  GRADIO_SERVER_NAME=0.0.0.0 GRADIO_SERVER_PORT="$PORT" SYSTEM=spaces SPACE_ID=quantqa/space-check \
  QUANTQA_MODEL="$WORK/model" "$VPY" app.py >"$WORK/console.txt" 2>&1 &
APP=$!
trap 'kill $APP 2>/dev/null || true' EXIT
for _ in $(seq 600); do
  grep -q "Running on local URL" "$WORK/console.txt" && break
  kill -0 $APP 2>/dev/null || { cat "$WORK/console.txt"; say "FAILED: the app exited before serving"; exit 1; }
  sleep 0.5
done
grep -q "Running on local URL" "$WORK/console.txt" || { cat "$WORK/console.txt"; say "FAILED: no page in 300 s"; exit 1; }

status=0
"$VPY" - "$PORT" "$ROOT" <<'PYEOF' || status=1
import sys, time, urllib.request
sys.path.insert(0, sys.argv[2] + "/tests")
import tinymodels
from gradio_client import Client

url = f"http://127.0.0.1:{sys.argv[1]}/"
page = urllib.request.urlopen(url, timeout=60).read().decode()
assert "QuantQA" in page, "the page does not name the app"
print("[space] GET / : 200, the page names QuantQA")
ex = tinymodels.held_out_examples(1, seed=91)[0]
t0 = time.perf_counter()
d = Client(url, verbose=False).predict(ex.context, ex.question, 3, False, api_name="/compare")
by = {r["variant"]: r for r in d["results"]}
assert by["fp32-cpu"]["answer"] == ex.answer and by["int8-cpu"]["answer"] == ex.answer, by
print(f"[space] /compare through gradio_client: {ex.answer!r} from FP32 and INT8 "
      f"({by['fp32-cpu']['latency_ms']['median']:.1f} / {by['int8-cpu']['latency_ms']['median']:.1f} ms), "
      f"answered in {time.perf_counter() - t0:.1f} s")
PYEOF
sleep 1
kill $APP 2>/dev/null || true
wait $APP 2>/dev/null || true
trap - EXIT
echo "----- console"
cat "$WORK/console.txt"
echo "-----"
if grep -nE "Traceback|DeprecationWarning|FutureWarning|deprecated|will be removed" "$WORK/console.txt"; then
  say "FAILED: the console has a traceback or deprecation noise (above)"
  status=1
fi
[ $status -eq 0 ] && say "OK" || say "FAILED"
exit $status
