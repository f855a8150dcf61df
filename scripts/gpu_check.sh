#!/usr/bin/env bash
# The CUDA checks, as one short script for a lent GPU machine (its python3 has torch,
# transformers, tokenizers, pytest; no gradio, no network). Writes logs to $OUT.
set -uo pipefail
OUT="${OUT:-/tmp/quantqa-gpu}"; mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name(0))" | tee -a "$OUT/gpu.txt"
timeout 240 python3 -m pytest -q -ra -p no:cacheprovider tests/test_cuda.py tests/test_quantize.py 2>&1 | tee "$OUT/pytest.log" | tail -15
python3 tests/tinymodels.py bert-base /tmp/m_base >/dev/null
python3 - <<'PY' > /tmp/passage.txt
import json; print(json.load(open("assets/examples.json"))[0]["passage"])
PY
Q=$(python3 -c "import json; print(json.load(open('assets/examples.json'))[0]['question'])")
timeout 120 python3 -m quant compare --model /tmp/m_base --context-file /tmp/passage.txt --question "$Q" --runs 20 --extra 2>&1 | tee "$OUT/compare.txt"
timeout 180 python3 -m quant bench --model /tmp/m_base --seq-lens 64,160,384 --runs 20 --warmup 3 --no-peers --no-static --save "$OUT/bench.json" 2>"$OUT/bench.err" | tee "$OUT/bench.txt"
