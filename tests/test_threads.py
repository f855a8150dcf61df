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
            "time.sleep(1.0); busy = choose_threads(cores); fixed = choose_threads(cores, fixed=True); p.kill()\n"
            "print(json.dumps({'cores': cores, 'quiet': [quiet.n, quiet.why, quiet.others_cores], "
            "'busy': [busy.n, busy.why, busy.others_cores], 'fixed': [fixed.n, fixed.why]}))\n")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GOMP_", "OMP_", "QUANTQA_THREAD"))}
    p = subprocess.run([sys.executable, "-c", code, str(ROOT)], capture_output=True, text=True, env=base, timeout=120)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout.strip().splitlines()[-1])
    if d["cores"] < 2:
        pytest.skip("one core: nothing to choose")
    assert d["busy"][0] == d["cores"] - 1 and d["busy"][2] > 0.5 and "other processes were using" in d["busy"][1]
    assert d["fixed"][0] == d["cores"] and "fixed by you" in d["fixed"][1]
    # quiet: exactly what its own reading gives (all cores unless another tenant was busy right then)
    from quant.threads import threads_for

    assert d["quiet"][0] == threads_for(d["cores"], d["cores"], d["quiet"][2])
    if d["quiet"][2] < 0.5:
        assert d["quiet"][0] == d["cores"] and "every core was free" in d["quiet"][1]


def test_a_measurement_a_neighbour_disturbed_says_so():
    from quant.threads import ThreadChoice, neighbour_note

    assert neighbour_note(0.1, 2, 2) == ""
    note = neighbour_note(0.9, 2, 2)
    assert "0.9 of the 2 cores" in note and "higher than on a quiet machine" in note
    import torch

    before = torch.get_num_threads()
    with ThreadChoice(1, "test").applied() as watch:
        assert torch.get_num_threads() == 1
    assert watch.others_cores is not None and watch.others_cores >= 0
    assert torch.get_num_threads() == before  # restored


# ------------------------------------------------------------------ the arithmetic and what the kernel says


def test_threads_for_the_cores_the_neighbours_leave():
    from quant.threads import threads_for

    assert threads_for(2, 2, 0.0) == 2 and threads_for(2, 2, 0.49) == 2  # under half a core: not taken
    assert threads_for(2, 2, 0.5) == 1 and threads_for(2, 2, 1.0) == 1  # half a core or more: one fewer
    assert threads_for(2, 2, 1.9) == 1 and threads_for(1, 1, 3.0) == 1  # never below 1
    assert threads_for(8, 8, 2.0) == 6 and threads_for(8, 8, 1.5) == 6  # two neighbours; 1.5 cores rounds to 2
    assert threads_for(8, 8, 1.4) == 7
    assert threads_for(4, 2, 0.0) == 2 and threads_for(1, 8, 0.0) == 1  # never more than the cores or the default
    assert threads_for(8, 2.5, 0.0) == 2  # a fractional quota: whole cores


def _fake_cgroup(tmp_path, cgroup_lines: str, files: dict[str, str]):
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text(cgroup_lines)
    root = tmp_path / "cgroup"
    for rel, text in files.items():
        f = root / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    return proc, root


def test_a_v2_quota_on_a_nested_path_is_read(tmp_path):
    from quant.threads import read_cgroup

    proc, root = _fake_cgroup(tmp_path, "0::/user.slice/app.scope\n", {
        "cpu.max": "max 100000\n",
        "user.slice/cpu.max": "200000 100000\n",  # 2 CPUs for the slice ...
        "user.slice/app.scope/cpu.max": "max 100000\n",  # ... none of its own: the parent's applies
        "user.slice/app.scope/cpu.stat": "usage_usec 2500000\nuser_usec 1\n"})
    cg = read_cgroup(proc, root)
    assert cg.version == "v2" and cg.cpus == 2.0 and cg.usage == root / "user.slice/app.scope/cpu.stat"
    assert cg.usage_s() == 2.5


def test_a_v1_quota_is_read(tmp_path):
    from quant.threads import read_cgroup

    proc, root = _fake_cgroup(tmp_path, "5:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n", {
        "cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
        "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "150000\n",
        "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
        "cpu,cpuacct/docker/abc/cpuacct.usage": "3000000000\n"})
    cg = read_cgroup(proc, root)
    assert cg.version == "v1" and cg.cpus == 1.5 and cg.usage_s() == 3.0


def test_inside_a_container_the_cgroup_is_read_at_its_mount(tmp_path):
    """A container sees /proc/self/cgroup's host path, but its own cgroup mounted at the top."""
    from quant.threads import read_cgroup

    proc, root = _fake_cgroup(tmp_path, "0::/kubepods/pod1/c1\n", {"cpu.max": "100000 100000\n",
                                                                   "cpu.stat": "usage_usec 10\n"})
    cg = read_cgroup(proc, root)
    assert cg.cpus == 1.0 and cg.usage == root / "cpu.stat"
    proc, root = _fake_cgroup(tmp_path / "none", "0::/\n", {"cpu.max": "max 100000\n"})
    assert read_cgroup(proc, root).cpus is None  # no quota


def test_a_quota_limits_the_threads_and_is_named(monkeypatch, tmp_path):
    """A container limited to 2 CPUs on a 64-core host runs 2 threads, and the reason names the quota."""
    from quant import threads

    usage = tmp_path / "cpu.stat"
    usage.write_text("usage_usec 0\n")
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda _pid: set(range(64)))
    monkeypatch.setattr(threads, "read_cgroup", lambda *a, **k: threads.Cgroup(2.0, usage, "v2"))
    assert threads.usable_cores() == 2
    m = threads.CpuMeter()
    assert m.cores == 2 and m.cgroup is not None  # the pool is the cgroup, not the host's 64 CPUs
    why = threads.explain(2, 2, m, 0.0)
    assert why.startswith("2 threads: every core was free") and "quota grants 2 of this machine's 64 CPUs" in why


def test_steal_is_not_another_process(tmp_path):
    """Time the hypervisor gave other machines (steal) slows every thread alike: it is not counted as a neighbour."""
    import os

    from quant.threads import _proc_stat_busy_s

    hz = os.sysconf("SC_CLK_TCK")
    (tmp_path / "stat").write_text(f"cpu  0 0 0 0 0 0 0 0 0 0\ncpu0 {hz} 0 {hz} 5 0 0 0 {50 * hz} 0 0\n"
                                   f"cpu1 0 0 0 9 0 0 0 {50 * hz} 0 0\n")
    assert _proc_stat_busy_s({0, 1}, tmp_path) == 2.0  # user + system of cpu0; the 100 s of steal left out


def test_a_reading_never_makes_a_request_sleep(monkeypatch):
    """The other processes' use comes from the meter's own snapshots (a window of at least WINDOW_S): choosing the
    thread count no longer sleeps 0.1 s inside every request."""
    from quant import threads

    m = threads.CpuMeter()
    t0, pool, own = m.snapshot()
    m._ring.extend([(t0 - 1.0, pool - 1.0, own - 0.5), (t0 - 0.75, pool - 0.75, own - 0.5)])
    m._sampler = object()  # as if running
    monkeypatch.setattr(threads.time, "sleep", lambda s: (_ for _ in ()).throw(AssertionError("slept")))
    others = m.recent_others()
    assert 0.0 <= others <= len(m.cpus)
