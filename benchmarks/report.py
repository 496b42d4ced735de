"""From raw measurements to medians, ratios, tables (terminal and Markdown) and target checks.

Pure functions over the JSON-able result dict the runner builds; nothing here measures.

Ratios are "tool ÷ other" of each workload's headline figure: for throughput (req/s, MB/s,
round trips/s) higher is better, for the SSE time to first event and a new connection's time
to its response lower is better. The added latency is a tool's median latency at 1 connection
minus direct access's; what a TLS handshake adds is a tool's median new TLS connection minus
its median new plain connection.

The workloads that compare proxies with direct access (CLASSIC) have their tables; those of
HTTPS, HTTP/2 and new connections (NEW: direct access has no TLS) have theirs.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
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
    "plain_h1_c50": ("req_s", "req/s", True),
    "tls_h1_c50": ("req_s", "req/s", True),
    "tls_h2_c50x10": ("req_s", "req/s", True),
    "new_conn_plain": ("p50_us", "us (p50)", False),
    "new_conn_tls": ("p50_us", "us (p50)", False),
    "conn_close_c10": ("req_s", "req/s", True),
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
    "plain_h1_c50": "h1 50c",
    "tls_h1_c50": "HTTPS h1 50c",
    "tls_h2_c50x10": "h2 50x10",
    "new_conn_plain": "new conn",
    "new_conn_tls": "new TLS conn",
    "conn_close_c10": "conn close 10c",
}
CLASSIC = (
    "small_c1",
    "small_c1_varied",
    "small_c50",
    "large_1mib",
    "upload_64mib",
    "slow_backend",
    "ws_echo",
    "sse_first_event",
)
NEW = tuple(w for w in HEADLINE if w not in CLASSIC)
_SUMMARY_KEYS = ("req_s", "mb_s", "cpu_us_per_req", "backend_cpu_us_per_req", "rss_peak_mib")
_PCTS = ("p50", "p90", "p99", "p99_9")
_PHASES = ("connect", "handshake", "response")


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
        for phase in _PHASES:
            values = [f["phases_us"][phase] for f in figs if phase in f.get("phases_us", {})]
            if values:
                med[f"{phase}_p50_us"] = statistics.median(values)
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

    def per_tool(a: str, b: str) -> dict[str, float | None]:
        return {t: _ratio(headline(summary, a, t), headline(summary, b, t)) for t in tools}

    return {
        "vs_direct": vs_direct,
        "devrouter_vs": devrouter_vs,
        "added_latency_us_c1": added,
        "added_latency_us_c1_varied": varied,
        "tls_added_us": {t: tls_added_us(summary, t) for t in tools},
        "https_vs_plain_h1": per_tool("tls_h1_c50", "plain_h1_c50"),
        "h2_vs_https_h1": per_tool("tls_h2_c50x10", "tls_h1_c50"),
    }


def tls_added_us(summary: dict[str, Any], tool: str) -> float | None:
    """What a TLS handshake adds to a new connection's time to its response (p50, us)."""
    tls = summary.get("new_conn_tls", {}).get(tool, {}).get("p50_us")
    plain = summary.get("new_conn_plain", {}).get(tool, {}).get("p50_us")
    return None if tls is None or plain is None else tls - plain


def baseline_of(tools: Sequence[str]) -> str | None:
    return next((t for t in tools if t.startswith("devrouter@")), None)


def _per_round(runs: Iterable[dict[str, Any]], workload: str, tool: str) -> dict[int, float]:
    """{round: headline figure} of one workload and tool."""
    key = HEADLINE[workload][0]
    out = {}
    for run in runs:
        if run["workload"] != workload or run["tool"] != tool or "figures" not in run:
            continue
        f = run["figures"]
        value = f.get("latency_us", {}).get("p50") if key == "p50_us" else f.get(key)
        if value is not None:
            out[run["round"]] = float(value)
    return out


def paired(
    runs: Sequence[dict[str, Any]],
    a: tuple[str, str],
    b: tuple[str, str],
    difference: bool = False,
) -> float | None:
    """The median over the rounds of a's headline figure ÷ b's (or a - b), each round's pair
    measured minutes apart at most: a machine whose load drifts moves both."""
    x, y = _per_round(runs, *a), _per_round(runs, *b)
    values = [
        x[r] - y[r] if difference else x[r] / y[r]
        for r in sorted(x.keys() & y.keys())
        if difference or y[r]
    ]
    return statistics.median(values) if values else None


Pair = tuple[tuple[str, str], tuple[str, str]]


def tls_targets(
    summary: dict[str, Any], tools: Sequence[str], runs: Sequence[dict[str, Any]] = ()
) -> list[dict[str, Any]]:
    """The goals of the HTTPS and HTTP/2 work, checked against this run; rows whose `goal`
    is False are comparisons to read, not goals (their `met` is None). `paired` is the same
    comparison made within each round (`paired()`), for a noisy machine."""

    def get(w: str, t: str | None, k: str = "req_s") -> float | None:
        v = summary.get(w, {}).get(t or "", {}).get(k)
        return None if v is None else float(v)

    out: list[dict[str, Any]] = []

    def add(
        name: str,
        value: float | None,
        limit: float | None,
        at_least: bool,
        goal: bool,
        pair: Pair,
        difference: bool = False,
    ) -> None:
        ok = None
        if goal and value is not None and limit is not None:
            ok = value >= limit if at_least else value < limit
        ratio = _ratio(value, limit) if not goal else None
        by_round = paired(runs, *pair, difference=difference) if runs else None
        out.append(
            {"target": name, "value": value, "limit": limit, "met": ok, "goal": goal,
             "ratio": ratio, "paired": by_round, "paired_is_difference": difference}
        )  # fmt: skip

    d = "devrouter"
    plain = get("plain_h1_c50", d)
    add(
        "HTTPS/1.1 50c req/s >= 0.7x devrouter's plain (h2load)",
        get("tls_h1_c50", d),
        0.7 * plain if plain is not None else None,
        True,
        True,
        (("tls_h1_c50", d), ("plain_h1_c50", d)),
    )
    caddy = get("tls_h2_c50x10", "caddy")
    h2 = get("tls_h2_c50x10", d)
    add(
        "HTTP/2 50x10 req/s >= 1.5x Caddy",
        h2,
        1.5 * caddy if caddy else None,
        True,
        True,
        (("tls_h2_c50x10", d), ("tls_h2_c50x10", "caddy")),
    )
    add(
        "HTTP/2 50x10 req/s vs nginx",
        h2,
        get("tls_h2_c50x10", "nginx"),
        True,
        False,
        (("tls_h2_c50x10", d), ("tls_h2_c50x10", "nginx")),
    )
    add(
        "TLS handshake added p50 < 2 ms (us)",
        tls_added_us(summary, d),
        2000.0,
        False,
        True,
        (("new_conn_tls", d), ("new_conn_plain", d)),
        difference=True,
    )
    base = baseline_of(tools)
    if base is not None:
        for name, w, key in (
            (f"new plain connection p50 (us) vs {base}", "new_conn_plain", "p50_us"),
            (f"Connection: close 10c req/s vs {base}", "conn_close_c10", "req_s"),
            (f"small 50c req/s (keep-alive) vs {base}", "small_c50", "req_s"),
        ):
            add(name, get(w, d, key), get(w, base, key), True, False, ((w, d), (w, base)))
    return out


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

    if not any(w in s for w in CLASSIC):  # only HTTPS, HTTP/2 or new connections measured
        return _new_tables(result, g)
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
    workloads = [w for w in CLASSIC if w in s]
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
    out += _new_tables(result, g)
    return out


def _new_tables(
    result: dict[str, Any], g: Callable[[str, str, str], float | None]
) -> list[tuple[str, list[str], list[list[str]]]]:
    """The tables of the HTTPS, HTTP/2 and new-connection workloads, when any was measured."""
    s = result["summary"]
    if not any(w in s for w in NEW):
        return []
    tools = [t for t in result["tool_order"] if any(t in s.get(w, {}) for w in NEW)]
    r = result["ratios"]
    https_vs_plain = r.get("https_vs_plain_h1", {})
    added = r.get("tls_added_us", {})
    out = [
        (
            "HTTPS and HTTP/2: small responses at 50 connections (h2load, 1 thread)",
            ["tool", "plain h1 req/s", "HTTPS h1 req/s", "HTTPS ÷ plain", "h2 50x10 req/s",
             "h2 p50 us", "h2 p99 us", "h2 CPU us/req", "HTTPS h1 CPU us/req", "h2 peak RSS MiB"],
            [
                [
                    t,
                    _fmt(g("plain_h1_c50", t, "req_s")),
                    _fmt(g("tls_h1_c50", t, "req_s")),
                    _fmt(https_vs_plain.get(t), "ratio"),
                    _fmt(g("tls_h2_c50x10", t, "req_s")),
                    _fmt(g("tls_h2_c50x10", t, "p50_us")),
                    _fmt(g("tls_h2_c50x10", t, "p99_us")),
                    _fmt(g("tls_h2_c50x10", t, "cpu_us_per_req")),
                    _fmt(g("tls_h1_c50", t, "cpu_us_per_req")),
                    _fmt(g("tls_h2_c50x10", t, "rss_peak_mib")),
                ]
                for t in tools
            ],
        ),
        (
            "New connections, one at a time: connect to the whole response, in us",
            ["tool", "plain p50", "plain p99", "TLS p50", "TLS p99", "TLS added p50",
             "handshake p50", "CPU us/TLS conn", "CPU us/plain conn", "conn close 10c req/s"],
            [
                [
                    t,
                    _fmt(g("new_conn_plain", t, "p50_us")),
                    _fmt(g("new_conn_plain", t, "p99_us")),
                    _fmt(g("new_conn_tls", t, "p50_us")),
                    _fmt(g("new_conn_tls", t, "p99_us")),
                    _fmt(added.get(t), "signed"),
                    _fmt(g("new_conn_tls", t, "handshake_p50_us")),
                    _fmt(g("new_conn_tls", t, "cpu_us_per_req")),
                    _fmt(g("new_conn_plain", t, "cpu_us_per_req")),
                    _fmt(g("conn_close_c10", t, "req_s")),
                ]
                for t in tools
            ],
        ),
    ]  # fmt: skip
    # leave out the rows and tables this run has no figure for (a --workloads subset)
    out = [
        (title, header, kept)
        for title, header, rows in out
        if (kept := [row for row in rows if any(c != "-" for c in row[1:])])
    ]
    workloads = [w for w in NEW if w in s]
    dv = r["devrouter_vs"]
    out.append(
        (
            "devrouter ÷ each other tool: HTTPS, HTTP/2, new connections (new conn: lower is "
            "better)",
            ["devrouter ÷", *(SHORT[w] for w in workloads)],
            [
                [t, *(_fmt(dv[t].get(w), "ratio") for w in workloads)]
                for t in tools
                if t in dv and any(dv[t].get(w) is not None for w in workloads)
            ],
        )
    )
    return out


def _target_rows(targets: list[dict[str, Any]], paired: bool = False) -> list[list[str]]:
    def result(t: dict[str, Any]) -> str:
        if not t.get("goal", True):
            return f"{_fmt(t.get('ratio'), 'ratio')} (no goal)"
        return {True: "met", False: "missed", None: "not measured"}[t["met"]]

    def by_round(t: dict[str, Any]) -> str:
        return _fmt(t.get("paired"), "signed" if t.get("paired_is_difference") else "ratio")

    return [
        [t["target"].replace(">=", "≥").replace("<=", "≤"), _fmt(t["value"]), _fmt(t["limit"]),
         result(t), *([by_round(t)] if paired else [])]
        for t in targets
    ]  # fmt: skip


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
                          ("portless", "portless"), ("Node", "node"), ("wrk", "wrk"),
                          ("h2load", "h2load"))
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


TLS_TARGETS_TITLE = (
    "Goals of the HTTPS and HTTP/2 work (and comparisons, marked no goal); the last column makes "
    "the same comparison within each round, median of the rounds"
)
TLS_HEADER = ["target", "devrouter", "limit", "result", "round by round"]


def text_report(result: dict[str, Any]) -> str:
    parts = [render_text(*t) for t in tables(result)]
    header = ["target", "devrouter", "limit", "result"]
    parts.append(
        render_text("Targets of the performance issue", header, _target_rows(result["targets"]))
    )
    if result.get("tls_targets"):
        rows = _target_rows(result["tls_targets"], paired=True)
        parts.append(render_text(TLS_TARGETS_TITLE, TLS_HEADER, rows))
    return "\n\n".join(parts)


def markdown_report(result: dict[str, Any]) -> str:
    parts = [f"Machine: {machine_line(result)}.", ""]
    parts += [render_markdown(*t) + "\n" for t in tables(result)]
    header = ["target", "devrouter", "limit", "result"]
    rows = _target_rows(result["targets"])
    parts.append(render_markdown("Targets of the performance issue", header, rows) + "\n")
    if result.get("tls_targets"):
        rows = _target_rows(result["tls_targets"], paired=True)
        parts.append(render_markdown(TLS_TARGETS_TITLE, TLS_HEADER, rows) + "\n")
    return "\n".join(parts)
