"""Reports: the text of a run, of a --compare-direct comparison, and the one line for a run
in which nothing answered. Pure functions of results."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .plan import Plan
from .result import Result
from .target import Target

if TYPE_CHECKING:  # for annotations only; router.find_router imports it when it runs
    from ..services.locate import Located

_COLUMNS = ("p50", "p75", "p90", "p99", "p999", "max", "mean", "stdev")
_TITLES = ("p50", "p75", "p90", "p99", "p99.9", "max", "mean", "stdev")


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} GB"


def format_report(result: Result) -> str:
    d = result.duration_s
    lines = [
        f"  requests   {result.requests:,} in {d:.2f}s, {result.requests_per_second:,.1f} req/s, "
        f"{_fmt_bytes(result.bytes / d if d else 0)}/s",
        "  status     "
        + (", ".join(f"{k}: {v:,}" for k, v in sorted(result.status.items())) or "none"),
        "  errors     "
        + (", ".join(f"{k}: {v:,}" for k, v in result.errors.items() if v) or "none"),
    ]
    s = result.histogram.summary()
    lines.append("  latency ms " + "".join(f"{t:>9}" for t in _TITLES))
    lines.append("           " + " " + "".join(f"{s[c]:>9.3f}" for c in _COLUMNS))
    return "\n".join(lines)


def describe(plan: Plan, workers: int, target: Target, router: Located | None = None) -> str:
    mode = f"constant rate {plan.rate:,.0f}/s" if plan.rate else "closed loop"
    amount = f"{plan.requests:,} requests" if plan.duration_s is None else f"{plan.duration_s:g}s"
    warm = f" after {plan.warmup_s:g}s warmup" if plan.warmup_s else ""
    found = f"\n  router: {router.describe()}" if router is not None else ""
    return (
        f"bench {target.url} (connecting to {target.address})\n"
        f"  {mode}, {plan.connections} connection(s), {workers} worker(s), {amount}{warm}"
        f"{'' if plan.keepalive else ', no keep-alive'}{found}"
    )


# --- when nothing answers -------------------------------------------------------------------


def silence(result: Result) -> str | None:
    """Why no response at all arrived, or None when one did (or nothing was tried)."""
    if result.answered:
        return None
    errors = {k: v for k, v in result.errors.items() if v}
    if not errors:
        return None
    if set(errors) == {"refused"}:
        return "every connection was refused"
    if set(errors) == {"timeout"}:
        return "no request got a response within --timeout"
    return "no response arrived (" + ", ".join(f"{k}: {v:,}" for k, v in errors.items()) + ")"


def router_silence(router: Located, reason: str) -> str:
    """The one line for a router that does not answer."""
    return (
        f"nothing answers at {router.describe()}: {reason}. Is the router running? Start it "
        "with `devrouter serve` (or `devrouter run`), or pass --router-port PORT"
    )


def silence_line(
    result: Result, target: Target, router: Located | None, what: str = ""
) -> str | None:
    """One line for a run in which nothing answered (through `router`, when it went through
    one), or None when something did."""
    reason = silence(result)
    if reason is None:
        return None
    if router is not None:
        return router_silence(router, reason)
    named = f" ({what})" if what else ""
    return (
        f"nothing answers at {target.address}{named}: {reason}. Is the service running and "
        f"listening on port {target.port}?"
    )


def compare(router: Result, direct: Result) -> tuple[dict[str, float], float]:
    """Added latency per statistic (router minus direct, ms) and the throughput ratio."""
    r, d = router.histogram.summary(), direct.histogram.summary()
    added = {k: round(r[k] - d[k], 3) for k in _COLUMNS}
    ratio = router.requests_per_second / direct.requests_per_second if direct.requests else 0.0
    return added, round(ratio, 4)


def format_compare(router: Result, direct: Result, rounds: int) -> str:
    added, ratio = compare(router, direct)
    r, d = router.histogram.summary(), direct.histogram.summary()
    head = "".join(f"{t:>9}" for t in _TITLES)
    lines = [
        f"  {rounds} round(s) each way, alternating",
        f"  {'latency ms':<12}{head}",
        f"  {'direct':<12}" + "".join(f"{d[c]:>9.3f}" for c in _COLUMNS),
        f"  {'router':<12}" + "".join(f"{r[c]:>9.3f}" for c in _COLUMNS),
        f"  {'added':<12}" + "".join(f"{added[c]:>+9.3f}" for c in _COLUMNS),
        f"  throughput  direct {direct.requests_per_second:,.1f} req/s, router "
        f"{router.requests_per_second:,.1f} req/s, ratio {ratio:.3f}",
    ]
    for name, res in (("direct", direct), ("router", router)):
        errs = ", ".join(f"{k}: {v:,}" for k, v in res.errors.items() if v)
        if errs:
            lines.append(f"  {name} errors: {errs}")
    return "\n".join(lines)
