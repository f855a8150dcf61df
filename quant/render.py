"""What the app's Compare page shows, as HTML / Markdown strings: pure functions of result dicts (no Gradio).

The passage is shown once, with every variant's answer marked in its own colour:
each variant owns an underline lane (a 3 px bottom border at its own offset
below the text), so where answers overlap every one of them stays visible, and
a legend names the colours. Each card quotes its answer in its sentence.
Everything a user typed is HTML-escaped (cards are Markdown-escaped too).
"""

from __future__ import annotations

import html
import re

from .variants import LABELS

# One colour per variant: each has a contrast of at least 4.5:1 against the passage's white, so the 3 px
# underline is a graphical object a person can see (WCAG 1.4.11 asks 3:1).
COLORS = {
    "fp32-cpu": "#1d4ed8",  # blue
    "int8-cpu": "#b45309",  # amber
    "int8-static-cpu": "#047857",  # green
    "fp32-cuda": "#7c3aed",  # violet
    "bf16-cpu": "#475569",  # slate
    "fp16-cuda": "#be185d",  # pink
}
MARK_BG = "#fef3c7"  # the answer's text background (dark text on it: 15:1)
LANE_PX = 4  # each variant's underline sits this much below the previous one's

CSS = """
.qq-passage {background: #ffffff; color: #111827; line-height: 2.2; font-size: 15px; padding: 6px 12px 10px;
             border: 1px solid #e5e7eb; border-radius: 8px; white-space: pre-wrap; overflow-wrap: anywhere;
             max-height: 340px; overflow-y: auto;}
.qq-passage mark.qq-a {background: %(bg)s; background-clip: content-box; color: #111827; padding: 0;
                       border-bottom: 3px solid;
                       box-decoration-break: clone; -webkit-box-decoration-break: clone;}
.qq-legend {display: flex; flex-wrap: wrap; gap: 4px 16px; font-size: 13px; margin: 2px 0 6px; color: inherit;}
.qq-legend .qq-swatch {display: inline-block; width: 22px; height: 0; border-bottom: 3px solid; margin-right: 6px;
                       vertical-align: middle;}
.qq-legend .qq-none {opacity: .75;}
.qq-card h3 small {font-weight: normal; font-size: 12px; opacity: .8;}
#sizes table td, #sizes table th {padding: 3px 8px;}
%(lanes)s
"""


def css(variants=tuple(COLORS)) -> str:
    lanes = "\n".join(f".qq-passage mark.qq-lane{i} {{padding-bottom: {i * LANE_PX}px;}}" for i in range(len(variants)))
    colors = "\n".join(f".qq-passage mark.qq-{v}, .qq-swatch.qq-{v} {{border-bottom-color: {c};}}\n"
                       f"#card-{v} {{border-top: 4px solid {c}; padding-top: 4px;}}" for v, c in COLORS.items())
    return CSS % {"bg": MARK_BG, "lanes": lanes + "\n" + colors}


def md_text(s: str, keep_edges: bool = False) -> str:
    """User text shown inside Markdown: HTML-escaped and Markdown-inert, white space collapsed
    (`keep_edges`: a leading / trailing space stays, for text that runs on from other text)."""
    core = " ".join(s.split())
    if keep_edges and core:
        core = (" " if s[:1].isspace() else "") + core + (" " if s[-1:].isspace() else "")
    s = html.escape(core, quote=False)  # < > & only: an escaped quote (&#x27;) would be broken by the \# below
    return "".join("\\" + c if c in "\\`*_{}[]()#+-.!|~>" else c for c in s)


def highlight(context: str, r: dict) -> dict | None:
    """One variant's answer as an entity of the passage: {"text", "entities": [{"entity", "start", "end"}]}."""
    if not r.get("available"):
        return None
    entities = [{"entity": "answer", "start": r["start"], "end": r["end"]}] if r["end"] > r["start"] else []
    return {"text": context, "entities": entities}


def passage_html(context: str, results: list[dict]) -> str:
    """The passage once, each available variant's answer underlined in its colour, in its own lane; a legend."""
    shown = [r for r in results if r.get("available")]
    lanes = {r["variant"]: i for i, r in enumerate(shown)}
    spans = {r["variant"]: (r["start"], r["end"]) for r in shown if r["end"] > r["start"]}
    cuts = sorted({0, len(context), *(x for s in spans.values() for x in s)})
    out = []
    for a, b in zip(cuts, cuts[1:]):
        text = html.escape(context[a:b], quote=False)
        for v in sorted((v for v, (s, e) in spans.items() if s <= a and b <= e), key=lanes.get, reverse=True):
            text = (f'<mark class="qq-a qq-{v} qq-lane{lanes[v]}" data-variant="{v}" '
                    f'title="{html.escape(LABELS.get(v, v))} answer">{text}</mark>')
        out.append(text)
    legend = []
    for r in shown:
        v = r["variant"]
        label = html.escape(LABELS.get(v, v))
        none = "" if v in spans else ' class="qq-none"'
        legend.append(f'<span{none} data-variant="{v}"><span class="qq-swatch qq-{v}"></span>{label}'
                      f'{"" if v in spans else ": no answer"}</span>')
    return (f'<div class="qq-legend" id="qq-legend">{"".join(legend)}</div>'
            f'<div class="qq-passage" id="qq-passage">{"".join(out)}</div>')


_SENTENCE_END = re.compile(r"[.!?…](?=[\"'”’)\]]*(\s|$))")


def in_sentence(context: str, start: int, end: int, width: int = 70) -> tuple[str, str, str]:
    """(before, answer, after): the answer's sentence around it, cut to `width` characters a side with "…"."""
    a = max((m.end() for m in _SENTENCE_END.finditer(context, 0, start)), default=0)
    m = _SENTENCE_END.search(context, end)
    b = m.end() if m else len(context)
    before, after = context[a:start].lstrip(), context[end:b]
    if len(before) > width:
        before = "…" + before[-width:].split(" ", 1)[-1]
    if len(after) > width:
        after = after[:width].rsplit(" ", 1)[0] + "…"
    return before, context[start:end], after


def card_markdown(r: dict, label: str, context: str | None = None, recipe: str = "") -> str:
    """A variant's card: its recipe, its answer (quoted in its sentence when the passage is given), latency,
    confidence."""
    if not r.get("available"):
        status = "Not ready yet" if r.get("pending") else "Not available"
        return f"### {label}\n\n**{status}** — {md_text(r.get('reason') or 'unknown reason')}"
    if r["answer"]:
        answer = f"#### “{md_text(r['answer'])}”"
        if context is not None and r["end"] > r["start"]:
            before, ans, after = in_sentence(context, r["start"], r["end"])
            answer += f"\n\n<sub>{md_text(before, True)}<strong>{md_text(ans)}</strong>{md_text(after, True)}</sub>"
    else:
        answer = "#### no answer\n_the model finds no answer to this question in the passage_"
    lat = r["latency_ms"]
    speed = f" · **{r['speedup']:.2f}×**" if r.get("speedup") else ""
    label += f" <small>{md_text(recipe)}</small>" if recipe else ""
    return (f"### {label}\n{answer}\n\n"
            f"**{lat['median']:.1f} ms median**{speed} · p90 {lat['p90']:.1f}  \n"
            f"confidence {100 * r['score']:.1f}% · {lat['runs']} timed run{'s' if lat['runs'] != 1 else ''}")


def agreement_markdown(d: dict) -> str:
    agree = d.get("int8_agrees_with_fp32")
    if agree is None:
        return ""
    if agree:
        return "✓ **INT8 gave the same answer as FP32.**"
    by = {r["variant"]: r for r in d["results"]}
    return (f"⚠ **INT8 answered differently from FP32**: “{md_text(by['int8-cpu']['answer']) or 'no answer'}” "
            f"vs “{md_text(by['fp32-cpu']['answer']) or 'no answer'}”.")


def measurement_markdown(d: dict) -> str:
    """How this result was measured: fresh or shared, runs (and why fewer), threads (and why), notes."""
    runs = d.get("runs") or {}
    parts = []
    shared = d.get("shared")
    if shared:
        age = shared["age_s"]
        when = "just now" if age < 1 else f"{age:.0f} s ago"
        if shared["for"] == "you":
            head = f"**Your earlier result, measured {when}** (same passage, question and options)"
        elif shared["for"].startswith("the examples"):
            head = f"**Measured {when} in the background**, before anyone clicked this example — not for you just now"
        else:
            head = (f"**Measured {when} for another visitor** who asked the same (same passage, question and options)"
                    " — not for you just now")
        if shared.get("joined"):
            head += "; you waited for that measurement instead of starting your own"
        if shared.get("degraded"):
            head += f" — **shared only briefly: {md_text(shared['degraded'])}**"
        parts.append(head)
    else:
        parts.append("Measured just now for you")
    done, asked = runs.get("done"), runs.get("requested")
    if done is not None:
        parts.append(f"{done} timed run{'s' if done != 1 else ''} per variant"
                     + (f" (you asked for {asked}: {md_text(runs['why'])})" if runs.get("why") and asked != done else ""))
    if d.get("threads_why"):
        parts.append(md_text(d["threads_why"]))
    text = " · ".join(parts) + "."
    return text + "".join(f"\n\n<sub>Note: {md_text(n)}</sub>" for n in d.get("notes", []))


def sizes_markdown(sizes: dict, layers: dict, keep_fp32: list | tuple = (), recipe: str = "") -> str:
    fp32 = sizes.get("fp32")
    rows = [("FP32", fp32), ("INT8 (Linear layers)", sizes.get("int8"))]
    if "int8_emb" in sizes:
        rows.append(("INT8 (Linear + embeddings)", sizes["int8_emb"]))
    if "int8_static" in sizes:
        rows.append(("INT8 static (PT2E)", sizes["int8_static"]))

    def row(name, mib):
        if mib is None:
            return f"| {name} | n/a | | |"
        if not fp32:
            return f"| {name} | {mib:,.2f} MiB | | |"
        return f"| {name} | {mib:,.2f} MiB | {100 * mib / fp32:.1f}% | {fp32 / mib:.2f}× |"

    kept = f" {len(keep_fp32)} kept in FP32." if keep_fp32 else ""
    return ("### Model size\n\n| | size | of FP32 | smaller by |\n|---|---|---|---|\n" +
            "\n".join(row(n, m) for n, m in rows) +
            f"\n\n<sub>Bytes of `torch.save(state_dict)`, MiB = 2²⁰ bytes. {layers['linear_int8']} Linear layers "
            f"quantized{(' (' + md_text(recipe) + ')') if recipe else ''}.{kept} Measured once at start-up.</sub>")


def env_markdown(info: dict) -> str:
    rows = [("model", info["model"]), ("torch", info["torch"]), ("transformers", info["transformers"]),
            ("threads", info["threads"]), ("thread policy", info.get("thread_policy", "—")),
            ("quantized engine", info["engine_choice"]), ("INT8 config", info["quant_config"]),
            ("TorchScript (INT8)", info["torchscript"]), ("CPU", info["cpu"]),
            ("CPU features", ", ".join(info["cpu_features"]) or "—"),
            ("GPU", info["gpu"] or "none (CUDA not available)"), ("start-up", f"{info['startup_s']} s")]
    if info.get("static"):
        rows.append(("INT8 static", info["static"]))
    return "| | |\n|---|---|\n" + "\n".join(f"| {k} | {md_text(str(v))} |" for k, v in rows)


def latency_frame(d: dict):
    """Medians and p90 per available variant, for the bar chart (a pandas DataFrame)."""
    import pandas as pd

    rows = [{"variant": LABELS[r["variant"]], "median_ms": r["latency_ms"]["median"], "p90_ms": r["latency_ms"]["p90"]}
            for r in d["results"] if r.get("available") and r.get("latency_ms")]
    return pd.DataFrame(rows, columns=["variant", "median_ms", "p90_ms"]).astype(
        {"variant": str, "median_ms": float, "p90_ms": float})


def inspect_markdown(d: dict) -> str:
    worst = sorted((x for x in d["layers"] if x["quantized"] and x["sqnr_db"] is not None),
                   key=lambda x: x["sqnr_db"])[:5]
    lg = d["logits_sqnr_db"]
    fmt = (lambda v: "∞" if v is None else f"{v:.1f}")
    lines = [f"**{md_text(d['summary'])}**", "",
             f"Logits SQNR: start {fmt(lg['start'])} dB, end {fmt(lg['end'])} dB. "
             "Least precise layers (local SQNR, the layer alone on the FP32 input):", ""]
    lines += [f"- `{x['name']}` — {x['sqnr_db']:.1f} dB (weights {x['weight_sqnr_db']:.1f} dB, "
              f"outlier ratio {x['outlier_ratio']})" for x in worst]
    if d.get("static"):
        s = d["static"]
        lines += ["", f"INT8 static (PT2E): logits SQNR start {fmt(s['logits_sqnr_db']['start'])} dB, end "
                      f"{fmt(s['logits_sqnr_db']['end'])} dB; answer “{md_text(s['answer']) or 'no answer'}”."]
    return "\n".join(lines)


def mixed_frame(d: dict):
    """Inspect's side-by-side table: FP32, INT8 and INT8 with K layers in FP32."""
    import pandas as pd

    m = d.get("mixed") or {}
    rows = []
    for r in m.get("results", []):
        size = m.get("sizes_mib", {}).get(r["variant"])
        rows.append({"model": r.get("label", r["variant"]),
                     "answer": (r["answer"] or "(no answer)") if r["available"] else r.get("reason", ""),
                     "median ms": r["latency_ms"]["median"] if r.get("latency_ms") else None,
                     "size MiB": None if size is None else round(size, 2),
                     "same answer as FP32": {True: "yes", False: "no"}.get(r.get("agrees"), "")})
    return pd.DataFrame(rows, columns=["model", "answer", "median ms", "size MiB", "same answer as FP32"])


INT8_VARIANTS = ("int8-cpu", "int8-static-cpu")  # the disagreements table lists these


def evaluation_frames(d: dict):
    """(scores table, summary Markdown, disagreements table) for an EvalReport dict."""
    import pandas as pd

    by = d.get("agreement_by_variant", {})
    table = pd.DataFrame([{"variant": LABELS.get(r["variant"], r["variant"]), "EM %": r["exact_match"],
                           "F1 %": r["f1"], "same span as FP32 %": r.get("agreement_with_fp32"),
                           "mean |Δ confidence|": by[r["variant"]]["mean_abs_score_diff"] if r["variant"] in by else None,
                           "questions": r["n"], "questions/s": r["questions_per_s"],
                           "answerable EM / F1": (f"{r['has_ans']['exact_match']:.1f} / {r['has_ans']['f1']:.1f}"
                                                  if r.get("has_ans") else ""),
                           "unanswerable EM / F1": (f"{r['no_ans']['exact_match']:.1f} / {r['no_ans']['f1']:.1f}"
                                                    if r.get("no_ans") else "")}
                          for r in d["results"]])
    dis = pd.DataFrame([{"variant": LABELS.get(v, v), "question": x["question"], "passage": x["snippet"],
                         "FP32": x["fp32"] or "(no answer)", "INT8": x["int8"] or "(no answer)",
                         "gold": x["gold"] or "(unanswerable)"}
                        for v in INT8_VARIANTS if v in by for x in by[v]["disagreements"]],
                       columns=["variant", "question", "passage", "FP32", "INT8", "gold"])
    int8 = by.get("int8-cpu", {})
    summary = (f"**Agreement:** INT8 gives exactly the FP32 span on **{d['agreement']:.1f}%** of "
               f"{d['results'][0]['n']} questions{_ties(int8)}; mean |confidence difference| "
               f"{d['mean_abs_score_diff']:.4f}." if d["agreement"] is not None else "")
    others = [f"{LABELS.get(v, v)} **{a['agreement']:.1f}%**{_ties(a)}" for v, a in by.items() if v != "int8-cpu"]
    if others:
        summary += " Same span as FP32: " + ", ".join(others) + "."
    if d["skipped"]:
        summary += (f"\n\nSkipped {len(d['skipped'])} question(s): " +
                    "; ".join(md_text(s) for s in d["skipped"][:3]) + ("; …" if len(d["skipped"]) > 3 else ""))
    return table, summary, dis


def _ties(a: dict) -> str:
    """' (3 changed, 2 near ties)' for an agreement dict with changed answers (near ties: evaluate.NEAR_TIE)."""
    if not a.get("changed"):
        return ""
    return (f" ({a['changed']} changed, {a['near_ties']} of them near ties: FP32 scored the other answer within "
            f"{a['near_tie_within_pct']:g} % of its own)")


def chosen_row(d: dict) -> dict | None:
    """The row of a RecipeReport dict that `chosen` names (recipe and layers kept), or None."""
    chosen = d.get("chosen") or {}
    return next((r for r in d["recipes"] if (r["recipe"], r["keep_fp32"]) == (chosen.get("recipe"),
                                                                             chosen.get("keep_fp32"))), None)


def recipe_frames(d: dict, target: float):
    """(table, summary Markdown) for a RecipeReport dict: every recipe alone and with its K layers in FP32."""
    import pandas as pd

    best = chosen_row(d)
    rows = [{"recipe": r["recipe"], "layers in FP32": len(r["keep_fp32"]), "same span as FP32 %": r["agreement"],
             "EM %": r["exact_match"], "F1 %": r["f1"], "logits SQNR dB": r["sqnr_db"], "MiB": r["size_mib"],
             "median ms": r["median_ms"],
             "": " ".join(x for x in ("chosen" if r is best else "", "Pareto" if r["pareto"] else "") if x)}
            for r in d["recipes"]]
    if best:
        summary = (f"**Ship {md_text(best['recipe'])}" + (f" with {len(best['keep_fp32'])} layer(s) in FP32" if best["keep_fp32"]
                   else "") + f"**: the fastest recipe that keeps at least {target:g}% of the FP32 answers "
                   f"({best['agreement']:.1f}%, {best['median_ms']:.1f} ms, {best['size_mib']:.1f} MiB).")
    else:
        summary = f"**No recipe kept {target:g}% of the FP32 answers** within the layers allowed in FP32."
    unavailable = d.get("recipes_unavailable") or {}
    summary += "".join(f"\n\n<sub>{md_text(k)} unavailable here: {md_text(v)}</sub>" for k, v in unavailable.items())
    return pd.DataFrame(rows), summary


def comparison_markdown(d: dict, machine: str = "") -> str:
    """The comparison as a Markdown table, for a report or a pull request (answers Markdown-inert)."""
    def cell(s: str) -> str:
        return (s or "").replace("|", "\\|").replace("\n", " ")

    runs = d.get("runs") or {}
    head = [f"**{cell(d.get('question', ''))}** — {d.get('model', '')}, {d.get('windows', 1)} window(s) of "
            f"{d.get('tokens_per_window', '?')} tokens, {runs.get('done', '?')} timed runs per variant, "
            f"{d.get('threads', '?')} threads" + (f", {machine}" if machine else ""), "",
            "| variant | answer | median ms | p90 ms | × FP32 | recipe |", "|---|---|---|---|---|---|"]
    for r in d["results"]:
        label = LABELS.get(r["variant"], r["variant"])
        if not r.get("available"):
            head.append(f"| {label} | not available: {cell(r.get('reason', ''))} | | | | |")
            continue
        lat = r.get("latency_ms") or {}
        head.append(f"| {label} | {cell(r['answer']) or '(no answer)'} | {lat.get('median', 0):.1f} | {lat.get('p90', 0):.1f} | "
                    f"{(r.get('speedup') or 0):.2f} | {cell(d.get('recipes', {}).get(r['variant'], ''))} |")
    sizes = d.get("sizes_mib") or {}
    if sizes.get("fp32") and sizes.get("int8"):
        head += ["", f"Size: FP32 {sizes['fp32']:.1f} MiB, INT8 {sizes['int8']:.1f} MiB"
                 + (f", INT8 static {sizes['int8_static']:.1f} MiB" if sizes.get("int8_static") else "") + "."]
    return "\n".join(head) + "\n"
