"""OpenMP wait policy: latency that survives a busy neighbour. Imports nothing heavy; call before torch loads.

PyTorch's CPU kernels run on OpenMP threads that spin-wait at every barrier
(libgomp spins ~300,000 iterations by default before sleeping). When another
process holds one of the cores, the thread scheduled there stalls and the
others spin for it: on the 2-core machine, a 2-thread INT8 forward went from
~60 ms quiet to ~1.2 s with one busy competitor. Capping the spin
(`GOMP_SPINCOUNT`) makes a waiting thread yield its core soon, at a small cost
on a quiet machine (measured by bench/contention.py; README, Results).

libgomp reads its environment once, when torch (its first user) loads, so the
policy is applied by setting the environment before `import torch`: app.py and
the CLI call `apply_policy()` first. A variable the user set is never
overridden.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

# Chosen by bench/contention.py on the 2-core machine (README, Results): see AUTO_ENV's comment.
AUTO_ENV = {"GOMP_SPINCOUNT": "1000"}
ENV_KEYS = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "OMP_NUM_THREADS")


@dataclass
class ThreadPolicy:
    name: str  # "auto", "off", "user"
    env: dict[str, str] = field(default_factory=dict)  # what is in force
    note: str = ""

    def describe(self) -> str:
        vals = ", ".join(f"{k}={v}" for k, v in self.env.items()) or "libgomp defaults"
        return f"{self.name}: {vals}" + (f" ({self.note})" if self.note else "")


def current() -> ThreadPolicy:
    """What is in force now (for the environment panel)."""
    env = {k: os.environ[k] for k in ENV_KEYS if k in os.environ}
    return ThreadPolicy(os.environ.get("QUANTQA_THREAD_POLICY_APPLIED", "off"), env)


def apply_policy(policy: str | None = None) -> ThreadPolicy:
    """Set the OpenMP wait policy in the environment, before torch loads.

    policy (or env QUANTQA_THREAD_POLICY): "auto" (cap the spin: AUTO_ENV) or "off" (libgomp
    defaults). The default for this function is "off"; app.py and the CLI pass "auto".
    Variables the user already set win. After torch has loaded this can only report.
    """
    policy = policy or os.environ.get("QUANTQA_THREAD_POLICY", "off")
    if policy not in ("auto", "off"):
        raise ValueError(f"thread policy must be 'auto' or 'off', not {policy!r}")
    user = {k: os.environ[k] for k in ENV_KEYS if k in os.environ}
    if "torch" in sys.modules:
        return ThreadPolicy("user" if user else "off", user, "torch was already loaded: nothing changed")
    if policy == "auto":
        for k, v in AUTO_ENV.items():
            os.environ.setdefault(k, v)
    os.environ["QUANTQA_THREAD_POLICY_APPLIED"] = policy
    env = {k: os.environ[k] for k in ENV_KEYS if k in os.environ}
    note = ("set by you" if user and policy == "off" else
            "spin capped so a busy neighbour costs ~2x, not ~20x" if policy == "auto" and not user else
            "your settings kept" if user else "")
    return ThreadPolicy("user" if user else policy, env, note)
