"""The SVG chart, written by hand (no plotting dependency).

Top: each workload's throughput as a fraction of direct access, one bar per tool, labelled
with the ratio (hover a bar for the absolute figure). Bottom: latency percentiles of small
responses at 1 and at 50 connections, one line per tool, on a logarithmic axis.
"""

from __future__ import annotations

import math
from typing import Any
from xml.sax.saxutils import escape

from .report import CLASSIC, HEADLINE, SHORT

COLORS = {
    "direct": "#555555",
    "devrouter": "#d62728",
    "nginx": "#2ca02c",
    "haproxy": "#1f77b4",
    "caddy": "#9467bd",
    "portless": "#ff7f0e",
}
_EXTRA = ("#8c564b", "#e377c2", "#17becf", "#bcbd22")
WIDTH = 960
FONT = "font-family='DejaVu Sans, Helvetica, Arial, sans-serif'"


def _color(tool: str, i: int) -> str:
    return COLORS.get(tool, _EXTRA[i % len(_EXTRA)])


def _text(x: float, y: float, s: str, size: int = 12, anchor: str = "start", **attrs: str) -> str:
    extra = "".join(f" {k.replace('_', '-')}='{v}'" for k, v in attrs.items())
    return (
        f"<text x='{x:.1f}' y='{y:.1f}' font-size='{size}' text-anchor='{anchor}'{extra}>"
        f"{escape(s)}</text>"
    )


def _ticks(peak: float) -> tuple[float, float]:
    """(axis maximum, tick step) with a round step and at most 8 intervals."""
    for step in (0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0, 20.0, 25.0, 50.0, 100.0):
        if peak / step <= 8:
            return math.ceil(peak / step - 1e-9) * step, step
    return peak, peak / 5


def _fmt_abs(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def render(result: dict[str, Any]) -> str:
    summary = result["summary"]
    tools: list[str] = result["tool_order"]
    others = [t for t in tools if t != "direct"]
    throughput = [  # the workloads direct access was measured on (not the TLS ones)
        w
        for w, (_, _, higher) in HEADLINE.items()
        if higher and "direct" in summary.get(w, {}) and w in CLASSIC
    ]
    parts: list[str] = []

    # header and legend
    parts.append(_text(20, 28, "devrouter benchmarks", 18, font_weight="bold"))
    m = result["machine"]
    parts.append(
        _text(
            20,
            48,
            f"{m['cpu_model']}, {m['cores']} cores; load generator "
            f"{result['load_generator']['name']}; {result['profile']} profile, "
            f"median of {result['rounds']} round(s); {result['started'][:16]}",
            11,
            fill="#444",
        )
    )
    x = 20.0
    for i, t in enumerate(tools):
        parts.append(f"<rect x='{x:.1f}' y='60' width='12' height='12' fill='{_color(t, i)}'/>")
        parts.append(_text(x + 16, 71, t, 12))
        x += 30 + 7.5 * len(t)

    # panel 1: throughput relative to direct
    top, height, left, right = 110.0, 230.0, 60.0, WIDTH - 20.0
    parts.append(
        _text(
            20,
            top - 12,
            "Throughput relative to direct access (1.0 = direct)",
            14,
            font_weight="bold",
        )
    )
    ratios = result["ratios"]["vs_direct"]
    peak = max(
        [
            1.0,
            *(r for t in others for w in throughput if (r := ratios.get(t, {}).get(w)) is not None),
        ]
    )
    ymax, step = _ticks(peak)
    for k in range(round(ymax / step) + 1):
        v = k * step
        y = top + height - height * v / ymax
        parts.append(f"<line x1='{left}' x2='{right}' y1='{y:.1f}' y2='{y:.1f}' stroke='#ddd'/>")
        parts.append(_text(left - 6, y + 4, f"{v:.2g}", 11, "end"))
    y1 = top + height - height * 1.0 / ymax
    parts.append(
        f"<line x1='{left}' x2='{right}' y1='{y1:.1f}' y2='{y1:.1f}' "
        f"stroke='#555' stroke-dasharray='4 3'/>"
    )
    group_w = (right - left) / max(1, len(throughput))
    bar_w = min(28.0, (group_w - 16) / max(1, len(others)))
    for gi, w in enumerate(throughput):
        gx = left + gi * group_w + (group_w - bar_w * len(others)) / 2
        key, unit, _ = HEADLINE[w]
        for ti, t in enumerate(others):
            r = ratios.get(t, {}).get(w)
            if r is None:
                continue
            h = height * r / ymax
            bx = gx + ti * bar_w
            absolute = summary.get(w, {}).get(t, {}).get(key)
            tip = f"{t}, {SHORT[w]}: {_fmt_abs(absolute or 0)} {unit} ({r:.2f}x direct)"
            parts.append(
                f"<rect x='{bx:.1f}' y='{top + height - h:.1f}' width='{bar_w - 2:.1f}' "
                f"height='{h:.1f}' fill='{_color(t, tools.index(t))}'>"
                f"<title>{escape(tip)}</title></rect>"
            )
            parts.append(_text(bx + (bar_w - 2) / 2, top + height - h - 3, f"{r:.2f}", 9, "middle"))
        direct = summary.get(w, {}).get("direct", {}).get(key)
        label_x = left + gi * group_w + group_w / 2
        parts.append(_text(label_x, top + height + 16, SHORT[w], 12, "middle"))
        if direct is not None:
            parts.append(
                _text(
                    label_x,
                    top + height + 30,
                    f"direct {_fmt_abs(direct)} {unit}",
                    10,
                    "middle",
                    fill="#555",
                )
            )

    # panel 2: latency percentiles, 1 and 50 connections
    top2, height2 = top + height + 80, 220.0
    pcts = [("p50", "p50_us"), ("p90", "p90_us"), ("p99", "p99_us"), ("p99.9", "p99_9_us")]
    half = (WIDTH - 40) / 2
    for pi, (w, label) in enumerate(
        (("small_c1", "1 connection"), ("small_c50", "50 connections"))
    ):
        px0 = 20 + pi * half + 50
        px1 = 20 + (pi + 1) * half - 20
        parts.append(
            _text(
                px0 - 50,
                top2 - 12,
                f"Small responses, {label}: latency in us (log scale)",
                13,
                font_weight="bold",
            )
        )
        values = [v for t in tools for _, k in pcts if (v := summary.get(w, {}).get(t, {}).get(k))]
        if not values:
            continue
        lo = 10 ** math.floor(math.log10(max(1.0, min(values))))
        hi = 10 ** math.ceil(math.log10(max(values) * 1.01))
        span = math.log10(hi) - math.log10(lo) or 1.0

        def ypos(v: float, lo: float = lo, span: float = span) -> float:
            return top2 + height2 - height2 * (math.log10(max(v, lo)) - math.log10(lo)) / span

        decade = lo
        while decade <= hi * 1.001:
            y = ypos(decade)
            parts.append(f"<line x1='{px0}' x2='{px1}' y1='{y:.1f}' y2='{y:.1f}' stroke='#ddd'/>")
            parts.append(_text(px0 - 6, y + 4, f"{decade:,.0f}", 10, "end"))
            decade *= 10
        step = (px1 - px0) / (len(pcts) - 1)
        for ci, (name, _) in enumerate(pcts):
            parts.append(_text(px0 + ci * step, top2 + height2 + 16, name, 11, "middle"))
        for ti, t in enumerate(tools):
            pts = [
                (px0 + ci * step, ypos(v), name, v)
                for ci, (name, k) in enumerate(pcts)
                if (v := summary.get(w, {}).get(t, {}).get(k))
            ]
            if not pts:
                continue
            color = _color(t, ti)
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py, _, _ in pts)
            parts.append(
                f"<polyline points='{path}' fill='none' stroke='{color}' stroke-width='2'/>"
            )
            for px, py, name, v in pts:
                parts.append(
                    f"<circle cx='{px:.1f}' cy='{py:.1f}' r='3' fill='{color}'>"
                    f"<title>{escape(f'{t} {name}: {v:,.0f} us')}</title></circle>"
                )

    total_h = top2 + height2 + 40
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{total_h:.0f}' "
        f"viewBox='0 0 {WIDTH} {total_h:.0f}' {FONT}>\n"
        f"<rect width='100%' height='100%' fill='white'/>\n" + "\n".join(parts) + "\n</svg>\n"
    )
