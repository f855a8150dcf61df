"""Plotly figures for the app's Inspect and Evaluate tabs: pure functions of the report dicts (no Gradio).

The app renders them with `gr.Plot`; anything else that speaks Plotly can too.
"""

from __future__ import annotations

from .inspect import HEATMAP_KINDS
from .render import chosen_row

FP32_COLOR, INT8_COLOR = "#1d4ed8", "#b45309"  # the Compare page's colours for the same variants


def _db(v) -> float | None:
    return None if v is None else float(v)


def heatmap_figure(d: dict):
    """Local SQNR per encoder layer x Linear kind; exact dB and module path on hover."""
    import plotly.graph_objects as go

    layers = sorted({x["layer"] for x in d["layers"] if x["layer"] is not None})
    kinds = [k for k in HEATMAP_KINDS if any(x["kind"] == k for x in d["layers"])]
    kinds += sorted({x["kind"] for x in d["layers"] if x["layer"] is not None and x["kind"] not in kinds})
    z, text = [], []
    for i in layers:
        row, trow = [], []
        for kind in kinds:
            x = next((y for y in d["layers"] if y["layer"] == i and y["kind"] == kind), None)
            if x is None:
                row.append(None)
                trow.append("")
            elif not x["quantized"]:
                row.append(None)
                trow.append(f"{x['name']}<br>kept in FP32")
            else:
                row.append(x["sqnr_db"])
                trow.append(f"{x['name']}<br>local SQNR {x['sqnr_db']} dB<br>weight SQNR {x['weight_sqnr_db']} dB"
                            f"<br>max |x| {x['input_absmax']} · outlier ratio {x['outlier_ratio']}")
        z.append(row)
        text.append(trow)
    fig = go.Figure(go.Heatmap(z=z, x=kinds, y=[f"layer {i}" for i in layers], text=text,
                               hovertemplate="%{text}<extra></extra>", colorscale="RdYlGn", zmin=10, zmax=40,
                               colorbar={"title": "dB"}))
    fig.update_layout(title="Local SQNR of each INT8 Linear (low = loses precision)", height=360,
                      margin={"l": 70, "r": 20, "t": 50, "b": 40}, yaxis={"autorange": "reversed"})
    return fig


def depth_figure(d: dict):
    import plotly.graph_objects as go

    ys = [_db(v) for v in d["hidden_sqnr_db"]]
    fig = go.Figure(go.Scatter(x=list(range(len(ys))), y=ys, mode="lines+markers", name="hidden state",
                               hovertemplate="after layer %{x}: %{y:.1f} dB<extra></extra>"))
    for k, dash in (("start", "dash"), ("end", "dot")):
        v = _db(d["logits_sqnr_db"][k])
        if v is not None:
            fig.add_hline(y=v, line_dash=dash, annotation_text=f"{k} logits {v:.1f} dB",
                          annotation_position="top left" if k == "start" else "top right")
    fig.update_layout(title="Propagated SQNR by depth (INT8 model vs FP32 model)", xaxis_title="encoder layer",
                      yaxis_title="dB", height=320, margin={"l": 60, "r": 20, "t": 50, "b": 40})
    return fig


def tokens_figure(d: dict):
    """FP32 vs INT8 p(start), p(end) over the passage tokens; each answer a shaded band named in the legend
    (legend entries cannot overlap, as labels on neighbouring bands did)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    toks = d["tokens"]
    x = list(range(len(toks)))
    labels = [t["text"] for t in toks]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08, subplot_titles=("p(start)", "p(end)"))
    for row, key in ((1, "p_start"), (2, "p_end")):
        for v, color, dash in (("fp32", FP32_COLOR, "solid"), ("int8", INT8_COLOR, "dash")):
            fig.add_trace(go.Scatter(x=x, y=[t[key][v] for t in toks], mode="lines", name=v.upper(),
                                     line={"color": color, "dash": dash}, showlegend=row == 1, customdata=labels,
                                     hovertemplate="%{customdata}: %{y:.3f}<extra>" + v.upper() + "</extra>"),
                          row=row, col=1)
    spans = {v: (d["answers"][v]["best"]["start"], d["answers"][v]["best"]["end"]) for v in ("fp32", "int8")}
    same = spans["fp32"] == spans["int8"]
    for v, color in (("fp32", FP32_COLOR), ("int8", INT8_COLOR)):
        if same and v == "int8":
            break
        a, b = spans[v]
        idx = [i for i, t in enumerate(toks) if b > a and t["start"] >= a and t["end"] <= b]
        name = "FP32 and INT8 answer" if same else f"{v.upper()} answer"
        for row in (1, 2) if idx else ():  # one band per plot, one legend entry
            fig.add_vrect(x0=idx[0] - 0.5, x1=idx[-1] + 0.5, fillcolor=color, opacity=0.18, line_width=0, row=row,
                          col=1, name=name, legendgroup=name, showlegend=row == 1)
    fig.update_layout(title="Where each variant puts the answer (passage tokens)", height=420,
                      margin={"l": 50, "r": 20, "t": 60, "b": 40}, legend={"orientation": "h", "y": -0.12})
    fig.update_xaxes(tickvals=x[:: max(1, len(x) // 40)], ticktext=labels[:: max(1, len(x) // 40)], row=2, col=1)
    return fig


RECIPE_COLORS = {"fp32": "#6b7280", "dynamic-per-tensor": INT8_COLOR, "dynamic-per-channel": "#d97706",
                 "static": "#047857", "dynamic-per-token": "#7c3aed", "static-realtext": "#10b981",
                 "static-smooth": "#0e7490", "static-mixed": "#65a30d", "static-split": "#15803d",
                 "static-gptq": "#166534"}


def pareto_figure(d: dict, target: float | None = None):
    """Latency vs agreement with FP32, one point per recipe (marker area ~ MiB), the Pareto front joined, the chosen
    recipe starred, the target a dashed line. `d`: RecipeReport.to_dict()."""
    import plotly.graph_objects as go

    rows = d["recipes"]
    fig = go.Figure()
    biggest = max(r["size_mib"] for r in rows) or 1.0
    for recipe in dict.fromkeys(r["recipe"] for r in rows):
        pts = [r for r in rows if r["recipe"] == recipe]
        fig.add_trace(go.Scatter(
            x=[r["median_ms"] for r in pts], y=[r["agreement"] for r in pts], mode="markers+text", name=recipe,
            text=[f"{len(r['keep_fp32'])} in FP32" if r["keep_fp32"] else "" for r in pts], textposition="top center",
            marker={"size": [14 + 30 * r["size_mib"] / biggest for r in pts], "color": RECIPE_COLORS.get(recipe),
                    "opacity": 0.75, "line": {"width": 1, "color": "#111827"}},
            customdata=[[len(r["keep_fp32"]), r["size_mib"], r["exact_match"], r["sqnr_db"]] for r in pts],
            hovertemplate=(f"<b>{recipe}</b><br>%{{customdata[0]}} layer(s) in FP32<br>agreement %{{y:.1f}}%<br>"
                           "%{x:.2f} ms · %{customdata[1]:.1f} MiB<br>EM %{customdata[2]:.1f} · logits SQNR "
                           "%{customdata[3]} dB<extra></extra>")))
    front = sorted((r for r in rows if r.get("pareto")), key=lambda r: r["median_ms"])
    if len(front) > 1:
        fig.add_trace(go.Scatter(x=[r["median_ms"] for r in front], y=[r["agreement"] for r in front], mode="lines",
                                 line={"dash": "dot", "color": "#9ca3af"}, name="Pareto front", hoverinfo="skip"))
    best = chosen_row(d)
    if best is not None:
        fig.add_trace(go.Scatter(x=[best["median_ms"]], y=[best["agreement"]], mode="markers", name="chosen",
                                 marker={"symbol": "star", "size": 22, "color": "#facc15",
                                         "line": {"width": 1.5, "color": "#111827"}}, hoverinfo="skip"))
    if target is not None:
        fig.add_hline(y=target, line_dash="dash", line_color="#dc2626", annotation_text=f"target {target:g}%",
                      annotation_position="bottom right")
    fig.update_layout(title="Which INT8 to ship: latency vs answers kept (marker size = MiB)", height=420,
                      xaxis_title="median latency (ms, lower is better)", yaxis_title="same answer as FP32 (%)",
                      margin={"l": 60, "r": 20, "t": 50, "b": 50}, legend={"orientation": "h", "y": -0.2})
    return fig


def latency_figure(d: dict):
    """The Compare page's latency chart: one bar per variant in its card's colour (the cards' order), the median as
    the bar and the p90 as a whisker above it, the y axis with room above the tallest whisker (never under the
    title). `d`: a comparison dict."""
    import plotly.graph_objects as go

    from .render import COLORS
    from .variants import LABELS

    rows = [r for r in d.get("results", []) if r.get("available") and r.get("latency_ms")]
    fig = go.Figure(go.Bar(
        x=[LABELS.get(r["variant"], r["variant"]) for r in rows], y=[r["latency_ms"]["median"] for r in rows],
        marker_color=[COLORS.get(r["variant"], "#6b7280") for r in rows],
        error_y={"type": "data", "symmetric": False, "array": [r["latency_ms"]["p90"] - r["latency_ms"]["median"]
                                                               for r in rows], "arrayminus": [0] * len(rows),
                 "color": "#374151", "thickness": 1.2, "width": 6},
        text=[f"{r['latency_ms']['median']:.1f} ms" for r in rows], textposition="inside", insidetextanchor="end",
        hovertemplate="<b>%{x}</b><br>median %{y:.2f} ms<br>p90 %{customdata:.2f} ms<extra></extra>",
        customdata=[r["latency_ms"]["p90"] for r in rows]))
    top = max([r["latency_ms"]["p90"] for r in rows] or [1.0])
    fig.update_layout(title={"text": "Latency: median (bar) and p90 (whisker), ms", "font": {"size": 14}},
                      height=200, margin={"l": 50, "r": 10, "t": 36, "b": 26}, showlegend=False,
                      yaxis={"range": [0, top * 1.2], "title": "ms"}, bargap=0.35)
    return fig
