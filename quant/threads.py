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

import collections
import contextlib
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

POLICIES = ("auto", "cap", "off")
CAP_ENV = {"GOMP_SPINCOUNT": "1000"}
ENV_KEYS = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "OMP_NUM_THREADS")
SAMPLE_EVERY_S = 0.25  # the CPU meter's snapshots (a thread of its own; the counters tick every 10 ms)
WINDOW_S = 0.5  # a reading of the other processes' use covers at least this long
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


@dataclass
class Cgroup:
    """The CPU limit of this process's cgroup, as the kernel enforces it."""

    cpus: float | None  # CPUs its quota grants (the smallest along its path), None when unlimited
    usage: Path | None  # the file with its CPU usage (v2 cpu.stat usage_usec, v1 cpuacct.usage ns)
    version: str = ""  # "v1", "v2", or "" when none is visible

    def usage_s(self) -> float:
        text = self.usage.read_text()
        if self.usage.name == "cpu.stat":
            return next(int(line.split()[1]) for line in text.splitlines() if line.startswith("usage_usec")) / 1e6
        return int(text.split()[0]) / 1e9


def _read_quota(max_file: Path | None = None, quota_file: Path | None = None, period_file: Path | None = None):
    """CPUs from a v2 cpu.max ("max 100000" / "200000 100000") or v1 cfs files (-1 = none); None when absent."""
    try:
        if max_file is not None:
            quota, period = max_file.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        quota = int(quota_file.read_text())
        return None if quota <= 0 else quota / int(period_file.read_text())
    except (OSError, ValueError, IndexError):
        return None


def _up_to(path: Path, root: Path) -> list[Path]:
    """`path` and each parent down to `root` (a cgroup's limit is the smallest along that chain)."""
    out = [path]
    while path != root and root in path.parents:
        path = path.parent
        out.append(path)
    return out


def read_cgroup(proc: str | Path = "/proc", root: str | Path = "/sys/fs/cgroup") -> Cgroup:
    """This process's cgroup CPU limit: v2 (`0::/path` in /proc/self/cgroup, cpu.max along the path) or v1 (the
    `cpu` controller's cpu.cfs_quota_us / cpu.cfs_period_us). A path that is not mounted where
    /proc/self/cgroup says (a container's own view) is read at the mount's top."""
    root = Path(root)
    try:
        lines = (Path(proc) / "self" / "cgroup").read_text().splitlines()
    except OSError:
        return Cgroup(None, None)
    entries = [line.split(":", 2) for line in lines if line.count(":") >= 2]
    v2 = next((p for h, c, p in entries if h == "0" and c == ""), None)
    v1 = next(((c, p) for h, c, p in entries if "cpu" in c.split(",")), None)
    if v1 is not None:
        for mount in (root / v1[0], root / "cpu,cpuacct", root / "cpu", root / "cpuacct,cpu"):
            if mount.is_dir():
                d = mount / v1[1].lstrip("/")
                d = d if d.is_dir() else mount
                quotas = [q for x in _up_to(d, mount) if (q := _read_quota(
                    quota_file=x / "cpu.cfs_quota_us", period_file=x / "cpu.cfs_period_us")) is not None]
                usage = next((u for u in (d / "cpuacct.usage", root / "cpuacct" / v1[1].lstrip("/") / "cpuacct.usage")
                              if u.is_file()), None)
                return Cgroup(min(quotas) if quotas else None, usage, "v1")
    if v2 is not None:
        d = root / v2.lstrip("/")
        d = d if d.is_dir() else root
        quotas = [q for x in _up_to(d, root) if (q := _read_quota(max_file=x / "cpu.max")) is not None]
        usage = d / "cpu.stat"
        return Cgroup(min(quotas) if quotas else None, usage if usage.is_file() else None, "v2")
    return Cgroup(None, None)


def _proc_stat_busy_s(cpus: set[int], proc: str | Path = "/proc") -> float:
    """Seconds these CPUs ran processes since boot (user, nice, system, irq, softirq), from /proc/stat.

    Not steal: time the hypervisor gives other machines slows every thread alike; measured here, two threads
    under a busy host (78.8 ms) still beat one (96-102 ms), so it must not make `auto` drop a thread."""
    hz = os.sysconf("SC_CLK_TCK")
    busy = 0
    with open(Path(proc) / "stat") as f:
        for line in f:
            name, _, rest = line.partition(" ")
            if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
                v = [int(x) for x in rest.split()]
                busy += v[0] + v[1] + v[2] + v[5] + v[6]
    return busy / hz


def usable_cores() -> int:
    """The cores this process may use: its CPU affinity, or fewer when a cgroup quota grants fewer (rounded up)."""
    import math

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = read_cgroup().cpus
    return max(1, min(cpus, math.ceil(quota))) if quota else cpus


class CpuMeter:
    """How much CPU the other processes use, in cores: the pool's busy time minus this process's own.

    The pool: the CPUs this process may run on (/proc/stat), or its cgroup when a CPU quota is the real limit.
    A sampler thread takes a snapshot every SAMPLE_EVERY_S, so a reading covers at least WINDOW_S without a
    request ever sleeping for it (a 0.1 s sample of 10 ms ticks on 2 cores was +-0.25 core)."""

    def __init__(self, proc: str | Path = "/proc", cgroup: Cgroup | None = None):
        self.proc = proc
        self.cpus = set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
        cg = cgroup if cgroup is not None else read_cgroup(proc)
        self.quota = cg.cpus
        self.cgroup = cg if (cg.cpus is not None and cg.cpus < len(self.cpus) and cg.usage is not None) else None
        self.cores = min(len(self.cpus), cg.cpus) if cg.cpus else len(self.cpus)
        self._ring: collections.deque = collections.deque(maxlen=int(4 * WINDOW_S / SAMPLE_EVERY_S) + 2)
        self._sampler: threading.Thread | None = None
        try:
            self._pool()
            self.ok = True
        except (OSError, ValueError, StopIteration):
            self.ok = False

    def _pool(self) -> float:
        return self.cgroup.usage_s() if self.cgroup else _proc_stat_busy_s(self.cpus, self.proc)

    def snapshot(self) -> tuple[float, float, float]:
        t = os.times()
        return time.monotonic(), self._pool(), t[0] + t[1]

    @staticmethod
    def others(a, b) -> float:
        """Cores the other processes used between two snapshots (never below 0)."""
        wall = b[0] - a[0]
        return max(0.0, ((b[1] - a[1]) - (b[2] - a[2])) / wall) if wall > 0 else 0.0

    def _sample(self) -> None:
        while True:
            try:
                self._ring.append(self.snapshot())
            except (OSError, ValueError, StopIteration):
                return
            time.sleep(SAMPLE_EVERY_S)

    def recent_others(self) -> float:
        """The other processes' CPU use over the last WINDOW_S or a little more (the first call waits for one)."""
        if self._sampler is None:
            self._ring.append(self.snapshot())
            self._sampler = threading.Thread(target=self._sample, name="quantqa-cpu-meter", daemon=True)
            self._sampler.start()
        now = self.snapshot()
        old = [s for s in list(self._ring) if now[0] - s[0] >= WINDOW_S]
        if not old:  # only just started: wait until the first snapshot is WINDOW_S old
            first = self._ring[0]
            time.sleep(max(0.0, WINDOW_S - (now[0] - first[0])))
            now, old = self.snapshot(), [first]
        return CpuMeter.others(old[-1], now)


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


def threads_for(default: int, cores: float, others: float) -> int:
    """Threads for the next measurement: one fewer for each core the other processes hold (half a core or more
    counts as one), never more than `default` nor fewer than 1."""
    taken = int(others + (1.0 - BUSY_CORE))
    return max(1, min(default, int(cores) - taken))


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
    others = m.recent_others()
    n = threads_for(default, m.cores, others)
    return ThreadChoice(n, explain(n, default, m, others), others)


def explain(n: int, default: int, m: CpuMeter, others: float) -> str:
    """Why `n` threads: every core free, a quota, or the cores other processes hold."""
    s = "s" if n > 1 else ""
    quota = f" (the container's CPU quota grants {m.quota:g} of this machine's {len(m.cpus)} CPUs)" \
        if m.quota is not None and m.quota < len(m.cpus) else ""
    if n == min(default, int(m.cores)):
        return f"{n} thread{s}: {'every core was' if n > 1 else 'the core was'} free{quota}"
    return (f"{n} thread{s}: other processes were using {others:.1f} of the {m.cores:g} cores{quota} "
            f"(a thread on a taken core would make the others wait)")
