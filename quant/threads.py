"""Threads: a policy that costs nothing on a quiet machine and stays bounded when a neighbour is busy.

PyTorch's CPU kernels run on OpenMP threads that spin-wait at every barrier
(libgomp spins ~300,000 iterations by default before sleeping). When another
process holds one of the cores, the thread scheduled there stalls and the
others spin for it: a 2-thread INT8 forward gets 3-20x slower. Capping the
spin (`GOMP_SPINCOUNT=1000`, the earlier policy) bounds that, but it cost a
quiet Intel Xeon 1.48x, because libgomp's spin is what makes short parallel
regions fast.

The policy `auto` (app and CLI) keeps libgomp's default spin and chooses the
thread count per measurement from the cores actually free: just before the
timed runs it samples, over `SAMPLE_S`, how much CPU the *other* processes
used (the pool's busy time minus this process's own: /proc/stat for the CPUs
this process may run on, or the cgroup's usage where a CPU quota is the real
limit). With a core taken, one thread fewer; on a quiet machine, all of them.
During the timed runs it watches again, and a measurement a neighbour
disturbed says so (`Watch.note`). bench/contention.py measures every policy.

Policies: auto (above), cap (GOMP_SPINCOUNT=1000, all cores), off (libgomp
defaults, all cores). libgomp reads its environment once, when torch loads, so
`apply_policy()` runs before `import torch`. A variable the user set
(GOMP_SPINCOUNT, OMP_WAIT_POLICY, OMP_NUM_THREADS) or `--threads` always wins.
Imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass, field

POLICIES = ("auto", "cap", "off")
CAP_ENV = {"GOMP_SPINCOUNT": "1000"}
ENV_KEYS = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "OMP_NUM_THREADS")
SAMPLE_S = 0.1  # how long to watch the other processes before choosing (the CPU counters tick every 10 ms)
BUSY_CORE = 0.5  # a core is taken when the others use at least this much of one
NOTE_CORES = 0.3  # a measurement during which the others used this much CPU says so


@dataclass
class ThreadPolicy:
    name: str  # "auto", "cap", "off", "user"
    env: dict[str, str] = field(default_factory=dict)  # what is in force
    note: str = ""

    def describe(self) -> str:
        vals = ", ".join(f"{k}={v}" for k, v in self.env.items()) or "libgomp defaults"
        return f"{self.name}: {vals}" + (f" ({self.note})" if self.note else "")


def current() -> ThreadPolicy:
    """What is in force now (for the environment panel)."""
    env = {k: os.environ[k] for k in ENV_KEYS if k in os.environ}
    name = os.environ.get("QUANTQA_THREAD_POLICY_APPLIED", "off")
    note = "threads chosen per measurement from the free cores" if name == "auto" else ""
    return ThreadPolicy(name, env, note)


def apply_policy(policy: str | None = None) -> ThreadPolicy:
    """Set the OpenMP environment for `policy` (or env QUANTQA_THREAD_POLICY) before torch loads.

    The default for this function is "off"; app.py and the CLI pass "auto". Variables the user already
    set win. After torch has loaded this can only report.
    """
    policy = policy or os.environ.get("QUANTQA_THREAD_POLICY", "off")
    if policy not in POLICIES:
        raise ValueError(f"thread policy must be one of {', '.join(POLICIES)}, not {policy!r}")
    user = {k: os.environ[k] for k in ENV_KEYS if k in os.environ}
    if "torch" in sys.modules:
        return ThreadPolicy("user" if user else "off", user, "torch was already loaded: nothing changed")
    if policy == "cap":
        for k, v in CAP_ENV.items():
            os.environ.setdefault(k, v)
    os.environ["QUANTQA_THREAD_POLICY_APPLIED"] = policy
    env = {k: os.environ[k] for k in ENV_KEYS if k in os.environ}
    note = ("your settings kept" if user else
            "libgomp's spin; threads chosen per measurement from the free cores" if policy == "auto" else
            "spin capped: a busy neighbour costs ~2x, a quiet machine up to ~1.5x" if policy == "cap" else "")
    return ThreadPolicy("user" if user else policy, env, note)


# ------------------------------------------------------------------------------------------- CPU use


def _cgroup_quota() -> float | None:
    """CPUs granted by a cgroup v2 quota (cpu.max), or None when unlimited / not visible."""
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def _cgroup_usage_s() -> float:
    with open("/sys/fs/cgroup/cpu.stat") as f:
        for line in f:
            if line.startswith("usage_usec"):
                return int(line.split()[1]) / 1e6
    raise OSError("no usage_usec")


def _proc_stat_busy_s(cpus: set[int]) -> float:
    """Seconds these CPUs ran processes since boot (user, nice, system, irq, softirq), from /proc/stat.

    Not steal: time the hypervisor gives other machines slows every thread alike; measured here, two threads
    under a busy host (78.8 ms) still beat one (96-102 ms), so it must not make `auto` drop a thread."""
    hz = os.sysconf("SC_CLK_TCK")
    busy = 0
    with open("/proc/stat") as f:
        for line in f:
            name, _, rest = line.partition(" ")
            if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
                v = [int(x) for x in rest.split()]
                busy += v[0] + v[1] + v[2] + v[5] + v[6]
    return busy / hz


class CpuMeter:
    """How much CPU the other processes use, in cores: the pool's busy time minus this process's own."""

    def __init__(self):
        self.cpus = set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
        quota = _cgroup_quota()
        self.cgroup = quota is not None and quota < len(self.cpus)
        self.cores = min(len(self.cpus), quota) if quota else len(self.cpus)
        try:
            self._pool()
            self.ok = True
        except (OSError, ValueError):
            self.ok = False

    def _pool(self) -> float:
        return _cgroup_usage_s() if self.cgroup else _proc_stat_busy_s(self.cpus)

    def snapshot(self) -> tuple[float, float, float]:
        t = os.times()
        return time.perf_counter(), self._pool(), t[0] + t[1]

    @staticmethod
    def others(a, b) -> float:
        """Cores the other processes used between two snapshots (never below 0)."""
        wall = b[0] - a[0]
        return max(0.0, ((b[1] - a[1]) - (b[2] - a[2])) / wall) if wall > 0 else 0.0


_METER: CpuMeter | None = None


def meter() -> CpuMeter:
    global _METER
    if _METER is None:
        _METER = CpuMeter()
    return _METER


# ------------------------------------------------------------------------------------------- choice


@dataclass
class Watch:
    """Filled when an `applied()` block ends: the other processes' CPU use during it."""

    others_cores: float | None = None
    note: str = ""


@dataclass
class ThreadChoice:
    n: int  # threads to time with
    why: str  # one line for the card and the API
    others_cores: float | None = None  # the other processes' CPU use when chosen

    @contextlib.contextmanager
    def applied(self):
        """Time with `n` threads; afterwards the watch says whether a neighbour was busy meanwhile."""
        import torch

        before_n = torch.get_num_threads()
        m = meter()
        watch = Watch()
        start = m.snapshot() if m.ok else None
        if self.n != before_n:
            torch.set_num_threads(self.n)
        try:
            yield watch
        finally:
            if self.n != before_n:
                torch.set_num_threads(before_n)
            if start is not None:
                watch.others_cores = CpuMeter.others(start, m.snapshot())
                watch.note = neighbour_note(watch.others_cores, m.cores, self.n)


def neighbour_note(others: float | None, cores: int | float, n: int) -> str:
    if others is None or others < NOTE_CORES:
        return ""
    return (f"Other processes used {others:.1f} of the {cores:g} cores while this was measured "
            f"({n} thread{'s' if n > 1 else ''}): these latencies are higher than on a quiet machine.")


def choose_threads(default: int, fixed: bool = False) -> ThreadChoice:
    """The thread count for the next measurement (see the module docstring)."""
    policy = os.environ.get("QUANTQA_THREAD_POLICY_APPLIED", "off")
    if fixed or "OMP_NUM_THREADS" in os.environ:
        return ThreadChoice(default, f"{default} thread{'s' if default > 1 else ''}: fixed by you")
    if policy != "auto":
        return ThreadChoice(default, f"{default} threads: every core (thread policy {policy})")
    m = meter()
    if not m.ok:
        return ThreadChoice(default, f"{default} threads: the other processes' CPU use is not visible here")
    a = m.snapshot()
    time.sleep(SAMPLE_S)
    others = CpuMeter.others(a, m.snapshot())
    taken = int(others + (1.0 - BUSY_CORE))  # cores the neighbours hold: 0.5 core or more counts as one
    n = max(1, min(default, int(m.cores) - taken))
    if n == default:
        why = f"{n} thread{'s' if n > 1 else ''}: {'every core was' if n > 1 else 'the core was'} free"
    else:
        why = (f"{n} thread{'s' if n > 1 else ''}: other processes were using {others:.1f} of the {m.cores:g} cores "
               f"(a thread on a taken core would make the others wait)")
    return ThreadChoice(n, why, others)
