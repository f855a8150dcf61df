"""Thread policies (quant/threads.py): set before torch loads, never over the user's own settings; `auto` chooses
the thread count per measurement from the cores that are free."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_cap_caps_the_spin_before_torch_loads():
    """The earlier policy (GOMP_SPINCOUNT=1000 on every core), kept as --thread-policy cap."""
    d = _probe("cap")
    assert d["name"] == "cap" and d["spin"] == "1000" and d["env"] == {"GOMP_SPINCOUNT": "1000"}


def test_auto_keeps_libgomps_spin():
    d = _probe("auto")
    assert d["name"] == "auto" and d["spin"] is None and d["env"] == {}


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
    assert rows["quantqa"]["policy"].startswith("auto") and "libgomp defaults" in rows["default"]["policy"]
    assert rows["quantqa"]["used"]["quiet"] and rows["quantqa"]["used"]["busy"]  # threads chosen per phase, reported


def test_auto_takes_one_thread_fewer_while_a_neighbour_holds_a_core():
    """choose_threads under the auto policy: all cores when quiet, one fewer while a busy process holds one."""
    code = ("import json, subprocess, sys, time; sys.path.insert(0, sys.argv[1]); from quant.threads import "
            "apply_policy, choose_threads, meter\n"
            "apply_policy('auto'); import torch\n"
            "cores = int(meter().cores); quiet = choose_threads(cores)\n"
            "p = subprocess.Popen([sys.executable, '-c', 'import time\\nend = time.time() + 20\\nwhile time.time() < end: pass'])\n"
            "time.sleep(0.5); busy = choose_threads(cores); fixed = choose_threads(cores, fixed=True); p.kill()\n"
            "print(json.dumps({'cores': cores, 'quiet': [quiet.n, quiet.why], 'busy': [busy.n, busy.why, busy.others_cores],"
            " 'fixed': [fixed.n, fixed.why]}))\n")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GOMP_", "OMP_", "QUANTQA_THREAD"))}
    p = subprocess.run([sys.executable, "-c", code, str(ROOT)], capture_output=True, text=True, env=base, timeout=120)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout.strip().splitlines()[-1])
    if d["cores"] < 2:
        pytest.skip("one core: nothing to choose")
    assert d["busy"][0] == d["cores"] - 1 and d["busy"][2] > 0.5 and "other processes were using" in d["busy"][1]
    assert d["fixed"][0] == d["cores"] and "fixed by you" in d["fixed"][1]
    assert d["quiet"][0] in (d["cores"], d["cores"] - 1)  # quiet, unless another tenant is busy right now


def test_a_measurement_a_neighbour_disturbed_says_so():
    from quant.threads import ThreadChoice, neighbour_note

    assert neighbour_note(0.1, 2, 2) == ""
    note = neighbour_note(0.9, 2, 2)
    assert "0.9 of the 2 cores" in note and "higher than on a quiet machine" in note
    with ThreadChoice(1, "test").applied() as watch:
        import torch

        assert torch.get_num_threads() == 1
    assert watch.others_cores is not None and torch.get_num_threads() >= 1
