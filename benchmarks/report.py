"""From raw measurements to medians, ratios, tables (terminal and Markdown) and target checks.

Pure functions over the JSON-able result dict the runner builds; nothing here measures.

Ratios are "tool ÷ other" of each workload's headline figure: for throughput (req/s, MB/s,
round trips/s) higher is better, for the SSE time to first event lower is better. The
added latency is a tool's median latency at 1 connection minus direct access's.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from typing import Any

#: The figure that stands for each workload in ratio tables and charts: (key, unit, higher
#: is better).
HEADLINE: dict[str, tuple[str, str, bool]] = {
    "small_c1": ("req_s", "req/s", True),
    "small_c1_varied": ("req_s", "req/s", True),
    "small_c50": ("req_s", "req/s", True),
    "large_1mib": ("mb_s", "MB/s", True),
    "upload_64mib": ("mb_s", "MB/s", True),
    "slow_backend": ("req_s", "req/s", True),
    "ws_echo": ("req_s", "round trips/s", True),
    "sse_first_event": ("p50_us", "us (p50)", False),
}
SHORT = {
    "small_c1": "small 1c",
    "small_c1_varied": "1c varied",
    "small_c50": "small 50c",
    "large_1mib": "1 MiB",
    "upload_64mib": "upload",
    "slow_backend": "slow app",
    "ws_echo": "WS echo",
    "sse_first_event": "SSE 1st",
}
_SUMMARY_KEYS = ("req_s", "mb_s", "cpu_us_per_req", "backend_cpu_us_per_req", "rss_peak_mib")
_PCTS = ("p50", "p90", "p99", "p99_9")


def summarize(runs: Iterable[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """{workload: {tool: {figure: median over the rounds}}}; failed runs are left out."""
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in runs:
        if "figures" in run:
            grouped.setdefault((run["workload"], run["tool"]), []).append(run["figures"])
    out: dict[str, dict[str, dict[str, float]]] = {}
    for (workload, tool), figs in grouped.items():
        med: dict[str, float] = {"rounds": len(figs)}
        for key in _SUMMARY_KEYS:
            values = [f[key] for f in figs if f.get(key) is not None]
            if values:
                med[key] = statistics.median(values)
        for p in _PCTS:
            values = [f["latency_us"][p] for f in figs if p in f.get("latency_us", {})]
            if values:
                med[f"{p}_us"] = statistics.median(values)
        out.setdefault(workload, {})[tool] = med
    return out


def headline(
    summary: dict[str, dict[str, dict[str, float]]], workload: str, tool: str
) -> float | None:
    key = HEADLINE[workload][0]
    return summary.get(workload, {}).get(tool, {}).get(key)


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def added_latency_us(
    summary: dict[str, Any], tool: str, workload: str = "small_c1"
) -> float | None:
    small = summary.get(workload, {})
    mine = small.get(tool, {}).get("p50_us")
    base = small.get("direct", {}).get("p50_us")
    return None if mine is None or base is None else mine - base


def ratios(summary: dict[str, Any], tools: Sequence[str]) -> dict[str, Any]:
    """`vs_direct[tool][workload]` and `devrouter_vs[peer][workload]`, plus the added median
    latency at 1 connection of each tool and devrouter's as a multiple of each peer's."""
    workloads = [w for w in HEADLINE if w in summary]
    vs_direct = {
        t: {w: _ratio(headline(summary, w, t), headline(summary, w, "direct")) for w in workloads}
        for t in tools
        if t != "direct"
    }
    devrouter_vs = {
        t: {
            w: _ratio(headline(summary, w, "devrouter"), headline(summary, w, t)) for w in workloads
        }
        for t in tools
        if t != "devrouter"
    }
    added = {t: added_latency_us(summary, t) for t in tools if t != "direct"}
    varied = {t: added_latency_us(summary, t, "small_c1_varied") for t in tools if t != "direct"}
    for t in devrouter_vs:
        devrouter_vs[t]["added_latency_c1"] = _ratio(added.get("devrouter"), added.get(t))
        devrouter_vs[t]["added_latency_c1_varied"] = _ratio(varied.get("devrouter"), varied.get(t))
    return {
        "vs_direct": vs_direct,
        "devrouter_vs": devrouter_vs,
        "added_latency_us_c1": added,
        "added_latency_us_c1_varied": varied,
    }


def targets(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The performance issue's targets, checked against this run (None: not measured)."""

    def get(w: str, t: str, k: str) -> float | None:
        v = summary.get(w, {}).get(t, {}).get(k)
        return None if v is None else float(v)

    d50 = get("small_c50", "devrouter", "req_s")
    out: list[dict[str, Any]] = []

    def add(name: str, value: float | None, limit: float | None, ok_if_at_least: bool) -> None:
        ok = None
        if value is not None and limit is not None:
            ok = value >= limit if ok_if_at_least else value <= limit
        out.append({"target": name, "value": value, "limit": limit, "met": ok})

    portless = get("small_c50", "portless", "req_s")
    nginx = get("small_c50", "nginx", "req_s")
    add("small 50c req/s >= 2x portless", d50, 2 * portless if portless else None, True)
    add("small 50c req/s >= 0.5x nginx", d50, 0.5 * nginx if nginx else None, True)
    add("small 50c req/s >= nginx (stretch)", d50, nginx, True)
    added_d, added_n = added_latency_us(summary, "devrouter"), added_latency_us(summary, "nginx")
    add(
        "added p50 latency 1c <= 2x nginx's (us)",
        added_d,
        2 * added_n if added_n is not None else None,
        False,
    )
    add(
        "1 MiB MB/s >= nginx",
        get("large_1mib", "devrouter", "mb_s"),
        get("large_1mib", "nginx", "mb_s"),
        True,
    )
    add("router RSS at 50c < 60 MiB", get("small_c50", "devrouter", "rss_peak_mib"), 60.0, False)
    return out


# --- tables ------------------------------------------------------------------------------------


def _fmt(value: float | None, kind: str = "num") -> str:
    if value is None:
        return "-"
    if kind == "ratio":
        return f"{value:.2f}x"
    if kind == "signed":
        return f"{value:+,.0f}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def tables(result: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) for each table of the report."""
    s = result["summary"]
    tools = result["tool_order"]

    def g(w: str, t: str, k: str) -> float | None:
        v = s.get(w, {}).get(t, {}).get(k)
        return None if v is None else float(v)

    out = []
    out.append(
        (
            "Throughput (median of the rounds; MB = 10^6 bytes)",
            [
                "tool",
                "small 1c req/s",
                "1c varied req/s",
                "small 50c req/s",
                "1 MiB MB/s",
                "64 MiB upload MB/s",
                "slow app 10c req/s",
                "WS echo round trips/s",
            ],
            [
                [
                    t,
                    _fmt(g("small_c1", t, "req_s")),
                    _fmt(g("small_c1_varied", t, "req_s")),
                    _fmt(g("small_c50", t, "req_s")),
                    _fmt(g("large_1mib", t, "mb_s")),
                    _fmt(g("upload_64mib", t, "mb_s")),
                    _fmt(g("slow_backend", t, "req_s")),
                    _fmt(g("ws_echo", t, "req_s")),
                ]
                for t in tools
            ],
        )
    )
    added = result["ratios"]["added_latency_us_c1"]
    varied = result["ratios"].get("added_latency_us_c1_varied", {})
    out.append(
        (
            "Latency in microseconds (small responses; WS round trip; SSE: connect to first event)",
            [
                "tool",
                "1c p50",
                "1c added p50",
                "1c p99",
                "1c varied added p50",
                "50c p50",
                "50c p90",
                "50c p99",
                "50c p99.9",
                "WS p50",
                "SSE p50",
            ],
            [
                [
                    t,
                    _fmt(g("small_c1", t, "p50_us")),
                    _fmt(added.get(t), "signed") if t != "direct" else "0",
                    _fmt(g("small_c1", t, "p99_us")),
                    _fmt(varied.get(t), "signed") if t != "direct" else "0",
                    _fmt(g("small_c50", t, "p50_us")),
                    _fmt(g("small_c50", t, "p90_us")),
                    _fmt(g("small_c50", t, "p99_us")),
                    _fmt(g("small_c50", t, "p99_9_us")),
                    _fmt(g("ws_echo", t, "p50_us")),
                    _fmt(g("sse_first_event", t, "p50_us")),
                ]
                for t in tools
            ],
        )
    )
    out.append(
        (
            "Cost while serving small responses at 50 connections (direct: the nginx/aiohttp "
            "backend's own)",
            [
                "tool",
                "peak RSS MiB",
                "CPU us/request",
                "backend CPU us/request",
                "slow app: proxy CPU us/req",
            ],
            [
                [
                    t,
                    _fmt(g("small_c50", t, "rss_peak_mib")),
                    _fmt(g("small_c50", t, "cpu_us_per_req")),
                    _fmt(g("small_c50", t, "backend_cpu_us_per_req")),
                    _fmt(g("slow_backend", t, "cpu_us_per_req")) if t != "direct" else "-",
                ]
                for t in tools
            ],
        )
    )
    workloads = [w for w in HEADLINE if w in s]
    vs = result["ratios"]["vs_direct"]
    out.append(
        (
            "Each tool ÷ direct access (throughput: higher is better; SSE: lower is better)",
            ["tool", *(SHORT[w] for w in workloads)],
            [[t, *(_fmt(vs[t].get(w), "ratio") for w in workloads)] for t in tools if t in vs],
        )
    )
    dv = result["ratios"]["devrouter_vs"]
    out.append(
        (
            "devrouter ÷ each other tool (added 1c latency: lower is better)",
            ["devrouter ÷", *(SHORT[w] for w in workloads), "added 1c p50", "varied"],
            [
                [
                    t,
                    *(_fmt(dv[t].get(w), "ratio") for w in workloads),
                    _fmt(dv[t].get("added_latency_c1"), "ratio"),
                    _fmt(dv[t].get("added_latency_c1_varied"), "ratio"),
                ]
                for t in tools
                if t in dv
            ],
        )
    )
    return out


def render_text(title: str, header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [title]
    lines.append(
        "  ".join(
            h.ljust(w) if i == 0 else h.rjust(w)
            for i, (h, w) in enumerate(zip(header, widths, strict=True))
        )
    )
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    return "\n".join(lines)


def render_markdown(title: str, header: list[str], rows: list[list[str]]) -> str:
    lines = [
        f"**{title}**",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---", *["---:"] * (len(header) - 1)]) + "|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def machine_line(result: dict[str, Any]) -> str:
    m = result["machine"]
    peers = ", ".join(
        f"{name} {m[key].removeprefix('nginx/').removeprefix('wrk ')}"
        for name, key in (("nginx", "nginx"), ("HAProxy", "haproxy"), ("Caddy", "caddy"),
                          ("portless", "portless"), ("Node", "node"), ("wrk", "wrk"))
        if m.get(key)
    )  # fmt: skip
    load = m.get("load_average_at_start"), m.get("load_average_at_end")
    fast = result["backends"]["fast"].replace("nginx/", "")
    return (
        f"{result['started'][:16].replace('T', ' ')} UTC; {m['cpu_model']}, {m['cores']} cores, "
        f"{m.get('memory_mib') or '?'} MiB, {m['kernel']}; Python {m['python']}, aiohttp "
        f"{m['aiohttp']}, uvloop {m['uvloop']}, devrouter {m.get('devrouter')} "
        f"({m.get('devrouter_git') or 'no git'}); {peers}; load generator "
        f"{result['load_generator']['name']}; fast backend {fast}; "
        f"{result['profile']} profile, {result['rounds']} round(s); load average (1, 5, 15 min) "
        f"{load[0]} at the start, {load[1]} at the end"
    )


def text_report(result: dict[str, Any]) -> str:
    parts = [render_text(*t) for t in tables(result)]
    lines = []
    for t in result["targets"]:
        mark = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        lines.append(
            f"  {t['target']:<42} {_fmt(t['value']):>10}  limit {_fmt(t['limit']):>10}  {mark}"
        )
    parts.append("Targets of the performance issue\n" + "\n".join(lines))
    return "\n\n".join(parts)


def markdown_report(result: dict[str, Any]) -> str:
    parts = [f"Machine: {machine_line(result)}.", ""]
    parts += [render_markdown(*t) + "\n" for t in tables(result)]
    rows = [
        [t["target"].replace(">=", "≥").replace("<=", "≤"), _fmt(t["value"]), _fmt(t["limit"]),
         {True: "met", False: "missed", None: "not measured"}[t["met"]]]
        for t in result["targets"]
    ]  # fmt: skip
    header = ["target", "devrouter", "limit", "result"]
    parts.append(render_markdown("Targets of the performance issue", header, rows) + "\n")
    return "\n".join(parts)
