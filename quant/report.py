"""Plain-text tables for the CLI (the app renders the same data with Gradio)."""

from __future__ import annotations

from .compare import Comparison


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def comparison_table(c: Comparison) -> str:
    lines = [f"model: {c.model} | threads: {c.threads} | quantized engine: {c.engine} | "
             f"{c.windows} window(s) x {c.tokens} tokens | {c.runs} timed runs",
             f"question: {c.question}", ""]
    head = f"{'variant':<10} {'answer':<34} {'score':>6} {'median ms':>10} {'p90 ms':>8} {'speed-up':>8}"
    lines += [head, "-" * len(head)]
    for r in c.results:
        if not r.available:
            lines.append(f"{r.variant:<10} unavailable: {r.reason}")
            continue
        ans = _short(r.answer, 34) if r.answer else "(no answer)"
        lines.append(f"{r.variant:<10} {ans:<34} {r.score:6.3f} {r.latency.median:10.2f} {r.latency.p90:8.2f} "
                     f"{r.speedup:7.2f}x")
    lines += [f"recipe of {v}: {r}" for v, r in c.recipes.items() if c.result(v) and c.result(v).available]
    fp32, int8 = c.sizes_mib["fp32"], c.sizes_mib["int8"]
    if fp32 and int8:
        lines += ["", f"size: FP32 {fp32:.2f} MiB | INT8 {int8:.2f} MiB ({100 * int8 / fp32:.1f}% of FP32)"]
    elif int8:
        lines += ["", f"size: INT8 {int8:.2f} MiB (no FP32 here)"]
    if "int8_emb" in c.sizes_mib and fp32:
        e = c.sizes_mib["int8_emb"]
        lines[-1] += f" | INT8 + embeddings {e:.2f} MiB ({100 * e / fp32:.1f}%)"
    agree = c.int8_agrees
    if agree is not None:
        lines.append("INT8 answer " + ("matches FP32" if agree else "DIFFERS from FP32"))
    lines += [f"note: {n}" for n in c.notes]
    return "\n".join(lines)
