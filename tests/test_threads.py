"""The OpenMP wait policy (quant/threads.py): set before torch loads, never over the user's own settings."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = ("import json, os, sys; sys.path.insert(0, sys.argv[1]); from quant.threads import apply_policy\n"
         "p = apply_policy(sys.argv[2]); import torch\n"
         "print(json.dumps({'name': p.name, 'env': p.env, 'spin': os.environ.get('GOMP_SPINCOUNT')}))\n")


def _probe(policy: str, **env) -> dict:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GOMP_", "OMP_", "QUANTQA_THREAD"))}
    p = subprocess.run([sys.executable, "-c", PROBE, str(ROOT), policy], capture_output=True, text=True,
                       env={**base, **env}, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_auto_caps_the_spin_before_torch_loads():
    d = _probe("auto")
    assert d["name"] == "auto" and d["spin"] == "1000" and d["env"] == {"GOMP_SPINCOUNT": "1000"}


def test_off_leaves_libgomp_defaults():
    d = _probe("off")
    assert d["spin"] is None and d["env"] == {}


def test_users_own_settings_win():
    d = _probe("auto", OMP_WAIT_POLICY="PASSIVE")
    assert d["name"] == "user" and d["env"]["OMP_WAIT_POLICY"] == "PASSIVE"
    d = _probe("auto", GOMP_SPINCOUNT="50")
    assert d["spin"] == "50"


def test_after_torch_it_only_reports():
    import torch  # noqa: F401  (already loaded in this test process)

    from quant.threads import apply_policy

    before = os.environ.get("GOMP_SPINCOUNT")
    p = apply_policy("auto")
    assert "already loaded" in p.note and os.environ.get("GOMP_SPINCOUNT") == before


def test_contention_script_runs(random_model_dir):
    """bench/contention.py end to end on a tiny model (timings are its output, not asserted here)."""
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "contention.py"), "--model", str(random_model_dir),
                        "--runs", "2", "--tokens", "16", "--policies", "default,quantqa", "--json"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    rows = {r["name"]: r for r in d["rows"]}
    assert set(rows) == {"default", "quantqa"} and all(r["quiet"] > 0 and r["contended"] > 0 for r in rows.values())
    assert "GOMP_SPINCOUNT=1000" in rows["quantqa"]["policy"] and "libgomp defaults" in rows["default"]["policy"]
